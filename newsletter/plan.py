"""The upcoming sends, soonest first: what `newsletter plan` shows.

The ledger holds one pending row per subscriber: their next email. For a readable week ahead, the lessons
after that row are projected too, by the rule the sender applies when it records a send
(`schedule.next_due`), assuming each lesson goes out when it is due, or now if it is already overdue.
Projected entries are marked `projected`: they are not in the database yet, and they move if a send is
late, or the subscriber pauses or changes their day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.models import CONFIRMATION_WEEK, Delivery, Subscriber
from newsletter.planning import cadence_of
from newsletter.schedule import next_due
from newsletter.subscribers import get_subscriber

if TYPE_CHECKING:
    from newsletter.project import Project


@dataclass(frozen=True)
class PlannedSend:
    """One email expected to go out: from the ledger, or projected beyond it."""

    email: str
    week: int
    slug: str
    due_at: datetime
    timezone: str
    projected: bool = False

    @property
    def local(self) -> datetime:
        """Return the due time on the subscriber's own clock."""
        return self.due_at.astimezone(ZoneInfo(self.timezone))

    def as_json(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "week": self.week,
            "slug": self.slug,
            "due_at": self.due_at.astimezone(UTC).isoformat(),
            "local": self.local.isoformat(),
            "timezone": self.timezone,
            "projected": self.projected,
        }


def upcoming_sends(
    session: Session,
    project: Project,
    *,
    now: datetime,
    days: float = 7,
    email: str | None = None,
    project_later_lessons: bool = True,
) -> list[PlannedSend]:
    """Return what is due up to `days` after `now` (overdue rows included), soonest first."""
    horizon = now + timedelta(days=days)
    query = (
        select(Delivery, Subscriber)
        .join(Subscriber, Delivery.subscriber_id == Subscriber.id)
        .where(Delivery.status == "pending", Delivery.due_at <= horizon)
        .order_by(Delivery.due_at, Delivery.id)
    )
    if email is not None:
        query = query.where(Subscriber.id == get_subscriber(session, email).id)
    sends: list[PlannedSend] = []
    for delivery, subscriber in session.execute(query):
        sends.append(PlannedSend(subscriber.email, delivery.week, delivery.slug, delivery.due_at, subscriber.timezone))
        if project_later_lessons and delivery.week > CONFIRMATION_WEEK and subscriber.status == "active":
            sends.extend(_projected_after(project, subscriber, delivery, now=now, horizon=horizon))
    return sorted(sends, key=lambda send: (send.due_at, send.email, send.week))


def _projected_after(
    project: Project, subscriber: Subscriber, delivery: Delivery, *, now: datetime, horizon: datetime
) -> list[PlannedSend]:
    cadence = cadence_of(subscriber)
    min_gap = project.settings.schedule.min_gap
    slot, assumed_sent = delivery.slot_at, max(delivery.due_at, now)
    projected: list[PlannedSend] = []
    week = delivery.week + 1
    while (lesson := project.series.week(week)) is not None:
        due = next_due(cadence, after=slot, last_sent_at=assumed_sent, min_gap=min_gap)
        if due > horizon:
            break
        projected.append(PlannedSend(subscriber.email, week, lesson.slug, due, subscriber.timezone, projected=True))
        slot = assumed_sent = due
        week += 1
    return projected

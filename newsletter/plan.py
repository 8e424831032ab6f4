"""The upcoming sends, soonest first: what `newsletter plan` shows.

The ledger holds one waiting row per reader: their next email. For a readable week ahead, the lessons
after that row are projected too, by the one rule the sender applies when it records a send
(`planning.next_send`), assuming each lesson goes out when it is due, or now if it is already overdue.
Projected entries are marked `projected`: they are not in the database yet, and they move if a send is
late, or the reader pauses or changes their day. A held row (its lesson is a draft, fails the checklist
or is broken) is shown with the reason and nothing is projected after it: the reader waits there.

Rows are read in batches inside one read-only transaction, so a large ledger streams in flat memory and
no sender waits for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from newsletter.ledger import WAITING, Reader, load_readers
from newsletter.models import CONFIRMATION, Delivery, Subscriber
from newsletter.planning import next_send
from newsletter.subscribers import get_subscriber

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from newsletter.project import Project

PLAN_BATCH = 1000


@dataclass(frozen=True)
class PlannedSend:
    """One email expected to go out: from the ledger, or projected beyond it."""

    email: str
    week: int  # the lesson's place in the course (0: the confirmation email)
    slug: str
    due_at: datetime
    timezone: str
    projected: bool = False
    held: str = ""  # why it waits (draft, checklist, broken), if it does

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
            "held": self.held,
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
    sends = list(iter_upcoming(session, project, now=now, days=days, email=email, project_later=project_later_lessons))
    return sorted(sends, key=lambda send: (send.due_at, send.email, send.week))


def iter_upcoming(
    session: Session,
    project: Project,
    *,
    now: datetime,
    days: float = 7,
    email: str | None = None,
    project_later: bool = True,
) -> Iterator[PlannedSend]:
    """The same entries, not sorted: the ledger's rows in due order, each followed by its projections."""
    horizon = now + timedelta(days=days)
    query = (
        select(
            Subscriber.id,
            Subscriber.email,
            Subscriber.timezone,
            Delivery.lesson,
            Delivery.status,
            Delivery.hold,
            Delivery.due_at,
            Delivery.slot_at,
        )
        .join(Subscriber, Delivery.subscriber_id == Subscriber.id)
        .where(Delivery.status.in_(WAITING), Delivery.due_at <= horizon)
        .order_by(Delivery.due_at, Delivery.id)
        .execution_options(yield_per=PLAN_BATCH)
    )
    if email is not None:
        query = query.where(Subscriber.id == get_subscriber(session, email).id)
    rows = iter(session.execute(query))
    while batch := list(islice(rows, PLAN_BATCH)):
        readers = load_readers(session.connection(), {row.id for row in batch}) if project_later else {}
        for row in batch:
            yield from _entries(project, row, readers.get(row.id), now=now, horizon=horizon)


def _entries(
    project: Project, row: Any, reader: Reader | None, *, now: datetime, horizon: datetime
) -> Iterator[PlannedSend]:
    series = project.series
    position = 0 if row.lesson == CONFIRMATION else (series.index(row.lesson) or 0) + 1
    held = (row.hold or "held") if row.status == "held" else ""
    yield PlannedSend(row.email, position, row.lesson, row.due_at, row.timezone, held=held)
    if reader is None or held or row.lesson == CONFIRMATION or reader.status != "active":
        return
    current = series.lesson(series.identity(row.lesson) or row.lesson)
    progress, slot, assumed_sent = reader.progress.after(series, current), row.slot_at, max(row.due_at, now)
    for _ in range(len(series)):
        planned = next_send(
            project.settings,
            series,
            progress=progress,
            cadence=reader.cadence,
            now=assumed_sent,
            after=slot,
            last_sent_at=assumed_sent,
        )
        if planned is None or planned.due_at > horizon:
            return
        gate = project.gates.get(planned.lesson.slug)
        yield PlannedSend(
            row.email,
            planned.lesson.week,
            planned.lesson.slug,
            planned.due_at,
            row.timezone,
            projected=True,
            held=gate.reason if gate else "",
        )
        if gate is not None:
            return  # the reader will wait there
        progress, slot = progress.after(series, planned.lesson), planned.due_at
        assumed_sent = planned.due_at

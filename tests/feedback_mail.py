"""Readers with sent lessons, and the bounces about them (tests/fixtures/feedback/), for the feedback tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from newsletter.dispatch import send_due
from newsletter.feedback.verp import bounce_address
from newsletter.models import Delivery, Subscriber
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber
from newsletter.transports import MemoryTransport

FIXTURES = Path(__file__).parent / "fixtures" / "feedback"
CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday; lessons go out Mondays 07:00 UTC
FIRST_SLOT = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
AFTER_FIRST = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Sent:
    """One lesson that went out: the anchors a bounce about it carries."""

    email: str
    subscriber_id: int
    delivery_id: int
    message_id: str


def readers(project: Project, *emails: str) -> dict[str, int]:
    """Add confirmed readers on the default schedule (Monday 07:00 UTC); their ids by address."""
    with project.db.session() as session:
        return {
            email: add_subscriber(session, project, SubscriberInput(email), confirmed=True, now=CONFIRMED_AT).id
            for email in emails
        }


def send_week(project: Project, week: int) -> MemoryTransport:
    """Send what is due in the given week of the course (week 1 at FIRST_SLOT, then weekly)."""
    transport = MemoryTransport()
    send_due(project, transport, now=FIRST_SLOT + timedelta(weeks=week - 1, minutes=1))
    return transport


def sent(project: Project, email: str, week: int = 1) -> Sent:
    """The delivery of that week's lesson to `email`, which must have gone out."""
    with project.db.session() as session:
        subscriber = session.scalars(select(Subscriber).where(Subscriber.email == email)).one()
        lesson = project.series.lessons[week - 1].slug
        delivery = session.scalars(
            select(Delivery).where(Delivery.subscriber_id == subscriber.id, Delivery.lesson == lesson)
        ).one()
        assert delivery.sent_at is not None and delivery.message_id
        return Sent(email, subscriber.id, delivery.id, delivery.message_id)


def bounce(project: Project, name: str, about: Sent, *, recipient: str | None = None) -> bytes:
    """A fixture with its placeholders filled in for one sent lesson."""
    to = bounce_address(project.settings, about.delivery_id) or project.settings.sender.from_
    text = (FIXTURES / name).read_text(encoding="utf-8")
    for placeholder, value in (
        ("@@RECIPIENT@@", recipient or about.email),
        ("@@MESSAGE_ID@@", about.message_id),
        ("@@DELIVERY_ID@@", str(about.delivery_id)),
        ("@@BOUNCE_TO@@", to),
    ):
        text = text.replace(placeholder, value)
    return text.encode("utf-8")

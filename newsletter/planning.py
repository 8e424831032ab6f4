"""Keep every subscriber's next email materialised as one `pending` delivery row.

Whenever a subscriber is confirmed, resumed, changed or has a lesson recorded as sent, the row for their
next lesson is created (or moved) with its `due_at`, so "what is due" is one indexed range query on
`(status, due_at)` however many subscribers there are. The calendar arithmetic itself is `schedule.py`'s.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.lessons import Series
from newsletter.message import message_id_for
from newsletter.models import CONFIRMATION_WEEK, Delivery, Event, Subscriber
from newsletter.schedule import WEEKDAY_NAMES, Cadence, first_lesson_due, next_due

CONFIRMATION_SLUG = "confirmation"


def cadence_of(subscriber: Subscriber) -> Cadence:
    return Cadence(timezone=subscriber.timezone, weekday=subscriber.weekday, send_time=subscriber.send_time)


def describe_cadence(subscriber: Subscriber) -> str:
    """How the footer and pages say it: "Monday at 07:00 (Europe/Berlin)"."""
    return f"{WEEKDAY_NAMES[subscriber.weekday]} at {subscriber.send_time:%H:%M} ({subscriber.timezone})"


def record_event(
    session: Session, subscriber: Subscriber | None, kind: str, *, source: str, at: datetime, detail: str = ""
) -> None:
    session.add(
        Event(
            subscriber_id=subscriber.id if subscriber else None,
            kind=kind,
            at=at,
            source=source,
            week=subscriber.position if subscriber else None,
            detail=detail,
        )
    )


def _upsert_pending(
    session: Session, subscriber: Subscriber, week: int, slug: str, due: datetime, message_id: str
) -> Delivery:
    """Create or reset the row for (subscriber, week) as pending at `due`; a sent row is never reset."""
    row = session.scalar(select(Delivery).where(Delivery.subscriber_id == subscriber.id, Delivery.week == week))
    if row is None:
        row = Delivery(subscriber_id=subscriber.id, week=week)
        session.add(row)
    elif row.status in ("sent", "sending"):
        return row
    row.slug, row.slot_at, row.due_at, row.status = slug, due, due, "pending"
    row.attempts, row.error, row.smtp_reply = 0, None, None
    row.lease_owner = row.lease_until = row.smtp_started_at = None
    row.message_id = message_id
    return row


def cancel_pending(session: Session, subscriber: Subscriber) -> None:
    """Withdraw whatever is waiting for this subscriber (pause, unsubscribe, bounce)."""
    session.execute(
        update(Delivery)
        .where(Delivery.subscriber_id == subscriber.id, Delivery.status.in_(("pending", "held")))
        .values(status="cancelled", lease_owner=None, lease_until=None)
    )


def plan_confirmation(
    session: Session, settings: Settings, series: Series, subscriber: Subscriber, now: datetime
) -> Delivery:
    """Queue the double opt-in email, due at once; each request gets its own Message-ID.

    A confirmation already sent (or failed) is replaced by the new request; one still on the wire is left
    to finish, and the unique (subscriber, week) row then carries on as it is.
    """
    session.execute(
        delete(Delivery).where(
            Delivery.subscriber_id == subscriber.id,
            Delivery.week == CONFIRMATION_WEEK,
            Delivery.status.in_(("sent", "failed", "cancelled")),
        )
    )
    session.flush()
    requests = session.scalar(
        select(func.count()).select_from(Event).where(Event.subscriber_id == subscriber.id, Event.kind == "subscribed")
    )
    key = f"confirm{requests or 0}"
    message_id = message_id_for(settings, series.slug, subscriber.id, key)
    return _upsert_pending(session, subscriber, CONFIRMATION_WEEK, CONFIRMATION_SLUG, now, message_id)


def plan_next_lesson(
    session: Session,
    settings: Settings,
    series: Series,
    subscriber: Subscriber,
    *,
    now: datetime,
    after: datetime | None = None,
) -> Delivery | None:
    """Materialise the subscriber's next lesson; mark them completed when the course has no more.

    `after` is the instant the next slot must follow: the slot of the lesson just sent, or `now` after a
    confirmation, resume or change of day. The last actual send adds `min_gap`, so an outage never bursts.
    """
    session.flush()
    lesson = series.week(subscriber.position + 1)
    if lesson is None:
        subscriber.status = "completed"
        return None
    last_sent_at = session.scalar(
        select(func.max(Delivery.sent_at)).where(
            Delivery.subscriber_id == subscriber.id, Delivery.week > CONFIRMATION_WEEK, Delivery.status == "sent"
        )
    )
    cadence = cadence_of(subscriber)
    if subscriber.position == 0 and last_sent_at is None:
        due = first_lesson_due(cadence, after or now, settings.schedule.first_lesson)  # type: ignore[arg-type]
    else:
        due = next_due(cadence, after=after or now, last_sent_at=last_sent_at, min_gap=settings.schedule.min_gap)
    message_id = message_id_for(settings, series.slug, subscriber.id, f"w{lesson.week}")
    subscriber.status = "active"
    return _upsert_pending(session, subscriber, lesson.week, lesson.slug, due, message_id)


def replan(session: Session, settings: Settings, series: Series, subscriber: Subscriber, now: datetime) -> None:
    """Move the next lesson after a change of weekday, time or zone, or a resume."""
    session.execute(
        delete(Delivery).where(
            Delivery.subscriber_id == subscriber.id,
            Delivery.week > subscriber.position,
            Delivery.status.in_(("pending", "held", "cancelled")),
        )
    )
    plan_next_lesson(session, settings, series, subscriber, now=now, after=now)


def reconcile(session: Session, settings: Settings, series: Series, now: datetime) -> int:
    """Catch up what a tick must not miss: lessons appended for `completed` readers, and pauses that ended.

    Returns how many subscribers got a newly planned lesson.
    """
    planned = 0
    if series.weeks:
        waiting = session.scalars(
            select(Subscriber).where(Subscriber.status == "completed", Subscriber.position < series.weeks)
        )
        for subscriber in waiting:
            last_slot = session.scalar(
                select(func.max(Delivery.slot_at)).where(
                    Delivery.subscriber_id == subscriber.id, Delivery.status == "sent"
                )
            )
            plan_next_lesson(session, settings, series, subscriber, now=now, after=max(last_slot or now, now))
            planned += 1
    ended = session.scalars(
        select(Subscriber)
        .where(Subscriber.status == "paused", Subscriber.pause_until.is_not(None))
        .where(Subscriber.pause_until <= now)
    )
    for subscriber in ended:
        subscriber.paused_at = subscriber.pause_until = None
        record_event(session, subscriber, "resumed", source="schedule", at=now, detail="pause ended")
        replan(session, settings, series, subscriber, now)
        planned += 1
    return planned

"""Keep every subscriber's next email materialised as one `pending` delivery row.

Whenever a subscriber is confirmed, resumed, changed or has a lesson recorded as sent, the row for their
next lesson is created (or moved) with its `due_at`, so "what is due" is one indexed range query on
`(status, due_at)` however many subscribers there are. The calendar arithmetic itself is `schedule.py`'s.

Which lesson comes next and when (`next_lesson`) is decided in one place, and the row is written by one
statement (`put_pending`, an insert-or-reset on the unique (subscriber, week) pair). The ORM functions below
serve subscriber changes; `advance_after_delivery` is the send path's version of "position = week, plan the
next lesson", Core statements with no objects loaded, because it runs once per message sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import cast

from sqlalchemy import Connection, Executable, Table, and_, bindparam, case, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.lessons import Series
from newsletter.message import message_id_for
from newsletter.models import CONFIRMATION_WEEK, Delivery, Event, Subscriber
from newsletter.schedule import WEEKDAY_NAMES, Cadence, first_lesson_due, next_due

CONFIRMATION_SLUG = "confirmation"
RECEIVING_STATUSES = ("active", "completed")  # readers whose lessons go out
DELIVERIES = cast(Table, Delivery.__table__)
SUBSCRIBERS = cast(Table, Subscriber.__table__)


@dataclass(frozen=True)
class NextLesson:
    """The row that carries a subscriber's next lesson: which one, when it is due, its Message-ID."""

    week: int
    slug: str
    due_at: datetime
    message_id: str


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


def next_lesson(
    settings: Settings,
    series: Series,
    *,
    subscriber_id: int,
    position: int,
    cadence: Cadence,
    now: datetime,
    after: datetime | None,
    last_sent_at: datetime | None,
) -> NextLesson | None:
    """The lesson after `position` and when it is due; None when the series has no more.

    `after` is the instant the next slot must follow: the slot of the lesson just sent, or `now` after a
    confirmation, resume or change of day. The last actual send adds `min_gap`, so an outage never bursts.
    """
    lesson = series.week(position + 1)
    if lesson is None:
        return None
    if position == 0 and last_sent_at is None:
        due = first_lesson_due(cadence, after or now, settings.schedule.first_lesson)  # type: ignore[arg-type]
    else:
        due = next_due(cadence, after=after or now, last_sent_at=last_sent_at, min_gap=settings.schedule.min_gap)
    message_id = message_id_for(settings, series.slug, subscriber_id, f"w{lesson.week}")
    return NextLesson(week=lesson.week, slug=lesson.slug, due_at=due, message_id=message_id)


def put_pending(
    connection: Connection, subscriber_id: int, week: int, slug: str, due: datetime, message_id: str
) -> None:
    """Create or reset the row for (subscriber, week) as pending at `due`; a sent or sending row is left alone."""
    row = {"subscriber_id": subscriber_id, "week": week, "slug": slug, "due": due, "message_id": message_id}
    connection.execute(_put_pending_statement(connection.dialect.name), row)


@cache
def _put_pending_statement(dialect_name: str) -> Executable:
    # Built once per dialect with bound parameters (building it per call costs more than running it), and
    # without IN lists, which would be expanded anew on every execution.
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    reset = {
        "slug": bindparam("slug"),
        "slot_at": bindparam("due"),
        "due_at": bindparam("due"),
        "status": "pending",
        "attempts": 0,
        "error": None,
        "smtp_reply": None,
        "lease_owner": None,
        "lease_until": None,
        "smtp_started_at": None,
        "message_id": bindparam("message_id"),
    }
    statement = dialect.insert(DELIVERIES).values(
        subscriber_id=bindparam("subscriber_id"), week=bindparam("week"), **reset
    )
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=["subscriber_id", "week"],
        # ON CONFLICT's update skips Column.onupdate: take the inserted row's fresh updated_at instead.
        set_={name: statement.excluded[name] for name in (*reset, "updated_at")},
        where=and_(DELIVERIES.c.status != "sent", DELIVERIES.c.status != "sending"),
    )
    return upsert


def _upsert_pending(
    session: Session, subscriber: Subscriber, week: int, slug: str, due: datetime, message_id: str
) -> Delivery:
    """`put_pending`, then the row as an object of this session."""
    put_pending(session.connection(), subscriber.id, week, slug, due, message_id)
    found = select(Delivery).where(Delivery.subscriber_id == subscriber.id, Delivery.week == week)
    return session.scalars(found.execution_options(populate_existing=True)).one()


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

    Only for a reader who is receiving (or about to: a confirmation, a resume); the caller decides that.
    """
    session.flush()
    last_sent_at = session.scalar(
        select(func.max(Delivery.sent_at)).where(
            Delivery.subscriber_id == subscriber.id, Delivery.week > CONFIRMATION_WEEK, Delivery.status == "sent"
        )
    )
    planned = next_lesson(
        settings,
        series,
        subscriber_id=subscriber.id,
        position=subscriber.position,
        cadence=cadence_of(subscriber),
        now=now,
        after=after,
        last_sent_at=last_sent_at,
    )
    if planned is None:
        subscriber.status = "completed"
        return None
    subscriber.status = "active"
    return _upsert_pending(session, subscriber, planned.week, planned.slug, planned.due_at, planned.message_id)


def advance_after_delivery(
    connection: Connection,
    settings: Settings,
    series: Series,
    *,
    subscriber_id: int,
    week: int,
    after: datetime,
    now: datetime,
    last_sent_at: datetime,
) -> bool:
    """After `week` was delivered: clear the hard-bounce count, move the subscriber past it, plan the next lesson.

    What `plan_next_lesson` does for the send path, with Core statements; the caller knows `last_sent_at`
    (this delivery's time, or a later one). Only a subscriber not yet past `week` is moved (a late resend
    never moves anyone back), and the schedule used is the one that same UPDATE reads back, so a change of
    day made a moment ago counts. Returns False if nobody moved.
    """
    status = "active" if series.week(week + 1) else "completed"
    moved = connection.execute(_ADVANCE, {"subscriber": subscriber_id, "week": week, "new_status": status}).first()
    if moved is None:
        connection.execute(_CLEAR_HARD_BOUNCES, {"subscriber": subscriber_id})
        return False
    if moved.status != "active":
        return True  # finished, or paused / unsubscribed while this lesson was on the wire: nothing to plan
    planned = next_lesson(
        settings,
        series,
        subscriber_id=subscriber_id,
        position=week,
        cadence=Cadence(timezone=moved.timezone, weekday=moved.weekday, send_time=moved.send_time),
        now=now,
        after=after,
        last_sent_at=last_sent_at,
    )
    if planned is not None:
        put_pending(connection, subscriber_id, planned.week, planned.slug, planned.due_at, planned.message_id)
    return True


# Delivered mail proves the mailbox works: the count of consecutive hard bounces starts again. Only a
# reader still receiving changes status: someone who paused or unsubscribed while the lesson was on the
# wire keeps that status (the lesson still counts as theirs).
_ADVANCE = (
    update(SUBSCRIBERS)
    .where(SUBSCRIBERS.c.id == bindparam("subscriber"), SUBSCRIBERS.c.position < bindparam("week"))
    .values(
        position=bindparam("week"),
        status=case(
            (SUBSCRIBERS.c.status.in_(RECEIVING_STATUSES), bindparam("new_status")), else_=SUBSCRIBERS.c.status
        ),
        hard_bounces=0,
    )
    .returning(SUBSCRIBERS.c.timezone, SUBSCRIBERS.c.weekday, SUBSCRIBERS.c.send_time, SUBSCRIBERS.c.status)
)
_CLEAR_HARD_BOUNCES = (
    update(SUBSCRIBERS)
    .where(SUBSCRIBERS.c.id == bindparam("subscriber"), SUBSCRIBERS.c.hard_bounces != 0)
    .values(hard_bounces=0)
)


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
    # Most readers of a long-running course have completed it. Asking for the lowest position among them is
    # one lookup in an index on (status, position), where "status = completed AND position < weeks" makes
    # PostgreSQL's planner, which takes the two columns as independent, walk every completed reader.
    lowest = session.scalar(select(func.min(Subscriber.position)).where(Subscriber.status == "completed"))
    if series.weeks and lowest is not None and lowest < series.weeks:
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

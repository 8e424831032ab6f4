"""What the relay said, recorded: sent rows move their readers on and plan the next lesson, a batch at a time.

`record_sent_many` is the send path's common case, in three statements for the whole batch whatever its
size: mark the rows sent (guarded by the lease), move the readers past their lesson reading them back (one
statement per lesson in the batch), and write every next lesson with one insert-or-reset. A reader the
batch cannot plan (they had the next lesson already, out of order) goes through `waiting.plan_next`, which
asks the rule again. Retries and refusals are rarer and go one at a time. Every statement is guarded by `lease_owner`.

A reader moves only forward (a catch-up lesson or a late resend never moves them back), and the schedule
used is the one read back after the move, so a change of day made a moment ago counts. Someone who paused
or unsubscribed while the lesson was on the wire keeps that status (the lesson still counts as theirs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Executable,
    Integer,
    Text,
    Update,
    and_,
    bindparam,
    case,
    literal_column,
    null,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from newsletter.errors import PermanentSendError, TransientSendError
from newsletter.events import record_event
from newsletter.ledger.rows import execute_rows, rows_subquery
from newsletter.ledger.waiting import DELIVERIES, RECEIVING, SUBSCRIBERS, Gates, Reader, cancel_waiting, plan_next
from newsletter.ledger.wire import Claimed, retry_delay
from newsletter.lessons import Series
from newsletter.models import CONFIRMATION, UTCDateTime
from newsletter.planning import NextSend, Progress, next_send
from newsletter.schedule import Cadence

if TYPE_CHECKING:
    from newsletter.config import Settings


@dataclass(frozen=True)
class Passed:
    """One reader past one lesson: delivered (the mailbox works) or refused for good."""

    item: Claimed
    at: datetime
    delivered: bool


def record_sent_many(
    connection: Connection,
    settings: Settings,
    series: Series,
    gates: Gates,
    sent: list[tuple[Claimed, str, datetime]],
    owner: str,
) -> list[Claimed]:
    """Record accepted messages (claimed item, relay's reply, when): return the items recorded (still ours)."""
    ids = [item.delivery_id for item, _, _ in sent]
    rows = [{"delivery": i.delivery_id, "finished_at": at, "reply": reply} for i, reply, at in sent]
    if execute_rows(connection, _record_sent_statement, rows, owner=owner) != len(rows):
        # Some lease was lost (another sender took the row over): a sent row keeps the name of the sender
        # that recorded it, so the rows this statement wrote are the ones sent under our name.
        ours = set(
            connection.scalars(
                select(DELIVERIES.c.id).where(
                    DELIVERIES.c.id.in_(ids), DELIVERIES.c.status == "sent", DELIVERIES.c.lease_owner == owner
                )
            )
        )
        sent = [(item, reply, at) for item, reply, at in sent if item.delivery_id in ours]
    recorded = sent
    passed = [Passed(item, at, delivered=True) for item, _, at in recorded if item.lesson != CONFIRMATION]
    move_on(connection, settings, series, gates, passed)
    return [item for item, _, _ in recorded]


def move_on(connection: Connection, settings: Settings, series: Series, gates: Gates, passed: list[Passed]) -> None:
    """Advance each reader past their lesson and plan what comes next, for the whole batch at once."""
    if not passed:
        return
    readers: dict[int, Any] = {}
    groups: dict[tuple[str, bool], list[int]] = {}
    for p in passed:
        groups.setdefault((p.item.lesson, p.delivered), []).append(p.item.subscriber.id)
    for (lesson, delivered), ids in groups.items():
        # One statement per lesson moves the group on and reads each reader back (status, schedule).
        index = series.index(lesson)
        values = {"lesson": lesson, "at": -1 if index is None else index + 1, "ids": ids}
        readers.update((row.id, row) for row in connection.execute(_ADVANCE[delivered], values))
    plans: list[tuple[Passed, Reader, NextSend]] = []
    finished: list[int] = []
    for p in passed:
        row = readers[p.item.subscriber.id]
        if row.status not in RECEIVING:
            continue  # paused or left while the lesson was on the wire: nothing to plan
        reader = Reader(
            id=row.id,
            status=row.status,
            cadence=Cadence(timezone=row.timezone, weekday=row.weekday, send_time=row.send_time),
            progress=Progress(row.last_lesson, {p.item.lesson}),
            last_sent_at=p.at if p.delivered else None,
        )
        planned = next_send(
            settings,
            series,
            progress=reader.progress,
            cadence=reader.cadence,
            now=p.at,
            after=p.item.slot_at,
            last_sent_at=reader.last_sent_at,
        )
        if planned is None:
            finished.append(row.id)
        else:
            plans.append((p, reader, planned))
    written = _put_many(connection, gates, plans)
    for p, reader, planned in plans:
        if (reader.id, planned.lesson.slug) in written:
            if reader.status != "active":
                _set_status(connection, reader.id, "active")
            continue
        # They had that lesson already (received out of order): the rule, asked again with it counted.
        if plan_next(connection, settings, series, gates, reader, now=p.at, after=p.item.slot_at) is None:
            finished.append(reader.id)
        elif reader.status != "active":
            _set_status(connection, reader.id, "active")
    for subscriber_id in finished:
        if readers[subscriber_id].status == "active":
            _set_status(connection, subscriber_id, "completed")


def _put_many(
    connection: Connection, gates: Gates, plans: list[tuple[Passed, Reader, NextSend]]
) -> set[tuple[int, str]]:
    """Write every planned next lesson in one insert-or-reset; return the (subscriber, lesson) pairs written.

    The statement returns the rows it wrote, so a reader who had that lesson already (the insert-or-reset
    left their row alone) is simply missing: no second query, and no trust in an executemany's row count,
    which SQLAlchemy does not give for this statement on PostgreSQL (-1, so every batch used to ask again).
    """
    if not plans:
        return set()
    # One row per (reader, lesson), the last planned: one statement may not insert-or-reset a row twice.
    rows: dict[tuple[int, str], dict[str, object]] = {}
    for _, reader, planned in plans:
        gate = gates.get(planned.lesson.slug)
        rows[reader.id, planned.lesson.slug] = {
            "subscriber_id": reader.id,
            "lesson": planned.lesson.slug,
            "slot_at": planned.due_at,
            "due_at": planned.due_at,
            "status": "held" if gate else "pending",
            "hold": gate.reason if gate else None,
            "error": gate.detail if gate else None,
            "attempts": 0,
            "message_id": None,
        }
    written = connection.execute(_put_many_statement(connection.dialect.name), list(rows.values()))
    return {(row.subscriber_id, row.lesson) for row in written}


@cache
def _put_many_statement(dialect_name: str) -> Executable:
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(DELIVERIES)
    reset = ("slot_at", "due_at", "status", "hold", "error", "attempts", "message_id", "updated_at")
    values = {name: statement.excluded[name] for name in reset}
    values.update({name: null() for name in ("smtp_reply", "lease_owner", "lease_until", "smtp_started_at")})
    # Constants, not bound values, after VALUES: SQLAlchemy then sends a batch as one multi-row INSERT
    # (its "insertmanyvalues"); with a bound value there it would run one INSERT per row.
    kept = (DELIVERIES.c.status != literal_column(f"'{status}'") for status in ("sent", "sending", "failed"))
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=["subscriber_id", "lesson"], set_=values, where=and_(*kept)
    ).returning(DELIVERIES.c.subscriber_id, DELIVERIES.c.lesson)
    return upsert


def _set_status(connection: Connection, subscriber_id: int, status: str) -> None:
    connection.execute(update(SUBSCRIBERS).where(SUBSCRIBERS.c.id == subscriber_id).values(status=status))


def record_retry(
    connection: Connection,
    settings: Settings,
    series: Series,
    gates: Gates,
    item: Claimed,
    owner: str,
    error: TransientSendError,
    now: datetime,
    *,
    paused_until: datetime | None = None,
) -> str | None:
    """A temporary failure: try again after backoff, or, out of attempts, record it failed and move on.

    With `paused_until` (its domain asked us to slow down, `ledger.pacing`) the row waits at least that long.
    """
    row = connection.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id == item.delivery_id, DELIVERIES.c.lease_owner == owner)
        .values(error=str(error), smtp_reply=error.reply or None, lease_owner=None, lease_until=None)
        .returning(DELIVERIES.c.attempts)
    ).first()
    if row is None:
        return None
    delivery = DELIVERIES.c.id == item.delivery_id
    if row.attempts >= settings.delivery.max_attempts:
        connection.execute(update(DELIVERIES).where(delivery).values(status="failed"))
        if item.lesson != CONFIRMATION:
            move_on(connection, settings, series, gates, [Passed(item, now, delivered=False)])
        return "failed"
    due = now + retry_delay(settings.delivery.retry_base_seconds, row.attempts)
    if paused_until is not None:
        due = max(due, paused_until)
    connection.execute(update(DELIVERIES).where(delivery).values(status="pending", due_at=due))
    return "retry"


def record_failure(
    connection: Connection,
    settings: Settings,
    series: Series,
    gates: Gates,
    item: Claimed,
    owner: str,
    error: PermanentSendError,
    now: datetime,
) -> str | None:
    """The recipient was refused: failed; a repeat hard bounce suppresses them, else they move on."""
    failed = connection.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id == item.delivery_id, DELIVERIES.c.lease_owner == owner)
        .values(status="failed", error=str(error), smtp_reply=error.reply or None, lease_owner=None, lease_until=None)
    )
    if failed.rowcount != 1:
        return None
    reader = connection.execute(
        update(SUBSCRIBERS)
        .where(SUBSCRIBERS.c.id == item.subscriber.id)
        .values(hard_bounces=SUBSCRIBERS.c.hard_bounces + 1)
        .returning(SUBSCRIBERS.c.hard_bounces, SUBSCRIBERS.c.status, SUBSCRIBERS.c.last_lesson)
    ).one()
    if reader.hard_bounces >= settings.delivery.hard_bounce_limit and reader.status not in ("unsubscribed", "bounced"):
        _set_status(connection, item.subscriber.id, "bounced")
        cancel_waiting(connection, item.subscriber.id)
        detail = error.reply or str(error)
        subscriber_id, lesson = item.subscriber.id, reader.last_lesson
        record_event(connection, subscriber_id, "bounced", source="send", at=now, lesson=lesson, detail=detail)
    elif item.lesson != CONFIRMATION:
        move_on(connection, settings, series, gates, [Passed(item, now, delivered=False)])
    return "failed"


def _advance(*, clear_hard_bounces: bool) -> Update:
    ahead = SUBSCRIBERS.c.position < bindparam("at")
    values: dict[str, Any] = {
        "last_lesson": case((ahead, bindparam("lesson")), else_=SUBSCRIBERS.c.last_lesson),
        "position": case((ahead, bindparam("at")), else_=SUBSCRIBERS.c.position),
    }
    if clear_hard_bounces:
        values["hard_bounces"] = 0  # delivered mail proves the mailbox works: the count starts again
    return (
        update(SUBSCRIBERS)
        .where(SUBSCRIBERS.c.id.in_(bindparam("ids", expanding=True)))
        .values(**values)
        .returning(
            SUBSCRIBERS.c.id,
            SUBSCRIBERS.c.status,
            SUBSCRIBERS.c.last_lesson,
            SUBSCRIBERS.c.timezone,
            SUBSCRIBERS.c.weekday,
            SUBSCRIBERS.c.send_time,
        )
    )


# The send path's statements, built once with bound parameters: building one costs more than running it.
_ADVANCE = {True: _advance(clear_hard_bounces=True), False: _advance(clear_hard_bounces=False)}


@cache
def _record_sent_statement(size: int) -> Update:
    """Mark `size` rows sent, each with its own time and reply, in one statement (`ledger.rows`)."""
    landed = rows_subquery("landed", size, {"delivery": Integer(), "finished_at": UTCDateTime(), "reply": Text()})
    return (
        update(DELIVERIES)
        .where(DELIVERIES.c.id == landed.c.delivery, DELIVERIES.c.lease_owner == bindparam("owner"))
        .where(DELIVERIES.c.status == "sending")
        .values(status="sent", sent_at=landed.c.finished_at, smtp_reply=landed.c.reply, error=None, hold=None)
        .values(lease_until=None)  # lease_owner stays: which sender sent it (and how a batch knows its own rows)
    )

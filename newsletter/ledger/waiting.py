"""The row each reader waits on: planned by the one rule, written by one statement, held while it may not go.

`plan_next` asks `planning.next_send` which lesson comes next and when, and writes it with `put_waiting`,
an insert-or-reset on the unique (subscriber, lesson) pair that never touches a row already sent, on the
wire, or refused for good. If the reader turns out to have had that lesson (the caller did not know every
lesson they received), the rule is asked again with that lesson counted, so nobody gets a lesson twice.

A lesson that may not go out (a draft, one that fails the email checklist, a broken file) has a `Gate`;
its rows are written `held` with the gate's reason instead of `pending`, and `apply_gates` holds and
releases rows as gates come and go. Statements are Core and take a Connection, so the send path and the
ORM callers (`session.connection()`) share them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, time
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Executable,
    Integer,
    Select,
    Table,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from newsletter.lessons import Series, empty_editor_sections
from newsletter.message import message_id_for
from newsletter.models import (
    CONFIRMATION,
    GATE_HOLDS,
    Delivery,
    DeliveryStatus,
    Event,
    HoldReason,
    Subscriber,
    SubscriberStatus,
)
from newsletter.planning import NextSend, Progress, next_send
from newsletter.schedule import Cadence

if TYPE_CHECKING:
    from newsletter.config import Settings

DELIVERIES = cast(Table, Delivery.__table__)
SUBSCRIBERS = cast(Table, Subscriber.__table__)
RECEIVED: tuple[DeliveryStatus, ...] = ("sent", "failed")  # the reader has had it (or moved on from it)
WAITING: tuple[DeliveryStatus, ...] = ("pending", "held")
RECEIVING: tuple[SubscriberStatus, ...] = ("active", "completed")  # readers whose lessons go out


@dataclass(frozen=True)
class Gate:
    """Why every delivery of one lesson waits: a draft, a checklist failure, a broken file."""

    reason: HoldReason
    detail: str


Gates = Mapping[str, Gate]


def file_gates(series: Series, root: Path) -> dict[str, Gate]:
    """The gates a lesson's own file decides, read without rendering: a broken file, a draft, an editor's
    section left empty. (The email checklist's gate needs every email rendered: `checklist.course`.)"""
    gates: dict[str, Gate] = {}
    for lesson in series:
        if lesson.problem:
            gates[lesson.slug] = Gate("broken", strip_root(lesson.problem, root))
        elif lesson.draft:
            gates[lesson.slug] = Gate("draft", "draft = true in its front matter")
        elif empty := [heading for heading, _line in empty_editor_sections(lesson)]:
            gates[lesson.slug] = Gate("checklist", f"its {', '.join(repr(h) for h in empty)} section is empty")
    return gates


def strip_root(message: str, root: Path) -> str:
    """A message with the project's folder taken off the paths in it."""
    return message.replace(f"{root}/", "")


@dataclass(frozen=True)
class Reader:
    """What planning needs to know about one subscriber, loaded in bulk by `load_readers`."""

    id: int
    status: str
    cadence: Cadence
    progress: Progress
    last_sent_at: datetime | None = None
    last_slot_at: datetime | None = None


# Built once, the ids bound at each call: a statement built per call leaves reference cycles (its bound
# parameters) for the garbage collector, which a plan over a million readers would pile up between collections.
# On PostgreSQL the ids go as one array (`= ANY(:ids)`): an IN list of a thousand placeholders is a new
# query text for the driver to parse and the server to plan at every batch; the array's is one text, planned once.
# The history is summed up by the database, one row per reader: the lessons they received as one string, their
# latest send and slot. Returned row by row, the history was a row per lesson received, each with two
# datetimes to convert, and the largest part of `plan`'s time. The status is tested inside the aggregates, not
# in WHERE: given `status IN (…)`, SQLite (without ANALYZE statistics) walks the (status, due_at) index over
# every sent row of the ledger instead of the few rows per reader. Slugs never hold a comma (`SLUG_PATTERN`).
SLUG_SEPARATOR = ","


def _reader_statements(*, as_array: bool) -> tuple[Select[Any], Select[Any]]:
    """The two statements of `load_readers`: each reader's history summed up, then the readers."""

    def wanted(column: ColumnElement[int]) -> ColumnElement[bool]:
        if as_array:
            return column == any_(bindparam("ids", type_=postgresql.ARRAY(Integer)))
        return column.in_(bindparam("ids", expanding=True))

    def received(column: ColumnElement[Any]) -> ColumnElement[Any]:
        return case((DELIVERIES.c.status.in_(RECEIVED), column))

    histories = (
        select(
            DELIVERIES.c.subscriber_id,
            func.aggregate_strings(received(DELIVERIES.c.lesson), SLUG_SEPARATOR),
            func.max(received(DELIVERIES.c.sent_at)),
            func.max(received(DELIVERIES.c.slot_at)),
        )
        .where(wanted(DELIVERIES.c.subscriber_id), DELIVERIES.c.lesson != CONFIRMATION)
        .group_by(DELIVERIES.c.subscriber_id)
    )
    readers = select(
        SUBSCRIBERS.c.id,
        SUBSCRIBERS.c.status,
        SUBSCRIBERS.c.timezone,
        SUBSCRIBERS.c.weekday,
        SUBSCRIBERS.c.send_time,
        SUBSCRIBERS.c.last_lesson,
    ).where(wanted(SUBSCRIBERS.c.id))
    return histories, readers


_READER_STATEMENTS = {"postgresql": _reader_statements(as_array=True), "sqlite": _reader_statements(as_array=False)}
_NO_HISTORY: tuple[str, datetime | None, datetime | None] = ("", None, None)


def load_readers(connection: Connection, ids: Iterable[int]) -> dict[int, Reader]:
    """Readers with their progress: two queries however many ids there are (callers batch them)."""
    wanted = list(ids)
    if not wanted:
        return {}
    histories, readers_of = _READER_STATEMENTS[connection.dialect.name]
    history = {
        subscriber_id: (lessons or "", last_sent, last_slot)
        for subscriber_id, lessons, last_sent, last_slot in connection.execute(histories, {"ids": wanted})
    }
    readers = {}
    for row in connection.execute(readers_of, {"ids": wanted}):
        received, last_sent, last_slot = history.get(row.id, _NO_HISTORY)
        readers[row.id] = Reader(
            id=row.id,
            status=row.status,
            cadence=_cadence(row.timezone, row.weekday, row.send_time),
            progress=_progress(row.last_lesson, received),
            last_sent_at=last_sent,
            last_slot_at=last_slot,
        )
    return readers


# Readers share their cadences and their places in the course: a course has a few of each for any number of
# readers. Both are frozen, so one object serves them all, made and checked once instead of per reader.
@lru_cache(maxsize=4096)
def _cadence(timezone: str, weekday: int, send_time: time) -> Cadence:
    return Cadence(timezone=timezone, weekday=weekday, send_time=send_time)


@lru_cache(maxsize=4096)
def _progress(last_lesson: str | None, received: str) -> Progress:
    """A reader's progress from their last lesson and the lessons received, as `histories` joins them."""
    return Progress(last_lesson, frozenset(received.split(SLUG_SEPARATOR)) if received else frozenset())


def plan_next(
    connection: Connection,
    settings: Settings,
    series: Series,
    gates: Gates,
    reader: Reader,
    *,
    now: datetime,
    after: datetime | None = None,
) -> NextSend | None:
    """Write the reader's next lesson as their waiting row; None when the course has nothing more for them."""
    progress = reader.progress
    for _ in range(len(series) + 1):
        planned = next_send(
            settings,
            series,
            progress=progress,
            cadence=reader.cadence,
            now=now,
            after=after,
            last_sent_at=reader.last_sent_at,
        )
        if planned is None:
            return None
        if put_waiting(connection, reader.id, planned.lesson.slug, planned.due_at, gates.get(planned.lesson.slug)):
            return planned
        # They had it after all (a lesson received out of order): ask again with it counted.
        progress = Progress(progress.last_lesson, {*progress.received, planned.lesson.slug})
    return None


def put_waiting(
    connection: Connection,
    subscriber_id: int,
    lesson: str,
    due: datetime,
    gate: Gate | None,
    *,
    slot: datetime | None = None,
    message_id: str | None = None,
) -> bool:
    """Create or reset the (subscriber, lesson) row as waiting at `due`; False if that lesson was had already.

    `slot` is the calendar slot the schedule counts on from (default `due`); a lesson's Message-ID is
    fixed when it first goes on the wire, a confirmation's when it is requested.
    """
    row = {
        "subscriber_id": subscriber_id,
        "lesson": lesson,
        "due": due,
        "slot": slot or due,
        "status": "held" if gate else "pending",
        "hold": gate.reason if gate else None,
        "error": gate.detail if gate else None,
        "message_id": message_id,
    }
    return connection.execute(_put_waiting_statement(connection.dialect.name), row).first() is not None


@cache
def _put_waiting_statement(dialect_name: str) -> Executable:
    # Built once per dialect with bound parameters (building it per call costs more than running it), and
    # without IN lists, which would be expanded anew on every execution.
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    reset = {
        "slot_at": bindparam("slot"),
        "due_at": bindparam("due"),
        "status": bindparam("status"),
        "hold": bindparam("hold"),
        "error": bindparam("error"),
        "attempts": 0,
        "smtp_reply": None,
        "lease_owner": None,
        "lease_until": None,
        "smtp_started_at": None,
        "message_id": bindparam("message_id"),
    }
    statement = dialect.insert(DELIVERIES).values(
        subscriber_id=bindparam("subscriber_id"), lesson=bindparam("lesson"), **reset
    )
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=["subscriber_id", "lesson"],
        # ON CONFLICT's update skips Column.onupdate: take the inserted row's fresh updated_at instead.
        set_={name: statement.excluded[name] for name in (*reset, "updated_at")},
        where=and_(*(DELIVERIES.c.status != status for status in ("sent", "sending", "failed"))),
    ).returning(DELIVERIES.c.id)
    return upsert


def cancel_waiting(connection: Connection, subscriber_id: int) -> None:
    """Withdraw whatever is waiting for this subscriber (pause, unsubscribe, bounce)."""
    connection.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.subscriber_id == subscriber_id, DELIVERIES.c.status.in_(WAITING))
        .values(status="cancelled", hold=None, lease_owner=None, lease_until=None)
    )


def withdraw_waiting(connection: Connection, subscriber_id: int) -> None:
    """Remove the reader's waiting and cancelled lesson rows, before their next lesson is planned anew."""
    connection.execute(
        delete(DELIVERIES).where(
            DELIVERIES.c.subscriber_id == subscriber_id,
            DELIVERIES.c.lesson != CONFIRMATION,
            DELIVERIES.c.status.in_((*WAITING, "cancelled")),
        )
    )


def forget(connection: Connection, subscriber_id: int) -> None:
    """Delete every delivery of a subscriber being erased."""
    connection.execute(delete(DELIVERIES).where(DELIVERIES.c.subscriber_id == subscriber_id))


def plan_confirmation(
    connection: Connection, settings: Settings, series: Series, subscriber_id: int, now: datetime
) -> None:
    """Queue the double opt-in email, due at once; each request gets its own Message-ID.

    A confirmation already sent (or failed) is replaced by the new request; one still on the wire is left
    to finish, and the unique (subscriber, lesson) row then carries on as it is.
    """
    connection.execute(
        delete(DELIVERIES).where(
            DELIVERIES.c.subscriber_id == subscriber_id,
            DELIVERIES.c.lesson == CONFIRMATION,
            DELIVERIES.c.status.in_(("sent", "failed", "cancelled")),
        )
    )
    requests = connection.scalar(
        select(func.count())
        .select_from(Event.__table__)
        .where(Event.subscriber_id == subscriber_id, Event.kind == "subscribed")
    )
    message_id = message_id_for(settings, series.slug, subscriber_id, f"confirm{requests or 0}")
    put_waiting(connection, subscriber_id, CONFIRMATION, now, None, message_id=message_id)


def apply_gates(connection: Connection, gates: Gates) -> tuple[int, int]:
    """Hold the waiting rows of gated lessons, release the rest held by a gate; return (held, released)."""
    held = 0
    gate_held = and_(DELIVERIES.c.status == "held", DELIVERIES.c.hold.in_(GATE_HOLDS))
    for lesson, gate in gates.items():
        result = connection.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.lesson == lesson, or_(DELIVERIES.c.status == "pending", gate_held))
            .values(status="held", hold=gate.reason, error=gate.detail)
        )
        held += int(result.rowcount or 0)
    released = connection.execute(
        update(DELIVERIES)
        .where(gate_held, DELIVERIES.c.lesson.not_in(list(gates)))
        .values(status="pending", hold=None, error=None)
    )
    return held, int(released.rowcount or 0)

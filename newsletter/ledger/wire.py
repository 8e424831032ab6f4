"""The send path's changes to the ledger: claim, put on the wire, record what the relay said, give back.

Each function is one or two Core statements guarded by `lease_owner`, so a sender that lost its lease (it
was too slow, another took the row over) changes nothing. The sender (`dispatch/sender.py`) decides when
they run and commits; this module decides what each outcome means for the row and for the reader.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, partial
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Integer, String, Update, bindparam, case, exists, or_, select, update

from newsletter.ledger.rows import execute_rows, rows_subquery
from newsletter.ledger.waiting import DELIVERIES, RECEIVING, SUBSCRIBERS
from newsletter.models import CONFIRMATION, HoldReason, Subscriber, UTCDateTime

if TYPE_CHECKING:
    pass

MAX_RETRY_DELAY = timedelta(hours=6)
# What rendering needs to know about a subscriber (`Project.envelope`: links, greeting, schedule).
RENDERED_COLUMNS = ("email", "name", "timezone", "weekday", "send_time")


@dataclass(frozen=True)
class Claimed:
    """A claimed row and what sending and recording it need, loaded with its batch."""

    delivery_id: int
    lesson: str
    slot_at: datetime
    message_id: str | None
    subscriber: Subscriber  # a detached copy, only for rendering


def receiving_statuses(lesson: str) -> tuple[str, ...]:
    """The subscriber statuses a delivery of `lesson` may go to.

    A confirmation is for someone still pending; a lesson for a reader who is active, or who finished the
    course and has a failed lesson retried.
    """
    return ("pending",) if lesson == CONFIRMATION else RECEIVING


def may_receive(lesson: str, subscriber_status: str) -> bool:
    return subscriber_status in receiving_statuses(lesson)


def retry_delay(base_seconds: int, attempts: int) -> timedelta:
    """Exponential backoff with jitter: base·2^(attempts−1), capped, then scaled by a random 50–100 %."""
    delay = min(timedelta(seconds=base_seconds * 2 ** max(attempts - 1, 0)), MAX_RETRY_DELAY)
    return delay * random.uniform(0.5, 1.0)


def release_expired(connection: Connection, now: datetime) -> int:
    """Return rows whose sender died (lease expired) to `pending`; they keep their Message-ID."""
    result = connection.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.status == "sending", DELIVERIES.c.lease_until < now)
        .values(status="pending", lease_owner=None, lease_until=None)
    )
    return int(result.rowcount or 0)


def claim_due(
    connection: Connection, owner: str, now: datetime, lease: timedelta, limit: int, *, lesson: str | None = None
) -> list[int]:
    """Take up to `limit` due rows (of one `lesson` if given) in one statement; concurrent senders never share a row."""
    due = (
        select(DELIVERIES.c.id)
        .where(DELIVERIES.c.status == "pending", DELIVERIES.c.due_at <= now)
        .order_by(DELIVERIES.c.due_at)
        .limit(limit)
    )
    if lesson is not None:
        due = due.where(DELIVERIES.c.lesson == lesson)
    if connection.dialect.name == "postgresql":
        due_rows = due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
        ids = select(due_rows.c.id)
    else:
        ids = due.scalar_subquery()  # type: ignore[assignment]
    statement = (
        update(DELIVERIES)
        .where(DELIVERIES.c.id.in_(ids))
        .values(status="sending", lease_owner=owner, lease_until=now + lease)
        .returning(DELIVERIES.c.id)
    )
    return list(connection.scalars(statement))


def load_claimed(connection: Connection, ids: list[int]) -> list[Claimed]:
    """The claimed rows with their subscribers, in due order, in one query."""
    columns = [getattr(SUBSCRIBERS.c, name) for name in RENDERED_COLUMNS]
    query = (
        select(
            DELIVERIES.c.id,
            DELIVERIES.c.lesson,
            DELIVERIES.c.slot_at,
            DELIVERIES.c.message_id,
            SUBSCRIBERS.c.id.label("subscriber_id"),
            *columns,
        )
        .join(SUBSCRIBERS, SUBSCRIBERS.c.id == DELIVERIES.c.subscriber_id)
        .where(DELIVERIES.c.id.in_(ids))
        .order_by(DELIVERIES.c.due_at)
    )
    return [
        Claimed(
            delivery_id=row.id,
            lesson=row.lesson,
            slot_at=row.slot_at,
            message_id=row.message_id,
            subscriber=Subscriber(id=row.subscriber_id, **{name: getattr(row, name) for name in RENDERED_COLUMNS}),
        )
        for row in connection.execute(query)
    ]


def start_many(connection: Connection, started: list[tuple[Claimed, str]], owner: str, now: datetime) -> set[int]:
    """Mark rows on the wire, fixing each one's Message-ID; return the ids marked.

    A row is marked only while it is still this sender's and its reader still wants it (the reader may have
    paused or unsubscribed since the claim): one statement per kind of email for the whole batch.
    """
    marked: set[int] = set()
    for statuses in {receiving_statuses(item.lesson) for item, _ in started}:
        batch = [(item, mid) for item, mid in started if receiving_statuses(item.lesson) == statuses]
        rows = [{"delivery": item.delivery_id, "message_id": mid} for item, mid in batch]
        statement = partial(_mark_started_statement, statuses)
        if execute_rows(connection, statement, rows, owner=owner, started_at=now) == len(rows):
            marked.update(item.delivery_id for item, _ in batch)
            continue
        ids = [item.delivery_id for item, _ in batch]
        marked.update(
            connection.scalars(
                select(DELIVERIES.c.id).where(
                    DELIVERIES.c.id.in_(ids), DELIVERIES.c.lease_owner == owner, DELIVERIES.c.smtp_started_at == now
                )
            )
        )
    return marked


def why_not_started(connection: Connection, item: Claimed, owner: str) -> str | None:
    """After `start_many` left it out: None if the lease was lost, else "skipped" (the reader left; cancelled)."""
    row = connection.execute(
        select(DELIVERIES.c.lease_owner, DELIVERIES.c.status, SUBSCRIBERS.c.status.label("reader"))
        .join(SUBSCRIBERS, SUBSCRIBERS.c.id == DELIVERIES.c.subscriber_id)
        .where(DELIVERIES.c.id == item.delivery_id)
    ).first()
    if row is None or row.lease_owner != owner or row.status != "sending":
        return None
    connection.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id == item.delivery_id)
        .values(status="cancelled", lease_owner=None, lease_until=None)
    )
    return "skipped"


def record_held(connection: Connection, delivery_id: int, owner: str, reason: HoldReason, detail: str) -> bool:
    """Keep a row that cannot go out as it is until an operator acts (`newsletter retry`)."""
    held = {"delivery": delivery_id, "owner": owner, "reason": reason, "detail": detail}
    return bool(connection.execute(_RECORD_HELD, held).rowcount == 1)


def release_started(connection: Connection, delivery_id: int, owner: str) -> None:
    """The transport or the relay failed as a whole: give the row back, the attempt uncounted."""
    connection.execute(_RELEASE_STARTED, {"delivery": delivery_id, "owner": owner})


def release_unstarted(
    connection: Connection, delivery_ids: list[int], owner: str, *, due_at: datetime | None = None
) -> None:
    """Give back claimed rows that were never put on the wire (to wait until `due_at`, if given)."""
    if delivery_ids:
        waiting = {"due_at": due_at} if due_at is not None else {}
        connection.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id.in_(delivery_ids), DELIVERIES.c.lease_owner == owner)
            .where(DELIVERIES.c.status == "sending")
            .values(status="pending", lease_owner=None, lease_until=None, **waiting)
        )


# The send path's statements, built once with bound parameters: building one costs more than running it.
_RELEASE_STARTED = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id == bindparam("delivery"), DELIVERIES.c.lease_owner == bindparam("owner"))
    .where(DELIVERIES.c.status == "sending")
    .values(
        status="pending",
        lease_owner=None,
        lease_until=None,
        smtp_started_at=None,
        attempts=DELIVERIES.c.attempts - 1,
    )
)
_RECORD_HELD = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id == bindparam("delivery"), DELIVERIES.c.lease_owner == bindparam("owner"))
    .values(status="held", hold=bindparam("reason"), error=bindparam("detail"), lease_owner=None, lease_until=None)
)


@cache
def _mark_started_statement(statuses: tuple[str, ...], size: int) -> Update:
    """Mark `size` rows on the wire, each if still this sender's and its subscriber in one of `statuses`.

    One statement over the rows' values (`ledger.rows`), each with its own Message-ID.
    """
    # `or_` of equalities rather than IN: an IN list is expanded anew on every execution.
    status_ok = or_(*(SUBSCRIBERS.c.status == status for status in statuses))
    wanted = exists().where(SUBSCRIBERS.c.id == DELIVERIES.c.subscriber_id, status_ok)
    started = rows_subquery("started", size, {"delivery": Integer(), "message_id": String()})
    return (
        update(DELIVERIES)
        .where(DELIVERIES.c.id == started.c.delivery, DELIVERIES.c.lease_owner == bindparam("owner"))
        .where(DELIVERIES.c.status == "sending", wanted)
        .values(
            smtp_started_at=bindparam("started_at", type_=UTCDateTime()),
            attempts=DELIVERIES.c.attempts + 1,
            message_id=case((DELIVERIES.c.message_id.is_(None), started.c.message_id), else_=DELIVERIES.c.message_id),
        )
    )

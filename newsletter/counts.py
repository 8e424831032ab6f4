"""How many deliveries and subscribers each status holds, read from the counts the database keeps.

Triggers (migration 0007) add every change to `deliveries.lesson/status` and `subscribers.status` to
`delivery_counts` and `subscriber_counts` in the same transaction, so a count is exact at any snapshot and
costs the same at a thousand readers as at a million. A key's count is the sum of its rows ("shards"): one
on SQLite; on PostgreSQL also one per transaction since the last `fold`, which sums committed shards into
shard 0. The sender folds after each run; the readers are right whether or not it has.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, literal, select, text, union_all
from sqlalchemy.orm import Session

from newsletter.models import Delivery, DeliveryCount, SubscriberCount

FOLD_LOCK = 7261536  # the advisory lock of `fold` (db.py's migrator holds 7261535)
# What the funnel reads per lesson: each status's count, and how many pending rows are due by `now`.
LessonCounts = dict[str, dict[str, int]]


def subscribers_by_status(session: Session | Connection) -> dict[str, int]:
    rows = session.execute(select(SubscriberCount.status, func.sum(SubscriberCount.n)).group_by(SubscriberCount.status))
    return {status: int(count) for status, count in rows if count}


def deliveries_by_status(session: Session | Connection) -> dict[str, int]:
    rows = session.execute(select(DeliveryCount.status, func.sum(DeliveryCount.n)).group_by(DeliveryCount.status))
    return {status: int(count) for status, count in rows if count}


def deliveries_by_lesson(session: Session | Connection, now: datetime) -> LessonCounts:
    """{lesson: {status: count, …, "due": pending rows due by `now`}}, read in one statement (one snapshot).

    "due" is counted from the ledger's (status, due_at) index: it grows with the backlog, not with the ledger.
    """
    kept = select(DeliveryCount.lesson, DeliveryCount.status, func.sum(DeliveryCount.n).label("n")).group_by(
        DeliveryCount.lesson, DeliveryCount.status
    )
    due = (
        select(Delivery.lesson, literal("due").label("status"), func.count().label("n"))
        .where(Delivery.status == "pending", Delivery.due_at <= now)
        .group_by(Delivery.lesson)
    )
    found: LessonCounts = {}
    for lesson, status, count in session.execute(union_all(kept, due)):
        if count:
            found.setdefault(lesson, {})[status] = int(count)
    return found


def fold(connection: Connection) -> int:
    """Sum the committed per-transaction shards into shard 0 (PostgreSQL; nothing to do on SQLite); return the
    rows folded (0 also when another fold is under way). One statement per table: a shard is deleted and
    added to shard 0 at once, or left for the next fold."""
    if connection.dialect.name != "postgresql":
        return 0
    # One fold at a time, and none waits for another: two folds deleting the same shards in different orders
    # could deadlock, and what one leaves the next fold takes.
    if not connection.execute(text(f"SELECT pg_try_advisory_xact_lock({FOLD_LOCK})")).scalar():
        return 0
    folded = 0
    for table, columns in (("delivery_counts", "lesson, status"), ("subscriber_counts", "status")):
        result = connection.execute(
            text(
                f"WITH folded AS (DELETE FROM {table} WHERE shard <> 0 RETURNING {columns}, n), "
                f"summed AS (SELECT {columns}, sum(n) AS n, count(*) AS rows FROM folded GROUP BY {columns}), "
                f"added AS (INSERT INTO {table} ({columns}, shard, n) "
                f"SELECT {columns}, 0, n FROM summed ORDER BY {columns} "
                f"ON CONFLICT ({columns}, shard) DO UPDATE SET n = {table}.n + excluded.n) "
                "SELECT coalesce(sum(rows), 0) FROM summed"
            )
        )
        folded += int(result.scalar_one())
    return folded

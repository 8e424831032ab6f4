"""The ledger's questions and answers: what is due, claiming it, leases, backoff, and who may receive what.

Small pieces the sender (`sender.py`), the CLI (`send --dry-run`, the progress bar), the daemon and
`retry` share; none of them sends anything.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from newsletter.models import CONFIRMATION_WEEK, Delivery, Subscriber
from newsletter.planning import (
    RECEIVING_STATUSES,
)
from newsletter.project import Project

MAX_RETRY_DELAY = timedelta(hours=6)
Clock = Callable[[], datetime]


@dataclass
class SendSummary:
    sent: int = 0
    retry: int = 0
    failed: int = 0
    skipped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, outcome: str) -> None:
        with self._lock:
            setattr(self, outcome, getattr(self, outcome) + 1)

    @property
    def total(self) -> int:
        return self.sent + self.retry + self.failed + self.skipped

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "retry": self.retry, "failed": self.failed, "skipped": self.skipped}


@dataclass(frozen=True)
class DueDelivery:
    """A row `--dry-run` shows."""

    email: str
    week: int
    slug: str
    due_at: datetime


def receiving_statuses(week: int) -> tuple[str, ...]:
    """The subscriber statuses a delivery of `week` may go to.

    A confirmation is for someone still pending; a lesson for a reader who is active, or who finished the
    course and has a failed lesson retried.
    """
    return ("pending",) if week == CONFIRMATION_WEEK else RECEIVING_STATUSES


def may_receive(week: int, subscriber_status: str) -> bool:
    """Whether a delivery of `week` may go to a subscriber in that status."""
    return subscriber_status in receiving_statuses(week)


def clock_from(start: datetime | None) -> Clock:
    """The real clock, or one that starts at `start` and runs at real speed (for `--now` simulations)."""
    if start is None:
        return lambda: datetime.now(UTC)
    origin = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - origin)


def worker_name() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def retry_delay(base_seconds: int, attempts: int) -> timedelta:
    """Exponential backoff with jitter: base·2^(attempts−1), capped, then scaled by a random 50–100 %."""
    delay = min(timedelta(seconds=base_seconds * 2 ** max(attempts - 1, 0)), MAX_RETRY_DELAY)
    return delay * random.uniform(0.5, 1.0)


def release_expired_leases(project: Project, now: datetime) -> int:
    """Return rows whose sender died (lease expired) to `pending`; they keep their Message-ID."""
    with project.db.session() as session:
        result = session.execute(
            update(Delivery)
            .where(Delivery.status == "sending", Delivery.lease_until < now)
            .values(status="pending", lease_owner=None, lease_until=None)
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def claim_due_deliveries(session: Session, owner: str, now: datetime, lease: timedelta, limit: int) -> list[int]:
    """Take up to `limit` due rows for this sender in one statement; concurrent senders never share a row."""
    due = (
        select(Delivery.id)
        .where(Delivery.status == "pending", Delivery.due_at <= now)
        .order_by(Delivery.due_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        due_rows = due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
        ids = select(due_rows.c.id)
    else:
        ids = due.scalar_subquery()  # type: ignore[assignment]
    statement = (
        update(Delivery)
        .where(Delivery.id.in_(ids))
        .values(status="sending", lease_owner=owner, lease_until=now + lease)
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    return list(session.scalars(statement))


def list_due(project: Project, now: datetime, limit: int | None = None) -> list[DueDelivery]:
    """What a run at `now` would send, without claiming anything."""
    with project.db.reading() as session:
        query = (
            select(Subscriber.email, Delivery.week, Delivery.slug, Delivery.due_at)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.status == "pending", Delivery.due_at <= now)
            .order_by(Delivery.due_at)
            .limit(limit)
        )
        return [DueDelivery(*row) for row in session.execute(query)]


def count_due(project: Project, now: datetime) -> int:
    """How many deliveries are due at `now` (one indexed count; sizes the progress bar)."""
    with project.db.reading() as session:
        due = select(func.count()).select_from(Delivery).where(Delivery.status == "pending", Delivery.due_at <= now)
        return int(session.scalar(due) or 0)

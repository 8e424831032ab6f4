"""What a run needs around the ledger: its counts, its clock, its name, and what is due (for `--dry-run`)."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from newsletter.models import Delivery, Subscriber

if TYPE_CHECKING:
    from newsletter.ledger.course import CourseNote
    from newsletter.project import Project

Clock = Callable[[], datetime]
OUTCOMES = ("sent", "retry", "failed", "skipped")


@dataclass
class SendSummary:
    sent: int = 0
    retry: int = 0
    failed: int = 0
    skipped: int = 0
    course: CourseNote | None = None  # what the run found about the course: held lessons, a re-plan
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, outcome: str) -> None:
        with self._lock:
            setattr(self, outcome, getattr(self, outcome) + 1)

    @property
    def total(self) -> int:
        return self.sent + self.retry + self.failed + self.skipped

    def as_dict(self) -> dict[str, int]:
        return {outcome: getattr(self, outcome) for outcome in OUTCOMES}


@dataclass(frozen=True)
class DueDelivery:
    """A row `--dry-run` shows."""

    email: str
    lesson: str
    due_at: datetime


def clock_from(start: datetime | None) -> Clock:
    """The real clock, or one that starts at `start` and runs at real speed (for `--now` simulations)."""
    if start is None:
        return lambda: datetime.now(UTC)
    origin = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - origin)


def worker_name() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class DryRun:
    """What `send` would do at an instant: follow the course, then send these, holding those."""

    course: CourseNote
    due: list[DueDelivery]


def dry_run(project: Project, now: datetime, limit: int | None = None) -> DryRun:
    """What a run at `now` would do, exactly: the same reconcile (rolled back), then what it would claim."""
    from newsletter.ledger import wire
    from newsletter.ledger.course import reconcile

    with project.db.sessions() as session:
        transaction = session.begin()
        try:
            wire.release_expired(session.connection(), now)
            note = reconcile(session, project, now)
            query = (
                select(Subscriber.email, Delivery.lesson, Delivery.due_at)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Delivery.status == "pending", Delivery.due_at <= now)
                .order_by(Delivery.due_at)
                .limit(limit)
            )
            due = [DueDelivery(*row) for row in session.execute(query)]
        finally:
            transaction.rollback()
    return DryRun(note, due)


def count_due(project: Project, now: datetime) -> int:
    """How many deliveries are due at `now` (one indexed count; sizes the progress bar)."""
    with project.db.reading() as session:
        due = select(func.count()).select_from(Delivery).where(Delivery.status == "pending", Delivery.due_at <= now)
        return int(session.scalar(due) or 0)

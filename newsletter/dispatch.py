"""Send what is due: claim → render → send → record, one ledger row at a time.

The delivery ledger (`deliveries`) is both outbox and record:

    pending ──claim──▶ sending (lease_owner, lease_until) ──250──▶ sent  (+ the next lesson planned)
       ▲                  │  └──4xx / timeout / dropped──▶ pending again, due after backoff + jitter
       │                  ├──5xx──▶ failed (the reply kept; repeated hard bounces suppress the subscriber)
       │                  └──render error──▶ held (the error kept; `newsletter retry` releases it)
       └── sending whose lease expired (its sender died): released at the start of every run

Crash safety: `smtp_started_at` is committed before the message goes on the wire and each outcome is
committed on its own, guarded by `lease_owner`. A sender killed mid-run repeats at most the messages that
were on its open connections, and a repeat carries the same Message-ID. Concurrency: the claim is one
UPDATE … WHERE id IN (due rows) RETURNING, with `FOR UPDATE SKIP LOCKED` on PostgreSQL and `BEGIN
IMMEDIATE` on SQLite, so any number of senders split the work and never take the same row.

A 5xx for a lesson records it as failed and moves the subscriber on to the next lesson (a mailbox that
refuses one lesson would otherwise stall the course); `hard_bounce_limit` consecutive refusals suppress
the subscriber as `bounced`. `newsletter retry` can put a failed lesson back; a lesson sent late that way
never moves the subscriber's position backwards.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.errors import NewsletterError, PermanentSendError, TransientSendError, TransportError
from newsletter.message import envelope_for, message_id_for
from newsletter.models import CONFIRMATION_WEEK, Delivery, Subscriber
from newsletter.planning import cancel_pending, plan_next_lesson, reconcile, record_event
from newsletter.project import Project
from newsletter.transports import Transport

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


def may_receive(week: int, subscriber_status: str) -> bool:
    """Whether a delivery of `week` may go to a subscriber in that status.

    A confirmation is for someone still pending; a lesson for a reader who is active, or who finished the
    course and has a failed lesson retried.
    """
    return subscriber_status == "pending" if week == CONFIRMATION_WEEK else subscriber_status in ("active", "completed")


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


class Dispatcher:
    """One sender run: claims batches and sends them over the transport's connections."""

    def __init__(
        self,
        project: Project,
        transport: Transport,
        *,
        clock: Clock,
        owner: str | None = None,
        stop: threading.Event | None = None,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.project = project
        self.settings = project.settings
        self.transport = transport
        self.clock = clock
        self.owner = owner or worker_name()
        self.stop = stop or threading.Event()
        self.on_outcome = on_outcome
        self.summary = SendSummary()
        self._fatal: TransportError | None = None

    def run(self, limit: int | None = None) -> SendSummary:
        """Send everything due (up to `limit` messages), then return the counts."""
        now = self.clock()
        release_expired_leases(self.project, now)
        with self.project.db.session() as session:
            reconcile(session, self.settings, self.project.series, now)
        lease = timedelta(seconds=self.settings.delivery.lease_seconds)
        workers = max(1, self.settings.smtp.connections if self.settings.delivery.transport == "smtp" else 1)
        remaining = limit
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="send") as pool:
            while not self.stop.is_set() and self._fatal is None and (remaining is None or remaining > 0):
                size = (
                    self.settings.delivery.batch_size
                    if remaining is None
                    else min(remaining, self.settings.delivery.batch_size)
                )
                with self.project.db.session() as session:
                    claimed = claim_due_deliveries(session, self.owner, self.clock(), lease, size)
                if not claimed:
                    break
                if remaining is not None:
                    remaining -= len(claimed)
                list(pool.map(self._deliver, self._load(claimed)))
        if self._fatal is not None:
            raise self._fatal
        return self.summary

    def _load(self, ids: Sequence[int]) -> list[tuple[int, int, int]]:
        """(delivery id, subscriber id, week) of the claimed rows, in due order."""
        with self.project.db.session() as session:
            rows = session.execute(
                select(Delivery.id, Delivery.subscriber_id, Delivery.week)
                .where(Delivery.id.in_(ids))
                .order_by(Delivery.due_at)
            )
            return [(row.id, row.subscriber_id, row.week) for row in rows]

    def _deliver(self, item: tuple[int, int, int]) -> None:
        delivery_id, _, _ = item
        if self.stop.is_set() or self._fatal is not None:
            self._release(delivery_id)
            return
        try:
            outcome = self._deliver_one(delivery_id)
        except TransportError as error:
            self._fatal = self._fatal or error
            self._release(delivery_id)
            return
        if outcome:
            self.summary.add(outcome)
            if self.on_outcome:
                self.on_outcome(outcome)

    def _deliver_one(self, delivery_id: int) -> str | None:
        now = self.clock()
        with self.project.db.session() as session:
            delivery = session.get(Delivery, delivery_id, with_for_update=True)
            if delivery is None or delivery.lease_owner != self.owner or delivery.status != "sending":
                return None  # the lease was lost: another sender owns this row now
            subscriber = session.get(Subscriber, delivery.subscriber_id)
            if subscriber is None or not may_receive(delivery.week, subscriber.status):
                delivery.status, delivery.lease_owner, delivery.lease_until = "cancelled", None, None
                return "skipped"
            try:
                message = self.project.message(
                    subscriber, delivery.week, message_id=delivery.message_id, delivery_id=delivery.id, now=now
                )
                envelope = envelope_for(self.settings, message)
            except NewsletterError as error:
                delivery.status, delivery.error = "held", f"cannot render: {error}"
                delivery.lease_owner = delivery.lease_until = None
                return "skipped"
            delivery.smtp_started_at = now
            delivery.attempts += 1
        # The row now says "on the wire": a crash from here on may repeat this message, never lose it.
        try:
            reply = self.transport.send(envelope)
        except TransientSendError as error:
            return self._record_retry(delivery_id, error)
        except PermanentSendError as error:
            return self._record_failure(delivery_id, error)
        return self._record_sent(delivery_id, reply)

    def _guarded(self, session: Session, delivery_id: int) -> tuple[Delivery, Subscriber] | None:
        delivery = session.get(Delivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.lease_owner != self.owner:
            return None
        subscriber = session.get(Subscriber, delivery.subscriber_id)
        assert subscriber is not None
        return delivery, subscriber

    def _advance(self, session: Session, delivery: Delivery, subscriber: Subscriber, now: datetime) -> None:
        """Move the subscriber past this lesson and plan the next one; a late resend never moves them back."""
        if delivery.week > subscriber.position:
            subscriber.position = delivery.week
            plan_next_lesson(session, self.settings, self.project.series, subscriber, now=now, after=delivery.slot_at)

    def _record_sent(self, delivery_id: int, reply: str) -> str | None:
        now = self.clock()
        with self.project.db.session() as session:
            found = self._guarded(session, delivery_id)
            if found is None:
                return None
            delivery, subscriber = found
            delivery.status, delivery.sent_at, delivery.smtp_reply, delivery.error = "sent", now, reply, None
            delivery.lease_owner = delivery.lease_until = None
            subscriber.hard_bounces = 0
            if delivery.week > subscriber.position:
                subscriber.position = delivery.week
                plan_next_lesson(
                    session, self.settings, self.project.series, subscriber, now=now, after=delivery.slot_at
                )
        return "sent"

    def _record_retry(self, delivery_id: int, error: TransientSendError) -> str | None:
        now = self.clock()
        with self.project.db.session() as session:
            found = self._guarded(session, delivery_id)
            if found is None:
                return None
            delivery, _ = found
            delivery.error, delivery.smtp_reply = str(error), error.reply or None
            delivery.lease_owner = delivery.lease_until = None
            if delivery.attempts >= self.settings.delivery.max_attempts:
                delivery.status = "failed"
                return "failed"
            delivery.status = "pending"
            delivery.due_at = now + retry_delay(self.settings.delivery.retry_base_seconds, delivery.attempts)
        return "retry"

    def _record_failure(self, delivery_id: int, error: PermanentSendError) -> str | None:
        now = self.clock()
        with self.project.db.session() as session:
            found = self._guarded(session, delivery_id)
            if found is None:
                return None
            delivery, subscriber = found
            delivery.status, delivery.error, delivery.smtp_reply = "failed", str(error), error.reply or None
            delivery.lease_owner = delivery.lease_until = None
            subscriber.hard_bounces += 1
            if subscriber.hard_bounces >= self.settings.delivery.hard_bounce_limit:
                subscriber.status = "bounced"
                cancel_pending(session, subscriber)
                record_event(session, subscriber, "bounced", source="send", at=now, detail=error.reply or str(error))
            elif delivery.week > subscriber.position:
                subscriber.position = delivery.week
                plan_next_lesson(
                    session, self.settings, self.project.series, subscriber, now=now, after=delivery.slot_at
                )
        return "failed"

    def _release(self, delivery_id: int) -> None:
        """Give back a claimed row that was never put on the wire."""
        with self.project.db.session() as session:
            session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.lease_owner == self.owner, Delivery.status == "sending")
                .values(status="pending", lease_owner=None, lease_until=None)
            )


def send_due(
    project: Project,
    transport: Transport,
    *,
    now: datetime | None = None,
    limit: int | None = None,
    stop: threading.Event | None = None,
    on_outcome: Callable[[str], None] | None = None,
) -> SendSummary:
    """Send everything due at `now` (default: the real clock) over `transport`; one `newsletter send` run."""
    dispatcher = Dispatcher(project, transport, clock=clock_from(now), stop=stop, on_outcome=on_outcome)
    return dispatcher.run(limit)


def send_test(project: Project, transport: Transport, slug: str, to: str, *, name: str = "") -> str:
    """Send one lesson (or `confirmation`) to one address outside the ledger, subject prefixed [TEST]."""
    subscriber = project.sample_subscriber(email=to, name=name or "")
    week = CONFIRMATION_WEEK if slug == "confirmation" else project.series.lesson(slug).week
    message_id = message_id_for(project.settings, project.series.slug, 0, f"test-{uuid.uuid4().hex}")
    message = project.message(subscriber, week, message_id=message_id, subject_prefix="[TEST] ")
    return transport.send(envelope_for(project.settings, message))

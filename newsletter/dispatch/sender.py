"""One sender run: claim due rows, render, hand them to the SMTP connections, record each outcome."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, partial
from queue import SimpleQueue

from sqlalchemy import Connection, Update, bindparam, exists, or_, select, update
from sqlalchemy.orm import Session

from newsletter.dispatch.ledger import (
    Clock,
    SendSummary,
    claim_due_deliveries,
    clock_from,
    may_receive,
    receiving_statuses,
    release_expired_leases,
    retry_delay,
    worker_name,
)
from newsletter.errors import (
    NewsletterError,
    PermanentSendError,
    TransientSendError,
    TransportError,
    UncarriedSendError,
)
from newsletter.message import message_id_for
from newsletter.models import CONFIRMATION_WEEK, Delivery, Subscriber
from newsletter.planning import (
    DELIVERIES,
    RECEIVING_STATUSES,
    SUBSCRIBERS,
    advance_after_delivery,
    cancel_pending,
    plan_next_lesson,
    reconcile,
    record_event,
)
from newsletter.project import Project
from newsletter.transports import Envelope, Transport

log = logging.getLogger(__name__)
# What rendering needs to know about a subscriber (`Project.render`: the links, the greeting, the schedule).
_RENDERED_SUBSCRIBER_COLUMNS = ("email", "name", "timezone", "weekday", "send_time")


@dataclass(frozen=True)
class _Claimed:
    """A claimed row and what sending and recording it need, loaded with its batch."""

    delivery_id: int
    week: int
    slot_at: datetime
    message_id: str | None
    subscriber: Subscriber  # a detached copy, only for rendering


# A sent message's outcome, to be written by the commit that starts that connection's next message.
_Record = Callable[[Connection], "str | None"]


class Dispatcher:
    """One sender run: this thread does all database and rendering work, one thread per SMTP connection sends.

    The database thread commits once per message: that commit records the outcome of the message a
    connection just finished and marks the next one `smtp_started_at` before handing it to that connection.
    So each connection has at most one message that may have been delivered but is not yet recorded, and a
    crash repeats at most one message per connection. Keeping the database and the renderer on one thread
    also keeps Python's GIL from stretching SQLite's single-writer transactions.
    """

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
        self._lease = timedelta(seconds=self.settings.delivery.lease_seconds)
        self._claimed: deque[_Claimed] = deque()
        self._remaining: int | None = None
        self._nothing_due = False

    def run(self, limit: int | None = None) -> SendSummary:
        """Send everything due (up to `limit` messages), then return the counts."""
        now = self.clock()
        release_expired_leases(self.project, now)
        with self.project.db.session() as session:
            reconcile(session, self.settings, self.project.series, now)
        self._remaining = limit
        connections = max(1, self.settings.smtp.connections if self.settings.delivery.transport == "smtp" else 1)
        with ThreadPoolExecutor(max_workers=connections, thread_name_prefix="send") as pool:
            self._coordinate(pool, connections)
        # Stopped early: rows claimed but never started go back at once instead of waiting out their lease.
        self._release([item.delivery_id for item in self._claimed])
        if self._fatal is not None:
            raise self._fatal
        return self.summary

    def _coordinate(self, pool: ThreadPoolExecutor, connections: int) -> None:
        """Give each connection its next message as it comes free, until nothing is due and nothing is in flight."""
        finished: SimpleQueue[_Record | BaseException] = SimpleQueue()
        free: list[_Record | None] = [None] * connections  # a free connection, and how to record what it sent
        sending = 0
        with self.project.db.engine.connect() as database:
            while free or sending:
                if free:
                    record = free.pop()
                else:
                    done = finished.get()
                    sending -= 1
                    if isinstance(done, BaseException):
                        raise done  # a bug in a connection's thread
                    record = done
                item = self._next()
                if item is None:
                    if record is not None:
                        self._commit(database, record, None)
                    continue  # nothing more for this connection
                envelope = self._commit(database, record, item)
                if envelope is None:
                    free.append(None)  # that row did not go out; the connection takes the next one
                else:
                    # The row now says "on the wire": a crash from here on may repeat this message, never lose it.
                    pool.submit(self._send, item, envelope, finished)
                    sending += 1

    def _commit(self, database: Connection, record: _Record | None, item: _Claimed | None) -> Envelope | None:
        """One transaction: record a connection's last message, and start `item` (rendered first) if given."""
        now = self.clock()
        prepared = self._prepare(item, now) if item else None
        with database.begin():
            outcome = record(database) if record else None
            started = self._start(database, item, prepared, now) if item else None
        self._count(outcome)
        if isinstance(started, Envelope):
            return started
        self._count(started)
        return None

    def _next(self) -> _Claimed | None:
        """The next claimed row; a new batch is claimed when the last one is used up."""
        if self.stop.is_set() or self._fatal is not None:
            return None
        if not self._claimed and not self._nothing_due:
            self._claimed.extend(self._claim_batch())
            self._nothing_due = not self._claimed
        return self._claimed.popleft() if self._claimed else None

    def _claim_batch(self) -> list[_Claimed]:
        size = self.settings.delivery.batch_size
        if self._remaining is not None:
            size = min(size, self._remaining)
            if size <= 0:
                return []
        with self.project.db.session() as session:
            ids = claim_due_deliveries(session, self.owner, self.clock(), self._lease, size)
        if self._remaining is not None:
            self._remaining -= len(ids)
        return self._load(ids) if ids else []

    def _load(self, ids: Sequence[int]) -> list[_Claimed]:
        """The claimed rows with their subscribers, in due order, in one query."""
        query = (
            select(
                Delivery.id,
                Delivery.week,
                Delivery.slot_at,
                Delivery.message_id,
                Subscriber.id.label("subscriber_id"),
                *(getattr(Subscriber, name) for name in _RENDERED_SUBSCRIBER_COLUMNS),
            )
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.id.in_(ids))
            .order_by(Delivery.due_at)
        )
        with self.project.db.reading() as session:
            rows = session.execute(query).all()
        return [
            _Claimed(
                delivery_id=row.id,
                week=row.week,
                slot_at=row.slot_at,
                message_id=row.message_id,
                subscriber=Subscriber(
                    id=row.subscriber_id, **{name: getattr(row, name) for name in _RENDERED_SUBSCRIBER_COLUMNS}
                ),
            )
            for row in rows
        ]

    def _prepare(self, item: _Claimed, now: datetime) -> Envelope | NewsletterError:
        """Render and compose the message (no database work), or the error that stops it."""
        try:
            return self.project.envelope(
                item.subscriber, item.week, message_id=item.message_id, delivery_id=item.delivery_id, now=now
            )
        except NewsletterError as error:
            return error
        except Exception as error:  # one delivery's surprise must not stop everyone else's
            log.exception("delivery %d: rendering failed unexpectedly", item.delivery_id)
            return NewsletterError(f"{type(error).__name__}: {error}")

    def _start(
        self, database: Connection, item: _Claimed, prepared: Envelope | NewsletterError | None, now: datetime
    ) -> Envelope | str | None:
        """Mark the row on the wire and return the envelope to send; else "skipped", or None if the lease was lost."""
        if isinstance(prepared, Envelope):
            # One statement in the common case: still ours, and the subscriber still wants it.
            started = {"delivery": item.delivery_id, "owner": self.owner, "started_at": now}
            marked = database.execute(_mark_started_statement(receiving_statuses(item.week)), started)
            if marked.rowcount == 1:
                return prepared
        with Session(bind=database) as session:  # joins the open transaction
            return self._start_slowly(session, item, prepared, now)

    def _start_slowly(
        self, session: Session, item: _Claimed, prepared: Envelope | NewsletterError | None, now: datetime
    ) -> Envelope | str | None:
        """Why a row did not start: the lease was lost (None), the subscriber left or it cannot render."""
        delivery = session.get(Delivery, item.delivery_id, with_for_update=True)
        if delivery is None or delivery.lease_owner != self.owner or delivery.status != "sending":
            return None  # the lease was lost: another sender owns this row now
        subscriber = session.get(Subscriber, delivery.subscriber_id)
        if subscriber is None or not may_receive(delivery.week, subscriber.status):
            delivery.status, delivery.lease_owner, delivery.lease_until = "cancelled", None, None
            started: Envelope | str = "skipped"
        elif not isinstance(prepared, Envelope):
            delivery.status, delivery.error = "held", f"cannot render: {prepared}"
            delivery.lease_owner = delivery.lease_until = None
            started = "skipped"
        else:
            delivery.smtp_started_at = now  # the subscriber came back between the two statements
            delivery.attempts += 1
            started = prepared
        session.flush()
        return started

    def _send(self, item: _Claimed, envelope: Envelope, finished: SimpleQueue[_Record | BaseException]) -> None:
        """On a connection's thread: put one message on the wire and report how to record what happened."""
        try:
            finished.put(self._attempt(item, envelope))
        except BaseException as error:  # a bug: the database thread re-raises it
            finished.put(error)

    def _attempt(self, item: _Claimed, envelope: Envelope) -> _Record:
        try:
            reply = self.transport.send(envelope)
        except TransientSendError as error:
            return partial(self._record_retry, item.delivery_id, error, self.clock())
        except PermanentSendError as error:
            return partial(self._record_failure, item.delivery_id, error, self.clock())
        except UncarriedSendError as error:
            return partial(self._record_held, item.delivery_id, str(error))
        except TransportError as error:
            self._fatal = self._fatal or error
            return partial(self._release_started, item.delivery_id)
        except Exception as error:  # a bug or a surprise in one delivery: hold it, go on with the others
            log.exception("delivery %d: sending failed unexpectedly", item.delivery_id)
            return partial(self._record_held, item.delivery_id, f"unexpected error: {type(error).__name__}: {error}")
        return partial(self._record_sent, item, reply, self.clock())

    def _count(self, outcome: str | None) -> None:
        if outcome:
            self.summary.add(outcome)
            if self.on_outcome:
                self.on_outcome(outcome)

    def _record_sent(self, item: _Claimed, reply: str, now: datetime, database: Connection) -> str | None:
        """Sent: the row, the subscriber's position and their next lesson, without loading an object."""
        sent = {"delivery": item.delivery_id, "owner": self.owner, "finished_at": now, "reply": reply}
        if database.execute(_RECORD_SENT, sent).rowcount != 1:
            return None
        advance_after_delivery(
            database,
            self.settings,
            self.project.series,
            subscriber_id=item.subscriber.id,
            week=item.week,
            after=item.slot_at,
            now=now,
            last_sent_at=now,  # the lesson just delivered is the subscriber's latest
        )
        return "sent"

    def _guarded(self, session: Session, delivery_id: int) -> tuple[Delivery, Subscriber] | None:
        delivery = session.get(Delivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.lease_owner != self.owner:
            return None
        subscriber = session.get(Subscriber, delivery.subscriber_id)
        assert subscriber is not None
        return delivery, subscriber

    def _record_retry(
        self, delivery_id: int, error: TransientSendError, now: datetime, database: Connection
    ) -> str | None:
        with Session(bind=database) as session:  # joins the open transaction
            outcome = self._record_retry_in(session, delivery_id, error, now)
            session.flush()
        return outcome

    def _record_retry_in(
        self, session: Session, delivery_id: int, error: TransientSendError, now: datetime
    ) -> str | None:
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

    def _record_failure(
        self, delivery_id: int, error: PermanentSendError, now: datetime, database: Connection
    ) -> str | None:
        with Session(bind=database) as session:  # joins the open transaction
            outcome = self._record_failure_in(session, delivery_id, error, now)
            session.flush()
        return outcome

    def _record_failure_in(
        self, session: Session, delivery_id: int, error: PermanentSendError, now: datetime
    ) -> str | None:
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
            if subscriber.status in RECEIVING_STATUSES:  # not if they paused or left while it was on the wire
                plan_next_lesson(
                    session, self.settings, self.project.series, subscriber, now=now, after=delivery.slot_at
                )
        return "failed"

    def _release_started(self, delivery_id: int, database: Connection) -> None:
        """The transport or the relay failed as a whole: give the row back, the attempt uncounted."""
        database.execute(_RELEASE_STARTED, {"delivery": delivery_id, "owner": self.owner})

    def _record_held(self, delivery_id: int, reason: str, database: Connection) -> str | None:
        """Keep a row that cannot go out as it is until an operator acts (`newsletter retry`)."""
        held = {"delivery": delivery_id, "owner": self.owner, "reason": reason}
        return "skipped" if database.execute(_RECORD_HELD, held).rowcount == 1 else None

    def _release(self, delivery_ids: Sequence[int]) -> None:
        """Give back claimed rows that were never put on the wire."""
        if delivery_ids:
            with self.project.db.engine.begin() as database:
                self._release_rows(database, delivery_ids)

    def _release_rows(self, database: Connection, delivery_ids: Sequence[int]) -> None:
        database.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id.in_(delivery_ids), DELIVERIES.c.lease_owner == self.owner)
            .where(DELIVERIES.c.status == "sending")
            .values(status="pending", lease_owner=None, lease_until=None)
        )


# The send path's statements, built once with bound parameters: building one costs more than running it.
_RECORD_SENT = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id == bindparam("delivery"), DELIVERIES.c.lease_owner == bindparam("owner"))
    .values(
        status="sent",
        sent_at=bindparam("finished_at"),
        smtp_reply=bindparam("reply"),
        error=None,
        lease_owner=None,
        lease_until=None,
    )
)


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
    .values(status="held", error=bindparam("reason"), lease_owner=None, lease_until=None)
)


@cache
def _mark_started_statement(statuses: tuple[str, ...]) -> Update:
    """Mark a row on the wire if it is still this sender's and its subscriber is in one of `statuses`."""
    # `or_` of equalities rather than IN: an IN list is expanded anew on every execution.
    status_ok = or_(*(SUBSCRIBERS.c.status == status for status in statuses))
    wanted = exists().where(SUBSCRIBERS.c.id == DELIVERIES.c.subscriber_id, status_ok)
    return (
        update(DELIVERIES)
        .where(DELIVERIES.c.id == bindparam("delivery"), DELIVERIES.c.lease_owner == bindparam("owner"))
        .where(DELIVERIES.c.status == "sending", wanted)
        .values(smtp_started_at=bindparam("started_at"), attempts=DELIVERIES.c.attempts + 1)
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
    return transport.send(project.envelope(subscriber, week, message_id=message_id, subject_prefix="[TEST] "))

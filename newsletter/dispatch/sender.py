"""One sender run: claim due rows, render, hand them to the SMTP connections, record each outcome."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from queue import SimpleQueue

from sqlalchemy import Connection

from newsletter.dispatch.queue import Clock, SendSummary, clock_from, worker_name
from newsletter.errors import (
    NewsletterError,
    PermanentSendError,
    TransientSendError,
    TransportError,
    UncarriedSendError,
)
from newsletter.ledger import wire
from newsletter.ledger.course import reconcile
from newsletter.ledger.wire import Claimed
from newsletter.message import lesson_message_id, message_id_for
from newsletter.models import CONFIRMATION, HoldReason
from newsletter.project import Project
from newsletter.transports import Envelope, Transport

log = logging.getLogger(__name__)
# A sent message's outcome, to be written by the commit that starts that connection's next message.
_Record = Callable[[Connection], "str | None"]
# Told of every outcome as it is recorded: (outcome, the lesson's slug or "confirmation", the address).
OnOutcome = Callable[[str, str, str], None]


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
        on_outcome: OnOutcome | None = None,
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
        self._claimed: deque[Claimed] = deque()
        self._remaining: int | None = None
        self._nothing_due = False

    def run(self, limit: int | None = None) -> SendSummary:
        """Send everything due (up to `limit` messages), then return the counts."""
        now = self.clock()
        with self.project.db.engine.begin() as database:
            wire.release_expired(database, now)
        with self.project.db.session() as session:
            self.summary.course = reconcile(session, self.project, now)
        self._remaining = limit
        connections = max(1, self.settings.smtp.connections if self.settings.delivery.transport == "smtp" else 1)
        with ThreadPoolExecutor(max_workers=connections, thread_name_prefix="send") as pool:
            self._coordinate(pool, connections)
        # Stopped early: rows claimed but never started go back at once instead of waiting out their lease.
        with self.project.db.engine.begin() as database:
            wire.release_unstarted(database, [item.delivery_id for item in self._claimed], self.owner)
        if self._fatal is not None:
            raise self._fatal
        return self.summary

    def _coordinate(self, pool: ThreadPoolExecutor, connections: int) -> None:
        """Give each connection its next message as it comes free, until nothing is due and nothing is in flight."""
        finished: SimpleQueue[tuple[_Record, Claimed] | BaseException] = SimpleQueue()
        # A free connection, and how to record what it sent (with what it sent).
        free: list[tuple[_Record, Claimed] | None] = [None] * connections
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

    def _commit(
        self, database: Connection, record: tuple[_Record, Claimed] | None, item: Claimed | None
    ) -> Envelope | None:
        """One transaction: record a connection's last message, and start `item` (rendered first) if given."""
        now = self.clock()
        prepared = self._prepare(item, now) if item else None
        with database.begin():
            outcome = record[0](database) if record else None
            started = self._start(database, item, prepared, now) if item else None
        self._count(outcome, record[1] if record else None)
        if isinstance(started, Envelope):
            return started
        self._count(started, item)
        return None

    def _next(self) -> Claimed | None:
        """The next claimed row; a new batch is claimed when the last one is used up."""
        if self.stop.is_set() or self._fatal is not None:
            return None
        if not self._claimed and not self._nothing_due:
            self._claimed.extend(self._claim_batch())
            self._nothing_due = not self._claimed
        return self._claimed.popleft() if self._claimed else None

    def _claim_batch(self) -> list[Claimed]:
        size = self.settings.delivery.batch_size
        if self._remaining is not None:
            size = min(size, self._remaining)
            if size <= 0:
                return []
        with self.project.db.engine.begin() as database:
            ids = wire.claim_due(database, self.owner, self.clock(), self._lease, size)
            if self._remaining is not None:
                self._remaining -= len(ids)
            return wire.load_claimed(database, ids) if ids else []

    def _prepare(self, item: Claimed, now: datetime) -> Envelope | NewsletterError:
        """Render and compose the message (no database work), or the error that stops it."""
        try:
            return self.project.envelope(
                item.subscriber, item.lesson, message_id=self._message_id(item), delivery_id=item.delivery_id, now=now
            )
        except NewsletterError as error:
            return error
        except Exception as error:  # one delivery's surprise must not stop everyone else's
            log.exception("delivery %d: rendering failed unexpectedly", item.delivery_id)
            return NewsletterError(f"{type(error).__name__}: {error}")

    def _message_id(self, item: Claimed) -> str:
        return item.message_id or lesson_message_id(
            self.settings, self.project.series.slug, item.subscriber.id, item.lesson
        )

    def _start(
        self, database: Connection, item: Claimed, prepared: Envelope | NewsletterError | None, now: datetime
    ) -> Envelope | str | None:
        """Mark the row on the wire and return the envelope to send; else "skipped", or None if the lease was lost."""
        if not isinstance(prepared, Envelope):
            held = wire.record_held(database, item.delivery_id, self.owner, "render", f"cannot render: {prepared}")
            return "skipped" if held else None
        if wire.mark_started(database, item, self.owner, now, prepared.message_id):
            return prepared
        return wire.why_not_started(database, item, self.owner)

    def _send(
        self, item: Claimed, envelope: Envelope, finished: SimpleQueue[tuple[_Record, Claimed] | BaseException]
    ) -> None:
        """On a connection's thread: put one message on the wire and report how to record what happened."""
        try:
            finished.put((self._attempt(item, envelope), item))
        except BaseException as error:  # a bug: the database thread re-raises it
            finished.put(error)

    def _attempt(self, item: Claimed, envelope: Envelope) -> _Record:
        try:
            reply = self.transport.send(envelope)
        except TransientSendError as error:
            return partial(self._recorded, wire.record_retry, item, error, self.clock())
        except PermanentSendError as error:
            return partial(self._recorded, wire.record_failure, item, error, self.clock())
        except UncarriedSendError as error:
            return partial(self._held, item.delivery_id, "relay", str(error))
        except TransportError as error:
            self._fatal = self._fatal or error
            return partial(self._released, item.delivery_id)
        except Exception as error:  # a bug or a surprise in one delivery: hold it, go on with the others
            log.exception("delivery %d: sending failed unexpectedly", item.delivery_id)
            return partial(self._held, item.delivery_id, "error", f"unexpected error: {type(error).__name__}: {error}")
        return partial(self._sent, item, reply, self.clock())

    def _sent(self, item: Claimed, reply: str, now: datetime, database: Connection) -> str | None:
        project = self.project
        recorded = wire.record_sent(
            database, self.settings, project.series, project.gates, item, self.owner, now, reply
        )
        return "sent" if recorded else None

    def _recorded(
        self,
        record: Callable[..., str | None],
        item: Claimed,
        error: NewsletterError,
        now: datetime,
        database: Connection,
    ) -> str | None:
        project = self.project
        return record(database, self.settings, project.series, project.gates, item, self.owner, error, now)

    def _held(self, delivery_id: int, reason: HoldReason, detail: str, database: Connection) -> str | None:
        return "skipped" if wire.record_held(database, delivery_id, self.owner, reason, detail) else None

    def _released(self, delivery_id: int, database: Connection) -> None:
        wire.release_started(database, delivery_id, self.owner)

    def _count(self, outcome: str | None, item: Claimed | None) -> None:
        if outcome:
            self.summary.add(outcome)
            if self.on_outcome and item is not None:
                self.on_outcome(outcome, item.lesson, item.subscriber.email)


def send_due(
    project: Project,
    transport: Transport,
    *,
    now: datetime | None = None,
    limit: int | None = None,
    stop: threading.Event | None = None,
    on_outcome: OnOutcome | None = None,
) -> SendSummary:
    """Send everything due at `now` (default: the real clock) over `transport`; one `newsletter send` run."""
    dispatcher = Dispatcher(project, transport, clock=clock_from(now), stop=stop, on_outcome=on_outcome)
    return dispatcher.run(limit)


def send_test(project: Project, transport: Transport, slug: str, to: str, *, name: str = "") -> str:
    """Send one lesson (or `confirmation`) to one address outside the ledger, subject prefixed [TEST]."""
    subscriber = project.sample_subscriber(email=to, name=name or "")
    lesson = CONFIRMATION if slug == CONFIRMATION else project.series.lesson(slug).slug
    message_id = message_id_for(project.settings, project.series.slug, 0, f"test-{uuid.uuid4().hex}")
    return transport.send(project.envelope(subscriber, lesson, message_id=message_id, subject_prefix="[TEST] "))

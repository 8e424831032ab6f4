"""One sender run: claim due rows, render them, keep the SMTP connections busy, record outcomes in batches."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from newsletter.counts import fold
from newsletter.dispatch.queue import Clock, SendSummary, clock_from, worker_name
from newsletter.errors import (
    NewsletterError,
    PermanentSendError,
    TransientSendError,
    TransportError,
    UncarriedSendError,
)
from newsletter.ledger import outcomes, pacing, wire
from newsletter.ledger.course import reconcile
from newsletter.ledger.wire import Claimed
from newsletter.message import lesson_message_id, message_id_for
from newsletter.models import CONFIRMATION, HoldReason
from newsletter.project import Project
from newsletter.transports import Envelope, Transport

log = logging.getLogger(__name__)
# Messages a connection may have on the wire or queued for it at once: enough that one commit records
# half of them while the other half keeps the connection busy, few enough that a crash repeats little
# (see `Dispatcher`). Each commit costs the same few statements and one transaction whatever it records,
# so how many messages a commit covers is what sets a sender's speed on the database's side.
IN_FLIGHT_PER_CONNECTION = 8
GATHER_SECONDS = 0.025  # how long a commit may wait for half the window to land with it
# Told of every outcome as it is counted: (outcome, the lesson's slug or "confirmation", the address).
OnOutcome = Callable[[str, str, str], None]


@dataclass(frozen=True)
class _Flight:
    """A message marked on the wire, handed to a connection."""

    item: Claimed
    envelope: Envelope


@dataclass(frozen=True)
class _Landed:
    """What the relay said about one flight: `kind` sent, retry, failed, held or released."""

    flight: _Flight
    kind: str
    at: datetime
    reply: str = ""
    error: NewsletterError | None = None
    hold: HoldReason = "error"


class Dispatcher:
    """One sender run: this thread does all database and rendering work, one thread per SMTP connection sends.

    Up to `IN_FLIGHT_PER_CONNECTION × connections` messages (the window) are marked on the wire
    (`smtp_started_at` committed) ahead of the connections that send them. Once half the window has
    landed (or `GATHER_SECONDS` have passed since the first did), this thread records them and marks as
    many new ones, in one transaction, with batched statements: at speed one commit covers half the
    window, and the half still queued keeps every connection busy meanwhile. The crash contract follows:
    a sender killed at any moment repeats at most the messages marked but not yet recorded — never more
    than `IN_FLIGHT_PER_CONNECTION × connections` for the process — and a repeat carries the same Message-ID.
    Keeping the database and the renderer on one thread also keeps Python's GIL from stretching SQLite's
    single-writer transactions, and on SQLite each transaction waits its turn in `Database.in_line`, so
    senders running side by side hand the write lock on without sleeping.
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
        lesson: str | None = None,
    ) -> None:
        self.project = project
        self.lesson = lesson
        self.settings = project.settings
        self.transport = transport
        self.clock = clock
        self.owner = owner or worker_name()
        self.stop = stop or threading.Event()
        self.on_outcome = on_outcome
        self.summary = SendSummary()
        self.connections = max(1, self.settings.smtp.connections if self.settings.delivery.transport == "smtp" else 1)
        self.window = IN_FLIGHT_PER_CONNECTION * self.connections
        self.half_window = max(1, self.window // 2)
        self._fatal: TransportError | None = None
        self._lease = timedelta(seconds=self.settings.delivery.lease_seconds)
        self._claimed: deque[Claimed] = deque()
        self._pauses = pacing.DomainPauses(self.settings, self.owner)
        self._remaining: int | None = None
        self._nothing_due = False
        self._work: queue.SimpleQueue[_Flight | None] = queue.SimpleQueue()
        self._landed: queue.SimpleQueue[_Landed | BaseException] = queue.SimpleQueue()

    def run(self, limit: int | None = None) -> SendSummary:
        """Send everything due (up to `limit` messages), then return the counts."""
        now = self.clock()
        db = self.project.db
        with db.in_line(), db.engine.begin() as database:
            wire.release_expired(database, now)
        with self.project.db.session() as session:
            self.summary.course = reconcile(session, self.project, now)
        self._remaining = limit
        workers = [
            threading.Thread(target=self._connection, name=f"send-{n}", daemon=True) for n in range(self.connections)
        ]
        for worker in workers:
            worker.start()
        try:
            with self.project.db.engine.connect() as database:
                self._coordinate(database)
        finally:
            for _ in workers:
                self._work.put(None)
            for worker in workers:
                worker.join()
        # Stopped early: rows claimed but never started go back at once instead of waiting out their lease.
        # And the run's share of the counts the database keeps is folded (PostgreSQL: `counts.fold`).
        with db.in_line(), db.engine.begin() as database:
            wire.release_unstarted(database, [item.delivery_id for item in self._claimed], self.owner)
            fold(database)
        if self._fatal is not None:
            raise self._fatal
        return self.summary

    def _coordinate(self, database: Connection) -> None:
        """Record what landed and start what fits in the window, one transaction at a time, until all is done."""
        in_flight = 0
        while True:
            landed = self._drain(block=in_flight >= self.window, enough=min(in_flight, self.half_window))
            starting = self._take(self.window - in_flight + len(landed))
            if not landed and not starting:
                if in_flight == 0:
                    return
                landed = self._drain(block=True, enough=in_flight)
            flights = self._commit(database, landed, starting)
            for flight in flights:
                self._work.put(flight)
            in_flight += len(flights) - len(landed)

    def _drain(self, *, block: bool, enough: int) -> list[_Landed]:
        """Everything that has landed; with `block`, wait for one, then up to `GATHER_SECONDS` for `enough`.

        The wait lets one commit cover many messages: the connections have the rest of the window queued
        meanwhile, so it costs them nothing.
        """
        found: list[_Landed] = []
        deadline = time.monotonic() + GATHER_SECONDS
        while True:
            wait = (not found) if block else False
            remaining = deadline - time.monotonic()
            gather = block and bool(found) and len(found) < enough and remaining > 0
            try:
                landed = self._landed.get(block=wait or gather, timeout=remaining if gather else None)
            except queue.Empty:
                return found
            if isinstance(landed, BaseException):
                raise landed  # a bug in a connection's thread
            found.append(landed)

    def _commit(self, database: Connection, landed: list[_Landed], starting: list[Claimed]) -> list[_Flight]:
        """One transaction: record what landed, then mark `starting` on the wire (rendered first)."""
        now = self.clock()
        prepared = [(item, self._prepare(item, now)) for item in starting]
        with self.project.db.in_line(), database.begin():
            counts = self._record(database, landed)
            flights, skipped = self._start(database, prepared, now)
        for outcome, item in counts:
            self._count(outcome, item)
        for item in skipped:
            self._count("skipped", item)
        return flights

    def _take(self, room: int) -> list[Claimed]:
        """Up to `room` claimed rows; a new batch is claimed when the last one is used up."""
        taken: list[Claimed] = []
        while len(taken) < room and not self.stop.is_set() and self._fatal is None:
            if not self._claimed:
                if self._nothing_due:
                    break
                self._claimed.extend(self._claim_batch())
                self._nothing_due = not self._claimed
                continue
            taken.append(self._claimed.popleft())
        return taken

    def _claim_batch(self) -> list[Claimed]:
        size = self.settings.delivery.batch_size
        if self._remaining is not None:
            size = min(size, self._remaining)
            if size <= 0:
                return []
        now = self.clock()
        db = self.project.db
        with db.in_line(), db.engine.begin() as database:
            ids = wire.claim_due(database, self.owner, now, self._lease, size, lesson=self.lesson)
        if self._remaining is not None:
            self._remaining -= len(ids)
        if not ids:
            return []
        # The rows are ours until the lease ends, so loading them is a read: the other senders need not wait
        # for it (on SQLite, claiming and loading inside the lock were a sixth of the time a sender held it,
        # most of that the load).
        with db.reading() as session:
            claimed = wire.load_claimed(session.connection(), ids)
            paused = self._pauses.read(session.connection(), now)
        if not paused:
            return claimed
        with db.in_line(), db.engine.begin() as database:
            return self._pauses.passing(database, claimed, paused)

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
        series = self.project.series
        return item.message_id or lesson_message_id(self.settings, series.slug, item.subscriber.id, item.lesson)

    def _start(
        self, database: Connection, prepared: list[tuple[Claimed, Envelope | NewsletterError]], now: datetime
    ) -> tuple[list[_Flight], list[Claimed]]:
        """Mark the rows on the wire; return the flights to send and the rows skipped."""
        skipped: list[Claimed] = []
        ready = [(item, envelope) for item, envelope in prepared if isinstance(envelope, Envelope)]
        for item, error in prepared:
            if not isinstance(error, Envelope) and wire.record_held(
                database, item.delivery_id, self.owner, "render", f"cannot render: {error}"
            ):
                skipped.append(item)
        marked = wire.start_many(database, [(item, envelope.message_id) for item, envelope in ready], self.owner, now)
        flights = []
        for item, envelope in ready:
            if item.delivery_id in marked:
                flights.append(_Flight(item, envelope))
            elif wire.why_not_started(database, item, self.owner) == "skipped":
                skipped.append(item)
        return flights, skipped

    def _record(self, database: Connection, landed: list[_Landed]) -> list[tuple[str, Claimed]]:
        """Write each outcome; the sent ones as one batch. Returns the outcomes to count, with their rows."""
        settings, series, gates, owner = self.settings, self.project.series, self.project.gates, self.owner
        counts: list[tuple[str | None, Claimed]] = []
        sent = [(done.flight.item, done.reply, done.at) for done in landed if done.kind == "sent"]
        if sent:
            counts += [
                ("sent", item) for item in outcomes.record_sent_many(database, settings, series, gates, sent, owner)
            ]
            self._pauses.clear_recovered(database, sent)
        for done in landed:
            item, error = done.flight.item, done.error
            if done.kind == "retry" and isinstance(error, TransientSendError):
                paused = (
                    self._pauses.pause(database, item, error, done.at, self._claimed)
                    if pacing.is_throttle(error)
                    else None
                )
                outcome = outcomes.record_retry(
                    database, settings, series, gates, item, owner, error, done.at, paused_until=paused
                )
                counts.append((outcome, item))
            elif done.kind == "failed" and isinstance(error, PermanentSendError):
                outcome = outcomes.record_failure(database, settings, series, gates, item, owner, error, done.at)
                counts.append((outcome, item))
            elif done.kind == "held":
                held = wire.record_held(database, item.delivery_id, owner, done.hold, str(error))
                counts.append(("skipped" if held else None, item))
            elif done.kind == "released":
                wire.release_started(database, item.delivery_id, owner)
        return [(outcome, item) for outcome, item in counts if outcome]

    def _connection(self) -> None:
        """One connection's thread: send what it is given, report how each landed, until told to stop."""
        while (flight := self._work.get()) is not None:
            try:
                self._landed.put(self._attempt(flight))
            except BaseException as error:  # a bug: the database thread re-raises it
                self._landed.put(error)

    def _attempt(self, flight: _Flight) -> _Landed:
        if self._fatal is not None or self.stop.is_set():
            return _Landed(flight, "released", self.clock())  # stopping: what is not on the wire yet stays unsent
        try:
            reply = self.transport.send(flight.envelope)
        except TransientSendError as error:
            return _Landed(flight, "retry", self.clock(), error=error)
        except PermanentSendError as error:
            return _Landed(flight, "failed", self.clock(), error=error)
        except UncarriedSendError as error:
            return _Landed(flight, "held", self.clock(), error=error, hold="relay")
        except TransportError as error:
            self._fatal = self._fatal or error
            return _Landed(flight, "released", self.clock())
        except Exception as error:  # a bug or a surprise in one delivery: hold it, go on with the others
            log.exception("delivery %d: sending failed unexpectedly", flight.item.delivery_id)
            surprise = NewsletterError(f"unexpected error: {type(error).__name__}: {error}")
            return _Landed(flight, "held", self.clock(), error=surprise, hold="error")
        return _Landed(flight, "sent", self.clock(), reply=reply)

    def _count(self, outcome: str, item: Claimed) -> None:
        self.summary.add(outcome)
        if self.on_outcome:
            self.on_outcome(outcome, item.lesson, item.subscriber.email)


def send_due(
    project: Project,
    transport: Transport,
    *,
    now: datetime | None = None,
    limit: int | None = None,
    stop: threading.Event | None = None,
    on_outcome: OnOutcome | None = None,
    lesson: str | None = None,
) -> SendSummary:
    """Send everything due at `now` (default: the real clock) over `transport`; one `newsletter send` run.

    `lesson` sends only the due deliveries of that lesson (`newsletter serve` sends confirmations).
    """
    dispatcher = Dispatcher(project, transport, clock=clock_from(now), stop=stop, on_outcome=on_outcome, lesson=lesson)
    return dispatcher.run(limit)


def send_test(project: Project, transport: Transport, slug: str, to: str, *, name: str = "") -> str:
    """Send one lesson (or `confirmation`) to one address outside the ledger, subject prefixed [TEST]."""
    subscriber = project.sample_subscriber(email=to, name=name or "")
    lesson = CONFIRMATION if slug == CONFIRMATION else project.series.lesson(slug).slug
    message_id = message_id_for(project.settings, project.series.slug, 0, f"test-{uuid.uuid4().hex}")
    return transport.send(project.envelope(subscriber, lesson, message_id=message_id, subject_prefix="[TEST] "))

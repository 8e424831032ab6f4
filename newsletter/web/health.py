"""`GET /healthz` and `GET /metrics`: is this process well, and what the ledger and the sender are doing.

`/healthz` answers 200 with status "ok", or 503 with status "degraded" and the problems in words: the
database does not answer within `PROBE_SECONDS` (with a class of fault such as "connection refused", never
the driver's message, which names hosts and ports), the last dispatch tick failed, or nothing has happened
for several tick intervals. A process that serves pages without ticking (`newsletter serve`) is judged on the
database only. `/metrics` is the Prometheus text format: this process's counters, and the ledger gauges from
the last reading of the database (see `LedgerReadings`: at most `LEDGER_MAX_AGE` old, read off the request);
when the database does not answer, the counters are still served.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from newsletter.errors import NewsletterError
from newsletter.metrics import CONTENT_TYPE, LedgerGauges, ProcessMetrics, exposition
from newsletter.operations import ledger_gauges
from newsletter.project import Project

NO_STORE = {"Cache-Control": "no-store"}
# How long /healthz waits for the database's answer to its probe before it says "timed out". Load balancers
# give a health check a few seconds (Kubernetes 1 s by default): an answer must come within theirs.
PROBE_SECONDS = 2.0
# How old the ledger gauges of a scrape may be before the scrape starts a fresh reading (for the next one).
LEDGER_MAX_AGE = timedelta(seconds=10)
# What a driver's message says, as a class of fault: its own words name hosts, ports, users and files.
_FAULT_CLASSES = (
    (re.compile(r"refused", re.IGNORECASE), "connection refused"),
    (re.compile(r"timed? ?out|timeout", re.IGNORECASE), "timed out"),
    (re.compile(r"password|authentication|permission denied for|not authorized", re.IGNORECASE), "login refused"),
    (re.compile(r"could not translate host|name or service not known|nodename", re.IGNORECASE), "unknown host"),
    (re.compile(r"database .* does not exist", re.IGNORECASE), "no such database"),
    (re.compile(r"shutting down|starting up|recovery mode|terminating connection", re.IGNORECASE), "restarting"),
    (re.compile(r"locked|busy", re.IGNORECASE), "locked by another process"),
    (re.compile(r"read-?only", re.IGNORECASE), "read-only"),
    (re.compile(r"disk.*full|no space", re.IGNORECASE), "disk full"),
    (re.compile(r"unable to open|no such file|is a directory", re.IGNORECASE), "cannot open the file"),
    (re.compile(r"closed|lost|broken pipe|reset by peer|server closed", re.IGNORECASE), "connection lost"),
)


# Where a server is, as drivers and relays write it in their messages: hosts, addresses, ports, sockets.
_WHERE = re.compile(
    r'(?:server at|socket|host|hostaddr)[ =]"?[^\s",)]+"?'
    r"|\bport \d+"
    r"|\[[0-9A-Fa-f:.]+\](?::\d+)?"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"
    r"|\b(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+):\d{2,5}\b",
    re.IGNORECASE,
)


def without_addresses(text: str) -> str:
    """The text with every host, address and port in it replaced by "…"."""
    return _WHERE.sub("…", text)


def fault_class(error: BaseException) -> str:
    """A database error as a short reason that names no host, port, user or file."""
    text = f"{error} {getattr(error, 'orig', '') or ''}"
    for pattern, reason in _FAULT_CLASSES:
        if pattern.search(text):
            return reason
    orig = getattr(error, "orig", None)
    return type(orig if isinstance(orig, BaseException) else error).__name__


class DatabaseProbe:
    """`_database_problem` in a thread of its own, waited for at most `timeout` seconds.

    A database that hangs (a server that takes the connection and never answers, a network that drops its
    packets) would hang every health check with it, each holding one of the web app's worker threads until
    the driver gives up. Instead /healthz answers "timed out" at `timeout`, and while a probe is still
    waiting, later checks wait for that same probe: a hung database holds one thread, not one per check.
    """

    def __init__(self, project: Project, timeout: float = PROBE_SECONDS) -> None:
        self._project = project
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pending: Future[str | None] | None = None

    def problem(self) -> str | None:
        """What is wrong with the database, or None: the probe's answer, or "timed out" once it is late."""
        with self._lock:
            pending = self._pending
            if pending is None:
                pending = self._pending = Future()
                threading.Thread(target=self._run, args=(pending,), name="database-probe", daemon=True).start()
        try:
            return pending.result(timeout=self.timeout)
        except TimeoutError:
            return f"the database does not answer (timed out after {self.timeout:g} s)"

    def _run(self, pending: Future[str | None]) -> None:
        problem = _database_problem(self._project)
        with self._lock:
            self._pending = None
        pending.set_result(problem)


def _database_problem(project: Project) -> str | None:
    """Ask the database for `SELECT 1`; return what went wrong, or None."""
    try:
        # A raw DB-API connection runs the probe outside a transaction: on SQLite a session would take the
        # write lock (BEGIN IMMEDIATE) and a probe must not queue behind a sender's writes.
        connection = project.db.engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            cursor.close()
        finally:
            connection.close()
    except Exception as error:  # the driver's own error classes differ by backend; any failure means "down"
        return f"the database does not answer ({fault_class(error)})"
    return None


@dataclass(frozen=True)
class LedgerReading:
    """The ledger gauges as one reading found them, the moment it was asked for, and how long it took."""

    gauges: LedgerGauges
    at: datetime
    seconds: float


class LedgerReadings:
    """The ledger gauges for `/metrics`: one reading of the database at a time, reused for `LEDGER_MAX_AGE`.

    The reading is cheap (the counts the database keeps, `newsletter.counts`, and the oldest due row: 6 ms
    at a million readers on SQLite), but a database that stalls (locked, restarting, a full disk) must not
    stall every scrape, nor several scrapers pile readings onto it. So the first scrape reads; later ones
    get the last reading at once, and one older than `max_age` starts a single fresh reading in a thread,
    which the next scrape gets (Prometheus scrapes every 15 s or more, so the gauges are at most one scrape
    behind). `/metrics` exports the reading's age and duration.
    """

    def __init__(self, read: Callable[[datetime], LedgerGauges], max_age: timedelta = LEDGER_MAX_AGE) -> None:
        self._read = read
        self.max_age = max_age
        self._lock = threading.Lock()
        self._latest: LedgerReading | None = None
        self._reading: threading.Thread | None = None

    def latest(self, now: datetime) -> LedgerReading:
        """The last reading, read now if there is none yet; a stale one starts a fresh reading."""
        with self._lock:
            latest = self._latest
            if latest is not None and now - latest.at > self.max_age and self._reading is None:
                self._reading = threading.Thread(target=self._refresh, args=(now,), name="ledger-gauges", daemon=True)
                self._reading.start()
        return latest or self._refresh(now)

    def _refresh(self, now: datetime) -> LedgerReading:
        started = time.perf_counter()
        try:
            gauges = self._read(now)
        except (SQLAlchemyError, NewsletterError):
            gauges = LedgerGauges(reachable=False)
        reading = LedgerReading(gauges, now, time.perf_counter() - started)
        with self._lock:
            self._latest, self._reading = reading, None
        return reading


def health_routes(project: Project, metrics: ProcessMetrics, probe_seconds: float = PROBE_SECONDS) -> list[Route]:
    """The two routes; mount them on the web app of any process that has a `ProcessMetrics`."""
    readings = LedgerReadings(lambda now: ledger_gauges(project, now))
    probe = DatabaseProbe(project, probe_seconds)

    def healthz(request: Request) -> Response:
        database_problem = probe.problem()
        snapshot = metrics.snapshot()
        problems = ([database_problem] if database_problem else []) + [
            without_addresses(problem) for problem in snapshot.problems()
        ]
        age = snapshot.last_tick_age
        body = {
            "status": "degraded" if problems else "ok",
            "database_reachable": database_problem is None,
            "tick_seconds": snapshot.tick_seconds,
            "last_tick_at": snapshot.last_tick_at.isoformat() if snapshot.last_tick_at else None,
            "last_tick_age_seconds": round(age, 3) if age is not None else None,
            "last_tick_error": without_addresses(snapshot.last_tick_error) if snapshot.last_tick_error else None,
            "problems": problems,
        }
        return JSONResponse(body, status_code=503 if problems else 200, headers=NO_STORE)

    def metrics_text(request: Request) -> Response:
        snapshot = metrics.snapshot()
        reading = readings.latest(snapshot.taken_at)
        age = (snapshot.taken_at - reading.at).total_seconds()
        text = exposition(snapshot, reading.gauges, ledger_age=age, ledger_read_seconds=reading.seconds)
        return PlainTextResponse(text, media_type=CONTENT_TYPE, headers=NO_STORE)

    return [
        Route("/healthz", healthz, methods=["GET"], name="healthz"),
        Route("/metrics", metrics_text, methods=["GET"], name="metrics"),
    ]

"""`newsletter run`: dispatch ticks and the web app in one long-lived process.

    main thread   APScheduler's BlockingScheduler; signals arrive here
    tick          the scheduler's single executor worker: the dispatch tick and housekeeping, never both at once
    send-N        the dispatcher's SMTP connections, inside a tick
    web           uvicorn: the subscriber pages, /healthz and /metrics
    stopper       waits for SIGTERM / SIGINT, then shuts the scheduler down

The scheduler owns the main thread because Python delivers signals only there, and uvicorn installs no
signal handlers when it runs in another thread. A signal sets the stop event the dispatcher already
honours: the message on the wire finishes and is recorded, claimed rows not yet sent go back to pending.
The stopper thread then shuts the scheduler down (waiting for that tick), and uvicorn stops last. A second
signal stops the process at once, which is safe: leases bring back whatever it had claimed.

APScheduler is only the clock: an in-memory job store, one interval job for the dispatch tick
(`max_instances=1, coalesce=True, misfire_grace_time=None`) and one for housekeeping. The database is the
schedule, so several daemons, on one machine or many, split the due rows through the dispatcher's claims.
A sign-up on the web thread nudges the clock: one extra tick, queued behind any tick under way (the one
executor worker runs them in turn), so the confirmation goes out within seconds rather than at the next
interval. However many sign-ups arrive, at most one nudged tick waits at a time.

The log (`newsletter.logs`) says one line per delivery outcome and one per tick that did something; an idle
tick says nothing.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_SCHEDULER_STARTED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from newsletter.config import Settings, load_settings
from newsletter.db import describe_failure
from newsletter.dispatch import SendSummary, send_due
from newsletter.errors import ConfigError, NewsletterError
from newsletter.feedback.mailbox import configured_mailboxes
from newsletter.feedback.sweep import process_mailbox
from newsletter.ledger import wire
from newsletter.ledger.course import reconcile
from newsletter.logs import (
    log_course,
    log_delivery,
    log_housekeeping,
    log_reload,
    log_tick,
    log_tick_failed,
    one_line,
)
from newsletter.metrics import ProcessMetrics
from newsletter.project import Project
from newsletter.transports import Transport, transport_from_settings
from newsletter.watching import ProjectHolder, watch_in_thread

log = logging.getLogger("newsletter.daemon")
# Every tick already recovers leases and reconciles before it claims; this job is the backstop that keeps
# doing so, and says so in the log, when ticks fail (an SMTP outage) or are stuck behind a long run.
HOUSEKEEPING_SECONDS = 300.0
WEB_SHUTDOWN_SECONDS = 2
WEB_STARTUP_SECONDS = 30.0


def listen(host: str, port: int) -> socket.socket:
    """Bind the web socket now, so a busy port fails the start and port 0 tells which port it got."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        return socket.create_server(address, family=family)
    except OSError as error:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {error.strerror or error}; pass another --host/--port or change [web]"
        ) from None


class Daemon:
    """The long-lived sender: ticks on a clock, serves the web app, stops cleanly on a signal."""

    def __init__(
        self,
        project: Project,
        *,
        host: str,
        port: int,
        tick_seconds: float | None = None,
        transport: Transport | None = None,
        metrics: ProcessMetrics | None = None,
        reload_settings: Callable[[], Settings] | None = None,
    ) -> None:
        # Lenient: a broken lesson file is held, not a reason to stop serving the unsubscribe pages.
        lenient = project.as_lenient()
        config_path = project.settings.config_path
        if reload_settings is None and config_path is not None:
            reload_settings = lambda: load_settings(config_path)  # noqa: E731
        self.holder = ProjectHolder(lenient, reload_settings, lenient=True)
        self.host = host
        self.port = port
        self.tick_seconds = tick_seconds or project.settings.daemon.tick_seconds
        self.transport = transport or transport_from_settings(project.settings, project.db)
        self.metrics = metrics or ProcessMetrics(self.tick_seconds)
        self.stop = threading.Event()
        self._stop_reason = "asked to stop"
        self._held_line = ""
        self._clock: BlockingScheduler | None = None
        self._nudge_lock = threading.Lock()
        self._nudge_waiting = False

    @property
    def project(self) -> Project:
        """The course in use: the last good one on disk (`newsletter.watching`)."""
        return self.holder.project

    def request_stop(self, reason: str = "asked to stop") -> None:
        """Finish the message on the wire, then stop ticking and serving."""
        self._stop_reason = reason
        self.stop.set()

    def nudge(self) -> None:
        """Tick now, not at the next interval (a sign-up queued a confirmation); safe from any thread."""
        clock = self._clock
        if clock is None or self.stop.is_set():
            return
        with self._nudge_lock:
            if self._nudge_waiting:
                return  # the tick already waiting will send this one too
            self._nudge_waiting = True
        clock.add_job(self._nudged_tick, name="nudged tick")

    def _nudged_tick(self) -> None:
        with self._nudge_lock:
            self._nudge_waiting = False  # from here on, a new sign-up needs a tick of its own
        self.tick()

    def _delivered(self, outcome: str, lesson: str, address: str) -> None:
        """Count one delivery's outcome and log one line for it."""
        self.metrics.record_outcome(outcome)
        log_delivery(log, outcome, lesson, address)

    def tick(self) -> SendSummary | None:
        """Send everything due now and log one line of counts; an expected failure is logged, not raised."""
        if self.stop.is_set():
            return None
        started = time.monotonic()
        project = self.project  # one tick, one course, even if the files change meanwhile
        try:
            summary = send_due(project, self.transport, stop=self.stop, on_outcome=self._delivered)
            if configured_mailboxes(project.settings):  # logs its own line; a mailbox failure fails the tick
                process_mailbox(project, datetime.now(UTC))
        except DBAPIError as error:
            self._tick_failed(started, describe_failure(error, project.db.engine.url.render_as_string()))
            return None
        except (NewsletterError, SQLAlchemyError) as error:
            self._tick_failed(started, one_line(error))
            return None
        except BaseException as error:
            self._tick_failed(started, f"{type(error).__name__}: {one_line(error)}")
            raise
        finally:
            self.transport.close()  # relays drop idle connections; reconnecting per tick is cheap
        duration = time.monotonic() - started
        self.metrics.record_tick(duration)
        if summary.course is not None:
            self._held_line = log_course(log, summary.course, self._held_line)
        log_tick(log, summary, duration, stopping=self.stop.is_set())
        return summary

    def _course_reloaded(self) -> None:
        self.metrics.record_course(self.holder.problems)
        log_reload(log, self.holder.problems)

    def _tick_failed(self, started: float, error: str) -> None:
        duration = time.monotonic() - started
        self.metrics.record_tick(duration, error)
        log_tick_failed(log, duration, error)

    def housekeeping(self) -> None:
        """Release leases of senders that died and plan what a tick must not miss (ended pauses, new lessons)."""
        if self.stop.is_set():
            return
        now = datetime.now(UTC)
        try:
            with self.project.db.session() as session:
                released = wire.release_expired(session.connection(), now)
                note = reconcile(session, self.project, now)
        except (NewsletterError, SQLAlchemyError) as error:
            log.error("housekeeping failed: %s", one_line(error), extra={"fields": {"event": "housekeeping_failed"}})
            return
        log_housekeeping(log, released, note.changes)

    def run(self) -> None:
        """Check the configuration, serve the web app, tick until a signal or `request_stop`, then return."""
        for notice in self.project.settings.notices:
            log.warning(notice)
        # Fail at start, not at the first tick, on a database, template or relay that cannot work (a broken
        # lesson is held and reported instead: the pages must keep serving unsubscribes).
        self.project.db.check_writable()
        self.project.renderer  # noqa: B018
        for problem in self.holder.problems:
            log.warning(problem)
        self.metrics.record_course(self.holder.problems)
        self.transport.check()
        self.transport.close()
        server, web = self._start_web()
        watch_in_thread(self.holder, self.stop, self._course_reloaded)
        scheduler = self._clock = self._scheduler()
        restore_signals = self._handle_signals()
        started = threading.Event()
        scheduler.add_listener(lambda _event: started.set(), EVENT_SCHEDULER_STARTED)
        threading.Thread(target=self._stop_when_asked, args=(scheduler, started), name="stopper", daemon=True).start()
        log.info(
            "ticking every %g s", self.tick_seconds, extra={"fields": {"event": "start", "tick": self.tick_seconds}}
        )
        try:
            scheduler.start()
        finally:
            server.should_exit = True
            web.join(timeout=WEB_SHUTDOWN_SECONDS + 5)
            restore_signals()
            self.transport.close()
        log.info("stopped", extra={"fields": {"event": "stopped"}})

    def _scheduler(self) -> BlockingScheduler:
        scheduler = BlockingScheduler(
            timezone=UTC,
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )
        scheduler.add_job(
            self.tick, IntervalTrigger(seconds=self.tick_seconds), id="dispatch", next_run_time=datetime.now(UTC)
        )
        scheduler.add_job(self.housekeeping, IntervalTrigger(seconds=HOUSEKEEPING_SECONDS), id="housekeeping")
        return scheduler

    def _stop_when_asked(self, scheduler: BlockingScheduler, started: threading.Event) -> None:
        self.stop.wait()
        log.info("%s: finishing the message on the wire, then stopping", self._stop_reason)
        started.wait()
        scheduler.pause()  # no new job starts while the executor drains
        scheduler.shutdown(wait=True)

    def _handle_signals(self) -> Callable[[], None]:
        """Route SIGTERM and SIGINT to `request_stop`; return how to put the previous handlers back."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            self.request_stop(signal.Signals(signum).name)
            for sig in previous:
                signal.signal(sig, signal.SIG_DFL)  # a second signal stops at once

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _start_web(self) -> tuple[Any, threading.Thread]:
        import uvicorn

        from newsletter.web import create_app
        from newsletter.web.health import health_routes
        from newsletter.web.serving import server_config

        listener = listen(self.host, self.port)
        port = int(listener.getsockname()[1])
        app = create_app(
            self.holder,
            host=self.host,
            studio=False,
            live_reload=False,
            extra_routes=health_routes(self.project, self.metrics),
            on_signup=self.nudge,
        )
        # The limits slow clients cannot beat (header timeout, connection cap, keep-alive): web/serving.py.
        config = server_config(
            app,
            host=self.host,
            port=port,
            log_config=None,
            access_log=False,  # load balancers probe /healthz every few seconds
            timeout_graceful_shutdown=WEB_SHUTDOWN_SECONDS,
        )
        server = uvicorn.Server(config)
        web = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="web", daemon=True)
        web.start()
        deadline = time.monotonic() + WEB_STARTUP_SECONDS
        while not server.started:
            if not web.is_alive() or time.monotonic() > deadline:
                listener.close()
                raise ConfigError(f"the web app did not start on {self.host}:{port}; see the log above")
            time.sleep(0.02)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        url = f"http://{shown}:{port}"
        log.info(
            "serving the subscriber pages, /healthz and /metrics at %s",
            url,
            extra={"fields": {"event": "listening", "url": url}},
        )
        return server, web

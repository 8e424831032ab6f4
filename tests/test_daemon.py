"""`newsletter run` as a real process against a real SMTP server, with a 1-second tick; and its parts in-process.

The daemon subprocesses log JSON lines to a file; the test reads the address they listen on from the
"listening" record, adds readers whose first lesson is due at once, and watches mail arrive at the sink,
the ledger fill, and `/healthz` and `/metrics` over HTTP. Each process case runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest
from daemon_process import STOP_WITHIN_SECONDS, DaemonProcess, daemon_env, wait_for
from smtp_sink import FaultPlan, SmtpSink, permanent, stall, temporary
from sqlalchemy import func, select, update
from sqlalchemy.orm import sessionmaker
from starlette.applications import Starlette
from starlette.routing import Route

from newsletter.config import load_settings
from newsletter.daemon import Daemon
from newsletter.db import Database, make_engine
from newsletter.logs import JsonFormatter, TextFormatter, shortened_address
from newsletter.metrics import ProcessMetrics
from newsletter.models import Delivery
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber
from newsletter.transports import MemoryTransport, SmtpTransport
from newsletter.web.health import health_routes

# The Prometheus text format, version 0.0.4: one sample per line, families declared by # TYPE first.
SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? "
    r"(?P<value>[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|Inf)|NaN)$"
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')
METRIC_TYPES = ("counter", "gauge", "summary", "histogram", "untyped")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_prometheus(text: str) -> Samples:
    """Parse the exposition strictly: every sample belongs to a family typed before it, every line parses."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: Samples = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4, line
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in METRIC_TYPES and name not in types, line
            types[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name = match["name"]
            family = re.sub(r"_(sum|count)$", "", name) if name not in types else name
            assert family in types, f"{name} has no # TYPE line"
            labels = match["labels"] or ""
            pairs = LABEL.findall(labels)
            assert ",".join(f'{key}="{value}"' for key, value in pairs) == labels, line
            key = (name, frozenset(pairs))
            assert key not in samples, f"duplicate sample {line!r}"
            samples[key] = float(match["value"])
    return samples


def metric(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def open_project(project_dir: Path, environment: dict[str, str]) -> Project:
    """The test's own handle on the daemon's database, migrated before any daemon starts."""
    project = Project(load_settings(project_dir / "config.toml", env=environment))
    project.db  # noqa: B018
    return project


def add_readers(project: Project, count: int, *, confirmed: bool = True, prefix: str = "reader") -> None:
    with project.db.session() as session:
        for n in range(count):
            reader = SubscriberInput(f"{prefix}{n}@example.com", f"Reader {n}", "UTC", "Monday", "07:00")
            add_subscriber(session, project, reader, confirmed=confirmed, now=datetime.now(UTC))


def statuses(project: Project, lesson: str | None = None) -> Counter[str]:
    query = select(Delivery.status, func.count()).group_by(Delivery.status)
    if lesson is not None:
        query = query.where(Delivery.lesson == lesson)
    with project.db.session() as session:
        return Counter(dict(session.execute(query).all()))


@pytest.mark.slow
def test_mail_flows_and_health_and_metrics_answer_over_http(
    project_dir: Path, env: dict[str, str], database_url: str, daemons: Callable[..., DaemonProcess]
) -> None:
    with SmtpSink() as sink:
        environment = daemon_env(database_url, sink.port, env)
        project = open_project(project_dir, environment)
        daemon = daemons(project_dir, environment)
        wait_for(daemon.ticked, "the first tick")
        assert daemon.get("/healthz").json()["status"] == "ok"

        add_readers(project, 5)
        add_readers(project, 1, confirmed=False, prefix="new")
        wait_for(lambda: sink.count == 6, "five lessons and one confirmation")
        wait_for(lambda: statuses(project)["sent"] == 6, "the ledger to record them")

        health = daemon.get("/healthz")
        metrics = daemon.get("/metrics")
        elapsed = daemon.terminate()
        received = Counter(message.recipients[0] for message in sink.messages)

    assert daemon.process.returncode == 0 and elapsed < STOP_WITHIN_SECONDS, daemon.log_path.read_text()
    assert received == Counter({f"reader{n}@example.com": 1 for n in range(5)} | {"new0@example.com": 1})
    assert statuses(project, lesson="muscle") == Counter({"sent": 5})
    assert statuses(project, lesson="knees") == Counter({"pending": 5})

    assert health.status_code == 200 and health.headers["content-type"] == "application/json"
    body = health.json()
    assert body["status"] == "ok" and body["database_reachable"] is True and body["problems"] == []
    assert 0 <= body["last_tick_age_seconds"] < 5 and datetime.fromisoformat(body["last_tick_at"]).tzinfo

    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_prometheus(metrics.text)
    assert metric(samples, "newsletter_sends_total") == 6
    assert metric(samples, "newsletter_deliveries", status="sent") == 6
    assert metric(samples, "newsletter_deliveries", status="pending") == 5
    assert metric(samples, "newsletter_deliveries", status="sending") == 0
    assert metric(samples, "newsletter_subscribers", status="active") == 5
    assert metric(samples, "newsletter_subscribers", status="pending") == 1
    assert metric(samples, "newsletter_database_up") == 1
    ticks = metric(samples, "newsletter_ticks_total")
    assert ticks >= 1 and metric(samples, "newsletter_tick_duration_seconds_count") == ticks
    assert metric(samples, "newsletter_tick_duration_seconds_sum") > 0

    tick_lines = daemon.ticks()
    assert sum(int(str(line["sent"])) for line in tick_lines) == 6
    assert {"time", "level", "logger", "message", "retry", "failed", "skipped"} <= set(tick_lines[0])
    project.db.dispose()


@pytest.mark.slow
def test_sigterm_finishes_the_message_on_the_wire_and_exits_zero(
    project_dir: Path, env: dict[str, str], database_url: str, daemons: Callable[..., DaemonProcess]
) -> None:
    readers = 20
    with SmtpSink(faults=FaultPlan({"*": stall(0.3)})) as sink:
        environment = daemon_env(database_url, sink.port, env)
        project = open_project(project_dir, environment)
        add_readers(project, readers)
        daemon = daemons(project_dir, environment)
        wait_for(lambda: sink.count > 0, "the first message")
        elapsed = daemon.terminate()
        received = sink.count

    assert daemon.process.returncode == 0, daemon.log_path.read_text()
    assert elapsed < STOP_WITHIN_SECONDS
    week_one = statuses(project, lesson="muscle")
    assert week_one["sending"] == 0  # nothing half-recorded
    assert week_one["sent"] == received and 0 < received < readers
    assert week_one["pending"] == readers - received
    messages = [str(record["message"]) for record in daemon.records()]
    assert any("SIGTERM: finishing the message on the wire" in message for message in messages)
    assert messages[-1] == "stopped"
    project.db.dispose()


@pytest.mark.slow
def test_two_daemons_on_one_database_send_nothing_twice(
    project_dir: Path, env: dict[str, str], database_url: str, daemons: Callable[..., DaemonProcess]
) -> None:
    readers = 60
    with SmtpSink(faults=FaultPlan({"*": stall(0.02)})) as sink:
        environment = daemon_env(database_url, sink.port, env)
        project = open_project(project_dir, environment)
        first, second = daemons(project_dir, environment), daemons(project_dir, environment)
        add_readers(project, readers)  # both are ticking: they race for the same due rows
        wait_for(lambda: statuses(project, lesson="muscle")["sent"] == readers, "every lesson 1 to be recorded")
        time.sleep(2.5)  # two more ticks each: a duplicate would show up now
        elapsed = [first.terminate(), second.terminate()]
        received = Counter(message.message_id for message in sink.messages)

    assert [first.process.returncode, second.process.returncode] == [0, 0]
    assert max(elapsed) < STOP_WITHIN_SECONDS
    assert len(received) == readers and set(received.values()) == {1}
    sent_by = [sum(int(str(tick["sent"])) for tick in daemon.ticks()) for daemon in (first, second)]
    assert sum(sent_by) == readers, sent_by
    project.db.dispose()


@pytest.mark.slow
def test_a_sign_up_gets_its_confirmation_within_seconds_not_at_the_next_tick(
    project_dir: Path, env: dict[str, str], database_url: str, daemons: Callable[..., DaemonProcess]
) -> None:
    with SmtpSink() as sink:
        # Ticks ten minutes apart: only the sign-up's nudge can send the confirmation in time.
        environment = {**daemon_env(database_url, sink.port, env), "NEWSLETTER_DAEMON_TICK_SECONDS": "600"}
        daemon = daemons(project_dir, environment)
        wait_for(daemon.ticked, "the first tick")
        with httpx2.Client(base_url=daemon.url, timeout=10) as client:
            form = client.get("/subscribe").text
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
            assert csrf is not None
            fields = {"email": "noor@example.com", "name": "Noor", "weekday": "Monday", "time": "07:00"}
            started = time.monotonic()
            answer = client.post("/subscribe", data={**fields, "timezone": "UTC", "csrf_token": csrf.group(1)})
            assert answer.status_code == 200 and "Check your inbox" in answer.text
            wait_for(lambda: sink.count == 1, "the confirmation", seconds=15)
            elapsed = time.monotonic() - started
            # Sign-ups that come together share a tick; each gets its email.
            for number in range(3):
                client.post(
                    "/subscribe",
                    data={
                        **fields,
                        "email": f"more{number}@example.com",
                        "timezone": "UTC",
                        "csrf_token": csrf.group(1),
                    },
                )
            wait_for(lambda: sink.count == 4, "three more confirmations", seconds=15)
        daemon.terminate()

    assert elapsed < 5, f"the confirmation took {elapsed:.1f} s"
    assert sink.messages[0].recipients == ("noor@example.com",)
    assert b"Confirm your subscription" in sink.messages[0].data
    lines = [str(record["message"]) for record in daemon.records() if record.get("event") == "delivery"]
    assert lines[0] == "sent 'confirmation' to n…@example.com"
    assert "noor@example.com" not in daemon.log_path.read_text()


# In-process: the tick, housekeeping and the health routes, with a clock and transports the test controls.


def test_a_tick_logs_one_line_per_delivery_and_one_of_counts(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    with project.db.session() as session:
        add_subscriber(session, project, SubscriberInput("ada@example.com"), confirmed=False, now=datetime.now(UTC))
    transport = MemoryTransport()
    daemon = Daemon(project, host="127.0.0.1", port=0, tick_seconds=1, transport=transport)
    with caplog.at_level("INFO", logger="newsletter.daemon"):
        summary = daemon.tick()

    assert summary is not None and summary.sent == 1 and len(transport.sent) == 1 and transport.closed
    snapshot = daemon.metrics.snapshot()
    assert (snapshot.sent, snapshot.ticks, snapshot.tick_failures) == (1, 1, 0)
    assert [record.getMessage().split(" in ")[0] for record in caplog.records] == [
        "sent 'confirmation' to a…@example.com",
        "tick: 1 sent, 0 retry, 0 failed, 0 skipped",
    ]
    assert caplog.records[0].fields == {  # type: ignore[attr-defined]
        "event": "delivery",
        "outcome": "sent",
        "lesson": "confirmation",
        "to": "a…@example.com",
    }


def test_each_outcome_gets_its_line_and_an_idle_tick_says_nothing(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC)
    with project.db.session() as session:
        for address in ("ann@example.com", "bob@soft.example.net", "cy@hard.example.org"):
            add_subscriber(session, project, SubscriberInput(address), confirmed=True, now=now)
        session.execute(update(Delivery).values(due_at=now - timedelta(minutes=1)))  # lesson 1 due for all three
    faults = FaultPlan({"*@soft.example.net": temporary(450), "*@hard.example.org": permanent(550)})
    with SmtpSink(faults=faults) as sink:
        relay = SmtpTransport("127.0.0.1", sink.port, "none", connections=1, timeout=5)
        daemon = Daemon(project, host="127.0.0.1", port=0, tick_seconds=1, transport=relay)
        with caplog.at_level("INFO", logger="newsletter.daemon"):
            daemon.tick()
            lines = [record.getMessage() for record in caplog.records]
            caplog.clear()
            daemon.tick()  # the retry is not due yet: nothing to do, nothing to say
            assert caplog.records == []
    assert sorted(lines[:-1]) == [
        "deferred 'muscle' to b…@soft.example.net: the relay said try later, it will be retried",
        "failed 'muscle' to c…@hard.example.org: refused (`newsletter deliveries --status failed`)",
        "sent 'muscle' to a…@example.com",
    ]
    assert lines[-1].startswith("tick: 1 sent, 1 retry, 1 failed, 0 skipped in ")
    assert not any("ann@" in line or "bob@" in line or "cy@" in line for line in lines)


def test_an_address_in_the_log_shows_its_first_character_and_domain() -> None:
    assert shortened_address("ann@example.com") == "a…@example.com"
    assert shortened_address("x@a.example") == "x…@a.example"
    assert shortened_address('"odd@local"@example.com') == '"…@example.com'
    assert shortened_address("nobody") == "n…"


def test_a_failing_tick_is_logged_counted_and_makes_health_degraded(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    with project.db.session() as session:
        add_subscriber(session, project, SubscriberInput("ada@example.com"), confirmed=False, now=datetime.now(UTC))
    with SmtpSink(auth=("lessons", "right")) as sink:
        refused = SmtpTransport(
            "127.0.0.1", sink.port, "none", username="lessons", password="wrong", connections=1, timeout=5
        )
        daemon = Daemon(project, host="127.0.0.1", port=0, tick_seconds=1, transport=refused)
        with caplog.at_level("ERROR", logger="newsletter.daemon"):
            assert daemon.tick() is None

    assert daemon.metrics.snapshot().tick_failures == 1
    assert caplog.records[0].getMessage().startswith("tick failed after")
    assert statuses(project) == Counter({"pending": 1})  # the claimed row went back
    health, metrics = fetch(health_routes(project, daemon.metrics), "/healthz", "/metrics")
    samples = parse_prometheus(metrics.text)
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    assert health.json()["problems"][0].startswith("the last tick failed: ")
    assert metric(samples, "newsletter_tick_failures_total") == 1


def test_housekeeping_returns_the_rows_of_a_dead_sender(project: Project) -> None:
    with project.db.session() as session:
        add_subscriber(session, project, SubscriberInput("ada@example.com"), confirmed=False, now=datetime.now(UTC))
        session.execute(
            update(Delivery).values(
                status="sending", lease_owner="dead:1", lease_until=datetime.now(UTC) - timedelta(minutes=1)
            )
        )
    Daemon(project, host="127.0.0.1", port=0, transport=MemoryTransport()).housekeeping()
    assert statuses(project) == Counter({"pending": 1})


def fetch(routes: list[Route], *paths: str) -> list[httpx2.Response]:
    """GET each path from an app made of these routes, in process."""

    async def get_all() -> list[httpx2.Response]:
        transport = httpx2.ASGITransport(app=Starlette(routes=routes))
        async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [await client.get(path) for path in paths]

    return asyncio.run(get_all())


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def unopened(project: Project, url: str) -> Project:
    """The project on the database at `url`, its engine made without connecting (`connect` would migrate)."""
    moved = Project(project.settings.replace("database", url=url))
    engine = make_engine(url)
    moved.__dict__["db"] = Database(engine=engine, sessions=sessionmaker(engine))
    return moved


def test_health_turns_degraded_when_ticks_stop_and_when_the_database_is_gone(project: Project, tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 3, 2, 7, 0, tzinfo=UTC))
    metrics = ProcessMetrics(tick_seconds=10, clock=clock)
    routes = health_routes(project, metrics)
    clock.now += timedelta(seconds=5)
    metrics.record_tick(0.2)
    assert fetch(routes, "/healthz")[0].status_code == 200
    clock.now += timedelta(seconds=59)  # 3 ticks + 30 s grace = 60 s of silence is still fine
    assert fetch(routes, "/healthz")[0].json()["status"] == "ok"
    metrics.record_outcome("sent")  # a long tick that is sending counts as alive
    clock.now += timedelta(seconds=59)
    assert fetch(routes, "/healthz")[0].status_code == 200
    clock.now += timedelta(seconds=2)
    (stale,) = fetch(routes, "/healthz")
    assert stale.status_code == 503 and "for 61 s (ticks are every 10 s)" in stale.json()["problems"][0]

    folder = tmp_path / "not-a-database"
    folder.mkdir()  # a folder where the database file should be: SQLite cannot open it
    gone = unopened(project, f"sqlite:///{folder}")
    serving_only = ProcessMetrics(tick_seconds=None)
    health, metrics_page = fetch(health_routes(gone, serving_only), "/healthz", "/metrics")
    samples = parse_prometheus(metrics_page.text)
    assert health.status_code == 503 and health.json()["database_reachable"] is False
    assert metric(samples, "newsletter_database_up") == 0
    assert ("newsletter_deliveries", frozenset({("status", "sent")})) not in samples
    assert ("newsletter_ticks_total", frozenset()) not in samples  # this process does not tick
    gone.db.dispose()


def test_health_says_timed_out_when_the_database_takes_the_connection_and_never_answers(project: Project) -> None:
    # A "server" that accepts connections and says nothing: the driver waits for its greeting until its own
    # connect_timeout (a minute here), and /healthz must not wait with it.
    silent = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def take_connections() -> None:
        with contextlib.suppress(OSError):  # until the listener is closed
            while True:
                accepted.append(silent.accept()[0])

    listening = threading.Thread(target=take_connections, daemon=True)
    listening.start()
    url = f"postgresql://reader:secret@127.0.0.1:{silent.getsockname()[1]}/newsletter?connect_timeout=60"
    hung = unopened(project, url)
    routes = health_routes(hung, ProcessMetrics(tick_seconds=None), probe_seconds=0.5)
    started = time.monotonic()
    first, second = fetch(routes, "/healthz", "/healthz")
    assert time.monotonic() - started < 30  # answered, long before the driver would have given up
    for health in (first, second):
        assert health.status_code == 503 and health.json()["database_reachable"] is False
        assert health.json()["problems"] == ["the database does not answer (timed out after 0.5 s)"]
    assert len(accepted) == 1  # the second check waited for the probe still hanging instead of starting one
    for connection in accepted:
        connection.close()  # the driver sees the connection closed, and the probe's thread ends
    silent.shutdown(socket.SHUT_RDWR)  # wakes the accept() still waiting
    silent.close()
    listening.join(timeout=5)
    assert not listening.is_alive()
    hung.db.dispose()


def test_metrics_reuse_one_reading_of_the_ledger_then_read_it_again_off_the_scrape(project: Project) -> None:
    clock = Clock(datetime(2026, 3, 2, 7, 0, tzinfo=UTC))
    routes = health_routes(project, ProcessMetrics(tick_seconds=10, clock=clock))

    def sign_up(email: str) -> None:
        with project.db.session() as session:
            add_subscriber(session, project, SubscriberInput(email), confirmed=False, now=clock.now)

    def scrape() -> Samples:
        (page,) = fetch(routes, "/metrics")
        return parse_prometheus(page.text)

    sign_up("ada@example.com")
    first = scrape()  # the first scrape reads the database itself
    assert metric(first, "newsletter_subscribers", status="pending") == 1
    assert metric(first, "newsletter_ledger_age_seconds") == 0 and metric(first, "newsletter_ledger_read_seconds") > 0

    sign_up("bob@example.com")
    clock.now += timedelta(seconds=10)
    again = scrape()  # ten seconds on, the same reading: no second count of the ledger
    assert metric(again, "newsletter_subscribers", status="pending") == 1
    assert metric(again, "newsletter_ledger_age_seconds") == 10

    clock.now += timedelta(seconds=1)
    stale = scrape()  # too old: served at once all the same, and a fresh reading starts off the request
    assert metric(stale, "newsletter_subscribers", status="pending") == 1
    assert metric(stale, "newsletter_ledger_age_seconds") == 11
    wait_for(lambda: metric(scrape(), "newsletter_subscribers", status="pending") == 2, "the fresh reading")
    assert metric(scrape(), "newsletter_ledger_age_seconds") == 0


def test_log_formats_are_one_line_each() -> None:
    import logging

    record = logging.LogRecord("newsletter.daemon", logging.INFO, __file__, 1, "tick: %d sent", (3,), None)
    record.fields = {"event": "tick", "sent": 3}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "tick: 3 sent" and entry["sent"] == 3 and entry["level"] == "info"
    assert datetime.fromisoformat(entry["time"]).tzinfo is not None
    text = TextFormatter().format(record)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO newsletter\.daemon: tick: 3 sent", text)


def test_a_busy_port_stops_the_start_with_a_clear_error(project: Project) -> None:
    from newsletter.daemon import listen
    from newsletter.errors import ConfigError

    with closing(listen("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            listen("127.0.0.1", port)

"""A database that is read-only, full, or drops its connections: one clear line, exit 1, nothing half-written.

Real faults on real processes: an immutable SQLite file (`chattr +i`, which stops even root; a read-only
file mode otherwise), a file-size limit on the process that writes (what a full disk looks like to
SQLite), and PostgreSQL terminating the sender's connections while it sends.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import IN_CI
from smtp_sink import FaultPlan, SmtpSink, stall
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import DBAPIError

from newsletter import db
from newsletter.config import load_settings
from newsletter.db import make_engine
from newsletter.dispatch.sender import IN_FLIGHT_PER_CONNECTION
from newsletter.models import Delivery, Subscriber
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber

pytestmark = pytest.mark.slow
CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
FIRST_SLOT = "2026-03-02T07:00:00+00:00"


def newsletter(
    project_dir: Path, environment: dict[str, str], *args: str, limit_file_size: int | None = None
) -> subprocess.CompletedProcess[str]:
    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size or 0, resource.RLIM_INFINITY))

    command = [sys.executable, "-m", "newsletter", "--config", str(project_dir / "config.toml"), *args]
    return subprocess.run(
        command,
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=limited if limit_file_size else None,
    )


def seeded(project_dir: Path, environment: dict[str, str], readers: int = 3) -> Project:
    project = Project(load_settings(project_dir / "config.toml", env=environment))
    with project.db.session() as session:
        for n in range(readers):
            reader = SubscriberInput(f"reader{n}@example.com", "", "UTC", "Monday", "07:00")
            add_subscriber(session, project, reader, confirmed=True, now=CONFIRMED_AT)
    return project


def subscribers(project: Project) -> int:
    with project.db.reading() as session:
        return int(session.scalar(select(func.count()).select_from(Subscriber)) or 0)


def assert_one_clear_line(result: subprocess.CompletedProcess[str], meaning: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: the database ") and meaning in line and "run the command again" in line


@pytest.fixture
def read_only_file(sqlite_url: str) -> Iterator[Path]:
    """Make the SQLite file read-only for this test, as a read-only mount or file mode would."""
    path = Path(sqlite_url.removeprefix("sqlite:///"))

    def make_read_only() -> Path:
        if os.geteuid() != 0:
            path.chmod(0o444)
            return path
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            message = f"chattr +i {path} failed ({done.stderr.strip()}); this test needs a file system with it"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        return path

    yield make_read_only()  # type: ignore[misc]
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=False)
    else:
        path.chmod(0o644)


def test_a_read_only_sqlite_file_gets_one_clear_line_from_every_writer(
    project_dir: Path, env: dict[str, str], sqlite_url: str, request: pytest.FixtureRequest
) -> None:
    environment = {**env, "NEWSLETTER_DATABASE_URL": sqlite_url}
    project = seeded(project_dir, environment)
    project.close()
    request.getfixturevalue("read_only_file")
    added = newsletter(project_dir, environment, "subscribers", "add", "new@example.com")
    assert_one_clear_line(added, "is read-only")
    sent = newsletter(project_dir, environment, "send", "--now", FIRST_SLOT)
    assert_one_clear_line(sent, "is read-only")
    daemon = newsletter(project_dir, environment, "run", "--port", "0", "--tick", "1")
    assert_one_clear_line(daemon, "is read-only")  # refuses to start rather than fail every tick
    listed = newsletter(project_dir, environment, "subscribers", "list")
    assert listed.returncode == 0 and "3 subscribers" in listed.stdout  # reading still works
    assert subscribers(project) == 3


def test_a_full_disk_gets_one_clear_line_and_writes_nothing(
    project_dir: Path, env: dict[str, str], sqlite_url: str
) -> None:
    environment = {**env, "NEWSLETTER_DATABASE_URL": sqlite_url}
    project = seeded(project_dir, environment)
    project.close()
    full = newsletter(project_dir, environment, "subscribers", "add", "new@example.com", limit_file_size=4096)
    assert full.returncode == 1 and "Traceback" not in full.stderr
    (line,) = full.stderr.strip().splitlines()
    assert line.startswith("Error: the database ") and ("full disk" in line or "disk I/O error" in line), line
    assert subscribers(project) == 3
    again = newsletter(project_dir, environment, "subscribers", "add", "new@example.com")
    assert again.returncode == 0, again.stderr  # once there is room, the same command works
    assert subscribers(project) == 4


@pytest.mark.postgres
def test_postgresql_dropping_the_senders_connections_stops_it_cleanly_and_loses_nothing(
    project_dir: Path, env: dict[str, str], postgres_server_url: str, request: pytest.FixtureRequest
) -> None:
    from conftest import reset_postgres

    reset_postgres(postgres_server_url)
    readers = 12
    environment = {**env, "NEWSLETTER_DATABASE_URL": postgres_server_url}
    project = seeded(project_dir, environment, readers)
    request.addfinalizer(project.close)  # closed even when an assertion fails: no connection left to the GC
    with SmtpSink(faults=FaultPlan({"*": stall(0.3)})) as sink:
        sending = {
            **environment,
            "NEWSLETTER_DELIVERY_TRANSPORT": "smtp",
            "NEWSLETTER_SMTP_HOST": "127.0.0.1",
            "NEWSLETTER_SMTP_PORT": str(sink.port),
            "NEWSLETTER_SMTP_CONNECTIONS": "2",
            "NEWSLETTER_DELIVERY_LEASE_SECONDS": "2",
            "NEWSLETTER_DELIVERY_BATCH_SIZE": "4",
        }
        command = [sys.executable, "-m", "newsletter", "--config", str(project_dir / "config.toml")]
        process = subprocess.Popen(
            [*command, "send", "--now", FIRST_SLOT],
            env={**os.environ, **sending},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while sink.count < 2:
            assert time.monotonic() < deadline and process.poll() is None, "the sender never got going"
            time.sleep(0.02)
        admin = create_engine(postgres_server_url.replace("postgresql://", "postgresql+psycopg://", 1))
        with admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        admin.dispose()
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 1 and "Traceback" not in stderr, stderr
        assert "dropped the connection" in stderr
        # An hour on, the leases of the rows it had claimed have run out: they come back.
        finished = newsletter(project_dir, sending, "send", "--now", "2026-03-02T08:00:00+00:00")
        assert finished.returncode == 0, finished.stderr
        recipients = [message.recipients[0] for message in sink.messages]
    with project.db.reading() as session:
        statuses = session.scalars(select(Delivery.status).where(Delivery.lesson == "muscle")).all()
    assert sorted(set(statuses)) == ["sent"] and len(statuses) == readers
    assert set(recipients) == {f"reader{n}@example.com" for n in range(readers)}
    # At most what the sender had marked on the wire but not yet recorded repeats.
    assert len(recipients) - readers <= IN_FLIGHT_PER_CONNECTION * 2


def test_an_unreachable_postgresql_is_one_clear_line(project_dir: Path, env: dict[str, str]) -> None:
    environment = {**env, "NEWSLETTER_DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:9/none"}
    result = newsletter(project_dir, environment, "subscribers", "add", "new@example.com")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "does not answer" in result.stderr and "secret" not in result.stderr


@contextmanager
def silent_listener() -> Iterator[int]:
    """A port whose handshakes the kernel completes and that never says a word: a server hung, or a proxy in
    front of a dead one."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        yield silent.getsockname()[1]


def test_a_postgresql_server_that_never_answers_is_one_clear_line_in_the_time_the_url_gives(
    project_dir: Path, env: dict[str, str]
) -> None:
    with silent_listener() as port:
        url = f"postgresql://nobody@127.0.0.1:{port}/none?connect_timeout=2"
        started = time.monotonic()
        given = newsletter(project_dir, {**env, "NEWSLETTER_DATABASE_URL": url}, "status")
        waited = time.monotonic() - started
    assert given.returncode == 1 and "Traceback" not in given.stderr, given.stderr
    assert "does not answer" in given.stderr
    assert waited < 30  # the 2 s asked for, plus start-up on a loaded machine (the helper's own limit is 120 s)


def test_without_a_connect_timeout_in_the_url_postgresql_is_given_up_on_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(db, "POSTGRESQL_CONNECT_TIMEOUT_S", 2)
    failures: list[BaseException] = []
    with silent_listener() as port:
        engine = make_engine(f"postgresql://nobody@127.0.0.1:{port}/none")

        def attempt() -> None:
            try:
                engine.connect()
            except DBAPIError as error:
                failures.append(error)

        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(30)
    assert failures, "the connection attempt was still waiting after 30 s"
    engine.dispose()

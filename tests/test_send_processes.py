"""`newsletter send` as real processes: killed with SIGKILL, stopped with SIGTERM, run four at once.

Each case runs on SQLite and on PostgreSQL, against a real SMTP server (aiosmtpd) in this process, which
outlives the senders it watches.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from smtp_sink import FaultPlan, SmtpSink, stall
from sqlalchemy import func, select

from newsletter.config import load_settings
from newsletter.dispatch.sender import IN_FLIGHT_PER_CONNECTION
from newsletter.models import Delivery
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber

pytestmark = pytest.mark.slow
CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
FIRST_SLOT = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
CONNECTIONS = 2


def sender_env(database_url: str, port: int, env: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        **env,
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_DELIVERY_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_SMTP_CONNECTIONS": str(CONNECTIONS),
        "NEWSLETTER_SMTP_TIMEOUT": "5",
        "NEWSLETTER_DELIVERY_LEASE_SECONDS": "2",
        "NEWSLETTER_DELIVERY_BATCH_SIZE": "10",
    }


def seed(project_dir: Path, environment: dict[str, str], readers: int) -> Project:
    project = Project(load_settings(project_dir / "config.toml", env=environment))
    with project.db.session() as session:
        for n in range(readers):
            reader = SubscriberInput(f"reader{n}@example.com", f"Reader {n}", "UTC", "Monday", "07:00")
            add_subscriber(session, project, reader, confirmed=True, now=CONFIRMED_AT)
    return project


def start_sender(
    project_dir: Path, environment: dict[str, str], now: datetime, *options: str
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "newsletter", "--config", str(project_dir / "config.toml")]
    return subprocess.Popen(
        [*command, "send", "--now", now.isoformat(), "--json", *options],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def week_one_statuses(project: Project) -> Counter[str]:
    with project.db.session() as session:
        rows = session.execute(
            select(Delivery.status, func.count()).where(Delivery.lesson == "muscle").group_by(Delivery.status)
        )
        return Counter(dict(rows.all()))


def test_sigkill_at_random_moments_loses_nothing(project_dir: Path, env: dict[str, str], database_url: str) -> None:
    readers, kills = 150, 10
    rng = random.Random(20261126)
    with SmtpSink(faults=FaultPlan({"*": stall(0.01)})) as sink:  # a slow server keeps messages in flight
        environment = sender_env(database_url, sink.port, env)
        project = seed(project_dir, environment, readers)
        clock = FIRST_SLOT
        orphaned = 0  # rows a killed sender had claimed: only lease recovery can finish them
        for _ in range(kills):
            sender = start_sender(project_dir, environment, clock)
            before = sink.count
            deadline = time.monotonic() + 30
            while sink.count == before and sender.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)  # kill only once it is really sending
            time.sleep(rng.uniform(0.0, 0.4))
            sender.send_signal(signal.SIGKILL)
            sender.communicate()
            orphaned += week_one_statuses(project)["sending"]
            clock += timedelta(minutes=1)  # later runs see the dead sender's leases as expired
        for _ in range(10):
            finisher = start_sender(project_dir, environment, clock)
            _, errors = finisher.communicate(timeout=120)
            assert finisher.returncode == 0, errors.decode()
            if week_one_statuses(project) == Counter({"sent": readers}):
                break
            clock += timedelta(minutes=30)
        received = Counter(message.message_id for message in sink.messages)

    assert orphaned > 0  # the kills really landed mid-run
    assert week_one_statuses(project) == Counter({"sent": readers})
    with project.db.session() as session:
        expected = set(session.scalars(select(Delivery.message_id).where(Delivery.lesson == "muscle")))
    assert set(received) == expected  # every reader got lesson 1 ...
    duplicates = sum(count - 1 for count in received.values())
    # ... and a kill repeats at most what the sender had marked on the wire but not yet recorded.
    assert duplicates <= kills * IN_FLIGHT_PER_CONNECTION * CONNECTIONS
    project.db.dispose()


def test_four_senders_at_once_send_nothing_twice(project_dir: Path, env: dict[str, str], database_url: str) -> None:
    readers = 200
    with SmtpSink(faults=FaultPlan({"*": stall(0.002)})) as sink:
        environment = sender_env(database_url, sink.port, env)
        project = seed(project_dir, environment, readers)
        senders = [start_sender(project_dir, environment, FIRST_SLOT) for _ in range(4)]
        outputs = [sender.communicate(timeout=180) for sender in senders]
        assert [sender.returncode for sender in senders] == [0, 0, 0, 0], [err for _, err in outputs]
        received = Counter(message.message_id for message in sink.messages)

    assert len(received) == readers and set(received.values()) == {1}
    assert week_one_statuses(project) == Counter({"sent": readers})
    project.db.dispose()


def test_processes_option_sends_everything_once_and_adds_up_the_counts(
    project_dir: Path, env: dict[str, str], database_url: str
) -> None:
    readers = 120
    with SmtpSink(faults=FaultPlan({"*": stall(0.002)})) as sink:
        environment = sender_env(database_url, sink.port, env)
        project = seed(project_dir, environment, readers)
        sender = start_sender(project_dir, environment, FIRST_SLOT, "--processes", "3")
        output, errors = sender.communicate(timeout=180)
        assert sender.returncode == 0, errors.decode()
        received = Counter(message.message_id for message in sink.messages)

    counts = json.loads(output)
    assert (counts["sent"], counts["retry"], counts["failed"]) == (readers, 0, 0)
    assert len(received) == readers and set(received.values()) == {1}
    assert week_one_statuses(project) == Counter({"sent": readers})
    project.db.dispose()


@pytest.mark.parametrize("processes", ["1", "3"])
def test_sigterm_finishes_the_message_on_the_wire_and_exits_cleanly(
    project_dir: Path, env: dict[str, str], database_url: str, processes: str
) -> None:
    with SmtpSink(faults=FaultPlan({"*": stall(0.3)})) as sink:
        environment = sender_env(database_url, sink.port, env)
        project = seed(project_dir, environment, 20)
        sender = start_sender(project_dir, environment, FIRST_SLOT, "--processes", processes)
        deadline = time.monotonic() + 30
        while sink.count == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        sender.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        output, errors = sender.communicate(timeout=15)
        assert sender.returncode == 0, errors.decode()
        assert time.monotonic() - stopped_at < 5
        received = sink.count

    assert json.loads(output)["sent"] == received
    statuses = week_one_statuses(project)
    assert statuses["sending"] == 0  # nothing half-recorded
    assert statuses["sent"] == received and 0 < received < 20
    assert statuses["pending"] == 20 - received
    project.db.dispose()

"""Per-recipient-domain pacing: a domain that says "slow down" waits, for every sender; the others go on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import assert_one_rate_limit, race
from smtp_sink import FaultPlan, SmtpSink, permanent, temporary
from sqlalchemy import select, update

from newsletter.dispatch import send_due
from newsletter.dispatch.sender import IN_FLIGHT_PER_CONNECTION
from newsletter.errors import TransientSendError
from newsletter.ledger.pacing import is_throttle
from newsletter.models import Delivery, DomainPause, Subscriber
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber
from newsletter.transports import SmtpTransport

CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday
FIRST_SLOT = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
PAUSE = timedelta(seconds=300)  # [delivery] domain_pause_seconds
SECONDS_OF_A_RUN = timedelta(seconds=30)  # a run's clock starts at --now and runs on
CONNECTIONS = 2
# Three windows of readers at the throttling domain: what is on the wire when the refusal comes back meets
# it, the rest must go back untried.
SLOW = [f"slow{n}@slow.example.com" for n in range(3 * IN_FLIGHT_PER_CONNECTION * CONNECTIONS)]
FINE = [f"fine{n}@fine.example.org" for n in range(6)]


def add_readers(project: Project, emails: list[str]) -> None:
    with project.db.session() as session:
        for address in emails:
            reader = SubscriberInput(address, "", "UTC", "Monday", "07:00")
            add_subscriber(session, project, reader, confirmed=True, now=CONFIRMED_AT)


def first_lessons(project: Project) -> dict[str, Delivery]:
    first = project.series.lessons[0].slug
    with project.db.reading() as session:
        rows = session.execute(select(Subscriber.email, Delivery).join(Subscriber).where(Delivery.lesson == first))
        return dict(rows.all())


def pauses(project: Project) -> dict[str, DomainPause]:
    with project.db.reading() as session:
        return {row.domain: row for row in session.scalars(select(DomainPause))}


def send(project: Project, sink: SmtpSink, now: datetime) -> dict[str, int]:
    with closing(SmtpTransport("127.0.0.1", sink.port, "none", connections=CONNECTIONS, timeout=5.0)) as transport:
        summary = send_due(project, transport, now=now)
    return {"sent": summary.sent, "retry": summary.retry, "failed": summary.failed}


@pytest.mark.parametrize(
    ("code", "reply", "by_recipient", "throttle"),
    [
        (421, "421 4.7.0 Try again later, closing connection", True, True),
        (451, "451 4.3.0 Temporary server error", True, True),
        (450, "450 4.7.28 unusual rate of unsolicited mail", True, True),
        (452, "452 too many recipients this hour, slow down", True, True),
        (450, "450 4.2.1 mailbox temporarily unavailable", True, False),
        (452, "452 4.2.2 mailbox full", True, False),
        (421, "421 4.3.2 service not available", False, False),  # the relay at connect: not a domain's word
    ],
)
def test_a_throttle_is_a_domains_slow_down_not_one_mailboxs_trouble(
    code: int, reply: str, by_recipient: bool, throttle: bool
) -> None:
    error = TransientSendError("refused", code=code, reply=reply, by_recipient=by_recipient)
    assert is_throttle(error) is throttle


def test_a_throttling_domain_waits_its_pause_while_the_others_are_sent(
    any_project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    add_readers(any_project, SLOW + FINE)
    busy = FaultPlan({"*@slow.example.com": temporary(421, times=None, text="4.7.0 Too many messages, slow down")})
    with SmtpSink(faults=busy) as sink:
        assert send(any_project, sink, FIRST_SLOT)["sent"] == len(FINE)
        refused = send(any_project, sink, FIRST_SLOT + PAUSE / 2)
    said = [record.getMessage() for record in caplog.records if "slow down" in record.getMessage()]
    assert len(said) == 1 and said[0].startswith("slow.example.com asked to slow down (421)")  # once, no address
    assert refused == {"sent": 0, "retry": 0, "failed": 0}  # the pause holds: nobody at slow.example.com is tried
    assert sorted(m.recipients[0] for m in sink.messages) == FINE
    rows = first_lessons(any_project)
    waiting = [rows[address] for address in SLOW]
    assert all(row.status == "pending" and row.due_at >= FIRST_SLOT + PAUSE for row in waiting)
    # Only the messages already on the wire met the refusal; the rest went back untried.
    assert 1 <= sum(row.attempts for row in waiting) < len(SLOW)
    (pause,) = pauses(any_project).values()
    assert (pause.domain, pause.strikes) == ("slow.example.com", 1)
    assert FIRST_SLOT + PAUSE <= pause.until < FIRST_SLOT + PAUSE + SECONDS_OF_A_RUN
    assert "slow down" in pause.reply

    with SmtpSink() as recovered:
        later = max(row.due_at for row in waiting)
        assert send(any_project, recovered, later)["sent"] == len(SLOW)
    assert sorted(m.recipients[0] for m in recovered.messages) == sorted(SLOW)
    assert pauses(any_project) == {}  # accepted again after the pause: its strikes are forgotten


def test_each_pause_in_a_row_doubles_the_next(any_project: Project) -> None:
    add_readers(any_project, SLOW[:2])
    busy = FaultPlan({"*@slow.example.com": temporary(451, times=None)})
    with SmtpSink(faults=busy) as sink:
        send(any_project, sink, FIRST_SLOT)
        again = FIRST_SLOT + PAUSE + timedelta(seconds=1)
        send(any_project, sink, again)
    pause = pauses(any_project)["slow.example.com"]
    assert pause.strikes == 2 and again + 2 * PAUSE <= pause.until < again + 2 * PAUSE + SECONDS_OF_A_RUN
    assert sink.messages == []


def test_another_sender_process_passes_a_paused_domain_by_without_trying_it(
    any_project: Project, project_dir: Path, env: dict[str, str], database_url: str
) -> None:
    add_readers(any_project, SLOW[:3] + FINE[:3])
    with SmtpSink(faults=FaultPlan({"*@slow.example.com": temporary(421, times=None)})) as sink:
        send(any_project, sink, FIRST_SLOT)
    until = pauses(any_project)["slow.example.com"].until
    slow_ids = [row.id for address, row in first_lessons(any_project).items() if address.endswith("@slow.example.com")]
    with any_project.db.session() as session:  # as if planned by a machine that has not heard of the pause
        session.execute(update(Delivery).where(Delivery.id.in_(slow_ids)).values(due_at=FIRST_SLOT))
    # Were slow.example.com tried now, it would bounce for good: the other process must not even try.
    with SmtpSink(faults=FaultPlan({"*@slow.example.com": permanent(550)})) as refusing:
        environment = {
            **os.environ,
            **env,
            "NEWSLETTER_DATABASE_URL": database_url,
            "NEWSLETTER_DELIVERY_TRANSPORT": "smtp",
            "NEWSLETTER_SMTP_HOST": "127.0.0.1",
            "NEWSLETTER_SMTP_PORT": str(refusing.port),
        }
        command = [sys.executable, "-m", "newsletter", "--config", str(project_dir / "config.toml")]
        at = (FIRST_SLOT + timedelta(minutes=1)).isoformat()
        result = subprocess.run(
            [*command, "send", "--now", at, "--json"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert (counts["sent"], counts["failed"]) == (0, 0)
    assert refusing.messages == []
    rows = first_lessons(any_project)
    assert all(rows[address].status == "pending" and rows[address].due_at == until for address in SLOW[:3])


SENDER = """
import sys, time
from pathlib import Path
from newsletter.config import load_settings
from newsletter.project import Project
from newsletter.transports import Envelope, transport_from_settings

project = Project(load_settings(Path(sys.argv[1])))
transport = transport_from_settings(project.settings, project.db)
data = b"From: a@example.com\\r\\nTo: b@example.com\\r\\nSubject: s\\r\\nMessage-ID: <m@example.com>\\r\\n\\r\\n"
envelope = Envelope("a@example.com", ("b@example.com",), data, "<m@example.com>")
transport.send(envelope)  # connected: the timed sends below wait for slots, not for a handshake
print("ready", flush=True)
sys.stdin.readline()
stamps = []
for _ in range(10):
    transport.send(envelope)
    stamps.append(time.time())
transport.close()
print(" ".join(map(repr, stamps)), flush=True)
"""


def test_the_send_rate_is_one_limit_for_every_sender_of_the_database(
    any_project: Project, project_dir: Path, env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    """On PostgreSQL the limit lives in the database: two machines (two project folders) share it. On SQLite
    (one machine) it lives in a file beside config.toml, shared by the processes of that folder."""
    with any_project.db.session():
        pass  # the database exists and is migrated before the senders race to it
    if any_project.db.dialect == "postgresql":
        folders = [shutil.copytree(project_dir, tmp_path / machine) for machine in ("machine-a", "machine-b")]
    else:
        folders = [project_dir, project_dir]
    with SmtpSink() as sink:
        environment = {
            **os.environ,
            **env,
            "NEWSLETTER_DATABASE_URL": database_url,
            "NEWSLETTER_DELIVERY_TRANSPORT": "smtp",
            "NEWSLETTER_SMTP_HOST": "127.0.0.1",
            "NEWSLETTER_SMTP_PORT": str(sink.port),
            "NEWSLETTER_SMTP_RATE_PER_SECOND": "40",
        }
        senders = [
            subprocess.Popen(
                [sys.executable, "-c", SENDER, str(folder / "config.toml")],
                env=environment,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for folder in folders
        ]
        stamps = race(senders, timeout=60)
    assert_one_rate_limit(stamps, per_second=40)
    assert sink.count == 22

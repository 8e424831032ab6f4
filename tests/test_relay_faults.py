"""What a relay can answer, and what each answer may change: only a refusal of the recipient is theirs.

Against real SMTP servers: aiosmtpd (tests/smtp_sink.py) with and without SMTPUTF8 and refusing at the end
of DATA, and Postfix's `smtp-sink` refusing every message at MAIL FROM or at the end of DATA, driven by
the real `newsletter send` on SQLite and PostgreSQL.
"""

from __future__ import annotations

import email
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import IN_CI
from smtp_sink import FaultPlan, SmtpSink, refuse_data
from sqlalchemy import select

from newsletter.cli import main
from newsletter.dispatch import send_due
from newsletter.errors import RelayError
from newsletter.models import Delivery, Subscriber
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber
from newsletter.transports import Envelope, MemoryTransport, SmtpTransport

CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday
FIRST_SLOT = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
POSTFIX_SINK = Path("/usr/sbin/smtp-sink")


def add_readers(project: Project, emails: list[str]) -> None:
    with project.db.session() as session:
        for address in emails:
            reader = SubscriberInput(address, "Reader", "UTC", "Monday", "07:00")
            add_subscriber(session, project, reader, confirmed=True, now=CONFIRMED_AT)


def states(project: Project) -> dict[str, tuple[str, int, str, int]]:
    """Address → (subscriber status, hard bounces, lesson 1 status, lesson 1 attempts)."""
    with project.db.reading() as session:
        rows = session.execute(
            select(Subscriber.email, Subscriber.status, Subscriber.hard_bounces, Delivery.status, Delivery.attempts)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.lesson == "muscle")
        )
        return {row[0]: tuple(row[1:]) for row in rows}  # type: ignore[misc]


def smtp(sink: SmtpSink) -> closing[SmtpTransport]:
    return closing(SmtpTransport("127.0.0.1", sink.port, "none", connections=2, timeout=5))


# --- one odd address never stops the others -------------------------------------------------------------------


def test_a_non_ascii_mailbox_travels_with_smtputf8_when_the_relay_offers_it(project: Project) -> None:
    add_readers(project, ["ada@example.com", "ü-user@example.com", "cy@example.com"])
    with SmtpSink() as sink, smtp(sink) as transport:
        summary = send_due(project, transport, now=FIRST_SLOT)
        received = {message.recipients[0]: message for message in sink.messages}
    assert summary.sent == 3
    parsed = email.message_from_string(received["ü-user@example.com"].data.decode(), policy=policy.SMTPUTF8)
    assert parsed["To"].addresses[0].addr_spec == "ü-user@example.com"


def test_without_smtputf8_only_that_delivery_is_held_and_the_run_goes_on(project: Project) -> None:
    add_readers(project, ["ada@example.com", "ü-user@example.com", "cy@example.com"])
    with SmtpSink(smtputf8=False) as sink, smtp(sink) as transport:
        summary = send_due(project, transport, now=FIRST_SLOT)
        assert send_due(project, transport, now=FIRST_SLOT + timedelta(hours=1)).total == 0  # held stays held
        delivered = sorted(message.recipients[0] for message in sink.messages)
    assert (summary.sent, summary.skipped) == (2, 1)
    assert delivered == ["ada@example.com", "cy@example.com"]
    assert states(project)["ü-user@example.com"] == ("active", 0, "held", 1)
    with project.db.reading() as session:
        error = session.scalar(select(Delivery.error).where(Delivery.status == "held"))
    assert error is not None and "SMTPUTF8" in error and "ü-user@example.com" in error


def test_an_unexpected_error_in_one_delivery_holds_it_and_the_others_go_out(project: Project) -> None:
    add_readers(project, ["ada@example.com", "odd@example.com", "cy@example.com"])

    class SurprisedBy(MemoryTransport):
        def send(self, envelope: Envelope) -> str:
            if envelope.recipients == ("odd@example.com",):
                raise UnicodeEncodeError("ascii", "odd", 0, 1, "a surprise")
            return super().send(envelope)

    summary = send_due(project, SurprisedBy(), now=FIRST_SLOT)
    assert (summary.sent, summary.skipped) == (2, 1)
    odd = states(project)["odd@example.com"]
    assert odd[0] == "active" and odd[2] == "held"  # not left "sending" for a lease to resend forever


# --- refusals at the end of DATA -------------------------------------------------------------------------------


def test_a_data_refusal_that_names_the_recipient_is_their_bounce(project: Project) -> None:
    add_readers(project, ["gone@example.com", "fine@example.com"])
    faults = FaultPlan({"gone@example.com": refuse_data(550, "5.1.1 <{rcpt}>: mailbox unavailable")})
    with SmtpSink(faults=faults) as sink, smtp(sink) as transport:
        summary = send_due(project, transport, now=FIRST_SLOT)
    assert (summary.sent, summary.failed) == (1, 1)
    assert states(project)["gone@example.com"] == ("active", 1, "failed", 1)


def test_a_data_refusal_of_the_content_stops_the_run_and_changes_nobody(project: Project) -> None:
    add_readers(project, ["ada@example.com", "bo@example.com", "cy@example.com"])
    faults = FaultPlan({"*": refuse_data(554, "5.7.1 Message content rejected")})
    with SmtpSink(faults=faults) as sink, smtp(sink) as transport, pytest.raises(RelayError, match=r"554 5\.7\.1"):
        send_due(project, transport, now=FIRST_SLOT)
    assert set(states(project).values()) == {("active", 0, "pending", 0)}


# --- a relay that refuses everyone: Postfix smtp-sink, the real CLI, both backends ------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def postfix_sink(*options: str) -> Iterator[int]:
    """Postfix's C `smtp-sink` on a free port with these options; yields the port."""
    if not POSTFIX_SINK.exists():
        message = f"this test needs Postfix's smtp-sink at {POSTFIX_SINK} (apt-get install -y postfix)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen([str(POSTFIX_SINK), *user, *options, f"127.0.0.1:{port}", "64"])
    try:
        deadline = time.monotonic() + 10
        while not listening(port):
            assert sink.poll() is None and time.monotonic() < deadline, "smtp-sink did not start"
            time.sleep(0.05)
        yield port
    finally:
        sink.terminate()
        sink.wait(timeout=10)


def run_send(project_dir: Path, env: dict[str, str], database_url: str, port: int) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        **env,
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_DELIVERY_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_SMTP_TIMEOUT": "10",
    }
    command = [sys.executable, "-m", "newsletter", "--config", str(project_dir / "config.toml")]
    command += ["send", "--now", FIRST_SLOT.isoformat()]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["MAIL", "."], ids=["at-mail-from", "at-end-of-data"])
def test_a_relay_refusing_everyone_stops_the_run_and_bounces_nobody(
    any_project: Project, project_dir: Path, env: dict[str, str], stage: str
) -> None:
    readers = [f"reader{n}@example.com" for n in range(100)]
    add_readers(any_project, readers)
    url = any_project.settings.database.url
    with postfix_sink("-f", stage, "-B", "554 5.7.1 Service unavailable; client host blocked") as port:
        for _ in range(2):
            refused = run_send(project_dir, env, url, port)
            assert refused.returncode == 1, refused.stderr
            assert "554 5.7.1" in refused.stderr and "nobody's state changes" in refused.stderr
            assert "Traceback" not in refused.stderr
    assert set(states(any_project).values()) == {("active", 0, "pending", 0)}
    with postfix_sink() as port:
        accepted = run_send(project_dir, env, url, port)
    assert accepted.returncode == 0, accepted.stderr
    assert "100 sent" in accepted.stdout
    assert set(states(any_project).values()) == {("active", 0, "sent", 1)}


# --- unbounce --------------------------------------------------------------------------------------------------


def test_unbounce_takes_back_readers_a_relay_fault_suppressed(
    any_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_readers(any_project, ["ada@example.com", "bo@example.com", "cy@example.com"])
    with any_project.db.session() as session:
        add_subscriber(session, any_project, SubscriberInput("new@example.com"), confirmed=False, now=CONFIRMED_AT)
    refusing = MemoryTransport()
    refusing.fail_permanently("ada@example.com", "bo@example.com", "new@example.com")
    any_project.settings = any_project.settings.replace("delivery", hard_bounce_limit=1)
    send_due(any_project, refusing, now=FIRST_SLOT)
    with any_project.db.reading() as session:
        bounced = set(session.scalars(select(Subscriber.email).where(Subscriber.status == "bounced")))
    assert bounced == {"ada@example.com", "bo@example.com", "new@example.com"}

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", any_project.settings.database.url)
    runner = CliRunner()
    config = ["--config", str(any_project.settings.config_path)]
    later = (FIRST_SLOT + timedelta(weeks=1, days=1)).isoformat()
    usage = runner.invoke(main, [*config, "subscribers", "unbounce"])
    assert usage.exit_code == 2
    not_bounced = runner.invoke(main, [*config, "subscribers", "unbounce", "cy@example.com", "--now", later])
    assert not_bounced.exit_code == 1 and "is active, not bounced" in not_bounced.output
    after_the_fault = (FIRST_SLOT + timedelta(days=1)).isoformat()
    nobody = runner.invoke(main, [*config, "subscribers", "unbounce", "--all", "--since", after_the_fault])
    assert nobody.exit_code == 0 and "nobody is bounced since" in nobody.output
    since = (FIRST_SLOT - timedelta(hours=1)).isoformat()
    done = runner.invoke(main, [*config, "subscribers", "unbounce", "--all", "--since", since, "--now", later])
    assert done.exit_code == 0, done.output
    assert done.output.count("unbounced") == 3
    with any_project.db.reading() as session:
        after = {row.email: row.status for row in session.execute(select(Subscriber.email, Subscriber.status))}
        pending = session.scalars(
            select(Subscriber.email).join(Delivery).where(Delivery.status == "pending").order_by(Subscriber.email)
        ).all()
    assert after == {
        "ada@example.com": "active",
        "bo@example.com": "active",
        "cy@example.com": "active",
        "new@example.com": "pending",
    }
    assert pending == ["ada@example.com", "bo@example.com", "cy@example.com", "new@example.com"]
    assert send_due(any_project, MemoryTransport(), now=FIRST_SLOT + timedelta(weeks=2)).sent == 4

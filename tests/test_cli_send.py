"""`newsletter send` and `newsletter test-send` as an operator runs them."""

from __future__ import annotations

import email
import json
import socket
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import pytest
from click.testing import CliRunner
from smtp_sink import SmtpSink
from sqlalchemy import select

from newsletter.cli import main
from newsletter.models import Delivery
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber
from newsletter.transports import read_outbox

CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
FIRST_SLOT = "2026-03-02T07:00:00+00:00"


@pytest.fixture
def readers(project: Project) -> Project:
    with project.db.session() as session:
        for name in ("ada", "bo"):
            reader = SubscriberInput(f"{name}@example.com", name.title(), "UTC", "Monday", "07:00")
            add_subscriber(session, project, reader, confirmed=True, now=CONFIRMED_AT)
    return project


def invoke(project: Project, *args: str) -> tuple[int, str]:
    config = str(project.settings.config_path)
    result = CliRunner().invoke(main, ["--config", config, *args], catch_exceptions=False)
    return result.exit_code, result.output


def statuses(project: Project) -> list[str]:
    with project.db.session() as session:
        return sorted(session.scalars(select(Delivery.status).where(Delivery.lesson == "muscle")))


def test_send_json_reports_the_counts_and_fills_the_outbox(readers: Project) -> None:
    code, output = invoke(readers, "send", "--now", FIRST_SLOT, "--json")
    assert code == 0
    report = json.loads(output)
    assert {key: report[key] for key in ("sent", "retry", "failed", "skipped", "held")} == {
        "sent": 2,
        "retry": 0,
        "failed": 0,
        "skipped": 0,
        "held": "",
    }
    assert len(read_outbox(readers.settings.delivery.outbox)) == 2
    assert statuses(readers) == ["sent", "sent"]


def test_send_without_a_terminal_prints_a_one_line_summary(readers: Project) -> None:
    code, output = invoke(readers, "send", "--now", FIRST_SLOT, "--limit", "1")
    assert code == 0
    assert output.strip() == "1 sent, 0 retry, 0 failed, 0 skipped"


def test_dry_run_shows_what_is_due_and_changes_nothing(readers: Project) -> None:
    code, output = invoke(readers, "send", "--now", FIRST_SLOT, "--dry-run")
    assert code == 0
    assert "ada@example.com" in output and "muscle" in output and "2 due" in output
    assert statuses(readers) == ["pending", "pending"]
    assert not read_outbox(readers.settings.delivery.outbox)


def test_a_bad_now_is_a_usage_error(readers: Project) -> None:
    code, output = invoke(readers, "send", "--now", "next tuesday")
    assert code == 2 and "ISO 8601" in output


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"NEWSLETTER_SMTP_PORT": "{closed}"}, "127.0.0.1"),
        ({"NEWSLETTER_SMTP_HOST": "no-such-host.invalid"}, "no-such-host.invalid"),
        ({"NEWSLETTER_SMTP_PORT": "{sink}", "NEWSLETTER_SMTP_SECURITY": "tls"}, "TLS"),
        ({"NEWSLETTER_SMTP_PORT": "{auth_sink}", "NEWSLETTER_SMTP_USERNAME": "ops"}, "auth"),
    ],
    ids=["closed-port", "unknown-host", "tls-mismatch", "auth-refused"],
)
def test_an_unusable_smtp_server_is_one_clear_error_and_the_ledger_is_untouched(
    readers: Project, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str
) -> None:
    with SmtpSink() as sink, SmtpSink(auth=("ops", "right")) as auth_sink:
        ports = {"{closed}": str(closed_port()), "{sink}": str(sink.port), "{auth_sink}": str(auth_sink.port)}
        monkeypatch.setenv("NEWSLETTER_DELIVERY_TRANSPORT", "smtp")
        monkeypatch.setenv("NEWSLETTER_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("NEWSLETTER_SMTP_TIMEOUT", "3")
        monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "wrong")
        for name, value in variables.items():
            monkeypatch.setenv(name, ports.get(value, value))
        result = CliRunner().invoke(main, ["--config", str(readers.settings.config_path), "send", "--now", FIRST_SLOT])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert expected.lower() in result.output.lower()
    assert statuses(readers) == ["pending", "pending"]


def test_test_send_goes_outside_the_ledger_with_a_test_subject(readers: Project, tmp_path: Path) -> None:
    code, output = invoke(readers, "test-send", "knees", "--to", "editor@example.com")
    assert code == 0 and "editor@example.com" in output
    (stored,) = read_outbox(readers.settings.delivery.outbox)
    parsed = email.message_from_bytes(stored.raw, policy=policy.default)
    assert parsed["Subject"].startswith("[TEST] Lesson 2")
    assert parsed["To"].addresses[0].addr_spec == "editor@example.com"
    assert statuses(readers) == ["pending", "pending"]


def test_test_send_of_an_unknown_lesson_lists_the_lessons(readers: Project) -> None:
    code, output = invoke(readers, "test-send", "swimming", "--to", "editor@example.com")
    assert code == 1 and "muscle" in output and "swimming" in output

"""Every command that reads or writes the database, run as an operator runs it, on SQLite and on PostgreSQL.

The meta-test at the end keeps the list honest: each command of the CLI is either exercised here (or in
the module named beside it) on both backends, or declared not to touch the database.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import httpx2
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from starlette.testclient import TestClient

from newsletter import tokens
from newsletter.cli import main
from newsletter.models import Delivery, Subscriber
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber
from newsletter.web import create_app

CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday
FIRST_SLOT = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
NOW = datetime.now(UTC)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
Cli = Callable[..., Result]

# Commands this module runs on both backends.
TESTED_HERE = {
    "subscribers add",
    "subscribers import",
    "subscribers list",
    "subscribers export",
    "subscribers pause",
    "subscribers resume",
    "subscribers set",
    "subscribers unsubscribe",
    "subscribers unbounce",
    "subscribers erase",
    "plan",
    "send",
    "status",
    "deliveries",
    "retry",
    "db upgrade",
    "lessons",  # --impact reads the ledger
}
# Servers, run here as real processes on both backends.
SERVERS = {"serve", "preview"}
# Tested on both backends as real processes elsewhere.
TESTED_ELSEWHERE = {
    "run": "tests/test_daemon.py (database_url: mail flows, health and metrics over HTTP)",
    "bounces": "tests/test_feedback_mailbox.py (any_project: a Maildir pass through the CLI)",
    "suppressions add": "tests/test_feedback_suppression.py (any_project)",
    "suppressions list": "tests/test_feedback_suppression.py (any_project)",
    "suppressions remove": "tests/test_feedback_suppression.py (any_project)",
}
# Commands that never open the configured database (demo makes a scratch SQLite file of its own).
NO_DATABASE = {"render", "check", "split", "test-send", "demo", "init"}


@pytest.fixture
def cli(any_project: Project, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """`newsletter --config <project> ARGS…` in-process, on the backend of `any_project`."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", any_project.settings.database.url)
    config = str(any_project.settings.config_path)

    def invoke(*args: str) -> Result:
        result = CliRunner().invoke(main, ["--config", config, *args])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return result

    return invoke


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def count(project: Project, *where: object) -> int:
    with project.db.reading() as session:
        return int(session.scalar(select(func.count()).select_from(Subscriber).where(*where)) or 0)  # type: ignore[arg-type]


def test_the_subscriber_commands(any_project: Project, cli: Cli, tmp_path: Path) -> None:
    at = CONFIRMED_AT.isoformat()
    ok(cli("subscribers", "add", "ann@example.com", "--confirmed", "--timezone", "UTC", "--now", at))
    ok(cli("subscribers", "add", "bo@example.com", "--name", "Bo", "--now", at))
    source = tmp_path / "in.csv"
    source.write_text("email,name,timezone\ncy@example.com,Cy,Asia/Tokyo\ndee@example.com,Dee,\n", encoding="utf-8")
    assert "2 added" in ok(cli("subscribers", "import", str(source), "--confirmed", "--now", at))
    listed = json.loads(ok(cli("subscribers", "list", "--json")))
    assert sorted(entry["email"] for entry in listed) == [
        "ann@example.com",
        "bo@example.com",
        "cy@example.com",
        "dee@example.com",
    ]
    exported = tmp_path / "out.csv"
    ok(cli("subscribers", "export", str(exported)))
    assert len(exported.read_text(encoding="utf-8").splitlines()) == 5
    ok(cli("subscribers", "pause", "ann@example.com", "--now", at))
    assert count(any_project, Subscriber.status == "paused") == 1
    ok(cli("subscribers", "resume", "ann@example.com", "--now", at))
    ok(cli("subscribers", "set", "ann@example.com", "--weekday", "Tuesday", "--now", at))
    with any_project.db.reading() as session:
        assert session.scalar(select(Subscriber.weekday).where(Subscriber.email == "ann@example.com")) == 1
    ok(cli("subscribers", "unsubscribe", "cy@example.com", "--now", at))
    assert "nobody is bounced" in ok(cli("subscribers", "unbounce", "--all", "--now", at))
    ok(cli("subscribers", "erase", "dee@example.com", "--yes", "--now", at))
    assert count(any_project) == 3
    assert count(any_project, Subscriber.status == "unsubscribed") == 1


def test_the_sending_and_reporting_commands(any_project: Project, cli: Cli) -> None:
    at = CONFIRMED_AT.isoformat()
    for address in ("ann@example.com", "bo@example.com"):
        ok(cli("subscribers", "add", address, "--confirmed", "--timezone", "UTC", "--weekday", "Mon", "--now", at))
    planned = json.loads(ok(cli("plan", "--now", at, "--days", "8", "--json")))
    assert {(entry["email"], entry["slug"]) for entry in planned} >= {
        ("ann@example.com", "muscle"),
        ("bo@example.com", "muscle"),
        ("ann@example.com", "knees"),
    }
    dry = json.loads(ok(cli("send", "--now", FIRST_SLOT.isoformat(), "--dry-run", "--json")))
    assert len(dry["due"]) == 2 and dry["held"] == ""
    assert json.loads(ok(cli("send", "--now", FIRST_SLOT.isoformat(), "--json")))["sent"] == 2
    report = json.loads(ok(cli("status", "--now", FIRST_SLOT.isoformat(), "--json")))
    assert report["subscribers"]["active"] == 2
    assert {line["lesson"]: line["sent"] for line in report["lessons"]}["muscle"] == 2
    rows = json.loads(ok(cli("deliveries", "--status", "sent", "--json")))
    assert len(rows) == 2
    with any_project.db.session() as session:
        session.execute(Delivery.__table__.update().where(Delivery.status == "sent").values(status="failed"))
    retried = ok(cli("retry", "--all-failed", "--now", (FIRST_SLOT + timedelta(hours=1)).isoformat()))
    assert "2" in retried
    with any_project.db.reading() as session:
        assert session.scalar(select(func.count()).where(Delivery.status == "failed")) == 0
    ok(cli("db", "upgrade"))


def test_the_impact_of_an_edit_is_shown_before_it_lands(any_project: Project, cli: Cli) -> None:
    at = CONFIRMED_AT.isoformat()
    ok(cli("subscribers", "add", "ann@example.com", "--confirmed", "--timezone", "UTC", "--now", at))
    ok(cli("send", "--now", FIRST_SLOT.isoformat()))  # the ledger is planned against the course as it is
    assert ok(cli("lessons", "--impact")).strip() == "no change to any reader"
    knees = any_project.settings.newsletter.lessons / "02-knees.md"
    knees.write_text(knees.read_text(encoding="utf-8").replace("+++\n", "+++\ndraft = true\n", 1), encoding="utf-8")
    impact = ok(cli("lessons", "--impact"))
    assert "'knees' may not go out (draft" in impact
    with any_project.db.reading() as session:  # a preview changes nothing
        assert session.scalar(select(Delivery.status).where(Delivery.lesson == "knees")) == "pending"
    dry = json.loads(ok(cli("send", "--now", FIRST_SLOT.isoformat(), "--dry-run", "--json")))
    assert dry["course_changes"] == json.loads(ok(cli("lessons", "--impact", "--json")))
    assert "1 of 'knees' (draft)" in dry["held"]
    with any_project.db.reading() as session:
        assert session.scalar(select(Delivery.status).where(Delivery.lesson == "knees")) == "pending"
    # The studio's Changes page says the same, and changes nothing either.
    edited = Project(any_project.settings)
    app = create_app(edited, live_reload=False, clock=lambda: FIRST_SLOT)
    with TestClient(app, base_url="http://127.0.0.1:8025", client=("127.0.0.1", 50000)) as studio:
        page = studio.get("/changes")
    edited.close()
    assert page.status_code == 200
    listed = [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", page.text)]
    assert listed == json.loads(ok(cli("lessons", "--impact", "--json"))) and listed
    with any_project.db.reading() as session:
        assert session.scalar(select(Delivery.status).where(Delivery.lesson == "knees")) == "pending"


def test_status_counts_unsubscribes_by_lesson_on_both_backends(any_project: Project, cli: Cli) -> None:
    at = CONFIRMED_AT.isoformat()
    ok(cli("subscribers", "add", "ann@example.com", "--confirmed", "--timezone", "UTC", "--now", at))
    ok(cli("subscribers", "add", "bo@example.com", "--now", at))
    ok(cli("send", "--now", FIRST_SLOT.isoformat()))
    ok(cli("subscribers", "unsubscribe", "ann@example.com", "--now", FIRST_SLOT.isoformat()))
    ok(cli("subscribers", "unsubscribe", "bo@example.com", "--now", FIRST_SLOT.isoformat()))
    report = json.loads(ok(cli("status", "--now", FIRST_SLOT.isoformat(), "--json")))
    after = {line["lesson"]: line["unsubscribed_after"] for line in report["lessons"]}
    assert after["muscle"] == 1 and after["confirmation"] == 1
    assert "Traceback" not in ok(cli("status", "--now", FIRST_SLOT.isoformat()))


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(SERVERS))
def test_the_servers_read_and_write_the_database(
    any_project: Project, project_dir: Path, env: dict[str, str], command: str
) -> None:
    with any_project.db.session() as session:
        reader = add_subscriber(session, any_project, SubscriberInput("kai@example.com"), confirmed=True, now=NOW)
        reader_id = reader.id
    port = free_port()
    environment = {**os.environ, **env, "NEWSLETTER_DATABASE_URL": any_project.settings.database.url}
    arguments = ["--port", str(port)] + (["--no-open"] if command == "preview" else [])
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--config", str(project_dir / "config.toml"), command, *arguments],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None and time.monotonic() < deadline, f"newsletter {command} did not start"
            with contextlib.suppress(httpx2.TransportError):
                studio = httpx2.get(base + "/", timeout=2)
                break
            time.sleep(0.1)
        assert studio.status_code == 200 and "muscle" in studio.text  # the studio reads the ledger
        link = f"{base}/u/{tokens.issue(any_project.settings.secret_key, 'unsubscribe', reader_id)}"
        one_click = httpx2.post(link, content=b"List-Unsubscribe=One-Click", headers=FORM, timeout=10)
        assert one_click.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=20)
    with any_project.db.reading() as session:
        assert session.scalar(select(Subscriber.status).where(Subscriber.id == reader_id)) == "unsubscribed"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _command_names(group: click.Group, prefix: str = "") -> set[str]:
    names: set[str] = set()
    commands = main.every_command() if group is main else group.commands
    for name, command in commands.items():
        if isinstance(command, click.Group):
            names |= _command_names(command, f"{prefix}{name} ")
        else:
            names.add(f"{prefix}{name}")
    return names


def test_every_command_is_tested_on_both_backends_or_touches_no_database() -> None:
    every = _command_names(main)
    tested = TESTED_HERE | SERVERS | set(TESTED_ELSEWHERE)
    assert every - tested - NO_DATABASE == set(), "classify the new command here and test it on both backends"
    assert tested - every == set(), "a listed command no longer exists"

"""`newsletter run` and the course on disk: a broken lesson never stops it, and edits are picked up live.

Real daemon processes against a real SMTP server (aiosmtpd), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import email
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import httpx2
import pytest
from daemon_process import DaemonProcess, daemon_env, wait_for
from smtp_sink import SmtpSink
from sqlalchemy import select, update

from newsletter import tokens
from newsletter.config import load_settings
from newsletter.models import Delivery, Subscriber
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber

pytestmark = pytest.mark.slow


def lenient_project(project_dir: Path, environment: dict[str, str]) -> Project:
    """The test's handle on the daemon's database; lenient, since a lesson file is broken on purpose."""
    project = Project(load_settings(project_dir / "config.toml", env=environment), lenient=True)
    project.db  # noqa: B018
    return project


def add_reader(project: Project, address: str, *, last_lesson: str | None = None, position: int = 0) -> int:
    with project.db.session() as session:
        reader = SubscriberInput(address, "Reader", "UTC", "Monday", "07:00")
        subscriber = add_subscriber(session, project, reader, confirmed=True, now=datetime.now(UTC))
        if last_lesson is not None:
            placed = {"last_lesson": last_lesson, "position": position}
            session.execute(update(Subscriber).where(Subscriber.id == subscriber.id).values(**placed))
        return subscriber.id


def subjects(sink: SmtpSink) -> dict[str, str]:
    found = {}
    for message in sink.messages:
        parsed = email.message_from_bytes(message.data, policy=policy.default)
        found[message.recipients[0]] = str(parsed["Subject"])
    return found


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_a_broken_lesson_holds_only_its_own_deliveries_and_health_says_why(
    project_dir: Path, env: dict[str, str], database_url: str, daemons: Callable[..., DaemonProcess]
) -> None:
    brain = project_dir / "lessons" / "03-brain.md"
    edit(brain, 'title = "', 'title = unquoted "')
    with SmtpSink() as sink:
        environment = daemon_env(database_url, sink.port, env)
        project = lenient_project(project_dir, environment)
        newcomer = add_reader(project, "new@example.com")
        waiting = add_reader(project, "waiting@example.com", last_lesson="knees", position=2)
        with project.db.session() as session:
            session.execute(update(Delivery).where(Delivery.subscriber_id == waiting).values(lesson="brain"))
        daemon = daemons(project_dir, environment)
        wait_for(lambda: sink.count == 1, "lesson 1 to the newcomer")
        wait_for(daemon.ticked, "a tick")

        health = daemon.get("/healthz")
        link = f"{daemon.url}/u/{tokens.issue(project.settings.secret_key, 'unsubscribe', waiting)}"
        page = httpx2.get(link, timeout=10)
        daemon.terminate()
    assert [message.recipients[0] for message in sink.messages] == ["new@example.com"]
    assert health.status_code == 503
    problems = " ".join(health.json()["problems"])
    assert "03-brain.md" in problems and "held" in problems
    assert page.status_code == 200  # the pages keep working
    with project.db.reading() as session:
        held = session.scalars(select(Delivery).where(Delivery.subscriber_id == waiting)).one()
        sent = session.scalars(select(Delivery.status).where(Delivery.subscriber_id == newcomer)).all()
    assert (held.lesson, held.status, held.hold) == ("brain", "held", "broken")
    assert "sent" in sent
    assert any("03-brain.md" in str(record.get("message")) for record in daemon.records())
    project.close()


def test_the_daemon_follows_edits_and_keeps_the_last_good_course_while_one_is_broken(
    project_dir: Path, env: dict[str, str], database_url: str, daemons: Callable[..., DaemonProcess]
) -> None:
    muscle = project_dir / "lessons" / "01-muscle.md"
    with SmtpSink() as sink:
        environment = daemon_env(database_url, sink.port, env)
        project = lenient_project(project_dir, environment)
        daemon = daemons(project_dir, environment)
        wait_for(daemon.ticked, "the first tick")

        edit(muscle, 'subject = "Lesson 1:', 'subject = "Edited lesson 1:')
        wait_for(lambda: _logged(daemon, "reloaded"), "the daemon to reload the edited lesson")
        add_reader(project, "first@example.com")
        wait_for(lambda: "first@example.com" in subjects(sink), "lesson 1 with the new subject")

        edit(muscle, "+++", "+++\nweek = [")  # an editor's half-saved change: the file does not parse
        wait_for(lambda: _logged(daemon, "reload_failed"), "the daemon to refuse the broken file")
        broken = daemon.get("/healthz")
        add_reader(project, "second@example.com")
        wait_for(lambda: "second@example.com" in subjects(sink), "lesson 1 from the last good course")

        edit(muscle, "+++\nweek = [", "+++")
        wait_for(lambda: daemon.get("/healthz").status_code == 200, "health to recover once it is fixed")
        daemon.terminate()
    sent = subjects(sink)
    assert sent["first@example.com"].startswith("Edited lesson 1:")
    assert sent["second@example.com"].startswith("Edited lesson 1:")  # the last good version, not nothing
    assert broken.status_code == 503
    assert re.search(r"does not load .*01-muscle\.md", " ".join(broken.json()["problems"]))
    project.close()


def _logged(daemon: DaemonProcess, event: str) -> bool:
    return any(record.get("event") == event for record in daemon.records())

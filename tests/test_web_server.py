"""`newsletter serve` as a real uvicorn process: pages answer, one-click works, live reload streams, Ctrl-C stops it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest
from servers import free_port
from sqlalchemy import select

from newsletter import tokens
from newsletter.models import Subscriber
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber

pytestmark = pytest.mark.slow
STARTUP_SECONDS = 20


@pytest.fixture
def server(project_dir: Path, project: Project, sqlite_url: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    environment = {**os.environ, "NEWSLETTER_DATABASE_URL": sqlite_url, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newsletter",
            "--config",
            str(project_dir / "config.toml"),
            "serve",
            "--port",
            str(port),
        ],
        cwd=project_dir,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx2.get(base + "/subscribe", timeout=1)
            break
        except httpx2.TransportError:
            time.sleep(0.1)
    else:
        process.kill()
        output = process.communicate()[0].decode(errors="replace")
        pytest.fail(f"newsletter serve did not answer within {STARTUP_SECONDS} s:\n{output}")
    yield process, base
    if process.poll() is None:
        process.kill()
        process.wait()
    assert process.stdout is not None
    process.stdout.close()


def test_serve_answers_unsubscribes_streams_reloads_and_stops(
    server: tuple[subprocess.Popen[bytes], str], project: Project, project_dir: Path
) -> None:
    process, base = server
    with project.db.session() as session:
        reader = add_subscriber(
            session, project, SubscriberInput("kai@example.com"), confirmed=True, now=datetime.now(UTC)
        )
        reader_id = reader.id

    assert 'name="email"' in httpx2.get(base + "/subscribe").text
    assert httpx2.get(base + "/").status_code == 200

    one_click = httpx2.post(
        f"{base}/u/{tokens.issue(project.settings.secret_key, 'unsubscribe', reader_id)}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200 and not one_click.is_redirect
    with project.db.session() as session:
        assert session.scalar(select(Subscriber.status).where(Subscriber.id == reader_id)) == "unsubscribed"

    with httpx2.Client(base_url=base, timeout=httpx2.Timeout(10.0)) as client:
        with client.stream("GET", "/_studio/events") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            lines = events.iter_lines()
            assert [next(lines) for _ in range(3)] == ["retry: 1000", "event: version", "data: 0"]
            lesson = project_dir / "lessons" / "02-knees.md"
            edited = lesson.read_text(encoding="utf-8").replace("Lesson 2:", "Lesson 2 (new):")
            started = time.monotonic()
            with _saving_repeatedly(lesson, edited):
                assert _lines_until(lines, "data: 1")[-1] == "data: 1"
            assert time.monotonic() - started < 3, "the reload took longer than a couple of seconds"
        assert "Lesson 2 (new):" in client.get("/preview/knees").text

        # Ctrl-C with a live-reload stream still open must not hang the server.
        with client.stream("GET", "/_studio/events") as events:
            next(events.iter_lines())
            process.send_signal(signal.SIGINT)
            process.wait(timeout=15)
    assert process.stdout is not None
    output = process.stdout.read().decode(errors="replace")
    assert process.returncode == 0, output
    assert "Serving the preview studio and the subscriber pages at http://127.0.0.1:" in output


@contextlib.contextmanager
def _saving_repeatedly(path: Path, text: str) -> Iterator[None]:
    """Save the file now and every half second while the body runs (an editor saving until it sees the change)."""
    stop = threading.Event()

    def save() -> None:
        while not stop.is_set():
            path.write_text(text, encoding="utf-8")
            stop.wait(0.5)

    saver = threading.Thread(target=save, daemon=True)
    saver.start()
    try:
        yield
    finally:
        stop.set()
        saver.join()


def _lines_until(lines: Iterator[str], wanted: str) -> list[str]:
    seen = []
    for line in lines:
        seen.append(line)
        if line == wanted:
            break
    return seen


def test_serve_sends_a_confirmation_within_seconds_of_the_sign_up_and_no_lesson(
    server: tuple[subprocess.Popen[bytes], str], project: Project
) -> None:
    import re

    from sqlalchemy import update

    from newsletter.models import Delivery

    process, base = server
    with project.db.session() as session:  # a reader whose lesson 1 is due: lessons are not serve's to send
        add_subscriber(session, project, SubscriberInput("kai@example.com"), confirmed=True, now=datetime.now(UTC))
        session.execute(update(Delivery).values(due_at=datetime.now(UTC)))
    arrived = project.settings.delivery.outbox / "new"
    with httpx2.Client(base_url=base, timeout=10) as client:
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/subscribe").text)
        assert csrf is not None
        fields = {"email": "noor@example.com", "weekday": "Monday", "time": "07:00", "timezone": "UTC"}
        started = time.monotonic()
        answer = client.post("/subscribe", data={**fields, "csrf_token": csrf.group(1)})
        assert answer.status_code == 200 and "Check your inbox" in answer.text
        while time.monotonic() - started < 10 and not (arrived.is_dir() and any(arrived.iterdir())):
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    time.sleep(1)  # anything else it were to send would land meanwhile
    process.send_signal(signal.SIGINT)
    process.wait(timeout=15)
    assert process.stdout is not None
    output = process.stdout.read().decode(errors="replace")
    assert elapsed < 5, f"the confirmation took {elapsed:.1f} s:\n{output}"
    (message,) = [path.read_bytes() for path in arrived.iterdir()]
    assert b"To: noor@example.com" in message and b"Confirm your subscription" in message
    assert "note: this process sends each sign-up's confirmation at once, and no lesson" in output
    assert "sent 'confirmation' to n…@example.com" in output
    with project.db.session() as session:
        statuses = dict(session.execute(select(Delivery.lesson, Delivery.status)).all())
    assert statuses == {"muscle": "pending", "confirmation": "sent"}

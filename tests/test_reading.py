"""Reports never hold up a sender: `plan`, `list` and `export` stream from one read-only transaction.

The readers are real processes on a real SQLite file. Each is stopped mid-stream by a pipe nobody reads
(its output is far bigger than the pipe's buffer), and while it waits there, in the middle of its read
transaction, a real `newsletter send` must run to the end. A passive WAL checkpoint then proves the reader
was still inside its transaction: it cannot copy back the pages the sender wrote while a reader's snapshot
predates them.
"""

from __future__ import annotations

import gc
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from conftest import REPO, TEST_SECRET_KEY
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from newsletter import plan, subscribers
from newsletter.config import Settings, load_settings
from newsletter.csvio import exporting
from newsletter.csvio.exporting import export_subscribers
from newsletter.ledger.waiting import DELIVERIES, SUBSCRIBERS
from newsletter.plan import upcoming_sends
from newsletter.project import Project
from newsletter.starter import copy_project
from newsletter.subscribers import SubscriberInput, add_subscriber, list_subscribers

pytestmark = pytest.mark.slow
CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday
FIRST_SLOT = "2026-03-02T07:00:00+00:00"
READERS = 2500  # a few hundred kilobytes of output from each reader: many times a pipe's buffer
DUE_AT_FIRST_SLOT = 5  # Monday readers; the rest read on Tuesday


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with the readers, made once for the module (each test gets its own copy)."""
    database = tmp_path_factory.mktemp("seeded") / "newsletter.db"
    root = tmp_path_factory.mktemp("course") / "project"
    copy_project(REPO / "config.toml", root)
    environment = {"NEWSLETTER_SECRET_KEY": TEST_SECRET_KEY, "NEWSLETTER_DATABASE_URL": f"sqlite:///{database}"}
    project = Project(load_settings(root / "config.toml", env=environment))
    with project.db.session() as session:
        for n in range(READERS):
            day = "Monday" if n < DUE_AT_FIRST_SLOT else "Tuesday"
            reader = SubscriberInput(f"reader{n:05}@example.com", f"Reader {n}", "UTC", day, "07:00")
            add_subscriber(session, project, reader, confirmed=True, now=CONFIRMED_AT)
    project.db.dispose()  # the last connection closed: the WAL is folded back and removed
    return database


@pytest.fixture
def course(seeded: Path, settings: Settings) -> Project:
    shutil.copy(seeded, settings.database.url.removeprefix("sqlite:///"))
    return Project(settings)


def newsletter(project: Project, *arguments: str) -> list[str]:
    return [sys.executable, "-m", "newsletter", "--config", str(project.settings.config_path), *arguments]


def environment(project: Project) -> dict[str, str]:
    return {**os.environ, "NEWSLETTER_DATABASE_URL": project.settings.database.url}


def pages_left_in_the_wal(database: Path) -> int:
    """Checkpoint what can be, without waiting; return the WAL pages a reader's older snapshot still keeps."""
    with sqlite3.connect(database, timeout=0) as connection:
        _busy, logged, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(logged) - int(copied)


READERS_COMMANDS = {
    "plan": (["plan", "--json", "--days", "7", "--now", CONFIRMED_AT.isoformat()], '"email": "reader02499@'),
    "plan as a table": (["plan", "--days", "7", "--now", CONFIRMED_AT.isoformat()], "reader02499@"),
    "list": (["subscribers", "list"], f"{READERS} subscribers"),
    "list as JSON": (["subscribers", "list", "--json"], '"email": "reader02499@'),
    "export": (["subscribers", "export"], "reader02499@example.com,Reader 2499"),
}


@pytest.mark.parametrize("command", READERS_COMMANDS, ids=list(READERS_COMMANDS))
def test_a_send_runs_to_the_end_while_a_reader_is_stopped_mid_stream(course: Project, command: str) -> None:
    arguments, last_words = READERS_COMMANDS[command]
    database = Path(course.settings.database.url.removeprefix("sqlite:///"))
    reader = subprocess.Popen(
        newsletter(course, *arguments), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment(course)
    )
    try:
        assert reader.stdout is not None
        first_line = reader.stdout.readline()  # the reader has started its output, and nobody reads on
        assert first_line, reader.stderr.read() if reader.stderr else ""
        sender = subprocess.run(
            newsletter(course, "send", "--now", FIRST_SLOT, "--json"),
            capture_output=True,
            check=False,
            text=True,
            env=environment(course),
            timeout=120,
        )
        assert sender.returncode == 0, sender.stderr
        assert json.loads(sender.stdout)["sent"] == DUE_AT_FIRST_SLOT
        assert reader.poll() is None, "the reader should still be waiting on its full pipe"
        assert pages_left_in_the_wal(database) > 0, "the reader's transaction should predate the send"
        rest, errors = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, errors.decode()
    output = (first_line + rest).decode()
    assert last_words in output, "the reader's output should be whole"


# --- flat memory, on both backends ------------------------------------------------------------------------------------


def add_readers(project: Project, first: int, count: int) -> None:
    """Readers `first`… with lesson 1 waiting in the coming week, written in bulk (the ORM path is tested elsewhere)."""
    lesson = project.series.lessons[0].slug
    due = {n: CONFIRMED_AT + timedelta(hours=1 + n % 150) for n in range(first, first + count)}
    readers = [
        {"email": f"bulk{n:06}@example.com", "name": f"Bulk {n}", "timezone": "UTC", "weekday": at.weekday()}
        for n, at in due.items()
    ]
    with project.db.engine.begin() as connection:
        connection.execute(insert(SUBSCRIBERS).values(send_time=time(7), status="active"), readers)
        ids = connection.execute(select(SUBSCRIBERS.c.id).where(SUBSCRIBERS.c.email.like("bulk%"))).scalars()
        waiting = [
            {"subscriber_id": reader, "slot_at": at, "due_at": at}
            for reader, at in zip(sorted(ids)[first:], due.values(), strict=True)
        ]
        connection.execute(insert(DELIVERIES).values(lesson=lesson, status="pending"), waiting)


class NullText(io.StringIO):
    """A text stream that forgets what it is given, so that only the reading is measured."""

    def write(self, text: str) -> int:
        return len(text)


STREAMS: dict[str, Callable[[Project, Session], int]] = {
    "plan": lambda project, session: sum(1 for _ in upcoming_sends(session, project, now=CONFIRMED_AT, days=7)),
    "list": lambda _project, session: sum(1 for _ in list_subscribers(session)),
    "export": lambda _project, session: export_subscribers(session, NullText()),
}


def peak_bytes(project: Project, stream: str) -> tuple[int, int]:
    """How many entries one read went through, and the most memory Python held for it meanwhile.

    The garbage collector is off meanwhile, so that the peak does not depend on when it happens to run, and a read
    that leaves reference cycles behind per entry (garbage only a collection frees) shows as growth.
    """
    gc.collect()
    gc.disable()
    try:
        with project.db.reading() as session:
            tracemalloc.start()
            try:
                seen = STREAMS[stream](project, session)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    finally:
        gc.enable()
    return seen, peak


@pytest.mark.parametrize("stream", STREAMS, ids=list(STREAMS))
def test_reading_ten_times_the_readers_takes_no_more_memory(
    any_project: Project, stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module, batch in ((plan, "PLAN_BATCH"), (subscribers, "LIST_BATCH"), (exporting, "EXPORT_BATCH")):
        monkeypatch.setattr(module, batch, 50)  # so that a few hundred readers are already many batches
    add_readers(any_project, 0, 300)
    peak_bytes(any_project, stream)  # a first read fills caches (compiled statements) that later reads share
    few, few_peak = peak_bytes(any_project, stream)
    add_readers(any_project, 300, 2_700)
    many, many_peak = peak_bytes(any_project, stream)
    assert (few, many) == (300, 3_000)
    assert many_peak < 2 * few_peak, f"{few} entries peaked at {few_peak:,} bytes, {many} at {many_peak:,}"

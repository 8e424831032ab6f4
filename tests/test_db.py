"""Migrations and connections: the head revision, `newsletter db upgrade`, SQLite tuning, concurrent first use."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import hold_the_line
from sqlalchemy import inspect, text

from newsletter.cli import main
from newsletter.config import Settings
from newsletter.db import HEAD_REVISION, MIGRATIONS, connect, current_revision
from newsletter.errors import DatabaseError
from newsletter.project import Project


def _assigned(path: Path, name: str) -> object:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.name} assigns no {name}")


def test_head_revision_is_the_newest_migration() -> None:
    files = [path for path in (MIGRATIONS / "versions").glob("*.py") if path.name != "__init__.py"]
    revisions = {_assigned(path, "revision"): _assigned(path, "down_revision") for path in files}
    heads = set(revisions) - set(revisions.values())
    assert heads == {HEAD_REVISION}, "db.HEAD_REVISION must name the one migration nothing revises"
    assert sum(down is None for down in revisions.values()) == 1, "exactly one migration starts the chain"


def test_db_upgrade_applies_once_then_reports_up_to_date(
    project_dir: Path, env: dict[str, str], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    runner, config = CliRunner(), str(project_dir / "config.toml")
    first = runner.invoke(main, ["--config", config, "db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == f"database upgraded from revision none to {HEAD_REVISION}"
    second = runner.invoke(main, ["--config", config, "db", "upgrade"])
    assert second.exit_code == 0, second.output
    assert second.stdout.strip() == f"database at revision {HEAD_REVISION} (up to date)"


def test_sqlite_is_tuned_for_several_processes(settings: Settings) -> None:
    database = connect(settings)
    try:
        with database.engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        database.dispose()


CONNECT_AFTER_SIGNAL = """
import sys, time
from pathlib import Path
from newsletter.config import load_settings
from newsletter.db import connect, current_revision
go = Path(sys.argv[2])
Path(sys.argv[3]).touch()  # imported and ready
while not go.exists():
    time.sleep(0.005)
database = connect(load_settings(sys.argv[1]))
print(current_revision(database.engine))
database.dispose()
"""


@pytest.mark.slow
def test_two_processes_opening_a_fresh_sqlite_file_at_once_both_succeed(
    project_dir: Path, settings: Settings, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    environment = {**os.environ, "NEWSLETTER_SECRET_KEY": "test", "NEWSLETTER_DATABASE_URL": settings.database.url}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONNECT_AFTER_SIGNAL, str(project_dir / "config.toml"), str(go), str(ready)],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ready in (tmp_path / "ready-1", tmp_path / "ready-2")
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / name).exists() for name in ("ready-1", "ready-2")):
        assert time.monotonic() < deadline, "the processes never got ready"
        assert all(process.poll() is None for process in processes), [p.communicate() for p in processes]
        time.sleep(0.01)
    assert not (project_dir / "newsletter.db").exists()
    go.touch()
    outcomes = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outcomes
    assert [stdout.strip() for stdout, _ in outcomes] == [HEAD_REVISION, HEAD_REVISION]
    database = connect(settings, migrate=False)
    try:
        assert current_revision(database.engine) == HEAD_REVISION
        assert {"subscribers", "deliveries", "events"} <= set(inspect(database.engine).get_table_names())
    finally:
        database.dispose()


def test_an_unreachable_database_is_a_clear_error_without_the_password(settings: Settings) -> None:
    unreachable = settings.replace("database", url="postgresql://newsletter:s3cret@127.0.0.1:9/newsletter")
    with pytest.raises(DatabaseError, match="does not answer") as caught:
        connect(unreachable)
    assert "s3cret" not in str(caught.value)


def test_a_reader_does_not_queue_behind_a_writer_on_sqlite(project: Project) -> None:
    from sqlalchemy import func, select

    from newsletter.models import Subscriber

    database = project.db
    with database.session() as writer:  # holds SQLite's write lock (BEGIN IMMEDIATE) until the block ends
        writer.execute(text("UPDATE subscribers SET name = name"))
        # A second writing session would wait out the busy timeout here and fail with "database is locked".
        with database.reading() as reader:
            assert reader.scalar(select(func.count()).select_from(Subscriber)) == 0


def test_a_new_sqlite_file_beside_a_newsletter_database_is_refused_until_db_upgrade_creates_it(
    project_dir: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(settings).dispose()  # the project's own newsletter.db, as after its first send
    misnamed = settings.replace("database", url="sqlite:///newsleter.db")
    with pytest.raises(DatabaseError) as caught:
        connect(misnamed)
    assert str(caught.value) == (
        f"the database {project_dir / 'newsleter.db'} does not exist, but beside it is the newsletter database "
        "newsletter.db: [database] url probably names the wrong file. Correct it, or run `newsletter db upgrade` "
        "to start the new, empty database newsleter.db"
    )
    assert not (project_dir / "newsleter.db").exists()
    (project_dir / "notes.db").write_text("not a database")  # other files are not taken for a database
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", "sqlite:///newsleter.db")
    config = str(project_dir / "config.toml")
    refused = CliRunner().invoke(main, ["--config", config, "subscribers", "list"])
    assert refused.exit_code == 1
    assert "NEWSLETTER_DATABASE_URL probably names the wrong file" in refused.output
    created = CliRunner().invoke(main, ["--config", config, "db", "upgrade"])
    assert created.exit_code == 0, created.output
    assert created.stdout.strip() == f"database upgraded from revision none to {HEAD_REVISION}"
    connect(misnamed).dispose()


def test_a_new_empty_database_in_a_project_with_a_signing_key_file_is_said_aloud(
    any_project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    from newsletter.config import secret_key_file

    settings = any_project.settings
    secret_key_file(settings).write_text("an-earlier-key\n")
    with caplog.at_level("WARNING", logger="newsletter.db"):
        connect(settings).dispose()
        connect(settings).dispose()
    said = [record.getMessage() for record in caplog.records if record.name == "newsletter.db"]
    assert len(said) == 1, said
    assert said[0].startswith("created a new, empty database ")
    assert "if you expected subscribers in it, NEWSLETTER_DATABASE_URL names the wrong one" in said[0]


def test_a_command_says_on_stderr_that_it_created_an_empty_database(project_dir: Path) -> None:
    (project_dir / ".secret-key").write_text("an-earlier-key\n")
    environment = {name: value for name, value in os.environ.items() if not name.startswith("NEWSLETTER_")}
    command = [sys.executable, "-m", "newsletter", "--config", str(project_dir / "config.toml"), "subscribers"]
    first = subprocess.run(
        [*command, "list"], check=False, env=environment, capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    assert f"created a new, empty database sqlite:///{project_dir / 'newsletter.db'}" in first.stderr
    again = subprocess.run(
        [*command, "list"], check=False, env=environment, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and "created" not in again.stderr


def test_a_new_project_makes_its_key_and_database_together_without_a_warning(project_dir: Path) -> None:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("NEWSLETTER_")}
    command = [sys.executable, "-m", "newsletter", "--config", str(project_dir / "config.toml"), "subscribers", "list"]
    first = subprocess.run(command, check=False, env=environment, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "note: generated a signing key" in first.stderr
    assert "created a new, empty database" not in first.stderr


def test_senders_queue_on_a_file_beside_sqlite_and_a_killed_holder_lets_go(project: Project, project_dir: Path) -> None:

    database = project.db
    holder = hold_the_line(project_dir, project.settings.database.url)
    entered = threading.Event()

    def wait_in_line() -> None:
        with database.in_line():
            entered.set()

    waiter = threading.Thread(target=wait_in_line, daemon=True)
    try:
        waiter.start()
        assert not entered.wait(0.5), "the line let a second process in while another held it"
    finally:
        holder.kill()  # SIGKILL: nothing of the holder's runs, the kernel lets go of its lock
        holder.communicate()
    assert entered.wait(30), "the line stayed held after its holder was killed"
    waiter.join()


def test_threads_of_one_process_queue_in_line_one_at_a_time(project: Project) -> None:

    database, inside, order = project.db, threading.Event(), []
    leave = threading.Event()

    def first() -> None:
        with database.in_line():
            inside.set()
            leave.wait(30)
            order.append("first left")

    def second() -> None:
        with database.in_line():
            order.append("second entered")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert inside.wait(30)
    threads[1].start()
    threads[1].join(0.3)
    assert order == [], "the second thread got in while the first was in line"
    leave.set()
    for thread in threads:
        thread.join(30)
    assert order == ["first left", "second entered"]


def test_the_line_is_a_file_beside_sqlite_and_nothing_on_postgresql(any_project: Project, project_dir: Path) -> None:
    database = any_project.db
    if database.dialect == "sqlite":
        assert database.line_file == project_dir / "newsletter.db-lock"
        return
    assert database.line_file is None
    with database.in_line(), database.in_line():  # nested: row locks need no line, so nothing waits
        pass

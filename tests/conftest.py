"""Fixtures, chained: project_dir → settings → project → db; plus `database_url` for SQLite and PostgreSQL.

Tests run against a copy of the real project (lessons, templates, config.toml) in a temporary folder, with
its own SQLite file and outbox. PostgreSQL cases read NEWSLETTER_TEST_DATABASE_URL; without it they skip,
except under CI=true, where a missing database fails the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from counting import counts_disagreement
from daemon_process import DaemonProcess
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from newsletter.config import Settings, load_settings
from newsletter.db import Database
from newsletter.project import Project
from newsletter.starter import copy_project

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL_VARIABLE = "NEWSLETTER_TEST_DATABASE_URL"
TEST_SECRET_KEY = "test-secret-key-0123456789"


def _psycopg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A database of this test session's own on the server NEWSLETTER_TEST_DATABASE_URL points at.

    Its own, so that two test runs on one server (two developers, or a run beside a benchmark) never reset
    each other's tables. Skips without the variable, except under CI=true, where it fails.
    """
    url = os.environ.get(POSTGRES_URL_VARIABLE, "")
    if not url:
        message = f"PostgreSQL tests need {POSTGRES_URL_VARIABLE} (CI sets it; see .ci/run)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    server = make_url(_psycopg(url))
    name = f"{server.database}_{os.getpid()}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield server.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def reset_postgres(url: str) -> None:
    """Empty the test database: drop and recreate the public schema."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; Playwright drives it, no browser is downloaded
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """Headless Chromium for the whole session; skips without it, except under CI=true, where it fails."""
    if not CHROMIUM.exists():
        message = f"browser tests need Chromium at {CHROMIUM} (apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A copy of the bundled project (config.toml, lessons/, its templates in templates/) in a temporary folder."""
    root = tmp_path / "project"
    copy_project(REPO / "config.toml", root)
    return root


RICH_LESSON = Path(__file__).resolve().parent / "fixtures" / "rich"


@pytest.fixture
def rich_project(project_dir: Path, settings: Settings) -> Iterator[Project]:
    """The copied project with an eighth lesson holding an image (local and remote), a button and a pull quote."""
    lessons = project_dir / "lessons"
    shutil.copy(RICH_LESSON / "08-trails.md", lessons / "08-trails.md")
    shutil.copytree(RICH_LESSON / "images", lessons / "images")
    opened = Project(settings)
    yield opened
    if "db" in opened.__dict__:
        opened.db.dispose()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean NEWSLETTER_* environment with a fixed signing key."""
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_") and name != POSTGRES_URL_VARIABLE:
            monkeypatch.delenv(name)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET_KEY)
    return {"NEWSLETTER_SECRET_KEY": TEST_SECRET_KEY}


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[[Path, dict[str, str]], DaemonProcess]]:
    """Start `newsletter run` processes for a test; any still running at its end are killed."""
    started: list[DaemonProcess] = []

    def start(project_dir: Path, environment: dict[str, str]) -> DaemonProcess:
        started.append(DaemonProcess(project_dir, environment, tmp_path / f"daemon-{len(started)}.log"))
        return started[-1]

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, project_dir: Path) -> str:
    """A fresh, empty database of each backend: a SQLite file, and the CI PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{project_dir / 'newsletter.db'}"
    url: str = request.getfixturevalue("postgres_server_url")
    reset_postgres(url)
    return url


@pytest.fixture
def sqlite_url(project_dir: Path) -> str:
    return f"sqlite:///{project_dir / 'newsletter.db'}"


@pytest.fixture
def settings(project_dir: Path, env: dict[str, str], sqlite_url: str) -> Settings:
    """Settings of the copied project: its own SQLite file and outbox."""
    return settings_on(project_dir, env, sqlite_url)


def check_counts(project: Project) -> None:
    """After a test: the counts the database keeps agree with the tables, whatever the test did to them."""
    if "db" not in project.__dict__:
        return
    try:
        disagreement = counts_disagreement(project.db.engine)
    except SQLAlchemyError:
        return  # the test broke, locked or removed the database on purpose, or left it before revision 0007
    assert not disagreement, f"the kept counts disagree with the tables: {disagreement}"


@contextmanager
def opened_project(settings: Settings) -> Iterator[Project]:
    """A project for one test: its kept counts checked against its tables at the end, then closed."""
    opened = Project(settings)
    yield opened
    check_counts(opened)
    opened.close()


def settings_on(project_dir: Path, env: dict[str, str], url: str) -> Settings:
    """Settings of the copied project with its database at `url`."""
    return load_settings(project_dir / "config.toml", env={**env, "NEWSLETTER_DATABASE_URL": url})


@pytest.fixture
def project(settings: Settings) -> Iterator[Project]:
    with opened_project(settings) as opened:
        yield opened


@pytest.fixture
def db(project: Project) -> Database:
    return project.db


@pytest.fixture
def any_project(project_dir: Path, env: dict[str, str], database_url: str) -> Iterator[Project]:
    """The copied project on each backend in turn (SQLite, then PostgreSQL)."""
    with opened_project(settings_on(project_dir, env, database_url)) as opened:
        yield opened


def race(workers: list[subprocess.Popen[str]], timeout: float) -> list[list[float]]:
    """Let processes that each printed "ready" go at once; return the times each then printed on one line."""
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    return [[float(stamp) for stamp in worker.communicate(timeout=timeout)[0].split()] for worker in workers]


def assert_one_rate_limit(stamps: list[list[float]], per_second: float) -> None:
    """Two racing processes' stamps overlap and are spaced as one limit's slots, not two limits' side by side."""
    first, second = stamps
    assert max(first[0], second[0]) < min(first[-1], second[-1]), "the two processes did not overlap"
    everything = sorted(first + second)
    # One shared limit: every slot 1/rate apart. Two separate limits would finish in about half that.
    assert everything[-1] - everything[0] >= (len(everything) - 1) / per_second * 0.9


# Holds the project's send line (`Database.in_line`) until killed; says so by printing one line.
HOLD_THE_LINE = """
import sys, time
from newsletter.project import Project
project = Project.open(sys.argv[1])
with project.db.in_line():
    print("holding", flush=True)
    time.sleep(600)
"""


def hold_the_line(project_dir: Path, database_url: str) -> subprocess.Popen[str]:
    """A process holding the send line of the project's database, started and holding when this returns."""
    environment = {**os.environ, "NEWSLETTER_SECRET_KEY": "test", "NEWSLETTER_DATABASE_URL": database_url}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LINE, str(project_dir / "config.toml")],
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
    return holder

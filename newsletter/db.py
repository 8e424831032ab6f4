"""The database connection: engine, sessions, SQLite tuning, and migrations applied on first use.

SQLite is tuned for several processes on one machine: WAL (readers never block the writer), a 30 s busy
timeout, and every writing transaction opened with `BEGIN IMMEDIATE`, so two writers queue at BEGIN
instead of failing with "database is locked" halfway through; `Database.reading()` opens a plain BEGIN
for reports and pages that only read. PostgreSQL needs nothing special; migrations take an
advisory lock there so that senders starting together migrate once.

A database is never started afresh by mistake. A SQLite folder that does not exist is refused with the
settings (config.py); a SQLite file that does not exist beside another newsletter database is refused here,
since the url most likely names the wrong file (`newsletter db upgrade` creates it on purpose); and a new,
empty database in a project folder with a signing key file is said aloud when its tables are made (logged:
the daemon's log, or stderr for a command).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings, database_url, secret_key_file, sqlite_file
from newsletter.errors import DatabaseError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD_REVISION = "0008"  # the newest migration; tests/test_db.py checks it matches migrations/versions
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Seconds a PostgreSQL connection may take to open, unless the URL says (`?connect_timeout=N`): a host that
# drops packets, or a listener that never answers, is a clear error in that time instead of a command that
# hangs for as long as the kernel keeps trying.
POSTGRESQL_CONNECT_TIMEOUT_S = 10
READ_ONLY_OPTION = "newsletter_read_only"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")  # where a misnamed url's real database would be looked for


def _enable_wal(cursor: Any) -> None:
    """Switch to WAL, retrying: the switch needs a moment alone with the file and ignores the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of pysqlite's deferred BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@dataclass
class Database:
    engine: Engine
    sessions: sessionmaker[Session]

    @property
    def line_file(self) -> Path | None:
        """The file senders queue on for SQLite's write lock (`in_line`): `<database>-lock`; None on PostgreSQL."""
        name = self.engine.url.database if self.dialect == "sqlite" else None
        if not name or name == ":memory:" or name.startswith("file:"):
            return None
        return Path(name + "-lock")

    @contextmanager
    def in_line(self) -> Iterator[None]:
        """Wait in line with the other senders for SQLite's write lock; hold the line until the block ends.

        SQLite's busy handler retries a locked `BEGIN IMMEDIATE` after sleeping 1, 2, 5, 10, 15, 20, 25… ms,
        so two senders whose transactions take a few milliseconds each spend much of their time asleep
        (4–5 s of a 13 s `send --processes 2` run, measured). An OS lock on a file beside the database wakes
        the next in line the moment the holder lets go, and the kernel lets go for a process that dies. Each
        call opens its own descriptor, so threads of one process queue too. Only the send path's short
        transactions queue here, none opening another inside, so a wait always ends; every other writer
        meets SQLite's busy timeout as before. On PostgreSQL (row locks) and without a file, it waits for nothing.
        """
        path = self.line_file
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644) if path is not None else None
        except OSError:
            descriptor = None  # a folder we cannot create the file in: SQLite's own busy handler still serves
        if descriptor is None:
            yield
            return
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # closing the only descriptor lets go of the lock

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction that only reads: on SQLite a plain BEGIN, so readers never queue behind senders."""
        read_only = self.engine.execution_options(**{READ_ONLY_OPTION: True})
        with Session(read_only, expire_on_commit=False) as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()

    def check_writable(self) -> None:
        """Prove a write can commit (a read-only file, mount or standby fails here), writing nothing."""
        try:
            with self.engine.connect() as connection, connection.begin() as transaction:
                connection.execute(text("UPDATE alembic_version SET version_num = version_num"))
                transaction.rollback()
        except DBAPIError as error:
            raise DatabaseError(describe_failure(error, self.engine.url.render_as_string())) from None


# What a driver's message means for an operator: (words in the message, what to say).
_FAILURES = (
    (("readonly database", "read-only transaction", "read only"), "is read-only"),
    (("database or disk is full", "could not extend file", "no space left"), "is on a full disk"),
    (("disk i/o error",), "could not be written (disk I/O error: a full or failing disk?)"),
    (("database is locked",), "stayed locked by another process past the 30 s busy timeout"),
    (("unable to open database file",), "cannot be opened (missing folder, or no permission)"),
)
_CONNECTION_LOST = (
    "terminating connection",
    "server closed the connection",
    "connection failed",
    "consuming input",
    "timeout expired",  # psycopg's words when connect_timeout runs out
)


def describe_failure(error: DBAPIError, url: str) -> str:
    """One line for an operator: which database, what went wrong in its words, and what to do."""
    words = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else type(error.orig).__name__
    where = f"the database {_safe(url)}"
    lowered = words.lower()
    for needles, meaning in _FAILURES:
        if any(needle in lowered for needle in needles):
            return f"{where} {meaning} ({words}); nothing was half-written: fix that, then run the command again"
    if error.connection_invalidated or any(needle in lowered for needle in _CONNECTION_LOST):
        return (
            f"{where} dropped the connection or does not answer ({words}); it may be restarting: nothing was "
            "half-written, run the command again once it is up"
        )
    return f"{where} failed: {words}; nothing was half-written"


def make_engine(url: str) -> Engine:
    """Create an engine for a URL, tuned for its backend."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _tune_sqlite(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    given = make_url(url).query
    arguments = {} if "connect_timeout" in given else {"connect_timeout": POSTGRESQL_CONNECT_TIMEOUT_S}
    return create_engine(url, pool_pre_ping=True, connect_args=arguments)


def connect(
    settings: Settings, *, migrate: bool = True, course_slugs: Callable[[], list[str]] | None = None
) -> Database:
    """Open the configured database, bringing its schema up to date first.

    `course_slugs` gives the lessons' slugs in week order, for migrations that turn week numbers into
    lessons (read only if such a migration runs). `migrate=False` opens whatever is there, creating an
    empty SQLite file if there is none (`newsletter db upgrade`: the operator's way to start afresh).
    """
    url = database_url(settings)
    if migrate:
        _refuse_a_misnamed_file(settings)
    try:
        engine = make_engine(url)
        if migrate:
            created = upgrade(engine, course_slugs=course_slugs) is None
            if created and secret_key_file(settings).is_file() and not settings.secret_key_generated:
                # Said aloud in a project that was used before: its key file is older than this process. (A
                # new project makes both now; the demo's scratch database has no key file beside it.)
                log.warning(
                    "created a new, empty database %s (if you expected subscribers in it, %s names the wrong one)",
                    _safe(url),
                    settings.origin("database", "url"),
                )
        else:
            with engine.connect():
                pass
    except DBAPIError as error:
        raise DatabaseError(describe_failure(error, url)) from None
    except SQLAlchemyError as error:
        raise DatabaseError(f"database {_safe(url)}: {error}") from None
    return Database(engine=engine, sessions=sessionmaker(engine, expire_on_commit=False))


def _refuse_a_misnamed_file(settings: Settings) -> None:
    """Refuse to create a SQLite file beside another newsletter database: the url most likely has a typo."""
    database_file = sqlite_file(settings)
    if database_file is None or database_file.exists():
        return
    beside = sorted(
        path.name
        for path in database_file.parent.iterdir()
        if path.suffix in SQLITE_SUFFIXES and path != database_file and _is_newsletter_database(path)
    )
    if beside:
        raise DatabaseError(
            f"the database {database_file} does not exist, but beside it is the newsletter database "
            f"{' and '.join(beside)}: {settings.origin('database', 'url')} probably names the wrong file. "
            f"Correct it, or run `newsletter db upgrade` to start the new, empty database {database_file.name}"
        )


def _is_newsletter_database(path: Path) -> bool:
    """Whether a file is a SQLite database with our migrations table; opened read-only, never created."""
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            found = connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone()
        finally:
            connection.close()
    except sqlite3.Error:
        return False
    return found is not None


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head", course_slugs: Callable[[], list[str]] | None = None) -> str | None:
    """Apply pending migrations and return the revision the database had (None: it was empty); cheap when current."""
    before = current_revision(engine)
    if revision == "head" and before == HEAD_REVISION:
        return before
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(7261535)"))  # one migrator at a time
        config.attributes["connection"] = connection
        config.attributes["course_slugs"] = course_slugs
        command.upgrade(config, revision)
    return before

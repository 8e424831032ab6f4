"""The database connection: engine, sessions, SQLite tuning, and migrations applied on first use.

SQLite is tuned for several processes on one machine: WAL (readers never block the writer), a 30 s busy
timeout, and every writing transaction opened with `BEGIN IMMEDIATE`, so two writers queue at BEGIN
instead of failing with "database is locked" halfway through; `Database.reading()` opens a plain BEGIN
for reports and pages that only read. PostgreSQL needs nothing special; migrations take an
advisory lock there so that senders starting together migrate once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings, database_url
from newsletter.errors import DatabaseError

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD_REVISION = "0003"  # the newest migration; tests/test_db.py checks it matches migrations/versions
SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY_OPTION = "newsletter_read_only"


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
        with Session(self.engine.execution_options(**{READ_ONLY_OPTION: True})) as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def make_engine(url: str) -> Engine:
    """Create an engine for a URL, tuned for its backend."""
    if url.startswith("sqlite"):
        if url not in ("sqlite://", "sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _tune_sqlite(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


def connect(settings: Settings, *, migrate: bool = True) -> Database:
    """Open the configured database, bringing its schema up to date first."""
    url = database_url(settings)
    try:
        engine = make_engine(url)
        if migrate:
            upgrade(engine)
        else:
            with engine.connect():
                pass
    except OperationalError as error:
        raise DatabaseError(f"cannot open the database {_safe(url)}: {error.orig}") from None
    except SQLAlchemyError as error:
        raise DatabaseError(f"database {_safe(url)}: {error}") from None
    return Database(engine=engine, sessions=sessionmaker(engine, expire_on_commit=False))


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply pending migrations; cheap when the schema is already current."""
    if revision == "head" and current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(7261535)"))  # one migrator at a time
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

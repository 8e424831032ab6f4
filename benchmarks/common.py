"""What the benchmarks share: a scratch project and database, a fast seeder, and where the figures came from.

Seeding goes through SQLAlchemy Core `insert` (executemany) in chunks of 10,000 rows with ids assigned
here, so a million subscribers and their pending lesson rows load in about a minute; the schema itself
comes from the project's own migrations (`newsletter.db.connect`). The course is then marked planned, as a
sender leaves it, so a benchmark measures what it names and not the first re-plan of a million readers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as Time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from newsletter.config import load_settings
from newsletter.ledger.course import course_fingerprint
from newsletter.ledger.waiting import DELIVERIES, SUBSCRIBERS
from newsletter.models import CourseState, Delivery
from newsletter.project import Project
from newsletter.starter import copy_project

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SECRET_KEY = "benchmark-secret-key-0123456789"
POSTGRES_URL_VARIABLE = "NEWSLETTER_TEST_DATABASE_URL"
# A Monday: every seeded reader has Monday 07:00 UTC as their slot, so lesson 1 is due at FIRST_SLOT.
CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
FIRST_SLOT = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
SEND_TIME = Time(7, 0)
SEED_CHUNK = 10_000
WEEK = timedelta(days=7)
REFUSED_EVERY = 1000  # one reader in this many had lesson 1 refused for good (the "latest errors" of status)


def sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


@contextmanager
def bench_database(backend: str, folder: Path, server_url: str | None) -> Iterator[str]:
    """A database of this run's own: a SQLite file in its folder, or a new PostgreSQL database dropped after.

    The PostgreSQL server is the one `server_url` (or NEWSLETTER_TEST_DATABASE_URL) points at; the database
    named there is never touched, a sibling `<name>_bench_<pid>` is created beside it (the role needs CREATEDB).
    """
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'newsletter.db'}"
        return
    given = server_url or os.environ.get(POSTGRES_URL_VARIABLE, "")
    if not given:
        raise SystemExit(
            f"--db postgresql needs --database-url or {POSTGRES_URL_VARIABLE}: a PostgreSQL server on which this "
            "benchmark may create (and then drop) a database of its own"
        )
    server = make_url(sqlalchemy_url(given))
    name = f"{server.database}_bench_{os.getpid()}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        own = server.set(database=name).render_as_string(hide_password=False)
        yield own.replace("postgresql+psycopg://", "postgresql://", 1)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def add_case_arguments(parser: argparse.ArgumentParser, readers: str) -> None:
    """--subscribers and --db as lists (every pair is one case) and --database-url."""
    parser.add_argument("--subscribers", default="10000", help=f"{readers} (N); a list runs each: 10000,100000,1000000")
    parser.add_argument("--db", default="sqlite", help="sqlite, postgresql, or both in turn: sqlite,postgresql")
    parser.add_argument(
        "--database-url", help=f"PostgreSQL server to make a database of the run's own on (or {POSTGRES_URL_VARIABLE})"
    )


def cases(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[str, int]]:
    """Every (database, N) the arguments ask for, databases first."""
    databases = [part.strip() for part in str(args.db).split(",") if part.strip()]
    if unknown := set(databases) - {"sqlite", "postgresql"}:
        parser.error(f"--db takes sqlite and postgresql, not {', '.join(sorted(unknown))}")
    try:
        counts = [int(part.replace("_", "")) for part in str(args.subscribers).split(",") if part.strip()]
    except ValueError:
        parser.error(f"--subscribers takes whole numbers separated by commas, not {args.subscribers!r}")
    return [(database, count) for database in databases for count in counts]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--json, --output, --workdir and --keep."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    parser.add_argument("--output", type=Path, help="where to write the JSON result (default: benchmarks/results/)")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary scratch folder")


Case = dict[str, Any]


def run_each(
    wanted: list[tuple[str, int]],
    args: argparse.Namespace,
    run_case: Callable[[str, int, argparse.Namespace, Path], Case],
) -> list[Case]:
    """Run every case in a folder of its own inside the scratch folder."""
    done = []
    with scratch_folder(args.workdir, args.keep) as folder:
        for database, count in wanted:
            case_folder = folder / f"{database}-{count}"
            case_folder.mkdir()
            done.append(run_case(database, count, args, case_folder))
    return done


def publish(
    benchmark: str, arguments: list[str], args: argparse.Namespace, done: list[Case], table: str, **more: Any
) -> dict[str, Any]:
    """Write the result to --output (or benchmarks/results/), then print the table and the command, or the JSON."""
    about = machine()
    command = shlex.join(["python", f"benchmarks/{benchmark}.py", *arguments])
    result = {"benchmark": benchmark, "command": command, "cases": done, **more, "machine": about}
    names = "-".join(f"{case['database']}-{case['subscribers']}" for case in done)
    write_result(args.output or RESULTS / f"{benchmark}-{names}.json", result)
    if args.json:
        print(json.dumps(result, indent=2, default=_json_default))
    else:
        print(table)
        print(f"\n{command}  ({about['date']}, {about['cpus']} cores)")
    return result


@dataclass(frozen=True)
class BenchProject:
    """A copy of the bundled project in a scratch folder, pointed at the benchmark's database."""

    root: Path
    database_url: str

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    def environment(self, **overrides: str) -> dict[str, str]:
        """The variables a `newsletter` process of this project runs with."""
        base = {name: value for name, value in os.environ.items() if not name.startswith("NEWSLETTER_")}
        return {
            **base,
            "NEWSLETTER_SECRET_KEY": SECRET_KEY,
            "NEWSLETTER_DATABASE_URL": self.database_url,
            **{f"NEWSLETTER_{key.upper()}": value for key, value in overrides.items()},
        }

    def open(self, **overrides: str) -> Project:
        return Project(load_settings(self.config, env=self.environment(**overrides)))


def make_project(workdir: Path, database_url: str) -> BenchProject:
    """Copy config.toml, lessons/ and the templates into `workdir/project`."""
    root = workdir / "project"
    if root.exists():
        shutil.rmtree(root)
    copy_project(REPO / "config.toml", root)
    return BenchProject(root=root, database_url=database_url)


@contextmanager
def scratch_folder(given: Path | None, keep: bool) -> Iterator[Path]:
    """The benchmark's working folder: the one given, or a temporary one removed afterwards unless `keep`."""
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix="newsletter-bench-"))
    try:
        yield folder
    finally:
        if keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def seed(
    project: Project,
    count: int,
    due_at: Callable[[int], datetime],
    *,
    lessons_had: Callable[[int], int] = lambda _: 0,
    weekday: Callable[[int], int] = lambda _: 0,
    chunk: int = SEED_CHUNK,
) -> float:
    """Insert `count` confirmed readers and their ledger rows; return the seconds it took.

    Reader n (1-based) is reader{n}@example.com at 07:00 UTC on `weekday(n)`, has had the first
    `lessons_had(n)` lessons (one a week before `due_at(n)`; one reader in REFUSED_EVERY had lesson 1
    refused for good) and waits for the next one, due at `due_at(n)`; a reader who has had every lesson
    has finished the course and waits for nothing.
    """
    lessons = list(project.series)
    started = time.perf_counter()
    engine = project.db.engine
    delivery_id = 0
    for first in range(1, count + 1, chunk):
        readers, rows = [], []
        for n in range(first, min(first + chunk, count + 1)):
            had = min(lessons_had(n), len(lessons))
            readers.append(_reader(n, had, weekday(n), lessons))
            due = due_at(n)
            for week, lesson in enumerate(lessons[:had], start=1):
                delivery_id += 1
                rows.append(_received(delivery_id, n, lesson.slug, due - (had + 1 - week) * WEEK, week))
            if had < len(lessons):
                delivery_id += 1
                rows.append(_waiting(delivery_id, n, lessons[had].slug, due))
        with engine.begin() as connection:
            connection.execute(insert(SUBSCRIBERS), readers)
            connection.execute(insert(DELIVERIES), rows)
    mark_planned(project)
    if engine.dialect.name == "postgresql":
        # Ids were given explicitly: move the sequences past them so later inserts do not collide.
        with engine.begin() as connection:
            for table in ("subscribers", "deliveries"):
                connection.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
                )
                connection.execute(text(f"ANALYZE {table}"))
    return time.perf_counter() - started


def _reader(n: int, had: int, weekday: int, lessons: list[Any]) -> dict[str, Any]:
    return {
        "id": n,
        "email": f"reader{n}@example.com",
        "name": f"Reader {n}",
        "timezone": "UTC",
        "weekday": weekday,
        "send_time": SEND_TIME,
        "status": "completed" if had == len(lessons) else "active",
        "last_lesson": lessons[had - 1].slug if had else None,
        "position": had,
        "hard_bounces": 0,
        "source": "benchmark",
        "created_at": CONFIRMED_AT,
        "confirmed_at": CONFIRMED_AT,
        "updated_at": CONFIRMED_AT,
    }


def _waiting(delivery_id: int, reader: int, lesson: str, due: datetime) -> dict[str, Any]:
    return {
        "id": delivery_id,
        "subscriber_id": reader,
        "lesson": lesson,
        "slot_at": due,
        "due_at": due,
        "status": "pending",
        "attempts": 0,
        # executemany wants the same keys in every row: the received rows' columns, empty here.
        "message_id": None,
        "smtp_started_at": None,
        "sent_at": None,
        "smtp_reply": None,
        "error": None,
        "created_at": CONFIRMED_AT,
        "updated_at": CONFIRMED_AT,
    }


def _received(delivery_id: int, reader: int, lesson: str, slot: datetime, week: int) -> dict[str, Any]:
    refused = week == 1 and reader % REFUSED_EVERY == 0
    sent_at = slot + timedelta(minutes=1)
    return {
        **_waiting(delivery_id, reader, lesson, slot),
        "status": "failed" if refused else "sent",
        "attempts": 1,
        "message_id": f"<{lesson}.{reader}@running.example.com>",
        "smtp_started_at": sent_at,
        "sent_at": None if refused else sent_at,
        "smtp_reply": f"550 5.1.1 <reader{reader}@example.com>: no such user" if refused else "250 2.0.0 Ok",
        "error": "the relay refused the recipient" if refused else None,
        "updated_at": sent_at,
    }


def mark_planned(project: Project) -> None:
    """Record the course on disk as the one the ledger is planned for, as a sender's first run would."""
    gates = project.gates
    order = [
        {"slug": lesson.slug, "replaces": list(lesson.replaces), "gate": gate.reason if gate else None}
        for lesson in project.series
        for gate in [gates.get(lesson.slug)]
    ]
    with project.db.session() as session:
        fingerprint = course_fingerprint(project.series, gates)
        session.merge(CourseState(series=project.series.slug, fingerprint=fingerprint, lessons=json.dumps(order)))


def all_due(_: int) -> datetime:
    return FIRST_SLOT


def week_one_counts(project: Project) -> dict[str, int]:
    """How many lesson-1 rows are in each state."""
    first = project.series.lessons[0].slug
    with project.db.session() as session:
        rows = session.execute(
            select(Delivery.status, func.count()).where(Delivery.lesson == first).group_by(Delivery.status)
        ).all()
    return {str(status): int(number) for status, number in rows}


def newsletter_command(config: Path, *arguments: str) -> list[str]:
    return [sys.executable, "-m", "newsletter", "--config", str(config), *arguments]


def load_average() -> float:
    """The machine's one-minute load average (runnable processes; this machine has `os.cpu_count()` cores)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]


def machine() -> dict[str, Any]:
    """Where the figures came from."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    memory_gb = 0.0
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gb = 0.0
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(memory_gb, 1),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "date": datetime.now(UTC).date().isoformat(),
    }


def postgres_version(url: str) -> str:
    engine = create_engine(sqlalchemy_url(url))
    with engine.connect() as connection:
        version = str(connection.execute(text("SHOW server_version")).scalar())
    engine.dispose()
    return version


def write_result(path: Path, result: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)  # type: ignore[call-overload]
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def markdown_table(headings: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, numbers right-aligned: what the scripts print and the README shows."""
    align = ["---:" if all(_numeric(row[n]) for row in rows) and rows else "---" for n in range(len(headings))]
    lines = [headings, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _numeric(cell: str) -> bool:
    return cell.replace(",", "").replace(".", "").replace("-", "").replace(" ", "").replace("%", "").isdigit()

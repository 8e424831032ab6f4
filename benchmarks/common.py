"""What the benchmarks share: a scratch project, a fast seeder, the SMTP sink process, and timed senders.

Seeding goes through SQLAlchemy Core `insert` in chunks, with ids assigned here, so a million subscribers
and their pending lesson rows load in well under a minute on SQLite; the schema itself comes from the
project's own migrations (`newsletter.db.connect`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as Time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, insert, select, text

from newsletter.config import load_settings
from newsletter.ledger.course import course_fingerprint
from newsletter.ledger.waiting import DELIVERIES, SUBSCRIBERS
from newsletter.models import CourseState, Delivery
from newsletter.project import Project
from newsletter.starter import copy_project

REPO = Path(__file__).resolve().parent.parent
SINK_SCRIPT = REPO / "tests" / "smtp_sink.py"
RESULTS = REPO / "benchmarks" / "results"
SECRET_KEY = "benchmark-secret-key-0123456789"
BENCH_URL_VARIABLE = "NEWSLETTER_BENCH_DATABASE_URL"
# A Monday: every seeded reader has Monday 07:00 UTC as their slot, so lesson 1 is due at FIRST_SLOT.
CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
FIRST_SLOT = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
SEED_CHUNK = 10_000


def database_url_for(backend: str, workdir: Path, given: str | None) -> str:
    """The database a benchmark uses: a SQLite file in its folder, or a PostgreSQL database it may wipe."""
    if backend == "sqlite":
        return given or f"sqlite:///{workdir / 'newsletter.db'}"
    url = given or os.environ.get(BENCH_URL_VARIABLE, "")
    if not url:
        raise SystemExit(
            f"--db postgresql needs --database-url or {BENCH_URL_VARIABLE}: a database this benchmark may wipe, "
            "e.g. postgresql://newsletter:newsletter@127.0.0.1:5432/newsletter_bench"
        )
    return url


def sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def reset_database(url: str) -> None:
    """Start from an empty database: delete the SQLite files, or drop and recreate PostgreSQL's schema."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        return
    _create_postgres_database(url)
    engine = create_engine(sqlalchemy_url(url))
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _create_postgres_database(url: str) -> None:
    """Create the benchmark database on first use (the role needs CREATEDB)."""
    from sqlalchemy.engine import make_url

    target = make_url(sqlalchemy_url(url))
    server = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database})
        if exists.first() is None:
            connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    server.dispose()


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


def seed(project: Project, count: int, due_at: Callable[[int], datetime], chunk: int = SEED_CHUNK) -> float:
    """Insert `count` active subscribers, each with lesson 1 pending at `due_at(n)`; return the seconds it took.

    Subscriber n (1-based) is reader{n}@example.com, Monday 07:00 UTC, the same as a confirmed reader added
    through `newsletter subscribers add`. The ledger is marked planned against the course, as a sender would
    leave it, so the benchmark measures sending, not the first re-plan of a million readers.
    """
    lesson = project.series.week(1)
    assert lesson is not None, "the series has no lesson 1"
    started = time.perf_counter()
    engine = project.db.engine
    subscribers, deliveries = SUBSCRIBERS, DELIVERIES
    for first in range(1, count + 1, chunk):
        numbers = range(first, min(first + chunk, count + 1))
        readers = [
            {
                "id": n,
                "email": f"reader{n}@example.com",
                "name": f"Reader {n}",
                "timezone": "UTC",
                "weekday": 0,
                "send_time": Time(7, 0),
                "status": "active",
                "position": 0,
                "hard_bounces": 0,
                "source": "benchmark",
                "created_at": CONFIRMED_AT,
                "confirmed_at": CONFIRMED_AT,
                "updated_at": CONFIRMED_AT,
            }
            for n in numbers
        ]
        lessons = [
            {
                "id": n,
                "subscriber_id": n,
                "lesson": lesson.slug,
                "slot_at": (due := due_at(n)),
                "due_at": due,
                "status": "pending",
                "attempts": 0,
                "created_at": CONFIRMED_AT,
                "updated_at": CONFIRMED_AT,
            }
            for n in numbers
        ]
        with engine.begin() as connection:
            connection.execute(insert(subscribers), readers)
            connection.execute(insert(deliveries), lessons)
    with project.db.session() as session:
        order = json.dumps([{"slug": lesson.slug, "replaces": [], "gate": None} for lesson in project.series])
        fingerprint = course_fingerprint(project.series, project.gates)
        session.merge(CourseState(series=project.series.slug, fingerprint=fingerprint, lessons=order))
    if engine.dialect.name == "postgresql":
        # Ids were given explicitly: move the sequences past them so later inserts do not collide.
        with engine.begin() as connection:
            for table in ("subscribers", "deliveries"):
                connection.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
                )
                connection.execute(text(f"ANALYZE {table}"))
    return time.perf_counter() - started


def all_due(_: int) -> datetime:
    return FIRST_SLOT


def week_one_counts(project: Project) -> dict[str, int]:
    """How many lesson-1 rows are in each state."""
    with project.db.session() as session:
        rows = session.execute(
            select(Delivery.status, func.count()).where(Delivery.lesson == "muscle").group_by(Delivery.status)
        ).all()
    return {str(status): int(number) for status, number in rows}


class SinkProcess:
    """`tests/smtp_sink.py --count-only` in its own process, so it has a core of its own."""

    def __init__(self, folder: Path) -> None:
        self.count_file = folder / "sink.count"
        self.count_file.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, str(SINK_SCRIPT), "--port", "0", "--count-only", "--count-file", str(self.count_file)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().split()
        if ready[:1] != ["READY"]:
            self.process.kill()
            raise RuntimeError(f"the SMTP sink did not start: {ready}")
        self.port = int(ready[1])

    def count(self) -> int:
        """The running count (the sink rewrites its file every 0.2 s)."""
        try:
            return int(self.count_file.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the sink has used so far, from /proc."""
        return process_cpu_seconds(self.process.pid)

    def wait_for(self, count: int, timeout: float = 10.0) -> int:
        """Wait until the count file shows at least `count` (or time runs out); return what it shows."""
        deadline = time.monotonic() + timeout
        while (seen := self.count()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return seen

    def stop(self) -> int:
        """Stop it and return the exact number of messages it accepted."""
        if self.process.poll() is not None:
            raise RuntimeError("the SMTP sink died during the benchmark")
        self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=30)
        for line in output.splitlines():
            if line.startswith("COUNT "):
                return int(line.split()[1])
        raise RuntimeError(f"the SMTP sink gave no count: {output!r}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc), 0.0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def sink_process(folder: Path) -> Iterator[SinkProcess]:
    sink = SinkProcess(folder)
    try:
        yield sink
    finally:
        sink.kill()


@dataclass
class ProcessRun:
    """One finished child process: exit code, wall time, peak resident memory and its output."""

    returncode: int
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float
    stdout: str
    stderr: str
    started_at: float = field(repr=False, default=0.0)


def start_process(command: Sequence[str], env: Mapping[str, str], folder: Path, name: str) -> subprocess.Popen[bytes]:
    """Start a child with its output in files (never a pipe that could fill up and stall it)."""
    stdout = (folder / f"{name}.out").open("wb")
    stderr = (folder / f"{name}.err").open("wb")
    with stdout, stderr:
        return subprocess.Popen(list(command), env=dict(env), stdout=stdout, stderr=stderr)


def reap_process(
    process: subprocess.Popen[bytes], folder: Path, name: str, started_at: float, *, block: bool = True
) -> ProcessRun | None:
    """Reap one child with wait4, which reports its own peak RSS (ru_maxrss, KiB on Linux); None if still running."""
    pid, status, usage = os.wait4(process.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return None
    seconds = time.perf_counter() - started_at
    process.returncode = os.waitstatus_to_exitcode(status)
    return ProcessRun(
        returncode=process.returncode,
        seconds=seconds,
        peak_rss_mb=usage.ru_maxrss / 1024,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        stdout=(folder / f"{name}.out").read_text(errors="replace"),
        stderr=(folder / f"{name}.err").read_text(errors="replace"),
        started_at=started_at,
    )


def newsletter_command(config: Path, *arguments: str) -> list[str]:
    return [sys.executable, "-m", "newsletter", "--config", str(config), *arguments]


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
    print(f"wrote {path}")


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

"""What the benchmarks share: a scratch project and database, the cases of a run, and how results are told.

A run is a list of cases, one per database and N (`--db sqlite,postgresql --subscribers 10000,100000`),
each in a folder and a database of its own; its result is one JSON file and one Markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from newsletter.config import load_settings
from newsletter.project import Project
from newsletter.starter import copy_project

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SECRET_KEY = "benchmark-secret-key-0123456789"
POSTGRES_URL_VARIABLE = "NEWSLETTER_TEST_DATABASE_URL"


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


def growth(done: list[Case], figures: Mapping[str, tuple[str, str]]) -> list[str]:
    """For each database, how each figure (label: (part, key) of a case) changes from one N to the next."""
    lines = []
    for database in dict.fromkeys(case["database"] for case in done):
        sized = sorted((case for case in done if case["database"] == database), key=lambda case: case["subscribers"])
        for label, (part, key) in figures.items():
            steps = [
                f"{small['subscribers']:,}→{large['subscribers']:,}: ×{large[part][key] / small[part][key]:.2f}"
                for small, large in itertools.pairwise(sized)
                if small[part][key] > 0
            ]
            if steps:
                lines.append(f"{database} {label}: " + ", ".join(steps))
    return lines


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

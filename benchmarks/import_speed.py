"""Rows per second and peak memory of `newsletter subscribers import`, run as a real process on a generated file.

    python benchmarks/import_speed.py --rows 1000000 --db sqlite
    python benchmarks/import_speed.py --rows 1000000 --format mailchimp
    python benchmarks/import_speed.py --rows 100000 --db postgresql

It writes N rows to a CSV file, either in the engine's own columns (`generic`: email, name, timezone, weekday,
time) or as a Mailchimp audience export (`mailchimp`: 22 columns, a tenth of them unsubscribed or cleaned),
then runs `newsletter subscribers import FILE --confirmed` in its own process, from start to exit, on an empty
database. The addresses spread over a few large mail providers and 5,000 other domains, the readers over
twelve time zones. It reports rows per second, the child's peak RSS (`getrusage(RUSAGE_CHILDREN)`, the only
child it starts), and checks that the database holds exactly N subscribers and one planned delivery per
reader who is not suppressed.
"""

from __future__ import annotations

import argparse
import csv
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    RESULTS,
    bench_database,
    machine,
    make_project,
    newsletter_command,
    postgres_version,
    rate,
    scratch_folder,
    write_result,
)
from sqlalchemy import func, select

from newsletter.models import Delivery, Subscriber

NOW = "2026-03-02T00:00:00Z"
PROVIDERS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "gmx.de", "web.de")
OTHER_DOMAINS = 5000
ZONES = (
    "Europe/London",
    "Europe/Berlin",
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
    "Africa/Lagos",
    "Pacific/Auckland",
    "America/Santiago",
    "UTC",
)
NAMES = ("Ann", "Zoë", "José", "Björn", "Chloé", "Kenji", "Ana", "Omar")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MAILCHIMP_HEADER = (
    "Email Address",
    "First Name",
    "Last Name",
    "Address",
    "Phone Number",
    "MEMBER_RATING",
    "OPTIN_TIME",
    "OPTIN_IP",
    "CONFIRM_TIME",
    "CONFIRM_IP",
    "LATITUDE",
    "LONGITUDE",
    "GMTOFF",
    "DSTOFF",
    "TIMEZONE",
    "CC",
    "REGION",
    "LAST_CHANGED",
    "LEID",
    "EUID",
    "NOTES",
    "TAGS",
)


def address(n: int) -> str:
    """Six in ten at a large provider, the rest over OTHER_DOMAINS company domains."""
    if n % 10 < 6:
        return f"reader{n}@{PROVIDERS[n % len(PROVIDERS)]}"
    return f"reader{n}@company{n % OTHER_DOMAINS}.example.org"


def write_generic(path: Path, rows: int) -> int:
    """The engine's own columns; return how many rows are suppressed (none)."""
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(("email", "name", "timezone", "weekday", "time"))
        for n in range(1, rows + 1):
            name = f"{NAMES[n % len(NAMES)]} Reader{n}"
            writer.writerow((address(n), name, ZONES[n % len(ZONES)], WEEKDAYS[n % 7], f"{6 + n % 4:02d}:30"))
    return 0


def write_mailchimp(path: Path, rows: int) -> int:
    """A Mailchimp audience export, every tenth row unsubscribed or cleaned; return how many rows are suppressed."""
    header = (*MAILCHIMP_HEADER, "UNSUB_TIME", "CLEAN_TIME")
    suppressed = 0
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(header)
        for n in range(1, rows + 1):
            optin = f"2024-{1 + n % 12:02d}-{1 + n % 28:02d} 10:{n % 60:02d}:00"
            gone = n % 20 == 0
            cleaned = n % 20 == 10
            suppressed += gone or cleaned
            writer.writerow(
                (
                    address(n),
                    NAMES[n % len(NAMES)],
                    f"Reader{n}",
                    "",
                    "",
                    "2",
                    optin,
                    "198.51.100.7",
                    optin,
                    "198.51.100.7",
                    "51.5",
                    "-0.12",
                    "0",
                    "1",
                    ZONES[n % len(ZONES)],
                    "GB",
                    "ENG",
                    optin,
                    str(100_000 + n),
                    f"{n:010x}",
                    "",
                    "",
                    "2025-06-01 09:00:00" if gone else "",
                    "2025-06-02 09:00:00" if cleaned else "",
                )
            )
    return suppressed


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the generated file (N)")
    parser.add_argument("--format", choices=("generic", "mailchimp"), default="generic", help="columns of the file")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server (a database URL; or NEWSLETTER_TEST_DATABASE_URL) on which the benchmark makes "
        "and then drops a database of its own",
    )
    parser.add_argument("--profile", type=Path, help="run the import under cProfile, writing its stats here (slows it)")
    parser.add_argument("--output", type=Path, help="where to write the JSON result")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary scratch folder")
    args = parser.parse_args(arguments)
    output: Path = args.output or RESULTS / f"import_speed-{args.db}-{args.format}-{args.rows}.json"

    with scratch_folder(args.workdir, args.keep) as folder, bench_database(args.db, folder, args.database_url) as url:
        server = postgres_version(url) if args.db == "postgresql" else None
        bench = make_project(folder, url)
        source = folder / f"{args.format}.csv"
        suppressed = (write_mailchimp if args.format == "mailchimp" else write_generic)(source, args.rows)
        file_bytes = source.stat().st_size
        project = bench.open()
        project.db.engine.dispose()  # the schema exists now; the child must not wait for the migrations
        command = newsletter_command(bench.config, "subscribers", "import", str(source), "--confirmed", "--now", NOW)
        if args.profile:
            command = [sys.executable, "-m", "cProfile", "-o", str(args.profile), *command[1:]]
        started = time.perf_counter()
        finished = subprocess.run(command, env=bench.environment(), capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        if finished.returncode != 0:
            print(finished.stdout + finished.stderr, file=sys.stderr)
            return 1
        with project.db.session() as session:
            subscribers = session.scalar(select(func.count()).select_from(Subscriber))
            planned = session.scalar(select(func.count()).select_from(Delivery))
        project.db.dispose()

    result: dict[str, Any] = {
        "benchmark": "import_speed",
        "command": " ".join(["python", "benchmarks/import_speed.py", *arguments]),
        "database": args.db,
        "postgresql": server,
        "format": args.format,
        "rows": args.rows,
        "file_bytes": file_bytes,
        "seconds": round(seconds, 3),
        "rows_per_second": rate(args.rows, seconds),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "cpu_system_seconds": round(usage.ru_stime, 2),
        "rows_per_cpu_second": rate(args.rows, usage.ru_utime + usage.ru_stime),
        "subscribers": subscribers,
        "planned_deliveries": planned,
        "suppressed_rows": suppressed,
        "summary": finished.stdout.strip(),
        "machine": machine(),
    }
    write_result(output, result)
    print(
        f"{args.rows} rows ({args.format}, {args.db}): {seconds:.1f} s, {result['rows_per_second']:.0f} rows/s, "
        f"peak RSS {result['peak_rss_mb']} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

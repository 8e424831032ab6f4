"""How long the commands that read the whole ledger take at N readers: plan, status, /metrics, the studio.

    python benchmarks/readers.py --db sqlite,postgresql --subscribers 10000,100000,1000000

Each N is seeded as a course in full swing: reader n has had n mod 8 of the seven lessons (an eighth have
finished; one reader in a thousand had lesson 1 refused for good) and waits for the next one at 07:00 UTC
on their weekday, in the week after tomorrow. Then, as real processes:

  plan      `newsletter plan --days 7 --json > /dev/null`: seconds and the plan process's own peak RSS;
  status    `newsletter status --json`: seconds (median of --repeats runs) and peak RSS;
  /metrics  GET /metrics of a `newsletter run` daemon (nothing due, tick once an hour): milliseconds per
            request over one kept-alive connection, median of --requests after one warm-up request, and
            how long the reading of the ledger gauges took (the warm-up's, which it waited for; later
            scrapes reuse it for 10 s and then read again off the request);
  studio    GET / (the preview studio's index) of a `newsletter serve` process on 127.0.0.1, the same way.

They measure and assert nothing; the table shows how each figure grows with N. Processes run under
`measure.py`, so each peak RSS is that process's own.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shlex
import socket
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import measure
from common import (
    BenchProject,
    add_case_arguments,
    add_run_arguments,
    bench_database,
    cases,
    growth,
    load_average,
    make_project,
    markdown_table,
    newsletter_command,
    postgres_version,
    publish,
    run_each,
)
from relay import free_port
from seeding import SEND_TIME, seed

START_SECONDS = 120.0  # a daemon on a million readers checks the course and ticks before it is ready
LISTENING = re.compile(r"http://127\.0\.0\.1:(\d+)")
LEDGER_READ = re.compile(rb"^newsletter_ledger_read_seconds (\S+)$", re.MULTILINE)


def next_slot(anchor: datetime, weekday: int) -> datetime:
    """The first `weekday` 07:00 UTC at least a day after `anchor`: in the week `plan --days 7` looks at."""
    start = anchor + timedelta(days=1)
    days = (weekday - start.weekday()) % 7
    slot = datetime.combine(start.date() + timedelta(days=days), SEND_TIME, tzinfo=UTC)
    return slot if slot > start else slot + timedelta(days=7)


def seed_course_in_progress(bench: BenchProject, count: int, anchor: datetime) -> float:
    project = bench.open()
    weeks = project.series.weeks
    slots = [next_slot(anchor, weekday) for weekday in range(7)]
    seconds = seed(
        project,
        count,
        lambda n: slots[n % 7],
        lessons_had=lambda n: n % (weeks + 1),
        weekday=lambda n: n % 7,
    )
    project.db.dispose()
    return seconds


def timed_command(bench: BenchProject, folder: Path, name: str, *arguments: str, timeout: float) -> dict[str, Any]:
    """One `newsletter` command to the end under the launcher, its output thrown away."""
    command = newsletter_command(bench.config, *arguments)
    load_before = load_average()
    finished = measure.run(command, bench.environment(), folder, name, stdout=Path("/dev/null"), timeout=timeout)
    if finished.returncode != 0:
        raise SystemExit(
            f"`{shlex.join(arguments)}` failed (exit {finished.returncode}):\n{measure.error_output(folder, name)}"
        )
    return {
        "seconds": round(finished.seconds, 3),
        "cpu_seconds": finished.cpu_seconds,
        "peak_rss_mb": finished.peak_rss_mb,
        "load": [load_before, load_average()],
    }


def get(connection: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    connection.request("GET", path, headers={"Host": f"127.0.0.1:{connection.port}"})
    response = connection.getresponse()
    return response.status, response.read()


def wait_until(ready: Any, launched: Any, folder: Path, name: str) -> Any:
    """Poll `ready()` until it gives something, while the server still runs; stop with its log otherwise."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if launched.poll() is not None:
            raise SystemExit(f"{name} exited at start:\n{measure.error_output(folder, name)}")
        if (found := ready()) is not None:
            return found
        time.sleep(0.1)
    raise SystemExit(f"{name} was not ready in {START_SECONDS:.0f} s:\n{measure.error_output(folder, name)}")


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def first_tick_done(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        _, body = get(connection, "/healthz")
    except OSError:
        return False
    finally:
        connection.close()
    return json.loads(body).get("last_tick_at") is not None


def time_requests(port: int, path: str, requests: int) -> dict[str, Any]:
    """Median, min and max milliseconds of `requests` GETs after a warm-up one, over one connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    load_before = load_average()
    try:
        status, body = get(connection, path)
        if status != 200:
            raise SystemExit(f"GET {path} answered {status}: {body[:300]!r}")
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            status, body = get(connection, path)
            times.append(1000 * (time.perf_counter() - started))
            if status != 200:
                raise SystemExit(f"GET {path} answered {status}")
    finally:
        connection.close()
    read = LEDGER_READ.search(body)
    return {
        "requests": requests,
        **({"ledger_read_ms": round(1000 * float(read.group(1)), 1)} if read else {}),
        "median_ms": round(statistics.median(times), 2),
        "min_ms": round(min(times), 2),
        "max_ms": round(max(times), 2),
        "bytes": len(body),
        "load": [load_before, load_average()],
    }


def serve_and_time(
    bench: BenchProject, folder: Path, name: str, arguments: list[str], path: str, requests: int
) -> dict[str, Any]:
    """Start a `newsletter` web process, time GETs of `path`, stop it (SIGTERM), report its own peak RSS."""
    launched = measure.start(newsletter_command(bench.config, *arguments), bench.environment(), folder, name)
    try:
        if name == "run":
            found = wait_until(lambda: LISTENING.search(measure.error_output(folder, name)), launched, folder, name)
            port = int(found.group(1))
            # Time the scrapes once the first tick (nothing due: it sends nothing) is over.
            wait_until(lambda: True if first_tick_done(port) else None, launched, folder, name)
        else:
            port = int(arguments[arguments.index("--port") + 1])
            wait_until(lambda: True if listening(port) else None, launched, folder, name)
        timing = time_requests(port, path, requests)
    finally:
        launched.terminate()
    finished = measure.finish(launched, folder, name, timeout=60)
    return {**timing, "server_peak_rss_mb": finished.peak_rss_mb}


def run_case(database: str, count: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    anchor = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with bench_database(database, folder, args.database_url) as url:
        bench = make_project(folder, url)
        seed_seconds = seed_course_in_progress(bench, count, anchor)
        print(f"{database}: seeded {count:,} readers in {seed_seconds:.1f} s", file=sys.stderr)
        now = ["--now", anchor.isoformat()]
        timeout = args.timeout
        plan = timed_command(bench, folder, "plan", "plan", "--days", "7", "--json", *now, timeout=timeout)
        print(f"{database}: plan took {plan['seconds']:.1f} s", file=sys.stderr)
        statuses = [
            timed_command(bench, folder, f"status{n}", "status", "--json", *now, timeout=timeout)
            for n in range(args.repeats)
        ]
        daemon = ["run", "--port", "0", "--tick", "3600", "--log-format", "json"]
        metrics = serve_and_time(bench, folder, "run", daemon, "/metrics", args.requests)
        studio = ["serve", "--host", "127.0.0.1", "--port", str(free_port())]
        index = serve_and_time(bench, folder, "serve", studio, "/", args.requests)
        version = postgres_version(url) if database == "postgresql" else None
    return {
        "database": database,
        "postgresql": version,
        "subscribers": count,
        "seed_seconds": round(seed_seconds, 1),
        "plan": plan,
        "status": {
            "seconds": round(statistics.median(run["seconds"] for run in statuses), 3),
            "runs": statuses,
            "peak_rss_mb": max(run["peak_rss_mb"] for run in statuses),
        },
        "metrics": metrics,
        "studio_index": index,
    }


def table(done: list[dict[str, Any]]) -> str:
    headings = [
        "database", "readers", "seed s", "`plan --days 7 --json` s", "plan CPU s", "plan peak RSS MB",
        "`status --json` s", "status CPU s", "status peak RSS MB", "GET /metrics ms",
        "its ledger reading ms (every 10 s)", "GET / (studio) ms",
        "load during plan",
    ]  # fmt: skip
    rows = []
    for case in done:
        plan, status = case["plan"], case["status"]
        status_cpu = statistics.median(run["cpu_seconds"] for run in status["runs"])
        rows.append([
            case["database"], f"{case['subscribers']:,}", f"{case['seed_seconds']:.0f}",
            f"{plan['seconds']:,.2f}", f"{plan['cpu_seconds']:,.2f}", f"{plan['peak_rss_mb']:,.0f}",
            f"{status['seconds']:.2f}", f"{status_cpu:.2f}", f"{status['peak_rss_mb']:.0f}",
            f"{case['metrics']['median_ms']:.1f}", f"{case['metrics']['ledger_read_ms']:.0f}",
            f"{case['studio_index']['median_ms']:.1f}",
            f"{plan['load'][0]:.1f}→{plan['load'][1]:.1f}",
        ])  # fmt: skip
    return markdown_table(headings, rows)


GROWING = {
    "plan seconds": ("plan", "seconds"),
    "plan peak RSS": ("plan", "peak_rss_mb"),
    "status seconds": ("status", "seconds"),
    "GET /metrics": ("metrics", "median_ms"),
    "its ledger reading": ("metrics", "ledger_read_ms"),
    "GET / (studio)": ("studio_index", "median_ms"),
}


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_case_arguments(parser, "readers to seed")
    parser.add_argument("--repeats", type=int, default=3, help="`status` runs (the median is reported)")
    parser.add_argument("--requests", type=int, default=20, help="timed GETs per page (the median is reported)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a command may take before it is killed")
    add_run_arguments(parser)
    args = parser.parse_args(arguments)
    done = run_each(cases(parser, args), args, run_case)
    changes = growth(done, GROWING)
    publish("readers", arguments, args, done, "\n".join([table(done), "", *changes]), growth=changes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long `newsletter send` takes to find work among many subscribers, and how claims scale across processes.

    python benchmarks/plan_query.py --subscribers 1000000 --db sqlite
    python benchmarks/plan_query.py --subscribers 1000000 --db postgresql --claimers 1,2,4

With N subscribers seeded (each with lesson 1 pending, due some time in the coming week), it measures:

  nothing due      one whole run of the dispatcher (`send_due`: release expired leases, reconcile, claim)
                   when nothing is due, in a warm process: the part of `newsletter send` that grows with N;
  first claim      the one-statement claim of a 1,000-row batch when exactly 1,000 rows are due, and the
                   query that loads that batch with its subscribers;
  claimers         (optional) P processes claiming batches of `--batch` rows from a backlog of `--backlog`
                   due rows and marking them sent, until none is left: rows per second, and every row
                   claimed exactly once.

`--completed F` also makes a fraction F of the subscribers readers who finished the course (status
`completed`, no pending row), which `reconcile` looks at on every run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from common import (
    RESULTS,
    BenchProject,
    bench_database,
    machine,
    make_project,
    newsletter_command,
    postgres_version,
    scratch_folder,
    write_result,
)
from seeding import FIRST_SLOT, seed
from sqlalchemy import select, text, update

from newsletter.dispatch import send_due
from newsletter.ledger.wire import claim_due, load_claimed
from newsletter.models import Delivery, Subscriber
from newsletter.project import Project
from newsletter.transports import MemoryTransport

LEASE = timedelta(minutes=5)
REPEATS = 7


def spread_over_the_week(n: int) -> Any:
    """Due between one hour and seven days after FIRST_SLOT: nothing is due at FIRST_SLOT."""
    return FIRST_SLOT + timedelta(hours=1) + timedelta(seconds=(n * 7919) % (7 * 24 * 3600))


def milliseconds(seconds: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 2),
        "min_ms": round(min(seconds) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
    }


def make_completed(project: Project, share: float) -> int:
    """Turn every k-th subscriber into a reader who finished the course (no pending row left)."""
    if share <= 0:
        return 0
    step = max(1, round(1 / share))
    weeks = project.series.weeks
    with project.db.engine.begin() as connection:
        finished = connection.execute(
            update(Subscriber)
            .where(Subscriber.id % step == 0)
            .values(status="completed", position=weeks, last_lesson=project.series.lessons[-1].slug)
            .execution_options(synchronize_session=False)
        ).rowcount
        connection.execute(
            update(Delivery)
            .where(Delivery.subscriber_id % step == 0)
            .values(status="sent", sent_at=FIRST_SLOT - timedelta(days=1))
            .execution_options(synchronize_session=False)
        )
    return int(finished)


def analyze(project: Project) -> None:
    """Refresh PostgreSQL's statistics after a bulk change, as autovacuum would before long."""
    if project.db.dialect == "postgresql":
        with project.db.engine.begin() as connection:
            connection.execute(text("ANALYZE subscribers"))
            connection.execute(text("ANALYZE deliveries"))


def time_nothing_due(project: Project) -> list[float]:
    """Seconds for whole dispatcher runs that find nothing due (after one warm-up run)."""
    send_due(project, MemoryTransport(), now=FIRST_SLOT)
    runs = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        summary = send_due(project, MemoryTransport(), now=FIRST_SLOT)
        runs.append(time.perf_counter() - started)
        assert summary.total == 0, summary
    return runs


def time_nothing_due_process(bench: BenchProject) -> float:
    """Seconds for a whole `newsletter send` process that finds nothing due (Python start and imports too)."""
    command = newsletter_command(bench.config, "send", "--now", FIRST_SLOT.isoformat(), "--json")
    started = time.perf_counter()
    finished = subprocess.run(command, env=bench.environment(), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if finished.returncode != 0 or json.loads(finished.stdout)["sent"] != 0:
        raise SystemExit(f"newsletter send failed or sent something:\n{finished.stdout}{finished.stderr}")
    return seconds


def make_due(project: Project, count: int) -> list[int]:
    """Make `count` pending rows, spread evenly over the table, due at FIRST_SLOT; return their ids."""
    with project.db.engine.begin() as connection:
        pending = list(
            connection.execute(select(Delivery.id).where(Delivery.status == "pending").order_by(Delivery.id)).scalars()
        )
        ids = pending[:: max(1, len(pending) // count)][:count]
        connection.execute(
            update(Delivery).where(Delivery.id.in_(ids)).values(due_at=FIRST_SLOT - timedelta(minutes=1))
        )
    return ids


def time_first_claim(project: Project, ids: list[int], batch: int) -> tuple[list[float], list[float]]:
    """Seconds to claim the due batch in one statement (commit included), and to load it; repeated."""
    claims, loads = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        with project.db.session() as session:
            claimed = claim_due(session.connection(), "bench", FIRST_SLOT, LEASE, batch)
        claims.append(time.perf_counter() - started)
        assert sorted(claimed) == sorted(ids[:batch]), "the claim did not take exactly the due rows"
        started = time.perf_counter()
        with project.db.reading() as session:
            loaded = load_claimed(session.connection(), claimed)
        loads.append(time.perf_counter() - started)
        assert len(loaded) == len(claimed)
        with project.db.session() as session:
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(claimed))
                .values(status="pending", lease_owner=None, lease_until=None)
                .execution_options(synchronize_session=False)
            )
    return claims, loads


def claim_worker(config: Path, url: str, owner: str, batch: int, output: Path) -> int:
    """One claiming process: claim batches and mark them sent until none is due; write the ids it took."""
    project = BenchProject(root=config.parent, database_url=url).open()
    with project.db.session() as session:  # connect and warm up before the start signal
        claim_due(session.connection(), owner, FIRST_SLOT - timedelta(days=365), LEASE, 1)
    output.with_suffix(".ready").touch()
    go = output.parent / "go"
    while not go.exists():
        time.sleep(0.005)
    started, taken = time.time(), []
    while True:
        with project.db.session() as session:
            claimed = claim_due(session.connection(), owner, FIRST_SLOT, LEASE, batch)
            if not claimed:
                break
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(claimed), Delivery.lease_owner == owner)
                .values(status="sent", sent_at=FIRST_SLOT, lease_owner=None, lease_until=None)
                .execution_options(synchronize_session=False)
            )
        taken += claimed
    output.write_text(json.dumps({"ids": taken, "started": started, "finished": time.time()}))
    project.db.dispose()
    return 0


def run_claimers(bench: BenchProject, processes: int, batch: int, folder: Path) -> dict[str, Any]:
    """P claiming processes on the same backlog, started together once all are connected."""
    command = [sys.executable, __file__, "--claim-worker", str(bench.config), bench.database_url, str(batch)]
    run_folder = folder / f"claimers-{processes}"
    run_folder.mkdir()
    outputs = [run_folder / f"claimer{n}.json" for n in range(processes)]
    workers = [subprocess.Popen([*command, f"claimer{n}", str(out)]) for n, out in enumerate(outputs)]
    while not all(out.with_suffix(".ready").exists() for out in outputs):
        if any(worker.poll() for worker in workers):
            raise SystemExit("a claiming process failed while starting")
        time.sleep(0.01)
    (run_folder / "go").touch()
    codes = [worker.wait() for worker in workers]
    if any(codes):
        raise SystemExit(f"a claiming process failed: exit codes {codes}")
    reports = [json.loads(out.read_text()) for out in outputs]
    seconds = max(r["finished"] for r in reports) - min(r["started"] for r in reports)
    every = [row for report in reports for row in report["ids"]]
    return {
        "processes": processes,
        "seconds": round(seconds, 3),
        "rows": len(every),
        "rows_per_second": round(len(every) / seconds, 1),
        "per_process": [len(report["ids"]) for report in reports],
        "claimed_twice": len(every) - len(set(every)),
    }


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["--claim-worker"]:
        config, url, batch, owner, written = arguments[1:6]
        return claim_worker(Path(config), url, owner, int(batch), Path(written))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000, help="subscribers to seed (N)")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--database-url", help="PostgreSQL server to make a database of the run's own on")
    parser.add_argument("--due", type=int, default=1000, help="rows due for the first-claim measurement")
    parser.add_argument("--completed", type=float, default=0.0, help="fraction of subscribers who finished")
    parser.add_argument("--claimers", default="", help="comma-separated process counts, e.g. 1,2,4")
    parser.add_argument("--backlog", type=int, default=50_000, help="due rows for each claimers run")
    parser.add_argument("--batch", type=int, default=1000, help="rows per claim in the claimers runs")
    parser.add_argument("--output", type=Path, help="where to write the JSON result")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary scratch folder")
    args = parser.parse_args(arguments)
    suffix = f"-completed{args.completed:g}" if args.completed else ""
    output: Path = args.output or RESULTS / f"plan_query-{args.db}-{args.subscribers}{suffix}.json"

    with scratch_folder(args.workdir, args.keep) as folder, bench_database(args.db, folder, args.database_url) as url:
        bench = make_project(folder, url)
        project = bench.open()
        seed_seconds = seed(project, args.subscribers, spread_over_the_week)
        completed = make_completed(project, args.completed)
        analyze(project)
        print(f"seeded {args.subscribers} subscribers in {seed_seconds:.1f} s", file=sys.stderr)
        nothing_due = time_nothing_due(project)
        nothing_due_process = time_nothing_due_process(bench)
        due_ids = make_due(project, args.due)
        analyze(project)
        claims, loads = time_first_claim(project, due_ids, args.due)
        claimers = []
        for processes in [int(p) for p in args.claimers.split(",") if p]:
            with project.db.engine.begin() as connection:
                # A fresh backlog each time: the first `backlog` pending rows become due.
                connection.execute(
                    update(Delivery)
                    .where(Delivery.status == "sent", Delivery.sent_at == FIRST_SLOT)
                    .values(status="pending", sent_at=None)
                    .execution_options(synchronize_session=False)
                )
            make_due(project, args.backlog)
            analyze(project)
            claimers.append(run_claimers(bench, processes, args.batch, folder))
        project.db.dispose()
        version = postgres_version(url) if args.db == "postgresql" else None

    result: dict[str, Any] = {
        "benchmark": "plan_query",
        "command": " ".join(["python", "benchmarks/plan_query.py", *arguments]),
        "database": args.db,
        "postgresql": version,
        "subscribers": args.subscribers,
        "completed_subscribers": completed,
        "seed_seconds": round(seed_seconds, 1),
        "nothing_due": milliseconds(nothing_due),
        "nothing_due_whole_process_seconds": round(nothing_due_process, 3),
        "first_claim": {"due": len(due_ids), **milliseconds(claims)},
        "first_batch_load": milliseconds(loads),
        "claimers": claimers,
        "machine": machine(),
    }
    write_result(output, result)
    print(
        f"nothing due: {result['nothing_due']['median_ms']} ms   claim of {len(due_ids)}: "
        f"{result['first_claim']['median_ms']} ms (+ load {result['first_batch_load']['median_ms']} ms)"
    )
    for run in claimers:
        print(
            f"{run['processes']} claiming processes: {run['rows_per_second']:.0f} rows/s, "
            f"claimed twice: {run['claimed_twice']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Messages per second: the raw SMTP ceiling against `newsletter send` end to end, on the same sink.

    python benchmarks/send_throughput.py --subscribers 100000 --connections 4 --db sqlite
    python benchmarks/send_throughput.py --subscribers 100000 --connections 2 --db postgresql --processes 2

One run seeds N subscribers with lesson 1 due, starts the SMTP sink (`tests/smtp_sink.py --count-only`, aiosmtpd,
in its own process) and measures, against that one sink:

  (a) the ceiling: smtplib pushing N copies of a real lesson-1 message over the same number of connections
      (`--connections` × `--processes`), nothing else running;
  (b) `newsletter send` end to end: `--processes` real processes, each with `--connections` SMTP connections,
      from process start to exit (imports, migrations check, claims, rendering, recording: all of it).

It prints both rates, their ratio and the senders' peak RSS, checks that the sink received exactly N messages
and that the ledger shows exactly N sent (so no duplicates), and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import smtplib
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from common import (
    FIRST_SLOT,
    RESULTS,
    ProcessRun,
    SinkProcess,
    all_due,
    database_url_for,
    machine,
    make_project,
    newsletter_command,
    postgres_version,
    rate,
    reap_process,
    reset_database,
    scratch_folder,
    seed,
    sink_process,
    start_process,
    week_one_counts,
    write_result,
)

from newsletter.transports import Envelope


def raw_ceiling(port: int, envelope: Envelope, count: int, connections: int) -> float:
    """Seconds smtplib alone needs to push `count` copies of one message over `connections` connections."""
    shares = [count // connections + (1 if n < count % connections else 0) for n in range(connections)]
    clients = [smtplib.SMTP("127.0.0.1", port, timeout=60) for _ in range(connections)]
    for client in clients:
        client.ehlo()
    failures: list[BaseException] = []

    def push(client: smtplib.SMTP, first: int, share: int) -> None:
        try:
            for n in range(first, first + share):
                client.sendmail(envelope.sender, [f"reader{n}@example.com"], envelope.data)
        except (smtplib.SMTPException, OSError) as error:
            failures.append(error)

    starts = [sum(shares[:n]) + 1 for n in range(connections)]
    threads = [
        threading.Thread(target=push, args=(client, first, share))
        for client, first, share in zip(clients, starts, shares, strict=True)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    for client in clients:
        client.quit()
    if failures:
        raise RuntimeError(f"the raw SMTP run failed: {failures[0]}")
    return seconds


@dataclass
class SenderRuns:
    """The senders of one run, and when the sink saw their first and last message."""

    runs: list[ProcessRun]
    first_message: float | None
    last_message: float | None
    sink_cpu_seconds: float


def run_senders(
    config: Path,
    environment: dict[str, str],
    processes: int,
    folder: Path,
    sink: SinkProcess,
    expected: int,
    profile: Path | None = None,
) -> SenderRuns:
    """Start the senders together and wait for all of them, watching the sink's count meanwhile."""
    command = newsletter_command(config, "send", "--now", (FIRST_SLOT + timedelta(minutes=1)).isoformat(), "--json")
    profiled = [sys.executable, "-m", "cProfile", "-o", str(profile), *command[1:]] if profile else command
    baseline, sink_cpu = sink.count(), sink.cpu_seconds()
    started = time.perf_counter()
    children = [
        start_process(profiled if n == 0 else command, environment, folder, f"sender{n}") for n in range(processes)
    ]
    first = last = None
    runs: dict[int, ProcessRun] = {}
    while len(runs) < processes:
        for n, child in enumerate(children):
            if n not in runs and (run := reap_process(child, folder, f"sender{n}", started, block=False)):
                runs[n] = run
        received = sink.count() - baseline
        if first is None and received > 0:
            first = time.perf_counter() - started
        if last is None and received >= expected:
            last = time.perf_counter() - started
        time.sleep(0.02)
    return SenderRuns([runs[n] for n in range(processes)], first, last, sink.cpu_seconds() - sink_cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=10_000, help="subscribers with lesson 1 due (N)")
    parser.add_argument("--connections", type=int, default=4, help="SMTP connections per sender process (C)")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--database-url", help="PostgreSQL database to wipe and use (or NEWSLETTER_BENCH_DATABASE_URL)")
    parser.add_argument("--processes", type=int, default=1, help="`newsletter send` processes run at once")
    parser.add_argument("--batch-size", type=int, help="[delivery] batch_size for the senders (default: config.toml)")
    parser.add_argument(
        "--profile", type=Path, help="run the (first) sender under cProfile, writing its stats here (slows it)"
    )
    parser.add_argument("--output", type=Path, help="where to write the JSON result")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary scratch folder")
    args = parser.parse_args(argv)
    count, connections, processes = args.subscribers, args.connections, args.processes
    output = args.output or RESULTS / f"send_throughput-{args.db}-{count}-c{connections}-p{processes}.json"

    with scratch_folder(args.workdir, args.keep) as folder:
        url = database_url_for(args.db, folder, args.database_url)
        reset_database(url)
        bench = make_project(folder, url)
        project = bench.open()
        seconds_to_seed = seed(project, count, all_due)
        print(f"seeded {count} subscribers in {seconds_to_seed:.1f} s", file=sys.stderr)
        sample = project.sample_subscriber(email="reader1@example.com", name="Reader 1")
        envelope = project.envelope(sample, "muscle", delivery_id=1, now=FIRST_SLOT)
        project.db.dispose()

        with sink_process(folder) as sink:
            sink_cpu = sink.cpu_seconds()
            raw_seconds = raw_ceiling(sink.port, envelope, count, connections * processes)
            raw_sink_cpu = sink.cpu_seconds() - sink_cpu
            raw_count = sink.wait_for(count)
            overrides = {
                "delivery_transport": "smtp",
                "smtp_host": "127.0.0.1",
                "smtp_port": str(sink.port),
                "smtp_connections": str(connections),
            }
            if args.batch_size:
                overrides["delivery_batch_size"] = str(args.batch_size)
            environment = bench.environment(**overrides)
            senders = run_senders(bench.config, environment, processes, folder, sink, count, args.profile)
            received = sink.stop()
        runs = senders.runs
        for run in runs:
            if run.returncode != 0:
                raise SystemExit(f"a sender failed (exit {run.returncode}):\n{run.stderr}")
        project = bench.open()
        ledger = week_one_counts(project)
        project.db.dispose()

    end_to_end = max(run.seconds for run in runs)
    summaries = [json.loads(run.stdout.strip().splitlines()[-1]) for run in runs]
    sending = (senders.last_message or end_to_end) - (senders.first_message or 0.0)
    result: dict[str, Any] = {
        "benchmark": "send_throughput",
        "command": " ".join(["python", "benchmarks/send_throughput.py", *(argv or sys.argv[1:])]),
        "database": args.db,
        "postgresql": postgres_version(url) if args.db == "postgresql" else None,
        "subscribers": count,
        "connections_per_process": connections,
        "processes": processes,
        "batch_size": args.batch_size or project.settings.delivery.batch_size,
        "message_bytes": len(envelope.data),
        "seed_seconds": round(seconds_to_seed, 2),
        "raw": {
            "connections": connections * processes,
            "seconds": round(raw_seconds, 3),
            "sink_cpu_percent": round(100 * raw_sink_cpu / raw_seconds),
        },
        "end_to_end": {
            "seconds": round(end_to_end, 3),
            # The sink writes its count every 0.2 s: these two are that coarse.
            "first_message_seconds": round(senders.first_message, 2) if senders.first_message else None,
            "last_message_seconds": round(senders.last_message, 2) if senders.last_message else None,
            "sink_cpu_percent": round(100 * senders.sink_cpu_seconds / end_to_end),
            "per_process": [
                {
                    "seconds": round(run.seconds, 3),
                    "peak_rss_mb": round(run.peak_rss_mb, 1),
                    "cpu_ms_per_message": round(1000 * run.cpu_seconds / max(1, summary["sent"]), 3),
                    **summary,
                }
                for run, summary in zip(runs, summaries, strict=True)
            ],
        },
        "raw_per_second": rate(count, raw_seconds),
        "end_to_end_per_second": rate(count, end_to_end),
        "sending_per_second": rate(count, sending),
        "ratio": round(raw_seconds / end_to_end, 3),
        "sender_peak_rss_mb": round(max(run.peak_rss_mb for run in runs), 1),
        "sink_received": {"raw": raw_count, "end_to_end": received - raw_count},
        "ledger_week_one": ledger,
        "duplicates": received - raw_count - ledger.get("sent", 0),
        "machine": machine(),
    }
    write_result(output, result)
    print(
        f"raw smtplib: {result['raw_per_second']:.0f} msg/s   newsletter send: {result['end_to_end_per_second']:.0f}"
        f" msg/s end to end ({result['sending_per_second']:.0f} first to last message)   ratio {result['ratio']:.2f}"
        f"   sender peak RSS {result['sender_peak_rss_mb']:.0f} MB   duplicates {result['duplicates']}"
    )
    complete = ledger == {"sent": count} and received - raw_count == count and raw_count == count
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())

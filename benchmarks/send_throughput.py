"""Messages per second: `newsletter send` as a real process against three ceilings, on Postfix's smtp-sink.

    python benchmarks/send_throughput.py --db sqlite,postgresql --subscribers 10000,100000 --processes 2
    python benchmarks/send_throughput.py --subscribers 1000000 --limit 100000   # 100,000 sends from a 1M backlog

For each database and each N it seeds N readers with lesson 1 due, starts Postfix's C `smtp-sink`, and
measures one after another:

  newsletter send     the real CLI, `newsletter send --processes P` with `[smtp] connections` = C (and
                      `--limit`, `--sender-args` added to its command line), from process start to exit,
                      under `measure.py` (the largest sender process's own peak RSS, everyone's CPU time);
  smtp-source         Postfix's C client sending as many copies of the real lesson-1 message as the
                      sender sent: the limit of the machine and the sink;
  smtplib threads     one Python process, one thread per connection, the same message built beforehand;
  smtplib processes   one Python process per connection, the same message.

The ceilings use the same total connections, P × C, each its own session. The sink's counters check that
every phase delivered exactly its messages (each ceiling over exactly its connections), and the ledger
that every reader got lesson 1 once (with `--limit M`: M sent once, the rest still pending); the sink's
CPU share in each phase says whether it had cycles to spare; on PostgreSQL served from this machine, the
server's CPU time during the send is measured too (every `postgres` process, from /proc). It prints one
table (`--json`: the whole result as JSON) and writes the result to benchmarks/results/; the exit code is 1
when a check failed. `--phases` also times each sender's steps from inside it
(benchmarks/phases/sitecustomize.py) and prints where each sender's database thread spent its time;
`--profile` runs one sender under cProfile.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from datetime import timedelta
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
    rate,
    run_each,
)
from relay import (
    PostfixSink,
    SinkShare,
    require_postfix,
    smtp_source_command,
    smtplib_command,
    write_source_message,
)
from seeding import FIRST_SLOT, all_due, seed, week_one_counts

PHASES_PROBE = Path(__file__).resolve().parent / "phases"  # its sitecustomize.py times a sender's steps
BUSY_SINK_PERCENT = 80  # above this share of its one core, the sink may have been what limited a figure
POLL_SECONDS = 0.02
PROC = Path("/proc")
CEILINGS = ("smtp_source", "smtplib_threads", "smtplib_processes")
GROWING = {
    "`newsletter send` msg/s": ("send", "per_second"),
    "sender CPU per message": ("send", "cpu_ms_per_message"),
    "sender peak RSS": ("send", "peak_rss_mb"),
    "smtplib threads msg/s": ("smtplib_threads", "per_second"),
    "smtplib processes msg/s": ("smtplib_processes", "per_second"),
}


def sink_summary(share: SinkShare, busy_seconds: float) -> dict[str, Any]:
    """What the sink saw, and its CPU share while messages flowed."""
    return {**asdict(share), "cpu_percent": share.cpu_percent(busy_seconds)}


def run_ceiling(
    name: str, command: list[str], folder: Path, sink: PostfixSink, count: int, connections: int
) -> dict[str, Any]:
    """One ceiling under the launcher: its rate over `count` messages and what it cost."""
    load_before, before = load_average(), sink.counts()
    finished = measure.run(command, os.environ, folder, name)
    share = sink.share_since(before, sessions=connections, messages=count)
    if finished.returncode != 0:
        raise SystemExit(f"{name} failed (exit {finished.returncode}):\n{measure.error_output(folder, name)}")
    # smtplib reports the sending alone (connections open); smtp-source is a C program: its whole run.
    reported = measure.output(folder, name).strip().splitlines()
    seconds = json.loads(reported[-1])["seconds"] if name.startswith("smtplib") else finished.seconds
    return {
        "messages": count,
        "connections": connections,
        "seconds": round(seconds, 3),
        "per_second": rate(count, seconds),
        "cpu_seconds": finished.cpu_seconds,
        "cpu_ms_per_message": round(1000 * finished.cpu_seconds / count, 3),
        "peak_rss_mb": finished.peak_rss_mb,
        "sink": sink_summary(share, seconds),
        "load": [load_before, load_average()],
    }


def sender_command(bench: BenchProject, args: argparse.Namespace) -> list[str]:
    """`newsletter send` as the benchmark runs it: everything due a minute after the slot, P processes."""
    now = (FIRST_SLOT + timedelta(minutes=1)).isoformat()
    options = ["--now", now, "--json", "--processes", str(args.processes)]
    options += ["--limit", str(args.limit)] if args.limit else []
    command = [*newsletter_command(bench.config, "send", *options), *shlex.split(args.sender_args)]
    return [command[0], "-m", "cProfile", "-o", str(args.profile), *command[1:]] if args.profile else command


def server_cpu_seconds() -> float | None:
    """CPU seconds of the PostgreSQL server on this machine so far; None if there is none.

    Every `postgres` process's own user and system time, plus what its ended children used (the postmaster
    reaps the backends, so a connection that closed meanwhile is counted there, not lost with its process).
    """
    total, found = 0, False
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text()
        except OSError:
            continue  # a process that ended meanwhile
        name, _, rest = fields.partition(" (")[2].rpartition(") ")
        if name != "postgres":
            continue
        found = True
        total += sum(map(int, rest.split()[11:15]))  # utime, stime, cutime, cstime: fields 14 to 17 of proc(5)
    return total / os.sysconf("SC_CLK_TCK") if found else None


def run_sender(
    bench: BenchProject, environment: dict[str, str], args: argparse.Namespace, sink: PostfixSink, count: int
) -> dict[str, Any]:
    """Start `newsletter send` and watch the sink until it has exited; `count` is what it should send."""
    folder = sink.counter_file.parent
    phases = folder / "phases"
    if args.phases:
        phases.mkdir(exist_ok=True)
        search_path = [str(PHASES_PROBE), *filter(None, [environment.get("PYTHONPATH")])]
        probe = {"PYTHONPATH": os.pathsep.join(search_path), "NEWSLETTER_BENCH_PHASES": str(phases)}
        environment = {**environment, **probe}
    load_before, before = load_average(), sink.counts()
    server_before = server_cpu_seconds() if bench.database_url.startswith("postgresql") else None
    launched = measure.start(sender_command(bench, args), environment, folder, "sender")
    first = last = None
    while launched.poll() is None:
        received = sink.counts().messages - before.messages
        if first is None and received > 0:
            first = time.perf_counter() - before.at
        if last is None and received >= count:
            last = time.perf_counter() - before.at
        time.sleep(POLL_SECONDS)
    run = measure.finish(launched, folder, "sender")
    server_after = server_cpu_seconds() if server_before is not None else None
    server_cpu = None if server_before is None or server_after is None else server_after - server_before
    if run.returncode != 0:
        raise SystemExit(f"newsletter send failed (exit {run.returncode}):\n{measure.error_output(folder, 'sender')}")
    share = sink.share_since(before, messages=count)
    last = last or run.seconds
    return {
        "messages": count,
        "seconds": round(run.seconds, 3),
        "per_second": rate(count, run.seconds),
        # The sink's counters are polled every 20 ms: these two are that fine.
        "first_message_seconds": round(first or 0.0, 3),
        "last_message_seconds": round(last, 3),
        "sending_per_second": rate(count, last - (first or 0.0)),
        "cpu_seconds": run.cpu_seconds,
        "cpu_ms_per_message": round(1000 * run.cpu_seconds / count, 3) if count else 0.0,
        # The database server's share (PostgreSQL on this machine; SQLite's work is the sender's own).
        "server_cpu_ms_per_message": round(1000 * server_cpu / count, 3) if server_cpu is not None and count else None,
        "peak_rss_mb": run.peak_rss_mb,  # the largest of any one process: with --processes, one sender's own
        "sum_of_peaks_mb": run.sum_of_peaks_mb,  # every process of the run added up (the coordinator included)
        "processes": run.processes,
        "summary": _summary(measure.output(folder, "sender")),
        "sink": sink_summary(share, last - (first or 0.0)),
        "load": [load_before, load_average()],
        "phases": [json.loads(path.read_text()) for path in sorted(phases.glob("phases-*.json"))],
    }


def phases_table(case: dict[str, Any]) -> list[str]:
    """`--phases`: each sender process's steps (benchmarks/phases/sitecustomize.py), wall and CPU seconds."""
    senders = case["send"]["phases"]
    if not senders:
        return []
    steps = list(dict.fromkeys(step for sender in senders for step in sender))
    headings = ["step", *(f"sender {n + 1}: wall s; CPU s; calls" for n in range(len(senders))), "share of run"]
    rows = []
    for step in steps:
        cells = [_step_cell(sender.get(step)) for sender in senders]
        shares = [sender[step]["wall"] / sender["run"]["wall"] for sender in senders if step in sender]
        rows.append([step, *cells, " / ".join(f"{share:.0%}" for share in shares)])
    title = f"{case['database']} {case['subscribers']:,}: where each sender's database thread spent its time"
    return ["", title, "", markdown_table(headings, rows)]


def _step_cell(step: dict[str, Any] | None) -> str:
    return f"{step['wall']:.2f}; {step['cpu']:.2f}; {step['calls']:,}" if step else ""


def _summary(stdout: str) -> dict[str, Any] | None:
    """The sender's own JSON summary (its last line), if it printed one."""
    lines = stdout.strip().splitlines()
    try:
        parsed = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def run_case(database: str, count: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Seed one database with `count` readers, measure the sender and then the ceilings, check what arrived."""
    with bench_database(database, folder, args.database_url) as url:
        bench = make_project(folder, url)
        project = bench.open()
        seed_seconds = seed(project, count, all_due)
        print(f"{database}: seeded {count:,} readers in {seed_seconds:.1f} s", file=sys.stderr)
        sample = project.sample_subscriber(email="reader1@example.com", name="Reader 1")
        data = project.envelope(sample, project.series.lessons[0].slug, delivery_id=1, now=FIRST_SLOT).data
        batch_size = args.batch_size or project.settings.delivery.batch_size
        project.db.dispose()
        crlf_message, lf_message = folder / "lesson.eml", folder / "lesson-lf.eml"
        crlf_message.write_bytes(data)
        write_source_message(data, lf_message)

        expected = min(count, args.limit or count)
        sink = PostfixSink(folder)
        try:
            overrides = {
                "delivery_transport": "smtp",
                "smtp_host": "127.0.0.1",
                "smtp_port": str(sink.port),
                "smtp_connections": str(args.connections),
                "delivery_batch_size": str(batch_size),
            }
            send = run_sender(bench, bench.environment(**overrides), args, sink, expected)
            connections = args.processes * args.connections
            print(f"{database}: sent {expected:,}; ceilings over {connections} connections", file=sys.stderr)
            ceiling_count = args.ceiling_messages or expected
            commands = {
                "smtp_source": smtp_source_command(sink.port, lf_message, ceiling_count, connections),
                "smtplib_threads": smtplib_command(sink.port, crlf_message, ceiling_count, connections, "threads"),
                "smtplib_processes": smtplib_command(sink.port, crlf_message, ceiling_count, connections, "processes"),
            }
            ceilings = {
                name: run_ceiling(name, command, folder, sink, ceiling_count, connections)
                for name, command in commands.items()
            }
        finally:
            sink.kill()
        project = bench.open()
        ledger = week_one_counts(project)
        project.db.dispose()
        version = postgres_version(url) if database == "postgresql" else None

    ratios = {name: round(send["per_second"] / ceiling["per_second"], 3) for name, ceiling in ceilings.items()}
    case: dict[str, Any] = {
        "database": database,
        "postgresql": version,
        "database_name": url.rsplit("/", 1)[1] if database == "postgresql" else None,
        "subscribers": count,
        "sent_of_them": expected,
        "connections": connections,
        "processes": args.processes,
        "smtp_connections": args.connections,
        "sender_args": args.sender_args,
        "batch_size": batch_size,
        "message_bytes": len(data),
        "seed_seconds": round(seed_seconds, 1),
        "send": send,
        "ceilings": ceilings,
        "ratios": ratios,
        "ledger_week_one": ledger,
        "duplicates": send["sink"]["messages"] - ledger.get("sent", 0),
    }
    case["problems"] = problems(case)
    return case


def problems(case: dict[str, Any]) -> list[str]:
    """What does not add up: messages or connections the sink did not see, a ledger that is not what was sent."""
    found, count = [], case["sent_of_them"]
    for name, ceiling in case["ceilings"].items():
        sink = ceiling["sink"]
        if sink["messages"] != ceiling["messages"] or sink["sessions"] != ceiling["connections"]:
            found.append(f"{name}: the sink saw {sink['messages']} messages over {sink['sessions']} connections")
    if case["send"]["sink"]["messages"] != count:
        found.append(f"newsletter send: the sink received {case['send']['sink']['messages']} messages, not {count}")
    left = case["subscribers"] - count
    if case["ledger_week_one"] != {"sent": count, **({"pending": left} if left else {})}:
        still = f" and {left} pending" if left else ""
        found.append(f"the ledger says {case['ledger_week_one']} for lesson 1, not {count} sent{still}")
    if case["duplicates"]:
        found.append(f"{case['duplicates']} messages were sent twice")
    return found


def connection_notes(case: dict[str, Any]) -> list[str]:
    """Say so when the sender opened another number of SMTP sessions than its P × C connections."""
    opened = case["send"]["sink"]["sessions"]
    if opened == case["connections"]:
        return []
    # `send --processes` checks the relay in its own process before it starts the senders: one session more.
    return [
        f"{case['database']} {case['subscribers']:,}: newsletter send opened {opened} SMTP sessions for "
        f"{case['processes']} processes × [smtp] connections = {case['smtp_connections']}; "
        f"the ceilings used {case['connections']} connections"
    ]


def busy_sink_notes(case: dict[str, Any]) -> list[str]:
    phases = {**case["ceilings"], "newsletter send": case["send"]}
    return [
        f"{case['database']} {case['subscribers']:,}: smtp-sink used {phase['sink']['cpu_percent']:.0f} % of its core "
        f"during {name}, so it may have limited that figure"
        for name, phase in phases.items()
        if phase["sink"]["cpu_percent"] > BUSY_SINK_PERCENT
    ]


def table(done: list[dict[str, Any]]) -> str:
    headings = [
        "database", "readers", "sent", "proc. × conn.", "smtp-source msg/s", "smtplib threads msg/s",
        "smtplib processes msg/s",
        "`newsletter send` msg/s", "first→last msg/s", "÷ smtp-source", "÷ smtplib threads", "÷ smtplib processes",
        "sender CPU ms/msg", "server CPU ms/msg", "sender peak RSS MB", "sink CPU % (send; ceilings max)",
        "load before→after send",
    ]  # fmt: skip
    rows = []
    for case in done:
        ceilings, send, ratios = case["ceilings"], case["send"], case["ratios"]
        ceiling_sink = max(ceiling["sink"]["cpu_percent"] for ceiling in ceilings.values())
        rss = f"{send['peak_rss_mb']:.1f}"
        if send["processes"] > 1:
            rss += f" (all {send['processes']}: {send['sum_of_peaks_mb']:.0f})"
        rows.append([
            case["database"], f"{case['subscribers']:,}", f"{case['sent_of_them']:,}",
            f"{case['processes']} × {case['smtp_connections']}",
            *(f"{ceilings[name]['per_second']:,.0f}" for name in CEILINGS),
            f"{send['per_second']:,.0f}", f"{send['sending_per_second']:,.0f}",
            *(f"{ratios[name]:.2f}" for name in CEILINGS),
            f"{send['cpu_ms_per_message']:.2f}", _server_cell(send), rss,
            f"{send['sink']['cpu_percent']:.0f}; {ceiling_sink:.0f}",
            f"{send['load'][0]:.1f}→{send['load'][1]:.1f}",
        ])  # fmt: skip
    return markdown_table(headings, rows)


def _server_cell(send: dict[str, Any]) -> str:
    server = send.get("server_cpu_ms_per_message")
    return "—" if server is None else f"{server:.2f}"


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_case_arguments(parser, "readers with lesson 1 due")
    parser.add_argument("--processes", type=int, default=1, help="`newsletter send --processes`: sender processes")
    parser.add_argument("--connections", type=int, default=4, help="[smtp] connections of each sender process")
    parser.add_argument("--limit", type=int, help="`newsletter send --limit`: send this many of the N, not all")
    parser.add_argument("--sender-args", default="", help='more arguments for `newsletter send`, e.g. "--processes 2"')
    parser.add_argument("--batch-size", type=int, help="[delivery] batch_size of the senders (default: config.toml)")
    parser.add_argument("--ceiling-messages", type=int, help="messages each ceiling sends (default: N)")
    parser.add_argument("--profile", type=Path, help="run the sender under cProfile (needs --processes 1), stats here")
    parser.add_argument(
        "--phases", action="store_true", help="time each sender's steps (benchmarks/phases/) and print them"
    )
    add_run_arguments(parser)
    args = parser.parse_args(arguments)
    if args.processes < 1 or args.connections < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--processes, --connections and --limit take a whole number of at least 1")
    if args.profile and args.processes > 1:
        # cProfile sees only the process it starts: with --processes that is the one that waits for the others.
        parser.error("--profile profiles one sender process: use it with --processes 1")
    wanted = cases(parser, args)
    require_postfix()
    done = run_each(wanted, args, run_case)
    changes = growth([{**case, **case["ceilings"]} for case in done], GROWING)
    steps = [line for case in done for line in phases_table(case)]
    publish("send_throughput", arguments, args, done, "\n".join([table(done), "", *changes, *steps]), growth=changes)
    notes = [note for case in done for note in connection_notes(case) + busy_sink_notes(case)]
    failures = [f"{case['database']} {case['subscribers']:,}: {p}" for case in done for p in case["problems"]]
    for line in notes + failures:
        print(line, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

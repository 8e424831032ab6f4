"""The relay every throughput run sends to, and the ceilings measured against it.

The relay is Postfix's C `smtp-sink` (Debian package `postfix`): one process, one event loop, on a free
port with a backlog and a concurrency far above any connection count used here. It prints running
counters (`-c`: sessions ended, messages received) into a file this module reads, so each phase knows
exactly how many messages and connections reached it, and its CPU time is read from /proc so a run can
say whether the relay had cycles to spare. Ceilings, each over a given number of connections:

  smtp-source       Postfix's C client (`-s C -m COUNT -F MESSAGE -d`): the machine and the sink's limit;
  smtplib threads   one Python process, one thread per connection, sending a message built beforehand;
  smtplib processes C Python processes with one connection each, the same message.

    python benchmarks/relay.py smtplib --port P --message FILE --count M --connections C --mode threads

is how the smtplib ceilings run (under `measure.py`); it prints {"seconds": …} for the sending alone,
from the moment every connection is open and greeted to the last reply.
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SMTP_SINK = Path("/usr/sbin/smtp-sink")
SMTP_SOURCE = Path("/usr/sbin/smtp-source")
SINK_BACKLOG = 4096
SINK_CONCURRENCY = 4096  # -m: connections handled at once (the rest would wait in the kernel's queue)
SENDER = "lessons@running.example.com"
START_SECONDS = 10.0
SETTLE_SECONDS = 10.0
STILL_SECONDS = 0.5  # counters unchanged this long, with every client gone: nothing more is coming


class RelayMissing(SystemExit):
    """Postfix's smtp-sink or smtp-source is not installed."""


def require_postfix() -> None:
    """Stop with how to install them when Postfix's test programs are missing."""
    for program in (SMTP_SINK, SMTP_SOURCE):
        if not os.access(program, os.X_OK):
            raise RelayMissing(
                f"{program} is missing: the benchmarks need Postfix's smtp-sink and smtp-source "
                "(Debian: apt-get install postfix)"
            )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class SinkCounts:
    """What the sink had seen at one moment: sessions ended, messages received, and its CPU time."""

    sessions: int
    messages: int
    cpu_seconds: float
    at: float


@dataclass(frozen=True)
class SinkShare:
    """What reached the sink between two moments, and how busy that kept it."""

    sessions: int
    messages: int
    cpu_seconds: float

    def cpu_percent(self, busy_seconds: float) -> float:
        """The sink's CPU over the seconds messages flowed, in percent of its one core (it is one process).

        The CPU time counts in clock ticks (10 ms) and includes the greetings and QUITs just outside a
        client's timed seconds, so a sink kept fully busy over a short run can read a little above 100:
        it is shown as 100, the most one process can use.
        """
        return min(100.0, round(100 * self.cpu_seconds / busy_seconds, 1)) if busy_seconds > 0 else 0.0


class PostfixSink:
    """`smtp-sink -c` on a free port, its counters in a file."""

    def __init__(self, folder: Path) -> None:
        require_postfix()
        self.counter_file = folder / "smtp-sink.counters"
        self.port = free_port()
        # As root it must drop to another user once the socket is open.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        command = [str(SMTP_SINK), *user, "-c", "-m", str(SINK_CONCURRENCY), f"127.0.0.1:{self.port}"]
        with self.counter_file.open("wb") as counters, (folder / "smtp-sink.err").open("wb") as errors:
            self.process = subprocess.Popen([*command, str(SINK_BACKLOG)], stdout=counters, stderr=errors)
        deadline = time.monotonic() + START_SECONDS
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                problem = (folder / "smtp-sink.err").read_text(errors="replace")
                raise RuntimeError(f"smtp-sink did not start on port {self.port}: {problem}")
            time.sleep(0.02)
        # The probe that found it listening is a session too: let it end before anyone counts.
        while self.counts().sessions < 1 and time.monotonic() < deadline:
            time.sleep(0.01)

    def _listening(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def counts(self) -> SinkCounts:
        """The sink's latest counters (each update is one `sess=… quit=… mesg=…` record ending in CR)."""
        sessions = messages = 0
        with self.counter_file.open("rb") as counters:
            counters.seek(max(0, counters.seek(0, os.SEEK_END) - 256))
            records = counters.read().split(b"\r")
        for record in reversed(records[:-1]):
            fields = dict(part.split(b"=", 1) for part in record.split() if b"=" in part)
            if b"sess" in fields and b"mesg" in fields:
                sessions, messages = int(fields[b"sess"]), int(fields[b"mesg"])
                break
        return SinkCounts(sessions, messages, process_cpu_seconds(self.process.pid), time.perf_counter())

    def share_since(self, before: SinkCounts, *, messages: int, sessions: int | None = None) -> SinkShare:
        """What reached the sink since `before`, asked once the clients have exited.

        Their last messages and QUITs reach the sink a moment later: this waits until `messages` have
        arrived and `sessions` sessions have ended, or, short of that, until the counters stand still.
        """
        deadline = time.monotonic() + SETTLE_SECONDS
        current, still_since = self.counts(), time.monotonic()
        while time.monotonic() < deadline:
            arrived = current.messages - before.messages >= messages
            if arrived and sessions is not None and current.sessions - before.sessions >= sessions:
                break
            if time.monotonic() - still_since >= STILL_SECONDS:
                break
            time.sleep(0.05)
            later = self.counts()
            if (later.sessions, later.messages) != (current.sessions, current.messages):
                still_since = time.monotonic()
            current = later
        return SinkShare(
            sessions=current.sessions - before.sessions,
            messages=current.messages - before.messages,
            cpu_seconds=current.cpu_seconds - before.cpu_seconds,
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def smtp_source_command(port: int, message: Path, count: int, connections: int) -> list[str]:
    """Postfix's C client: `connections` sessions sharing `count` copies of the message file, each kept open."""
    return [
        str(SMTP_SOURCE),
        *("-s", str(connections), "-m", str(count), "-d"),  # -d: every message of a session on one connection
        *("-F", str(message), "-f", SENDER, "-t", "reader@example.com"),
        f"127.0.0.1:{port}",
    ]


def write_source_message(data: bytes, path: Path) -> Path:
    """The message as smtp-source's -F wants it: LF line ends (it writes CRLF after each line itself)."""
    path.write_bytes(data.replace(b"\r\n", b"\n"))
    return path


def smtplib_command(port: int, message: Path, count: int, connections: int, mode: str) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "smtplib",
        *("--port", str(port), "--message", str(message), "--count", str(count)),
        *("--connections", str(connections), "--mode", mode),
    ]


# --- the smtplib ceilings -----------------------------------------------------------------------------------


def shares(count: int, connections: int) -> list[range]:
    """Recipient numbers for each connection: `count` messages split as evenly as they go."""
    sizes = [count // connections + (1 if n < count % connections else 0) for n in range(connections)]
    starts = [1 + sum(sizes[:n]) for n in range(connections)]
    return [range(start, start + size) for start, size in zip(starts, sizes, strict=True)]


def open_connection(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=60)
    client.ehlo()
    return client


def push(client: smtplib.SMTP, data: bytes, recipients: range) -> None:
    for n in recipients:
        client.sendmail(SENDER, [f"reader{n}@example.com"], data)
    client.quit()


def smtplib_threads(port: int, data: bytes, count: int, connections: int) -> float:
    """Seconds one process needs to send `count` messages over `connections` threads, one connection each."""
    clients = [open_connection(port) for _ in range(connections)]
    failures: list[BaseException] = []

    def sender(client: smtplib.SMTP, recipients: range) -> None:
        try:
            push(client, data, recipients)
        except (smtplib.SMTPException, OSError) as error:
            failures.append(error)

    threads = [
        threading.Thread(target=sender, args=(client, recipients))
        for client, recipients in zip(clients, shares(count, connections), strict=True)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise SystemExit(f"smtplib failed: {failures[0]}")
    return seconds


def smtplib_processes(port: int, message: Path, count: int, connections: int) -> float:
    """Seconds `connections` processes, one connection each, need for `count` messages, from a common start."""
    folder = message.parent / f"smtplib-{os.getpid()}"
    folder.mkdir()
    go = folder / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "smtplib-worker", str(port), str(message), str(go), str(first), str(last)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for first, last in ((r.start, r.stop) for r in shares(count, connections))
    ]
    while len(list(folder.glob("ready-*"))) < connections:
        if any(worker.poll() is not None for worker in workers):
            raise SystemExit("an smtplib process failed while connecting")
        time.sleep(0.005)
    started = time.perf_counter()
    go.touch()
    outputs = [worker.communicate()[0] for worker in workers]
    if any(worker.returncode for worker in workers):
        raise SystemExit(f"an smtplib process failed: exit codes {[worker.returncode for worker in workers]}")
    return max(float(line) for line in outputs) - started


def smtplib_worker(port: int, message: Path, go: Path, first: int, last: int) -> int:
    """One connection of the process ceiling: connect, say it is ready, wait for the start, send, print the end."""
    data = message.read_bytes()
    client = open_connection(port)
    (go.parent / f"ready-{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.001)
    push(client, data, range(first, last))
    print(time.perf_counter())  # CLOCK_MONOTONIC: comparable across processes on one machine
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["smtplib-worker"]:
        port, message, go, first, last = argv[1:6]
        return smtplib_worker(int(port), Path(message), Path(go), int(first), int(last))
    parser = argparse.ArgumentParser(description="Send pre-built messages with smtplib as fast as it goes.")
    parser.add_argument("what", choices=("smtplib",))
    parser.add_argument("--port", type=int, required=True, help="the sink's port on 127.0.0.1")
    parser.add_argument("--message", type=Path, required=True, help="the message bytes to send each time")
    parser.add_argument("--count", type=int, required=True, help="messages in all")
    parser.add_argument("--connections", type=int, required=True, help="SMTP connections in all")
    parser.add_argument("--mode", choices=("threads", "processes"), required=True, help="one process or several")
    args = parser.parse_args(argv)
    if args.mode == "threads":
        seconds = smtplib_threads(args.port, args.message.read_bytes(), args.count, args.connections)
    else:
        seconds = smtplib_processes(args.port, args.message, args.count, args.connections)
    print(json.dumps({"seconds": round(seconds, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

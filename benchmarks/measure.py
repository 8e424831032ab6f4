"""Run one command and report what it cost by itself: wall time, CPU time and its own peak memory.

    python benchmarks/measure.py REPORT.json -- COMMAND [ARGUMENT ...]

Why a process of its own: Linux keeps, in a child's `ru_maxrss`, the peak of the memory it had before
`exec` — the parent's, which the child shares until then. A benchmark that has just seeded a million rows
and reaps its sender with `wait4` reports its own hundreds of megabytes as the sender's (a `python -c pass`
started by a 800 MB parent "peaks" at 800 MB). This launcher is a fresh, small Python process, so what a
command it starts inherits is a dozen megabytes, below any sender's own peak.

The report (JSON) holds `returncode`; `seconds`, start to exit; `cpu_seconds`, user + system of the command
and of every process below it that was waited for; `peak_rss_mb`, the largest peak of any one of those
processes (`ru_maxrss`: exact); `processes`, how many processes the sampling saw in the command's tree; and
`sum_of_peaks_mb`, each of those processes' own peak (`VmHWM`, sampled every 100 ms) added up: what several
worker processes hold together at most (shared pages counted in each; a process that starts and ends
between two looks at the tree, a second apart, is missed). Standard input, output and error are the
launcher's own, so the caller decides where they go; SIGTERM and SIGINT are passed on to the command.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE_SECONDS = 0.1
# Finding the tree reads every /proc/<pid>/stat (about 5 ms of CPU): once a second, not at every sample.
SAMPLES_PER_SCAN = 10


@dataclass(frozen=True)
class Measured:
    """One finished command: how it ended and what it cost."""

    returncode: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    sum_of_peaks_mb: float
    processes: int

    @classmethod
    def from_report(cls, report: Mapping[str, float]) -> Measured:
        return cls(
            returncode=int(report["returncode"]),
            seconds=float(report["seconds"]),
            cpu_seconds=float(report["cpu_seconds"]),
            peak_rss_mb=float(report["peak_rss_mb"]),
            sum_of_peaks_mb=float(report["sum_of_peaks_mb"]),
            processes=int(report["processes"]),
        )


def start(
    command: Sequence[str], env: Mapping[str, str], folder: Path, name: str, *, stdout: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `command` under the launcher; its output goes to `folder/name.out` (or `stdout`) and `name.err`."""
    report = folder / f"{name}.measure.json"
    report.unlink(missing_ok=True)
    launcher = [sys.executable, str(HERE / "measure.py"), str(report), "--", *command]
    with (stdout or folder / f"{name}.out").open("wb") as out, (folder / f"{name}.err").open("wb") as err:
        return subprocess.Popen(launcher, env=dict(env), stdout=out, stderr=err)


def finish(launched: subprocess.Popen[bytes], folder: Path, name: str, timeout: float | None = None) -> Measured:
    """Wait for a command started with `start` and read its report."""
    launched.wait(timeout=timeout)
    report = folder / f"{name}.measure.json"
    if not report.exists():
        raise RuntimeError(f"{name}: the launcher wrote no report:\n{error_output(folder, name)}")
    return Measured.from_report(json.loads(report.read_text()))


def run(
    command: Sequence[str],
    env: Mapping[str, str],
    folder: Path,
    name: str,
    *,
    stdout: Path | None = None,
    timeout: float | None = None,
) -> Measured:
    """Run `command` under the launcher to the end and return what it cost."""
    return finish(start(command, env, folder, name, stdout=stdout), folder, name, timeout)


def output(folder: Path, name: str) -> str:
    return (folder / f"{name}.out").read_text(errors="replace")


def error_output(folder: Path, name: str) -> str:
    return (folder / f"{name}.err").read_text(errors="replace")


# --- the launcher itself ------------------------------------------------------------------------------------


def _children_of(pids: set[int]) -> set[int]:
    """Every process on the machine whose parent is in `pids`, and theirs, and so on."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree = set(pids)
    while grown := {pid for pid, parent in parents.items() if parent in tree and pid not in tree}:
        tree |= grown
    return tree


def _peak_kib(pid: int) -> int | None:
    """The process's own peak resident set (VmHWM) in KiB, or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class TreeSampler(threading.Thread):
    """Each process's own peak so far, every 100 ms, for the processes under the root (looked up each second)."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peaks: dict[int, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        tree, samples = {self.root}, 0
        while not self.done.wait(SAMPLE_SECONDS):
            if samples % SAMPLES_PER_SCAN == 0:
                tree = _children_of({self.root})
            samples += 1
            for pid in tree:
                if (peak := _peak_kib(pid)) is not None:
                    self.peaks[pid] = max(peak, self.peaks.get(pid, 0))


def launch(report: Path, command: list[str]) -> int:
    """Run the command, write the report, exit with the command's code."""
    started = time.perf_counter()
    child = subprocess.Popen(command)
    for signum in (signal.SIGTERM, signal.SIGINT):  # stopping the launcher stops the command, which reports
        signal.signal(signum, lambda received, _frame: child.send_signal(received))
    sampler = TreeSampler(child.pid)
    sampler.start()
    _, status, _ = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    sampler.done.set()
    sampler.join()
    # RUSAGE_CHILDREN: the command and every descendant reaped below it (a worker pool included).
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_mb = usage.ru_maxrss / 1024
    result = {
        "returncode": child.returncode,
        "seconds": round(seconds, 4),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mb": round(peak_mb, 1),
        # A command that ended before the first sample still has its exact peak.
        "sum_of_peaks_mb": round(max(sum(sampler.peaks.values()) / 1024, peak_mb), 1),
        "processes": max(len(sampler.peaks), 1),
    }
    report.write_text(json.dumps(result) + "\n")
    return child.returncode


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    return launch(Path(argv[0]), argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

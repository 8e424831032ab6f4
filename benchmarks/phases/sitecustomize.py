"""Where a sender's database thread spends its time: `send_throughput.py --phases` puts this on PYTHONPATH.

Python imports `sitecustomize` at start-up in every process, so each `newsletter send` process (with
`--processes P`, the P senders and the one that starts them) loads it. With `NEWSLETTER_BENCH_PHASES` set to a
folder, it wraps the sender's steps with timers (wall time, and the CPU time of the thread that runs them)
and writes `phases-<pid>.json` there as the process exits; without it, it does nothing. The steps timed, all
on the database thread (`newsletter/dispatch/sender.py`):

    run            Dispatcher.run: the whole send after start-up (imports and the lesson checks come before)
    render         Dispatcher._prepare: render and compose one message (outside any transaction)
    claim          Dispatcher._claim_batch: claim a batch (in a write transaction), then load it (a read)
    record         Dispatcher._record: what landed, written (inside the write transaction)
    start          Dispatcher._start: the next messages marked on the wire (inside the same transaction)
    drain          Dispatcher._drain: waiting for the connections to land what they were given
    line wait      Database.in_line, until the line is ours (SQLite; nothing to wait for on PostgreSQL)
    line held      Database.in_line, while ours: every write transaction, its COMMIT included

A timer costs about a microsecond; the figures are for comparing the steps, the throughput comes from the
runs without `--phases`.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FOLDER = os.environ.get("NEWSLETTER_BENCH_PHASES")
TOTALS: dict[str, list[float]] = {}  # step → [wall seconds, thread CPU seconds, calls]


def _add(step: str, wall: float, cpu: float) -> None:
    total = TOTALS.setdefault(step, [0.0, 0.0, 0])
    total[0] += wall
    total[1] += cpu
    total[2] += 1


def _timed(owner: type, name: str, step: str) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            _add(step, time.perf_counter() - wall, time.thread_time() - cpu)

    setattr(owner, name, timed)


def _install() -> None:
    from newsletter.db import Database
    from newsletter.dispatch.sender import Dispatcher

    for name, step in (
        ("run", "run"),
        ("_prepare", "render"),
        ("_claim_batch", "claim"),
        ("_record", "record"),
        ("_start", "start"),
        ("_drain", "drain"),
    ):
        _timed(Dispatcher, name, step)
    in_line = Database.in_line

    @contextmanager
    def timed_in_line(self: Database) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.thread_time()
        with in_line(self):
            _add("line wait", time.perf_counter() - wall, time.thread_time() - cpu)
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                yield
            finally:
                _add("line held", time.perf_counter() - wall, time.thread_time() - cpu)

    Database.in_line = timed_in_line  # type: ignore[method-assign]
    atexit.register(_write)


def _write() -> None:
    if "run" in TOTALS and FOLDER:
        steps = {step: {"wall": wall, "cpu": cpu, "calls": int(calls)} for step, (wall, cpu, calls) in TOTALS.items()}
        Path(FOLDER, f"phases-{os.getpid()}.json").write_text(json.dumps(steps), encoding="utf-8")


if FOLDER:
    _install()

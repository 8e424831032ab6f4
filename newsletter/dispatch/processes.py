"""`send --processes N`: N ordinary `newsletter send` runs side by side, their counts added up.

One Python process sends on about one core (its database and rendering thread holds the GIL while the
connections' threads wait on the network), so on a machine with more cores several processes send more.
They are plain `send` runs, which already split the due rows between them through their claims (the
concurrency tests hold them to it); this module starts them, passes a stop request on as SIGTERM (each
finishes what is on its wire), and reads back the one line of JSON each prints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

from newsletter.dispatch.queue import OUTCOMES, SendSummary
from newsletter.errors import NewsletterError
from newsletter.ledger.course import CourseNote


def send_in_processes(
    config_path: Path | None,
    processes: int,
    *,
    now: datetime | None = None,
    limit: int | None = None,
    stop: threading.Event | None = None,
) -> SendSummary:
    """Run `processes` senders at once until each has nothing left; return their counts together."""
    command = [sys.executable, "-m", "newsletter"]
    if config_path is not None:
        command += ["--config", str(config_path)]
    command += ["send", "--json"] + (["--now", now.isoformat()] if now else [])
    shares = (
        [None] * processes
        if limit is None
        else [limit // processes + (n < limit % processes) for n in range(processes)]
    )
    children = [
        subprocess.Popen([*command, *(["--limit", str(share)] if share else [])], stdout=subprocess.PIPE, text=True)
        for share in shares
        if share is None or share > 0
    ]
    if stop is not None:
        threading.Thread(target=_pass_on_stop, args=(stop, children), daemon=True).start()
    outputs = [child.communicate()[0] for child in children]
    stopped = stop is not None and stop.is_set()
    if stop is not None:
        stop.set()  # lets the watcher thread end
    # A child still starting up when the stop came dies of the SIGTERM before it could claim anything.
    outputs = [out for child, out in zip(children, outputs, strict=True) if not _stopped_early(child, stopped)]
    failed = [c.returncode for c in children if c.returncode != 0 and not _stopped_early(c, stopped)]
    if failed:
        raise NewsletterError(
            f"{len(failed)} of {len(children)} sender processes failed (exit {', '.join(map(str, failed))}); "
            "their messages are above; what they had claimed comes back when its lease expires"
        )
    total, note = SendSummary(), CourseNote()
    for output in outputs:
        counts = json.loads(output.strip().splitlines()[-1])
        for outcome in OUTCOMES:
            setattr(total, outcome, getattr(total, outcome) + int(counts[outcome]))
        note.changes += [change for change in counts.get("course_changes", []) if change not in note.changes]
        if not note.held:  # each process counts the same held rows: one count will do
            note.held.update({(lesson, reason): count for lesson, reason, count in counts.get("held_by_lesson", [])})
    total.course = note
    return total


def _stopped_early(child: subprocess.Popen[str], stopped: bool) -> bool:
    return stopped and child.returncode == -signal.SIGTERM


def _pass_on_stop(stop: threading.Event, children: list[subprocess.Popen[str]]) -> None:
    stop.wait()
    for child in children:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGTERM)

"""The log of the long-lived processes: text or JSON lines, and one line per delivery outcome.

`newsletter run` logs one line per delivery outcome ("sent 'muscle' to a…@example.com") and one per tick that
did something; an idle tick says nothing. `newsletter serve` says the same line for each confirmation it
sends. An address is shown by its first character and its domain: enough to see which provider refuses and
to find the row with `newsletter deliveries`, without copying subscribers' addresses into logs that are
kept, shipped and searched long after a reader is erased.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from newsletter.dispatch.queue import SendSummary
    from newsletter.ledger.course import CourseNote

# How each outcome reads, and at which level.
_OUTCOME_LINES = {
    "sent": (logging.INFO, "sent {lesson!r} to {to}"),
    "retry": (logging.INFO, "deferred {lesson!r} to {to}: the relay said try later, it will be retried"),
    "failed": (logging.WARNING, "failed {lesson!r} to {to}: refused (`newsletter deliveries --status failed`)"),
    "skipped": (logging.INFO, "skipped {lesson!r} to {to}: held or no longer wanted (`newsletter deliveries`)"),
}


class TextFormatter(logging.Formatter):
    """`2026-03-02T07:00:01Z INFO newsletter.daemon: tick: 3 sent, …` — UTC, one line per record."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class JsonFormatter(logging.Formatter):
    """One JSON object per line for log shippers; `extra={"fields": {...}}` adds machine-readable keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str, stream: TextIO | None = None) -> None:
    """Send every record of this process to stderr as text or JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # APScheduler logs two lines per job run at INFO; our tick line says more in one.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def one_line(error: BaseException) -> str:
    """The first line of an error's message, at most 500 characters, for a log line."""
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:500]


def shortened_address(address: str) -> str:
    """An address as a log may show it: its first character and its domain ("a…@example.com")."""
    local, at, domain = address.rpartition("@")
    if not at:
        return f"{address[:1]}…"
    return f"{local[:1]}…@{domain}"


def delivery_line(outcome: str, lesson: str, address: str) -> tuple[int, str, dict[str, str]]:
    """The level, words and machine-readable fields of one delivery's outcome."""
    level, line = _OUTCOME_LINES[outcome]
    shown = shortened_address(address)
    fields = {"event": "delivery", "outcome": outcome, "lesson": lesson, "to": shown}
    return level, line.format(lesson=lesson, to=shown), fields


def log_delivery(log: logging.Logger, outcome: str, lesson: str, address: str) -> None:
    """Log one line for one delivery's outcome."""
    level, line, fields = delivery_line(outcome, lesson, address)
    log.log(level, line, extra={"fields": fields})


def log_tick(log: logging.Logger, summary: SendSummary, duration: float, *, stopping: bool) -> None:
    """One line of counts for a tick that did something; an idle tick says nothing."""
    if not summary.total:
        return
    counts = summary.as_dict()
    log.info(
        "tick: %d sent, %d retry, %d failed, %d skipped in %.2f s%s",
        *counts.values(),
        duration,
        " (stopping)" if stopping else "",
        extra={"fields": {"event": "tick", **counts, "duration_seconds": round(duration, 3)}},
    )


def log_tick_failed(log: logging.Logger, duration: float, error: str) -> None:
    """One line for a tick that failed, with the reason."""
    log.error(
        "tick failed after %.2f s: %s",
        duration,
        error,
        extra={"fields": {"event": "tick_failed", "error": error, "duration_seconds": round(duration, 3)}},
    )


def log_course(log: logging.Logger, note: CourseNote, held_before: str) -> str:
    """Say each re-plan a run made, and the held lessons when they differ from `held_before`; return them."""
    for change in note.changes:
        log.info("course: %s", change, extra={"fields": {"event": "course_changed", "change": change}})
    held = note.held_line()
    if held != held_before:
        log.warning(held or "held: nothing any more", extra={"fields": {"event": "held", "held": held}})
    return held


def log_reload(log: logging.Logger, problems: Sequence[str]) -> None:
    """Say whether the course on disk is in use after a change, and what keeps it out if not."""
    for problem in problems:
        log.warning("reload: %s", problem, extra={"fields": {"event": "reload_failed", "problem": problem}})
    if not problems:
        log.info("reload: the course on disk is in use", extra={"fields": {"event": "reloaded"}})


def log_housekeeping(log: logging.Logger, released: int, changes: list[str]) -> None:
    """One line when housekeeping released leases or re-planned the course; nothing otherwise."""
    if released or changes:
        log.info(
            "housekeeping: %d expired leases released%s",
            released,
            "".join(f"; {change}" for change in changes),
            extra={"fields": {"event": "housekeeping", "released": released, "course": changes}},
        )

"""Process metrics: counters and gauges one process keeps, and the Prometheus text format written by hand.

The daemon's dispatch thread updates a `ProcessMetrics` while the web thread reads it, so every access
holds one lock and readers get a frozen `MetricsSnapshot`. Gauges read from the database (deliveries and
subscribers by status) come in as a `LedgerGauges`; this module never touches the database itself. The
exposition format is small and stable (text format 0.0.4), so it is written here instead of adding a
client library.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# With no progress for this many tick intervals (plus the grace) the daemon counts as stuck.
STALE_TICKS = 3
STALE_GRACE = timedelta(seconds=30)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class MetricsSnapshot:
    """The process counters at one instant."""

    taken_at: datetime
    started_at: datetime
    tick_seconds: float | None  # None: this process serves pages but does not tick
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    ticks: int = 0
    tick_failures: int = 0
    tick_duration_sum: float = 0.0
    last_tick_at: datetime | None = None
    last_tick_duration: float | None = None
    last_tick_error: str | None = None
    last_progress_at: datetime | None = None
    course_problems: tuple[str, ...] = ()  # lessons held because their file is broken, a reload that failed

    @property
    def last_tick_age(self) -> float | None:
        """Seconds since the last tick finished, or None before the first."""
        if self.last_tick_at is None:
            return None
        return (self.taken_at - self.last_tick_at).total_seconds()

    def problems(self) -> list[str]:
        """Why the dispatch loop looks unhealthy; empty when it is fine or when this process does not tick."""
        if self.tick_seconds is None:
            return []
        found = list(self.course_problems)
        if self.last_tick_error is not None:
            found.append(f"the last tick failed: {self.last_tick_error}")
        heartbeat = max(moment for moment in (self.started_at, self.last_tick_at, self.last_progress_at) if moment)
        quiet = self.taken_at - heartbeat
        if quiet > timedelta(seconds=STALE_TICKS * self.tick_seconds) + STALE_GRACE:
            since = "no tick has finished" if self.last_tick_at is None else "no tick has finished and nothing was sent"
            found.append(f"{since} for {quiet.total_seconds():.0f} s (ticks are every {self.tick_seconds:g} s)")
        return found


class ProcessMetrics:
    """Counters for sends and ticks, safe to update from the dispatch thread and read from the web thread."""

    def __init__(self, tick_seconds: float | None = None, clock: Callable[[], datetime] = _utc_now) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state = MetricsSnapshot(taken_at=clock(), started_at=clock(), tick_seconds=tick_seconds)

    def record_outcome(self, outcome: str) -> None:
        """Count one message outcome as the dispatcher reports it: sent, retry, failed or skipped."""
        counter = {"sent": "sent", "retry": "retried", "failed": "failed", "skipped": "skipped"}[outcome]
        with self._lock:
            state = self._state
            self._state = replace(state, **{counter: getattr(state, counter) + 1, "last_progress_at": self._clock()})

    def record_tick(self, duration: float, error: str | None = None) -> None:
        """Note a finished tick: how long it took and, if it failed, why."""
        with self._lock:
            state = self._state
            self._state = replace(
                state,
                ticks=state.ticks + 1,
                tick_failures=state.tick_failures + (error is not None),
                tick_duration_sum=state.tick_duration_sum + duration,
                last_tick_at=self._clock(),
                last_tick_duration=duration,
                last_tick_error=error,
            )

    def record_course(self, problems: list[str]) -> None:
        """Note what is wrong with the course on disk (empty: nothing)."""
        with self._lock:
            self._state = replace(self._state, course_problems=tuple(problems))

    def snapshot(self) -> MetricsSnapshot:
        with self._lock:
            return replace(self._state, taken_at=self._clock())


@dataclass(frozen=True)
class LedgerGauges:
    """What the database says right now; `reachable` False means the other fields are empty."""

    reachable: bool
    deliveries: Mapping[str, int] = field(default_factory=dict)
    subscribers: Mapping[str, int] = field(default_factory=dict)
    oldest_due_seconds: float = 0.0


@dataclass
class _Family:
    name: str
    kind: str
    help: str
    samples: list[tuple[str, Mapping[str, str], float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> _Family:
        """Add a sample; `suffix` names a summary's parts (_sum, _count)."""
        self.samples.append((suffix, labels, value))
        return self


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _lines(families: Iterable[_Family]) -> Iterable[str]:
    for family in families:
        if not family.samples:
            continue
        yield f"# HELP {family.name} {family.help}"
        yield f"# TYPE {family.name} {family.kind}"
        for suffix, labels, value in family.samples:
            # Label values are status names from fixed tuples, so they never need escaping.
            rendered = ",".join(f'{key}="{label}"' for key, label in labels.items())
            name = family.name + suffix
            yield f"{name}{{{rendered}}} {_number(value)}" if rendered else f"{name} {_number(value)}"


def exposition(
    snapshot: MetricsSnapshot, ledger: LedgerGauges, *, ledger_age: float = 0.0, ledger_read_seconds: float = 0.0
) -> str:
    """The Prometheus text format for the process counters and the ledger gauges.

    `ledger_age` is how many seconds ago the gauges were read, `ledger_read_seconds` how long that took.
    """
    families = [
        _Family("newsletter_database_up", "gauge", "1 when the database answered the last ledger reading.").add(
            int(ledger.reachable)
        ),
        _Family("newsletter_deliveries", "gauge", "Delivery ledger rows by status."),
        _Family("newsletter_subscribers", "gauge", "Subscribers by status."),
        _Family("newsletter_oldest_due_seconds", "gauge", "Age of the oldest pending delivery that is due (0: none)."),
        _Family(
            "newsletter_sends_total", "counter", "Messages the mail server accepted, since this process started."
        ).add(snapshot.sent),
        _Family("newsletter_send_failures_total", "counter", "Messages the server did not accept, by kind.")
        .add(snapshot.retried, kind="temporary")
        .add(snapshot.failed, kind="permanent"),
        _Family("newsletter_sends_skipped_total", "counter", "Claimed messages not sent (held, or reader left).").add(
            snapshot.skipped
        ),
        _Family("newsletter_process_start_time_seconds", "gauge", "When this process started, Unix time.").add(
            snapshot.started_at.timestamp()
        ),
        _Family("newsletter_ledger_age_seconds", "gauge", "How long ago the ledger gauges were read.").add(
            round(ledger_age, 3)
        ),
        _Family("newsletter_ledger_read_seconds", "gauge", "How long the last reading of the ledger gauges took.").add(
            round(ledger_read_seconds, 4)
        ),
    ]
    if ledger.reachable:
        for status, count in ledger.deliveries.items():
            families[1].add(count, status=status)
        for status, count in ledger.subscribers.items():
            families[2].add(count, status=status)
        families[3].add(ledger.oldest_due_seconds)
    if snapshot.tick_seconds is not None:
        families += [
            _Family("newsletter_ticks_total", "counter", "Dispatch ticks finished.").add(snapshot.ticks),
            _Family("newsletter_tick_failures_total", "counter", "Dispatch ticks that ended in an error.").add(
                snapshot.tick_failures
            ),
            _Family("newsletter_tick_duration_seconds", "summary", "Time spent in dispatch ticks.")
            .add(snapshot.tick_duration_sum, suffix="_sum")
            .add(snapshot.ticks, suffix="_count"),
        ]
        if snapshot.last_tick_at is not None and snapshot.last_tick_duration is not None:
            families += [
                _Family(
                    "newsletter_last_tick_timestamp_seconds", "gauge", "When the last tick finished, Unix time."
                ).add(snapshot.last_tick_at.timestamp()),
                _Family("newsletter_last_tick_duration_seconds", "gauge", "How long the last tick took.").add(
                    snapshot.last_tick_duration
                ),
            ]
    return "\n".join(_lines(families)) + "\n"

"""A logging filter that lets a repeated line through a few times, then says how often it came.

Lines that outside input can trigger (a refused accept, a malformed request, an outage seen by every page)
arrive as fast as someone can cause them; one line per occurrence once filled a disk with 108 MB in 25 s.
The filter lets the first `burst` identical messages of a logger through in each `interval` and drops the
rest; the next line it sees after that interval is preceded by one "… repeated K more times in the last N s:
<message>", so the count is never lost while the process keeps logging.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

BURST = 10
INTERVAL_SECONDS = 60.0
MAX_TRACKED = 1_000  # distinct messages remembered at once (access lines, say, are each different)
# The loggers through which anyone who can reach the port can make us write: asyncio's accept loop, uvicorn's
# protocol and access lines, and our own pages' outage lines.
FLOODABLE_LOGGERS = ("asyncio", "uvicorn", "uvicorn.error", "uvicorn.access", "newsletter.web.public")
_SUMMARY = "newsletter_repeat_summary"


@dataclass
class _Seen:
    since: float
    passed: int = 0
    dropped: int = 0
    level: int = logging.INFO


class RepeatedLineFilter(logging.Filter):
    """Pass at most `burst` identical messages per logger in each `interval` seconds; summarise the rest."""

    def __init__(
        self, burst: int = BURST, interval: float = INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._seen: OrderedDict[tuple[str, str], _Seen] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SUMMARY, False):
            return True
        now = self.clock()
        key = (record.name, record.getMessage())
        with self._lock:
            finished = self._finish_intervals(now)
            seen = self._seen.get(key)
            if seen is None:
                seen = self._seen[key] = _Seen(since=now, level=record.levelno)
                while len(self._seen) > MAX_TRACKED:
                    finished += self._pop_oldest()
            allowed = seen.passed < self.burst
            if allowed:
                seen.passed += 1
            else:
                seen.dropped += 1
        for summary in finished:
            logging.getLogger(summary.name).handle(summary)
        return allowed

    def _finish_intervals(self, now: float) -> list[logging.LogRecord]:
        """Forget messages whose interval is over, with a summary record for each that had lines dropped."""
        finished = []
        while self._seen:
            seen = next(iter(self._seen.values()))
            if now - seen.since < self.interval:
                break
            finished += self._pop_oldest()
        return finished

    def _pop_oldest(self) -> list[logging.LogRecord]:
        (name, message), seen = self._seen.popitem(last=False)
        if not seen.dropped:
            return []
        summary = logging.LogRecord(
            name,
            seen.level,
            __file__,
            0,
            "… repeated %d more times in the last %.0f s: %s",
            (seen.dropped, self.interval, message),
            None,
        )
        setattr(summary, _SUMMARY, True)
        return [summary]


def quiet_repeated_lines(loggers: tuple[str, ...] = FLOODABLE_LOGGERS) -> None:
    """Put one `RepeatedLineFilter` on each floodable logger, once per process."""
    shared = RepeatedLineFilter()
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RepeatedLineFilter) for existing in logger.filters):
            logger.addFilter(shared)

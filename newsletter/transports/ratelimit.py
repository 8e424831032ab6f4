"""A messages-per-second limit shared by every thread of a process, and optionally by processes.

The limiter hands out evenly spaced send slots (a token bucket holding one token, computed as the
"generic cell rate algorithm": one stored number, the earliest time the next slot is free). A caller
reserves its slot under a lock and sleeps outside it, so threads queue up without holding the lock.

Several processes on one machine share one limit by naming the same ``state_path``: the next free slot
then lives in that small text file, read and rewritten under an exclusive ``fcntl.flock``. The file holds
wall-clock seconds so that every process reads the same clock; it may be deleted at any time (the next
caller starts afresh). Processes on several machines share one limit through a PostgreSQL database
(``engine``): the slot is a row of `rate_slots`, advanced by one atomic UPDATE, by the database's clock —
one clock for every machine, whatever theirs say.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from newsletter.errors import TransportError

# One round trip reserves a slot and says how long to wait for it, by the database's clock.
_RESERVE = text(
    "UPDATE rate_slots SET next_free = GREATEST(next_free, extract(epoch FROM clock_timestamp())) + :interval "
    "WHERE name = :name RETURNING next_free - :interval - extract(epoch FROM clock_timestamp())"
)
_CREATE = text("INSERT INTO rate_slots (name, next_free) VALUES (:name, 0) ON CONFLICT (name) DO NOTHING")
# How far ahead a stored slot may lie before it is treated as left over from a clock stepped backwards.
_MIN_HORIZON_SECONDS = 60.0
_HORIZON_SLOTS = 1000


class RateLimiter:
    """Space calls to `acquire` at least ``1 / rate`` seconds apart."""

    def __init__(
        self, rate: float, state_path: Path | None = None, *, engine: Engine | None = None, name: str = "smtp"
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be a positive number of messages per second, got {rate!r}")
        self.rate = rate
        self.state_path = state_path
        self.engine = engine
        self.name = name
        self._interval = 1.0 / rate
        self._horizon = max(_MIN_HORIZON_SECONDS, _HORIZON_SLOTS * self._interval)
        self._next_free = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for the next free slot; return the seconds waited."""
        delay = self._reserve_in_database(self.engine) if self.engine is not None else self._reserve() - time.time()
        if delay > 0:
            time.sleep(delay)
            return delay
        return 0.0

    def _reserve(self) -> float:
        with self._lock:
            if self.state_path is None:
                slot, self._next_free = self._claim(self._next_free)
                return slot
            return self._reserve_shared(self.state_path)

    def _claim(self, next_free: float) -> tuple[float, float]:
        now = time.time()
        if next_free - now > self._horizon:
            next_free = now
        slot = max(now, next_free)
        return slot, slot + self._interval

    def _reserve_shared(self, state_path: Path) -> float:
        try:
            fd = os.open(state_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise TransportError(
                f"rate limit state file {state_path}: cannot open it ({exc.strerror}); "
                "check that its folder exists and is writable"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            stored = os.read(fd, 64)
            try:
                next_free = float(stored.decode("ascii"))
            except ValueError:
                # An empty or damaged file only costs one unthrottled slot.
                next_free = 0.0
            slot, next_free = self._claim(next_free)
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, f"{next_free:.6f}".encode("ascii"))
            return slot
        finally:
            # Closing the descriptor releases the flock.
            os.close(fd)

    def _reserve_in_database(self, engine: Engine) -> float:
        """Reserve the next slot in `rate_slots`; return the seconds until it (no lock held while waiting)."""
        values = {"name": self.name, "interval": self._interval}
        try:
            with engine.begin() as connection:
                wait = connection.execute(_RESERVE, values).scalar()
                if wait is None:  # the first sender ever: make the row, then reserve as everyone does
                    connection.execute(_CREATE, values)
                    wait = connection.execute(_RESERVE, values).scalar_one()
        except SQLAlchemyError as exc:
            raise TransportError(f"the shared send rate in the database cannot be read: {exc}") from exc
        return float(wait)

"""Per-client limits for the forms anyone can post (sign-up, studio login), in constant time and bounded memory.

The limiter is GCRA, the generic cell rate algorithm: a key may spend `limit` events at once, and its
allowance refills at `limit` per window, one event every `window / limit` seconds. All it keeps per key is one
instant, the moment the allowance would be full again, in an LRU-ordered table of at most `max_keys` keys.
Every call is O(1): it touches one entry and drops entries from the old end that are full again (each at
most once), or the least recently seen one when the table is full. A key dropped from a full table starts
afresh; that only lets someone who already sends from `max_keys` other addresses do what they could anyway.

The web limits key a client by `client_key`: an IPv4 address as it is, an IPv6 address by its /64. One
subscriber line or host is given a whole /64 (RFC 6177's smallest end-site assignment), and picks a new
address in it at will (privacy addresses, RFC 8981): keyed per address, a single machine would have 2^64
allowances.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from newsletter.web.proxies import parse_address

MAX_KEYS = 100_000  # about 18 MB of table (175 bytes a key: benchmarks/rate_limiter.py)
IPV6_PREFIX = 64


def client_key(address: str) -> str:
    """The key a client's address is limited by: IPv4 as it is, IPv6 by its /64; anything else as given."""
    parsed = parse_address(address)  # an IPv4-mapped IPv6 address comes back as its IPv4 address
    if parsed is None:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, IPV6_PREFIX), strict=False))
    return str(parsed)


@dataclass
class RateLimiter:
    """At most `limit` events per key at once, refilled at `limit` per `window_seconds`; `limit` 0 means unlimited."""

    limit: int
    window_seconds: float = 3600.0
    max_keys: int = MAX_KEYS
    clock: Callable[[], float] = time.monotonic
    _full_at: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def interval(self) -> float:
        """Seconds that one event takes to be given back."""
        return self.window_seconds / self.limit

    def __len__(self) -> int:
        return len(self._full_at)

    def allow(self, key: str) -> bool:
        """Record one event for `key` if its allowance has room; say whether it had."""
        if self.limit <= 0:
            return True
        now = self.clock()
        with self._lock:
            full_at = max(self._full_at.get(key, now), now)
            allowed = full_at + self.interval - now <= self.window_seconds
            if allowed:
                full_at += self.interval
            self._full_at[key] = full_at
            self._full_at.move_to_end(key)
            self._forget(now)
            return allowed

    def retry_after(self, key: str) -> int:
        """Whole seconds until `key` may send one more (0 if it may now)."""
        if self.limit <= 0:
            return 0
        with self._lock:
            full_at = self._full_at.get(key)
            if full_at is None:
                return 0
            wait = full_at + self.interval - self.window_seconds - self.clock()
            return max(0, math.ceil(wait))

    def _forget(self, now: float) -> None:
        while self._full_at:
            oldest, full_at = next(iter(self._full_at.items()))
            if full_at > now and len(self._full_at) <= self.max_keys:
                return
            del self._full_at[oldest]

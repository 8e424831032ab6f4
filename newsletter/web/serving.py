"""How uvicorn serves the app, in `newsletter serve`, `preview` and `run` alike: limits that slow clients cannot beat.

Left to its defaults, uvicorn waits forever for a request head, so a few hundred clients that trickle one
byte now and then hold a file descriptor each until the process has none left: every request then fails,
and asyncio logs each refused accept. Here:

- a request head must arrive within HEADER_TIMEOUT_SECONDS of the connection opening (or of the previous
  response, on a kept-alive connection), or the connection is closed: uvicorn's h11 protocol has no such
  timeout, and its keep-alive timer is cancelled by any byte that arrives;
- the connections served at once are capped below the process's file-descriptor limit (`limit_concurrency`,
  beyond which uvicorn answers 503), and when they crowd near the cap the connection that has waited longest
  for its request head is closed to make room, so a new visitor is served rather than refused;
- an idle kept-alive connection closes after KEEP_ALIVE_SECONDS, and a request head may be at most
  MAX_HEAD_BYTES (400 beyond); a request body must arrive within `security.BODY_SECONDS`;
- uvicorn's own proxy-header handling is off (it believes X-Forwarded-For from 127.0.0.1): `proxies.py` reads
  those headers, and only from `[web] trusted_proxies`;
- lines that clients can cause are rate-limited (`repeats.py`).
"""

from __future__ import annotations

import asyncio
import heapq
import resource
import socket
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from newsletter.web.repeats import quiet_repeated_lines

HEADER_TIMEOUT_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 5
MAX_HEAD_BYTES = 16 * 1024
MAX_CONNECTIONS = 1000
# asyncio accepts up to `backlog` connections in one turn of the loop before any of them reaches our protocol,
# so it is also how far past the cap one burst of connections can go; uvicorn's default is 2048.
BACKLOG = 128
# Descriptors kept beyond the cap: one accept burst, database connections (three files each on SQLite), SMTP
# connections, the log, the listening socket, the event loop's own.
RESERVED_DESCRIPTORS = BACKLOG + 64
MIN_CONNECTIONS = 16


def connection_limit() -> int:
    """How many connections this process can hold open: MAX_CONNECTIONS, or less under a low descriptor limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, soft - RESERVED_DESCRIPTORS))


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head, and room made for new connections."""

    header_timeout = HEADER_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting_since: float | None = None  # when it began waiting for a request head; None while serving
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio turns Nagle's algorithm off only on sockets whose protocol number says TCP, and a
            # listener made by `socket.create_server` (the daemon's) says 0: h11 writes the head and the body
            # apart, and the body then waits for the client's delayed ACK, 40 ms a response on keep-alive.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        self._track_waiting()
        self._make_room()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track_waiting()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        serving = self.cycle is not None and not self.cycle.response_complete
        return not self.transport.is_closing() and self.conn.their_state is h11.IDLE and not serving

    def _track_waiting(self) -> None:
        if not self._waiting_for_head():
            self._stop_waiting()
        elif self.waiting_since is None:
            self.waiting_since = self.loop.time()
            self._head_deadline = self.loop.call_later(self.header_timeout, self._head_too_late)

    def _stop_waiting(self) -> None:
        self.waiting_since = None
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_late(self) -> None:
        self._head_deadline = None
        if self._waiting_for_head():
            self._close()

    def _close(self) -> None:
        self._stop_waiting()
        self.transport.close()

    def _make_room(self) -> None:
        """Near the cap, close the connections that have waited longest for a request head."""
        limit = self.limit_concurrency
        if limit is None:
            return
        crowded_at = limit - max(4, limit // 10)
        if len(self.connections) <= crowded_at:
            return
        open_now = [c for c in self.connections if isinstance(c, DeadlineH11Protocol) and not c.transport.is_closing()]
        excess = len(open_now) - crowded_at
        waiting = [c for c in open_now if c is not self and c.waiting_since is not None]
        for connection in heapq.nsmallest(excess, waiting, key=lambda c: c.waiting_since or 0.0):
            connection._close()


def server_config(app: Any, *, host: str, port: int, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration for our app, with the limits above; `options` go to uvicorn as they are."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=DeadlineH11Protocol,
        proxy_headers=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=connection_limit(),
        backlog=BACKLOG,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        **options,
    )
    quiet_repeated_lines()  # after uvicorn.Config, which (re)configures its loggers
    return config

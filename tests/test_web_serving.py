"""Slow and hostile clients against the real server, `newsletter serve` and `newsletter run`, over real sockets.

Each server runs in its own process with a descriptor limit of 256, as a small service might, so that a few
hundred slow clients would exhaust it if the server let them.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
from conftest import IN_CI
from servers import ServerProcess

from newsletter.errors import ConfigError
from newsletter.web.repeats import BURST
from newsletter.web.serving import HEADER_TIMEOUT_SECONDS, MAX_HEAD_BYTES

pytestmark = pytest.mark.slow
SLOW_CLIENTS = 320
MAX_FILES = 256
PROMPT_SECONDS = 2.0


@pytest.fixture(params=["serve", "run"])
def server(
    request: pytest.FixtureRequest, project_dir: Path, env: dict[str, str], sqlite_url: str
) -> Iterator[ServerProcess]:
    environment = {**env, "NEWSLETTER_DATABASE_URL": sqlite_url, "NEWSLETTER_DAEMON_TICK_SECONDS": "1"}
    log = project_dir.parent / f"{request.param}.log"
    started = ServerProcess(project_dir, environment, log, command=request.param, max_files=MAX_FILES)
    yield started
    started.stop()


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server hung up: past whatever it had sent, the socket reads end-of-file (or a reset)."""
    while select.select([sock], [], [], 0)[0]:
        try:
            if sock.recv(65536, socket.MSG_DONTWAIT) == b"":
                return True
        except OSError:
            return True
    return False


@contextmanager
def trickling(port: int, count: int, *joining: socket.socket) -> Iterator[list[socket.socket]]:
    """`count` new clients, and `joining` ones, that send a request head one byte a second and never finish it."""
    clients = list(joining)
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        client.sendall(b"GET /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        clients.append(client)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            for client in clients:
                with contextlib.suppress(OSError):  # the server hung up on it, as it should
                    client.send(b"x")

    worker = threading.Thread(target=trickle, daemon=True)
    worker.start()
    try:
        yield clients
    finally:
        stop.set()
        worker.join()
        for client in clients:
            client.close()


def probe(url: str) -> tuple[int, float]:
    started = time.monotonic()
    try:
        status = httpx2.get(url, timeout=10).status_code
    except httpx2.TransportError:
        status = 0
    return status, time.monotonic() - started


def test_slow_clients_are_cut_off_and_everyone_else_is_served_promptly(server: ServerProcess) -> None:
    # A kept-alive connection that starts its next request and never finishes it: any byte used to reset
    # uvicorn's keep-alive timer, so it stayed open for good.
    kept_alive = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    kept_alive.sendall(b"GET /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert kept_alive.recv(12) == b"HTTP/1.1 200"
    kept_alive.sendall(b"GET /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    with trickling(server.port, SLOW_CLIENTS, kept_alive) as slow:
        probes = []
        deadline = time.monotonic() + HEADER_TIMEOUT_SECONDS + 3
        while time.monotonic() < deadline:
            probes.append(probe(server.url + "/subscribe"))
            time.sleep(0.5)
        still_open = [client for client in slow if not closed_by_server(client)]
    assert [status for status, _ in probes] == [200] * len(probes), server.log()[-3000:]
    assert max(seconds for _, seconds in probes) < PROMPT_SECONDS
    assert still_open == []  # every head that did not arrive within the timeout was cut off
    assert server.process.poll() is None
    assert len(server.log()) < 20_000, server.log()[-3000:]


def test_a_flood_of_malformed_requests_logs_a_few_lines_not_one_each(server: ServerProcess) -> None:
    for _ in range(300):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
            client.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert client.recv(12) == b"HTTP/1.1 400"
    assert probe(server.url + "/subscribe")[0] == 200
    assert server.log().count("Invalid HTTP request received.") == BURST


def test_an_unfinished_request_head_may_not_grow_past_the_limit(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
        client.sendall(b"GET /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"x" * (MAX_HEAD_BYTES + 1))
        assert client.recv(12) == b"HTTP/1.1 400"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_every_accepted_connection_sends_without_waiting_for_acks(host: str) -> None:
    """Nagle's algorithm off on each connection, also on the daemon's own listener (`socket.create_server`).

    asyncio sets TCP_NODELAY only on sockets whose protocol number says TCP; the daemon's listener says 0, and
    with Nagle on, a kept-alive client waited for its delayed ACK: 44 ms a request where 1 ms was enough.
    """
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from newsletter.daemon import listen
    from newsletter.web.serving import server_config

    try:
        listener = listen(host, 0)
    except ConfigError as error:  # a machine without IPv6 on loopback; CI has it
        if IN_CI:
            raise
        pytest.skip(str(error))
    assert listener.proto == 0  # what asyncio would not have set TCP_NODELAY on
    port = int(listener.getsockname()[1])
    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("x" * 3000))])
    server = uvicorn.Server(server_config(app, host=host, port=port, log_config=None, access_log=False))
    web = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    web.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and web.is_alive(), "the server did not start"
            time.sleep(0.02)
        shown = f"[{host}]" if ":" in host else host
        with httpx2.Client(base_url=f"http://{shown}:{port}") as client:
            assert [client.get("/").status_code for _ in range(2)] == [200, 200]  # one kept-alive connection
            (connection,) = server.server_state.connections
            accepted = connection.transport.get_extra_info("socket")
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        server.should_exit = True
        web.join(timeout=10)
        listener.close()

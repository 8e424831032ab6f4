"""A TCP relay on 127.0.0.1 between the app and a real server (PostgreSQL), which a test then breaks.

with TcpRelay("127.0.0.1", 5432) as relay:
    ...  # connect to 127.0.0.1:relay.port; it forwards both ways
    relay.refuse()   # as a server going down: every connection is cut, new ones are refused
    relay.silence()  # as a frozen host: connections stay open and new ones are accepted, nothing comes back
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class TcpRelay:
    """Forward connections to `target` until told to refuse them or to go silent."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.silent = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="tcp-relay", daemon=True).start()

    def __enter__(self) -> TcpRelay:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.refuse()

    def refuse(self) -> None:
        """Cut every connection and stop listening: connecting is refused from now on."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close alone would not
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def silence(self) -> None:
        """Keep every connection open, accept new ones, and forward nothing any more."""
        self.silent.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self.listener.fileno() == -1:  # refused while this one was being accepted
                    client.close()
                    return
                self._sockets.append(client)
            if self.silent.is_set():
                continue
            server = socket.create_connection(self.target)
            with self._lock:
                self._sockets.append(server)
                if self.listener.fileno() == -1:
                    client.close()
                    server.close()
                    return
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            if self.silent.is_set():
                continue
            try:
                sink.sendall(data)
            except OSError:
                return

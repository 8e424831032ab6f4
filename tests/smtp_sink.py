"""A real SMTP server (aiosmtpd) on 127.0.0.1 that records what it receives and misbehaves on cue.

In-process, for tests::

    with SmtpSink(faults=FaultPlan({"*@soft.test": temporary(451, times=2)})) as sink:
        ...  # send to 127.0.0.1:sink.port
        assert sink.messages[0].message_id == "<...>"

As a subprocess, for crash tests and benchmarks::

    python tests/smtp_sink.py --port 0 --maildir DIR      # every accepted message becomes a file
    python tests/smtp_sink.py --port 0 --count-only --count-file FILE
    python tests/smtp_sink.py --port 0 --faults '{"*@soft.test": {"kind": "temporary", "code": 451, "times": 2}}'

It prints ``READY <port>`` once it listens; on SIGTERM or SIGINT it prints ``COUNT <n>`` and exits 0.

Faults apply per recipient address, first matching pattern (`fnmatch`, case-insensitive) wins:
`temporary` and `permanent` answer RCPT TO (a 421 also hangs up), `drop_after_data` reads the whole
message, records it as received and hangs up without a reply, `stall` waits before answering the end
of DATA (past the client's timeout, or briefly to make a slow server), `refuse_data` answers the end of
DATA with a refusal of its own words; `times` counts attempts per address. `smtputf8=False` makes a relay
that does not offer SMTPUTF8 (RFC 6531); `pipelining=True` one that offers PIPELINING (RFC 2920), and
`sloppy_data=True` one that answers DATA with 354 even when it refused every recipient (it then reads
the message and drops it).
Authentication is required when `auth=(user, password)` is given (`--auth user:password`).
Like a strict relay, the sink refuses a message with a line over 998 octets (500).
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import itertools
import json
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException

MAX_LINE_OCTETS = 998
FAULT_KINDS = ("temporary", "permanent", "drop_after_data", "stall", "refuse_data")
_DOT_STUFFING = re.compile(rb"^\.", re.MULTILINE)
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Fault:
    """One way to misbehave; build it with `temporary`, `permanent`, `drop_after_data`, `stall` or `refuse_data`."""

    kind: str
    code: int = 0
    times: int | None = None  # None: every attempt
    seconds: float = 0.0
    text: str = ""  # refuse_data, temporary: the reply after the code; "{rcpt}" becomes the recipient (refuse_data)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")


def temporary(code: int = 451, times: int | None = 1, text: str = "") -> Fault:
    """Refuse RCPT TO with a 4xx reply (`code text`, if given) for the first `times` attempts, then accept."""
    return Fault("temporary", code, times, text=text)


def permanent(code: int = 550) -> Fault:
    """Refuse RCPT TO with a 5xx reply every time."""
    return Fault("permanent", code)


def drop_after_data(times: int | None = 1) -> Fault:
    """Read the whole message, keep it, and hang up instead of replying."""
    return Fault("drop_after_data", times=times)


def stall(seconds: float, times: int | None = None) -> Fault:
    """Wait `seconds` before answering the end of DATA; the message counts only if the client waited."""
    return Fault("stall", times=times, seconds=seconds)


def refuse_data(code: int, text: str, times: int | None = None) -> Fault:
    """Take the whole message, then refuse it at the end of DATA with `code text` ("{rcpt}" names them)."""
    return Fault("refuse_data", code, times, text=text)


@dataclass(frozen=True)
class FaultPlan:
    """Recipient pattern → fault, tried in order."""

    rules: Mapping[str, Fault] = field(default_factory=dict)

    def fault_for(self, recipient: str) -> Fault | None:
        """The fault of the first pattern matching this address."""
        address = recipient.lower()
        for pattern, fault in self.rules.items():
            if fnmatch.fnmatchcase(address, pattern.lower()):
                return fault
        return None

    def to_json(self) -> str:
        """The ``--faults`` argument that reproduces this plan in a subprocess sink."""
        return json.dumps({pattern: asdict(fault) for pattern, fault in self.rules.items()})

    @classmethod
    def from_json(cls, text: str) -> FaultPlan:
        """Read a ``--faults`` argument."""
        return cls({pattern: Fault(**spec) for pattern, spec in json.loads(text).items()})


@dataclass(frozen=True)
class ReceivedMessage:
    """What the sink was given: the envelope, the exact bytes and whether it came over TLS."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str
    secure: bool
    replied: bool  # False when the sink hung up after DATA (drop_after_data)


class _Recorder:
    """The aiosmtpd handler: applies the fault plan and keeps, files or counts messages."""

    def __init__(
        self,
        faults: FaultPlan,
        auth: tuple[str, str] | None,
        maildir: Path | None,
        keep: bool,
        *,
        pipelining: bool = False,
        sloppy_data: bool = False,
    ) -> None:
        self.faults = faults
        self.pipelining = pipelining
        self.sloppy_data = sloppy_data
        self.auth = auth
        self.maildir = maildir
        self.keep = keep
        self.messages: list[ReceivedMessage] = []
        self.count = 0
        self.sessions = 0
        self.live: set[_SinkSMTP] = set()
        self.lock = threading.Lock()
        self._attempts: dict[tuple[str, str], int] = {}
        self._file_numbers = itertools.count()

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd reads commands a line at a time, so commands sent together are answered in order.
        return [*responses[:-1], "250-PIPELINING", responses[-1]] if self.pipelining else responses

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        expected = (self.auth[0].encode(), self.auth[1].encode()) if self.auth else None
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == expected
        return AuthResult(success=ok, handled=False, auth_data=data)

    def _due(self, fault: Fault, recipient: str) -> bool:
        """Count an attempt against this fault; say whether it still fires."""
        if fault.times is None:
            return True
        key = (fault.kind, recipient.lower())
        with self.lock:
            self._attempts[key] = self._attempts.get(key, 0) + 1
            return self._attempts[key] <= fault.times

    async def handle_exception(self, error: Exception) -> str:
        # A client that rejects our self-signed certificate is expected in tests, not a sink failure.
        if not isinstance(error, TLSSetupException):
            logging.getLogger("mail.log").error("SMTP session exception", exc_info=error)
        return f"500 Error: ({type(error).__name__}) {error}"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        fault = self.faults.fault_for(address)
        if fault is not None and fault.kind in ("temporary", "permanent") and self._due(fault, address):
            if fault.code == 421 and server.transport is not None:
                # 421 means the server is closing the session: hang up right after the reply.
                server.loop.call_soon(server.transport.close)
            return f"{fault.code} {fault.text or f'{fault.code // 100}.0.0 {fault.kind} failure for <{address}>'}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        faults = [(fault, rcpt) for rcpt in envelope.rcpt_tos if (fault := self.faults.fault_for(rcpt))]
        for fault, rcpt in faults:
            if fault.kind == "stall" and self._due(fault, rcpt):
                # If the client gives up first, the connection closes and this task is cancelled here.
                await asyncio.sleep(fault.seconds)
        for fault, rcpt in faults:
            if fault.kind == "refuse_data" and self._due(fault, rcpt):
                return f"{fault.code} {fault.text.replace('{rcpt}', rcpt)}"
        dropping = any(f.kind == "drop_after_data" and self._due(f, rcpt) for f, rcpt in faults)
        number = self._record(server, envelope, replied=not dropping)
        if dropping and server.transport is not None:
            server.transport.close()
            # Never reply: closing the connection cancels this task.
            await asyncio.Event().wait()
        return f"250 2.0.0 Ok: queued as {number}"

    def _record(self, server: SMTP, envelope: Envelope, replied: bool) -> int:
        data = envelope.original_content or b""
        with self.lock:
            self.count += 1
            number = self.count
        if self.maildir is not None:
            name = f"{time.time_ns():020d}.{os.getpid()}_{next(self._file_numbers):07d}.sink"
            (self.maildir / "tmp" / name).write_bytes(data)
            os.rename(self.maildir / "tmp" / name, self.maildir / "new" / name)
        if self.keep:
            head = data.split(b"\r\n\r\n", 1)[0]
            found = _MESSAGE_ID.search(head)
            secure = server.transport is not None and server.transport.get_extra_info("ssl_object") is not None
            message = ReceivedMessage(
                mail_from=envelope.mail_from or "",
                recipients=tuple(envelope.rcpt_tos),
                data=data,
                message_id=found.group(1).decode("ascii", "replace") if found else "",
                secure=secure,
                replied=replied,
            )
            with self.lock:
                self.messages.append(message)
        return number


class _SinkSMTP(SMTP):
    """aiosmtpd's server, counting sessions and tracking live connections so they can be dropped."""

    _greeted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        with self.event_handler.lock:
            self.event_handler.live.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        with self.event_handler.lock:
            self.event_handler.live.discard(self)
        super().connection_lost(error)

    async def smtp_EHLO(self, hostname: str) -> None:
        self._count_session()
        await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        self._count_session()
        await super().smtp_HELO(hostname)

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd reads DATA one line at a time, which caps it at a few hundred large messages a second;
        # this reads it in chunks. Without PIPELINING a client waits for our reply after the final dot,
        # so the data always ends the bytes read so far.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos and not self.event_handler.sloppy_data:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        received = bytearray()
        while received != b".\r\n" and not received.endswith(b"\r\n.\r\n"):
            chunk = await self._reader.read(1 << 18)
            if not chunk:
                return
            received += chunk
        if not self.envelope.rcpt_tos:  # sloppy: it took DATA for nobody, and drops what came
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push("554 5.5.1 Error: no valid recipients")
            return
        content = bytes(received[:-3])
        if content.startswith(b".") or b"\n." in content:
            content = _DOT_STUFFING.sub(b"", content)
        if max(map(len, content.split(b"\r\n"))) > MAX_LINE_OCTETS:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push("500 5.5.2 Line too long (RFC 5322 2.1.1: at most 998 octets)")
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    def _count_session(self) -> None:
        # Once per TCP connection: a STARTTLS session says EHLO twice.
        if not self._greeted:
            self._greeted = True
            with self.event_handler.lock:
                self.event_handler.sessions += 1


class _SinkController(Controller):
    def factory(self) -> SMTP:
        return _SinkSMTP(self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # Learn the port the kernel picked before aiosmtpd's readiness probe connects to it.
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class SmtpSink:
    """An SMTP server on 127.0.0.1 in a background thread; use it as a context manager."""

    def __init__(
        self,
        port: int = 0,
        faults: FaultPlan | None = None,
        auth: tuple[str, str] | None = None,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        maildir: Path | None = None,
        keep_messages: bool = True,
        smtputf8: bool = True,
        pipelining: bool = False,
        sloppy_data: bool = False,
    ) -> None:
        if maildir is not None:
            for name in ("tmp", "new", "cur"):
                (maildir / name).mkdir(parents=True, exist_ok=True)
        self._recorder = _Recorder(
            faults or FaultPlan(), auth, maildir, keep_messages, pipelining=pipelining, sloppy_data=sloppy_data
        )
        options: dict[str, Any] = {"enable_SMTPUTF8": smtputf8}
        if auth is not None:
            options["authenticator"] = self._recorder.authenticate
            # Like real servers: with TLS on offer, AUTH is only allowed once the session is encrypted.
            options["auth_require_tls"] = tls_context is not None and not implicit_tls
        if implicit_tls:
            options["ssl_context"] = tls_context
        elif tls_context is not None:
            options["tls_context"] = tls_context
        self._controller = _SinkController(
            self._recorder, hostname="127.0.0.1", port=port, server_hostname="sink.localhost", **options
        )

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._recorder.lock:
            return list(self._recorder.messages)

    @property
    def count(self) -> int:
        return self._recorder.count

    @property
    def sessions(self) -> int:
        """TCP sessions that said EHLO or HELO."""
        return self._recorder.sessions

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        # Abort rather than close: a TLS close waits for the client's reply, and the loop is about to stop.
        self._run_in_loop(self._drop(reply=None, grace=0.0))
        self._controller.stop()

    def drop_connections(self, reply: str | None = None) -> None:
        """Hang up every open session (after sending `reply`, e.g. "421 4.4.2 Idle timeout")."""
        self._run_in_loop(self._drop(reply, grace=1.0))

    def _run_in_loop(self, step: Coroutine[Any, Any, None]) -> None:
        loop = self._controller.loop
        if loop.is_closed() or not loop.is_running():
            step.close()
            return
        asyncio.run_coroutine_threadsafe(step, loop).result(timeout=10)

    async def _drop(self, reply: str | None, grace: float) -> None:
        with self._recorder.lock:
            live = list(self._recorder.live)
        for server in live:
            transport = server.transport
            if transport is None:
                continue
            if reply is not None and isinstance(transport, asyncio.WriteTransport):
                transport.write(reply.encode("ascii") + b"\r\n")
            transport.close()
        await self._until_gone(live, grace)
        for server in live:
            if server in self._recorder.live and isinstance(server.transport, asyncio.Transport):
                server.transport.abort()
        await self._until_gone(live, 2.0)

    async def _until_gone(self, servers: list[_SinkSMTP], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while any(server in self._recorder.live for server in servers) and time.monotonic() < deadline:
            await asyncio.sleep(0.001)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def self_signed_certificate(folder: Path, name: str = "localhost") -> tuple[Path, Path]:
    """Make a throwaway certificate for `name` and 127.0.0.1 with openssl; return (cert, key) paths."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
            "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side context for the sink from a certificate and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def main(argv: list[str] | None = None) -> int:
    """Run the sink until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="A fault-injecting SMTP sink on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--maildir", type=Path, help="write every accepted message into this Maildir")
    store.add_argument("--count-only", action="store_true", help="only count messages (the default)")
    parser.add_argument("--count-file", type=Path, help="keep the running count in this file")
    parser.add_argument("--faults", default="{}", help="a FaultPlan as JSON: {pattern: {kind, code, times, seconds}}")
    parser.add_argument("--auth", help="require AUTH as user:password")
    args = parser.parse_args(argv)

    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    if auth is not None and len(auth) != 2:
        parser.error("--auth expects user:password")
    sink = SmtpSink(
        port=args.port,
        faults=FaultPlan.from_json(args.faults),
        auth=(auth[0], auth[1]) if auth else None,
        maildir=args.maildir,
        keep_messages=False,
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    with sink:
        print(f"READY {sink.port}", flush=True)
        written = -1
        while not stopping.wait(0.2):
            written = _write_count(args.count_file, sink.count, written)
    _write_count(args.count_file, sink.count, written)
    print(f"COUNT {sink.count}", flush=True)
    return 0


def _write_count(path: Path | None, count: int, written: int) -> int:
    if path is not None and count != written:
        partial = path.with_name(path.name + ".tmp")
        partial.write_text(f"{count}\n")
        os.replace(partial, path)
    return count


if __name__ == "__main__":
    sys.exit(main())

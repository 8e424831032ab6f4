"""Send through an SMTP relay: a small pool of reused connections, TLS, AUTH and a rate limit."""

from __future__ import annotations

import contextlib
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.errors import (
    PermanentSendError,
    RelayError,
    SendError,
    TransientSendError,
    TransportError,
    UncarriedSendError,
)
from newsletter.transports.ratelimit import RateLimiter

if TYPE_CHECKING:
    from _typeshed import SizedBuffer
    from sqlalchemy import Engine
    from typing_extensions import Buffer

    from newsletter.transports import Envelope

SECURITY_MODES = ("none", "starttls", "tls")
# Replies that mean "this client may not send at all", whatever the message.
_AUTH_REPLY_CODES = frozenset({530, 534, 535, 538})
# RFC 3463 enhanced status codes: X.1.* (addressing) and X.2.* (mailbox) are about the recipient.
_ENHANCED_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.\d{1,3}\b")
_RECIPIENT_SUBJECTS = frozenset({"1", "2"})
# A relay that refuses to relay answers at RCPT, but the fault is our configuration, not the mailbox.
_RELAY_DENIED = re.compile(r"relay(ing)?\s+(access\s+)?(denied|not\s+permitted)|not\s+permitted\s+to\s+relay", re.I)


class _Connection(smtplib.SMTP):
    """An SMTP client that remembers how far the current transaction got."""

    stage = "connect"
    data_reply = ""

    def mail(self, sender: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        self.stage = "MAIL FROM"
        return super().mail(sender, options)

    def rcpt(self, recip: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        self.stage = "RCPT TO"
        return super().rcpt(recip, options)

    def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: SizedBuffer | str,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> dict[str, tuple[int, bytes]]:
        """smtplib's `sendmail`; to a server that offers PIPELINING (RFC 2920), in two round trips, not four.

        MAIL FROM, every RCPT TO and DATA go out in one write and their replies are read in order, then the
        message; the outcome and what is raised are smtplib's own for the same replies, so the transport
        classifies them the same way. Each round trip is a wait for the server, and for the thread a wake-up
        that takes the GIL back from the sender's database thread: a lesson cost four of them, now two.
        """
        self.ehlo_or_helo_if_needed()
        if not self.has_extn("pipelining") or isinstance(to_addrs, str) or not to_addrs:
            return super().sendmail(from_addr, to_addrs, msg, mail_options, rcpt_options)
        message = _wire_bytes(msg)
        options = [f"size={len(message)}"] if self.has_extn("size") else []
        options += mail_options
        if any(option.lower() == "smtputf8" for option in options):
            if not self.has_extn("smtputf8"):
                raise smtplib.SMTPNotSupportedError("SMTPUTF8 not supported by server")
            self.command_encoding = "utf-8"
        rcpt_tail = "".join(f" {option}" for option in rcpt_options)
        commands = [f"mail FROM:{smtplib.quoteaddr(from_addr)}{''.join(f' {o}' for o in options)}"]
        commands += [f"rcpt TO:{smtplib.quoteaddr(rcpt)}{rcpt_tail}" for rcpt in to_addrs]
        if any("\r" in command or "\n" in command for command in commands):
            raise ValueError("command and arguments contain prohibited newline characters")
        self.stage = "MAIL FROM"  # a pooled session the server closed shows up here, as without PIPELINING
        self.send("".join(f"{command}\r\n" for command in commands) + "data\r\n")
        code, text = self.getreply()
        if code == 421:
            self.close()
        if code != 250:
            self._end_group(len(to_addrs))
            raise smtplib.SMTPSenderRefused(code, text, from_addr)
        self.stage = "RCPT TO"
        refused: dict[str, tuple[int, bytes]] = {}
        for rcpt in to_addrs:
            code, text = self.getreply()
            if code not in (250, 251):
                refused[rcpt] = (code, text)
            if code == 421:
                self.close()
                raise smtplib.SMTPRecipientsRefused(refused)
        if len(refused) == len(to_addrs):
            self._end_group(0)
            raise smtplib.SMTPRecipientsRefused(refused)
        self.stage = "DATA"
        code, text = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, text)
        code, text = self._transmit(message)
        if code != 250:
            if code == 421:
                self.close()
            else:
                self._reset()
            raise smtplib.SMTPDataError(code, text)
        return refused

    def _end_group(self, rcpt_replies: int) -> None:
        """After a refusal mid-group: read the replies still owed (RCPT TO's, then DATA's) and reset the session.

        A server that took DATA anyway (354, though it refused the envelope) waits for a message: no bytes can
        take it back without sending one, so the session is dropped instead.
        """
        if self.sock is None:
            return
        try:
            for _ in range(rcpt_replies):
                self.getreply()
            code, _ = self.getreply()
        except smtplib.SMTPServerDisconnected:
            return
        if code == 354:
            self.close()
        else:
            self._reset()

    def _reset(self) -> None:
        """RSET, as smtplib does after a refusal: a server that hung up meanwhile is found at the next command."""
        with contextlib.suppress(smtplib.SMTPServerDisconnected):
            self.rset()

    def data(self, msg: Buffer | str) -> tuple[int, bytes]:
        """smtplib's DATA, with the message dot-stuffed by `dot_stuffed` instead of smtplib's regex."""
        self.stage = "DATA"
        self.putcmd("data")
        code, text = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, text)
        return self._transmit(_wire_bytes(msg))

    def _transmit(self, message: bytes) -> tuple[int, bytes]:
        """After the server's 354: the message dot-stuffed, then its final reply (kept as `data_reply`)."""
        self.send(dot_stuffed(message))
        code, text = self.getreply()
        self.data_reply = _reply(code, text)
        return code, text


def _wire_bytes(msg: Buffer | str) -> bytes:
    """A message as smtplib takes it: a str has its line ends made CRLF and must be ASCII; bytes as they are."""
    return smtplib._fix_eols(msg).encode("ascii") if isinstance(msg, str) else bytes(msg)  # type: ignore[attr-defined]


def dot_stuffed(message: bytes) -> bytes:
    """The message as DATA carries it (RFC 5321 4.5.2): a "." doubled at the start of every line, then CRLF.CRLF.

    The same bytes as smtplib's `data()`, which runs a regular expression over the whole message: 0.1 ms for
    a 23 KB lesson, all of it holding the GIL that the sender's database thread is waiting for while it holds
    SQLite's write lock. `bytes.replace` finds the few lines that need it in a few microseconds.
    """
    stuffed = message.replace(b"\n.", b"\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + (b".\r\n" if stuffed.endswith(b"\r\n") else b"\r\n.\r\n")


class _TlsConnection(_Connection, smtplib.SMTP_SSL):
    """The same client over implicit TLS (usually port 465)."""


class _StaleConnection(Exception):
    """A pooled connection the server had closed while it sat idle."""


class SmtpTransport:
    """Deliver over SMTP; `send` is safe to call from several threads at once.

    Up to `connections` sessions stay open and are reused, one per concurrent caller. A pooled session
    the server closed while it sat idle shows up at MAIL FROM and is replaced once, transparently. A
    session that timed out or dropped mid-transaction is discarded; after a plain refusal (smtplib sends
    RSET) it is kept. `rate_per_second` spaces messages for every thread, and for every process that
    names the same `rate_state_path` (see `newsletter.transports.ratelimit`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        security: str = "none",
        username: str | None = None,
        password: str | None = None,
        connections: int = 1,
        rate_per_second: float | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        rate_state_path: Path | None = None,
        rate_engine: Engine | None = None,
    ) -> None:
        if security not in SECURITY_MODES:
            raise TransportError(f"SMTP security must be one of {', '.join(SECURITY_MODES)}, got {security!r}")
        if connections < 1:
            raise TransportError(f"SMTP connections must be at least 1, got {connections}")
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self.password = password
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._ssl_context = ssl_context
        self._where = f"SMTP server {host}:{port}"
        self.connections = connections
        self._limiter = (
            RateLimiter(rate_per_second, rate_state_path, engine=rate_engine, name=f"smtp {host}:{port}")
            if rate_per_second
            else None
        )
        self._slots = threading.BoundedSemaphore(connections)
        self._idle: list[_Connection] = []
        self._idle_lock = threading.Lock()

    def check(self) -> None:
        """Connect, greet, secure and log in once, then keep the connection for the first send."""
        with self._slots:
            try:
                connection = self._open()
            except SendError as exc:
                raise TransportError(str(exc)) from exc
            self._give_back(connection)

    def send(self, envelope: Envelope) -> str:
        """Send one message over a pooled connection; return the server's final reply."""
        if self._limiter is not None:
            self._limiter.acquire()
        with self._slots:
            connection, reused = self._borrow()
            try:
                return self._deliver(connection, envelope, reused)
            except _StaleConnection:
                return self._deliver(self._open(), envelope, reused=False)

    def close(self) -> None:
        """Say QUIT on every idle connection."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            try:
                connection.quit()
            except (smtplib.SMTPException, OSError):
                connection.close()

    def _borrow(self) -> tuple[_Connection, bool]:
        with self._idle_lock:
            if self._idle:
                return self._idle.pop(), True
        return self._open(), False

    def _give_back(self, connection: _Connection) -> None:
        if connection.sock is None:
            return
        connection.stage = "idle"
        with self._idle_lock:
            if len(self._idle) < self.connections:
                self._idle.append(connection)
                return
        connection.close()

    def _deliver(self, connection: _Connection, envelope: Envelope, reused: bool) -> str:
        connection.data_reply = ""
        options = ["SMTPUTF8"] if envelope.needs_smtputf8 else []
        if options and not connection.has_extn("smtputf8"):
            self._give_back(connection)
            raise UncarriedSendError(
                f"{self._where} does not offer SMTPUTF8, which the address {', '.join(envelope.recipients)} needs "
                "(its mailbox name is not ASCII); use a relay that offers it, then `newsletter retry` the delivery"
            )
        try:
            refused = connection.sendmail(envelope.sender, list(envelope.recipients), envelope.data, options)
        except (smtplib.SMTPException, OSError) as exc:
            stage = connection.stage  # before the connection goes back to the pool, which resets it
            if reused and stage == "MAIL FROM" and _is_disconnect(exc):
                connection.close()
                raise _StaleConnection from exc
            if _left_clean(exc, connection):
                self._give_back(connection)
            else:
                # Timeouts and drops leave the session in an unknown state: never reuse it.
                connection.close()
            raise self._send_error(exc, stage, envelope.recipients) from exc
        except Exception:
            connection.close()  # whatever went wrong mid-transaction, this session is not fit for another
            raise
        self._give_back(connection)
        reply = connection.data_reply
        if refused:
            reply += "; refused: " + ", ".join(f"{rcpt} ({_reply(*why)})" for rcpt, why in refused.items())
        return reply

    def _open(self) -> _Connection:
        connection: _Connection | None = None
        try:
            if self.security == "tls":
                connection = _TlsConnection(
                    self.host,
                    self.port,
                    self.local_hostname,
                    timeout=self.timeout,
                    context=self._tls_context(),
                )
            else:
                connection = _Connection(self.host, self.port, self.local_hostname, timeout=self.timeout)
            connection.ehlo()
            if self.security == "starttls":
                connection.starttls(context=self._tls_context())
                connection.ehlo()
            if self.username is not None:
                connection.login(self.username, self.password or "")
        except (smtplib.SMTPException, OSError) as exc:
            if connection is not None:
                connection.close()
            raise self._connect_error(exc) from exc
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _connect_error(self, exc: smtplib.SMTPException | OSError) -> TransportError:
        where = self._where
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return TransportError(
                f"{where}: authentication refused for user {self.username!r} ({_reply_of(exc)}); "
                "check [smtp] username and the NEWSLETTER_SMTP_PASSWORD environment variable"
            )
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return TransportError(
                f"{where}: {exc}; check [smtp] security (the server does not offer STARTTLS) "
                "or leave [smtp] username empty if it needs no login"
            )
        if isinstance(exc, smtplib.SMTPConnectError | smtplib.SMTPHeloError):
            if 400 <= exc.smtp_code < 500:
                return TransientSendError(
                    f"{where}: busy, it answered {_reply_of(exc)}", code=exc.smtp_code, reply=_reply_of(exc)
                )
            return TransportError(f"{where}: refused the session: {_reply_of(exc)}")
        if isinstance(exc, smtplib.SMTPServerDisconnected) and _is_timeout(exc):
            return TransientSendError(
                f"{where}: no greeting within {self.timeout:g} s; if this port expects implicit TLS "
                "(usually 465) set [smtp] security = 'tls'"
            )
        if isinstance(exc, smtplib.SMTPException):
            return TransientSendError(f"{where}: connection lost while greeting: {exc}")
        if isinstance(exc, socket.gaierror):
            return TransportError(f"{where}: cannot resolve host {self.host!r} ({exc.strerror}); check [smtp] host")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return TransportError(
                f"{where}: its TLS certificate is not trusted ({exc.verify_message}); "
                "check [smtp] host matches the certificate's name"
            )
        if isinstance(exc, ssl.SSLError):
            return TransportError(
                f"{where}: TLS handshake failed ({exc.reason or exc}); check [smtp] security: 'tls' for "
                "implicit TLS (usually port 465), 'starttls' for STARTTLS (usually 587), 'none' for plain"
            )
        if isinstance(exc, ConnectionRefusedError):
            return TransientSendError(
                f"{where}: connection refused; check [smtp] host and port and that the server is running"
            )
        if isinstance(exc, TimeoutError):
            return TransientSendError(
                f"{where}: no answer within {self.timeout:g} s; check [smtp] host, port and any firewall"
            )
        return TransientSendError(f"{where}: cannot connect ({exc}); check [smtp] host and port")

    def _send_error(
        self, exc: smtplib.SMTPException | OSError, stage: str, recipients: Sequence[str]
    ) -> TransportError:
        """Classify a failed transaction: only a refusal of the recipient is ever the recipient's."""
        where = self._where
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, reply = _worst_refusal(exc.recipients)
            rcpts = ", ".join(exc.recipients)
            if not _is_about_recipient(reply, recipients, at_rcpt=True):
                return _relay_error(f"{where} refused to take mail for {rcpts} at RCPT TO: {reply}", code, reply, stage)
            return _by_code(code, f"{where} refused recipient {rcpts}: {reply}", reply)
        if isinstance(exc, smtplib.SMTPSenderRefused):
            reply = _reply_of(exc)
            if exc.smtp_code in _AUTH_REPLY_CODES:
                return TransportError(
                    f"{where} will not take mail from this client ({reply}); "
                    "check [smtp] username and the NEWSLETTER_SMTP_PASSWORD environment variable"
                )
            return _relay_error(f"{where} refused the sender {exc.sender}: {reply}", exc.smtp_code, reply, stage)
        if isinstance(exc, smtplib.SMTPResponseException):
            reply = _reply_of(exc)
            if _is_about_recipient(reply, recipients, at_rcpt=False):
                return _by_code(exc.smtp_code, f"{where} refused the message for its recipient: {reply}", reply)
            return _relay_error(f"{where} refused the message at {stage}: {reply}", exc.smtp_code, reply, stage)
        if _is_timeout(exc):
            return TransientSendError(f"{where}: no reply within {self.timeout:g} s after {stage}")
        after_data = " (the server may have accepted it)" if stage == "DATA" else ""
        return TransientSendError(f"{where}: connection lost during {stage}{after_data}: {exc}")


def _relay_error(message: str, code: int, reply: str, stage: str) -> RelayError:
    kind = "temporarily" if 400 <= code < 500 else "permanently"
    return RelayError(
        f"{message} — the relay refused {kind} something that is not about one recipient, so this run stops "
        "and nobody's state changes; fix the relay or its settings, then send again",
        code=code,
        reply=reply,
        stage=stage,
    )


def _is_about_recipient(reply: str, recipients: Sequence[str], *, at_rcpt: bool) -> bool:
    """Whether a refusal concerns the recipient's mailbox (a bounce) rather than the relay or the message.

    A refusal at RCPT TO is the recipient's unless it says relaying is denied (enhanced codes there are
    no guide: Microsoft answers an unknown mailbox with 5.4.1). At DATA, an enhanced status code decides
    when there is one (X.1.* addressing and X.2.* mailbox are the recipient's; system, network, protocol,
    content and policy are not), else the reply must name a recipient.
    """
    if at_rcpt:
        return not _RELAY_DENIED.search(reply)
    enhanced = _ENHANCED_STATUS.search(reply)
    if enhanced is not None:
        return enhanced.group(2) in _RECIPIENT_SUBJECTS
    lowered = reply.lower()
    return any(recipient.lower() in lowered for recipient in recipients)


def _by_code(code: int, message: str, reply: str) -> SendError:
    """A refusal about the recipient (RCPT TO, or DATA naming them): a 4xx is retried, a 5xx bounces."""
    if 400 <= code < 500:
        return TransientSendError(message, code=code, reply=reply, by_recipient=True)
    return PermanentSendError(message, code=code, reply=reply, by_recipient=True)


def _worst_refusal(refusals: dict[str, tuple[int, bytes]]) -> tuple[int, str]:
    # One retryable refusal makes the whole message worth retrying.
    code, text = min(refusals.values(), key=lambda refusal: refusal[0])
    return code, _reply(code, text)


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()


def _reply_of(exc: smtplib.SMTPResponseException) -> str:
    return _reply(exc.smtp_code, exc.smtp_error)


def _is_timeout(exc: BaseException) -> bool:
    # smtplib turns a socket timeout into SMTPServerDisconnected, keeping the timeout as its context.
    return isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)


def _is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    return isinstance(exc, smtplib.SMTPServerDisconnected) and not _is_timeout(exc)


def _left_clean(exc: BaseException, connection: _Connection) -> bool:
    # After these refusals smtplib has sent RSET, so the session can carry the next message (if the
    # server hung up instead, the socket is gone and the connection is dropped when given back). A
    # refused DATA command (no 354) gets no RSET and would poison the next transaction.
    if isinstance(exc, smtplib.SMTPSenderRefused | smtplib.SMTPRecipientsRefused):
        return True
    return isinstance(exc, smtplib.SMTPDataError) and bool(connection.data_reply)

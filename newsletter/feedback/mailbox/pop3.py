"""A POP3 inbox over TLS (poplib) as the bounce mailbox.

POP3 has no folders: a processed message is deleted (DELE), which the server carries out only at QUIT.
The sweep deletes a message only after its records are committed, and a connection that breaks before
QUIT deletes nothing, so the worst case is reading a message twice, which records nothing twice.
"""

from __future__ import annotations

import contextlib
import poplib
import ssl
from collections.abc import Iterator

from newsletter.errors import MailboxError
from newsletter.feedback.mailbox import MailboxUrl, StoredMessage, tls_context


class Pop3Mailbox:
    def __init__(self, url: MailboxUrl, password: str, timeout: float) -> None:
        self.url = url
        try:
            self.connection = poplib.POP3_SSL(url.host, url.port, context=tls_context(), timeout=timeout)
        except (OSError, poplib.error_proto) as error:
            raise MailboxError(f"bounce mailbox {url}: cannot connect: {error}") from None
        try:
            self.connection.user(url.user)
            self.connection.pass_(password)
        except (OSError, poplib.error_proto) as error:
            self.close()
            raise MailboxError(f"bounce mailbox {url}: login refused: {_said(error)}") from None

    def messages(self) -> Iterator[StoredMessage]:
        try:
            _, listing, _ = self.connection.uidl()
            for entry in listing:
                number, _, unique = entry.decode("ascii", "replace").partition(" ")
                _, lines, _ = self.connection.retr(int(number))
                yield StoredMessage(f"{number} {unique}", b"\r\n".join(lines) + b"\r\n")
        except (OSError, poplib.error_proto) as error:
            raise MailboxError(f"bounce mailbox {self.url}: cannot read: {_said(error)}") from None

    def processed(self, key: str) -> None:
        try:
            self.connection.dele(int(key.partition(" ")[0]))
        except (OSError, poplib.error_proto) as error:
            raise MailboxError(f"bounce mailbox {self.url}: cannot delete message {key}: {_said(error)}") from None

    def close(self) -> None:
        # If the connection broke, the server keeps every message (nothing deleted without QUIT): nothing is lost.
        with contextlib.suppress(OSError, poplib.error_proto, ssl.SSLError):
            self.connection.quit()


def _said(error: Exception) -> str:
    reason = error.args[0] if error.args else error
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)

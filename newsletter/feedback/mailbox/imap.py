"""An IMAP folder over TLS (imaplib) as the bounce mailbox.

Messages are fetched with BODY.PEEK[] so reading marks nothing. A processed message is moved to
[bounces] processed_folder (created on first use): with MOVE (RFC 6851) where the server has it, else
COPY, flag \\Deleted and expunge, which is what MOVE does in one step.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
from collections.abc import Iterator

from newsletter.errors import MailboxError
from newsletter.feedback.mailbox import MailboxUrl, StoredMessage, tls_context


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapMailbox:
    def __init__(self, url: MailboxUrl, password: str, processed_folder: str, timeout: float) -> None:
        self.url = url
        self.target = _quoted(processed_folder)
        self._target_ready = False
        self._expunge = False
        try:
            self.connection = imaplib.IMAP4_SSL(url.host, url.port, ssl_context=tls_context(), timeout=timeout)
        except (OSError, imaplib.IMAP4.error) as error:
            raise MailboxError(f"bounce mailbox {url}: cannot connect: {error}") from None
        try:
            self.connection.login(url.user, password)
            _, data = self.connection.capability()
            self.capabilities = set(b" ".join(item for item in data if isinstance(item, bytes)).upper().split())
            status, reply = self.connection.select(_quoted(url.folder))
        except imaplib.IMAP4.error as error:
            self.close()
            raise MailboxError(f"bounce mailbox {url}: {error}") from None
        if status != "OK":
            self.close()
            raise MailboxError(f"bounce mailbox {url}: cannot open folder {url.folder!r}: {_said(reply)}")
        self.can_move = b"MOVE" in self.capabilities
        self.can_uid_expunge = b"UIDPLUS" in self.capabilities

    def messages(self) -> Iterator[StoredMessage]:
        found = self._command("SEARCH", "ALL")
        for uid in found[0].split() if found and isinstance(found[0], bytes) else []:
            data = self._command("FETCH", uid.decode(), "(BODY.PEEK[])")
            body = next((item[1] for item in data if isinstance(item, tuple)), None)
            if isinstance(body, bytes):
                yield StoredMessage(uid.decode(), body)

    def processed(self, key: str) -> None:
        if not self._target_ready:
            self.connection.create(self.target)  # NO when it exists, which is fine
            self._target_ready = True
        if self.can_move:
            self._command("MOVE", key, self.target)
            return
        self._command("COPY", key, self.target)
        self._command("STORE", key, "+FLAGS.SILENT", r"(\Deleted)")
        if self.can_uid_expunge:
            self._command("EXPUNGE", key)
        else:
            self._expunge = True

    def close(self) -> None:
        # Closing a connection that already broke: what was moved stays moved, the rest stays in the folder.
        with contextlib.suppress(OSError, imaplib.IMAP4.error, ssl.SSLError):
            if self._expunge:
                self.connection.expunge()
            self.connection.logout()

    def _command(self, command: str, *args: str) -> list[bytes | tuple[bytes, bytes]]:
        try:
            status, data = self.connection.uid(command, *args)
        except (OSError, imaplib.IMAP4.error) as error:
            raise MailboxError(f"bounce mailbox {self.url}: UID {command} failed: {error}") from None
        if status != "OK":
            raise MailboxError(f"bounce mailbox {self.url}: UID {command} refused: {_said(data)}")
        return [item for item in data if item is not None]


def _said(reply: list[bytes | None] | list[bytes | tuple[bytes, bytes] | None]) -> str:
    text = b" ".join(item for item in reply if isinstance(item, bytes)).decode("utf-8", "replace")
    return re.sub(r"\s+", " ", text).strip() or "no reason given"

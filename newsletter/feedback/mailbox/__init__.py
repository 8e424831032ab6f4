"""The bounce mailbox named by [bounces] mailbox, behind one small protocol.

    Mailbox        messages(): every message waiting, as (key, bytes); processed(key): take it out of the way
    ├── Maildir    maildir.py: files in new/ and cur/; processed ones are renamed into .<processed_folder>/cur/
    ├── Imap       imap.py: imaps://user@host[:port]/FOLDER; processed ones are moved to processed_folder
    └── Pop3       pop3.py: pop3s://user@host[:port]; processed ones are deleted, which POP3 makes final at QUIT

The sweep calls `processed` only after the message's records are committed, so a crash in between leaves
the message where it was and the next sweep finds it again (a duplicate, which changes nothing). The
password comes from NEWSLETTER_BOUNCES_PASSWORD; TLS certificates are checked against the system's
authorities, or the file SSL_CERT_FILE names.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from newsletter.config import Settings
from newsletter.errors import ConfigError

DEFAULT_PORTS = {"imaps": 993, "pop3s": 995}


@dataclass(frozen=True)
class StoredMessage:
    key: str
    data: bytes


class Mailbox(Protocol):
    def messages(self) -> Iterator[StoredMessage]: ...

    def processed(self, key: str) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class MailboxUrl:
    scheme: str
    user: str
    host: str
    port: int
    folder: str

    def __str__(self) -> str:
        """The URL as the operator wrote it, which never holds the password."""
        folder = f"/{self.folder}" if self.scheme == "imaps" else ""
        return f"{self.scheme}://{self.user}@{self.host}:{self.port}{folder}"


def parse_mailbox_url(text: str) -> MailboxUrl:
    """`imaps://user@host[:port]/FOLDER` or `pop3s://user@host[:port]`; an @ in the user name is written %40."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        port = 0
    if scheme not in DEFAULT_PORTS or not parts.username or not parts.hostname or not port:
        raise ConfigError(
            f"[bounces] mailbox {text!r}: expected imaps://user@host[:port]/FOLDER or pop3s://user@host[:port]"
        )
    if parts.password is not None:
        raise ConfigError("[bounces] mailbox: the password comes only from NEWSLETTER_BOUNCES_PASSWORD, not the URL")
    folder = unquote(parts.path.strip("/")) or "INBOX"
    if scheme == "pop3s" and folder != "INBOX":
        raise ConfigError(f"[bounces] mailbox {text!r}: POP3 has only the inbox; leave the folder out")
    return MailboxUrl(scheme, unquote(parts.username), parts.hostname, port, folder)


def tls_context() -> ssl.SSLContext:
    """Certificates checked against the system's authorities (or SSL_CERT_FILE), host names verified."""
    return ssl.create_default_context()


def open_mailbox(settings: Settings) -> Mailbox:
    """Connect to the configured mailbox; a MailboxError says what failed."""
    from newsletter.feedback.mailbox.imap import ImapMailbox
    from newsletter.feedback.mailbox.maildir import Maildir
    from newsletter.feedback.mailbox.pop3 import Pop3Mailbox

    bounces = settings.bounces
    if not bounces.mailbox:
        raise ConfigError("[bounces] mailbox is not set: name a Maildir folder or an imaps:// or pop3s:// URL")
    if "://" not in bounces.mailbox:
        path = Path(bounces.mailbox).expanduser()
        return Maildir(path if path.is_absolute() else settings.root / path, bounces.processed_folder)
    url = parse_mailbox_url(bounces.mailbox)
    if not bounces.password:
        raise ConfigError(f"[bounces] mailbox {url}: set NEWSLETTER_BOUNCES_PASSWORD to its password")
    if url.scheme == "imaps":
        return ImapMailbox(url, bounces.password, bounces.processed_folder, bounces.timeout)
    return Pop3Mailbox(url, bounces.password, bounces.timeout)

"""Deliver into a Maildir folder on disk, and read it back as an inbox.

Each message is written to ``tmp/`` and renamed into ``new/``, so a reader never sees half a file.
File names start with the nanosecond clock, zero-padded, so sorting names sorts by time; then the process
and a counter keep names unique, and the Message-ID (made file-name safe) says which message it is.
Any Maildir reader (mutt, a mail client, Python's `mailbox`) can open the folder.
"""

from __future__ import annotations

import email.policy
import itertools
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.errors import TransportError

if TYPE_CHECKING:
    from newsletter.transports import Envelope

MAILDIR_SUBFOLDERS = ("tmp", "new", "cur")
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._@=+-]+")
_MAX_TAG_LENGTH = 80


class OutboxTransport:
    """Store every message as a file in a Maildir; safe to call from several threads."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._counter = itertools.count()
        self._counter_lock = threading.Lock()
        self._host = _UNSAFE_IN_NAME.sub("_", socket.gethostname()) or "localhost"

    def check(self) -> None:
        """Create the Maildir folders if needed and prove they are writable."""
        try:
            for name in MAILDIR_SUBFOLDERS:
                (self.folder / name).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(
                f"outbox {self.folder}: cannot create it ({exc.strerror}); check [delivery] outbox"
            ) from exc
        if not os.access(self.folder / "tmp", os.W_OK) or not os.access(self.folder / "new", os.W_OK):
            raise TransportError(f"outbox {self.folder}: not writable; check [delivery] outbox")

    def send(self, envelope: Envelope) -> str:
        """Write the exact wire bytes to ``new/`` and return "250 stored <file name>"."""
        name = self._unique_name(envelope.message_id)
        temporary = self.folder / "tmp" / name
        try:
            try:
                _write_synced(temporary, envelope.data)
            except FileNotFoundError:
                self.check()
                _write_synced(temporary, envelope.data)
            os.rename(temporary, self.folder / "new" / name)
        except OSError as exc:
            raise TransportError(f"outbox {self.folder}: cannot store {name} ({exc.strerror})") from exc
        return f"250 stored {name}"

    def close(self) -> None:
        """Nothing stays open between messages."""

    def _unique_name(self, message_id: str) -> str:
        with self._counter_lock:
            sequence = next(self._counter)
        tag = _UNSAFE_IN_NAME.sub("_", message_id.strip("<> "))[:_MAX_TAG_LENGTH] or self._host
        return f"{time.time_ns():020d}.{os.getpid()}_{sequence:06d}.{tag}"


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        # Maildir's rule: the data is on disk before the rename makes it visible.
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class OutboxMessage:
    """One stored message: where it is, the headers people look for, and its exact bytes."""

    path: Path
    to: str
    subject: str
    date: datetime | None
    message_id: str
    raw: bytes

    def parse(self) -> EmailMessage:
        """Parse the whole message, bodies included."""
        return BytesParser(policy=email.policy.default).parsebytes(self.raw)


def read_outbox(folder: Path) -> list[OutboxMessage]:
    """List the messages in a Maildir (``new/`` and ``cur/``), oldest first; none if it does not exist."""
    folder = Path(folder)
    paths = [
        path
        for sub in ("new", "cur")
        if (folder / sub).is_dir()
        for path in (folder / sub).iterdir()
        if not path.name.startswith(".")
    ]
    parser = BytesHeaderParser(policy=email.policy.default)
    messages = []
    for path in sorted(paths, key=lambda path: path.name):
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            # A reader may move it into cur/ between listing and reading.
            continue
        headers = parser.parsebytes(raw)
        messages.append(
            OutboxMessage(
                path=path,
                to=str(headers.get("To", "")),
                subject=str(headers.get("Subject", "")),
                date=_parse_date(headers.get("Date")),
                message_id=str(headers.get("Message-ID", "")).strip(),
                raw=raw,
            )
        )
    return messages


def _parse_date(value: object) -> datetime | None:
    if value is None:
        return None
    try:
        return parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None

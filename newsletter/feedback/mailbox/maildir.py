"""A Maildir folder (the format Postfix, Exim and Dovecot deliver into) as the bounce mailbox.

Messages are read from new/ and cur/ (tmp/ holds deliveries still being written). A processed message
is renamed into the Maildir++ subfolder `.<processed_folder>/cur/`, marked seen: one rename, atomic on
one file system, so a message is in exactly one of the two places at every instant.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from newsletter.errors import MailboxError
from newsletter.feedback.mailbox import StoredMessage

_SUBDIRECTORIES = ("cur", "new", "tmp")


class Maildir:
    def __init__(self, root: Path, processed_folder: str) -> None:
        if not all((root / name).is_dir() for name in _SUBDIRECTORIES):
            raise MailboxError(f"bounce mailbox {root}: not a Maildir (it needs cur/, new/ and tmp/ folders)")
        self.root = root
        self.target = root / f".{processed_folder.strip('.')}"

    def messages(self) -> Iterator[StoredMessage]:
        for folder in ("new", "cur"):
            for name in sorted(os.listdir(self.root / folder)):
                if name.startswith("."):
                    continue
                try:
                    data = (self.root / folder / name).read_bytes()
                except FileNotFoundError:  # another sweep took it a moment ago
                    continue
                except OSError as error:
                    raise MailboxError(f"bounce mailbox {self.root}: cannot read {folder}/{name}: {error}") from None
                yield StoredMessage(f"{folder}/{name}", data)

    def processed(self, key: str) -> None:
        folder, _, name = key.partition("/")
        if folder == "new" and ":2," not in name:
            name += ":2,S"  # Maildir: a message leaving new/ gets its info; S says it was read
        elif ":2," in name and "S" not in name.partition(":2,")[2]:
            base, _, flags = name.partition(":2,")
            name = f"{base}:2,{''.join(sorted(flags + 'S'))}"
        try:
            for sub in _SUBDIRECTORIES:
                (self.target / sub).mkdir(parents=True, exist_ok=True)
            os.rename(self.root / key, self.target / "cur" / name)
        except FileNotFoundError:
            return  # another sweep moved it first
        except OSError as error:
            where = f"bounce mailbox {self.root}: cannot move {key} to {self.target.name}"
            raise MailboxError(f"{where}: {error}") from None

    def close(self) -> None:
        return None

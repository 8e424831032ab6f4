"""Where finished messages go: the `Transport` seam and its implementations.

    Transport            the protocol the dispatcher talks to: check, send, close
    ├── SmtpTransport    a relay over SMTP: pooled connections, optional TLS and AUTH, rate limited
    ├── OutboxTransport  a Maildir folder on disk, for previews, demos and the local inbox
    └── MemoryTransport  a list in memory with scripted failures, for tests whose point is elsewhere

`send` raises `TransientSendError` (retry later), `PermanentSendError` (the recipient was refused) or
`UncarriedSendError` (this relay cannot carry this message) for one message; `RelayError` when the relay
refuses something that is not about the recipient, and plain `TransportError` when the transport as a
whole cannot work. Only a `PermanentSendError` ever counts against a subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from newsletter.errors import ConfigError
from newsletter.transports.memory import MemoryTransport
from newsletter.transports.outbox import OutboxMessage, OutboxTransport, read_outbox
from newsletter.transports.ratelimit import RateLimiter
from newsletter.transports.smtp import SmtpTransport

if TYPE_CHECKING:
    from newsletter.db import Database

__all__ = [
    "RATE_STATE_FILENAME",
    "Envelope",
    "MemoryTransport",
    "OutboxMessage",
    "OutboxTransport",
    "RateLimiter",
    "SmtpTransport",
    "Transport",
    "read_outbox",
    "transport_from_settings",
]

# Kept in the project folder so every `newsletter send` process of one project shares one SMTP rate.
RATE_STATE_FILENAME = ".smtp-rate"


@dataclass(frozen=True)
class Envelope:
    """One message as it goes on the wire, with its SMTP envelope."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str = ""

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ValueError("an envelope needs at least one recipient")

    @property
    def needs_smtputf8(self) -> bool:
        """Whether an address of this envelope can only travel with SMTPUTF8 (a non-ASCII mailbox name)."""
        return any(needs_smtputf8(address) for address in (self.sender, *self.recipients))


def needs_smtputf8(address: str) -> bool:
    """Whether an address can only travel with SMTPUTF8 (RFC 6531): its mailbox name is not ASCII."""
    return not address.rpartition("@")[0].isascii()


class Transport(Protocol):
    """Anything the dispatcher can hand messages to."""

    def check(self) -> None:
        """Prove the transport can work, or raise `TransportError` saying what to fix."""

    def send(self, envelope: Envelope) -> str:
        """Deliver one message and return the server's reply."""

    def close(self) -> None:
        """Release connections and files; the transport may be used again afterwards."""


def transport_from_settings(settings: Any, database: Database | None = None) -> Transport:
    """Build the transport that `[delivery] transport` names, from a loaded `Settings`.

    `[smtp] rate_per_second` is shared by every sender of the project: through `database` when it is
    PostgreSQL (every machine), else through a state file beside config.toml (every process of this one).
    """
    delivery = settings.delivery
    if delivery.transport == "outbox":
        return OutboxTransport(delivery.outbox)
    if delivery.transport == "smtp":
        smtp = settings.smtp
        rate = smtp.rate_per_second or None
        return SmtpTransport(
            smtp.host,
            smtp.port,
            smtp.security,
            username=smtp.username or None,
            password=smtp.password or None,
            connections=smtp.connections,
            rate_per_second=rate,
            timeout=smtp.timeout,
            rate_state_path=settings.root / RATE_STATE_FILENAME if rate else None,
            rate_engine=database.engine if rate and database is not None and database.dialect == "postgresql" else None,
        )
    raise ConfigError(f"[delivery] transport must be 'outbox' or 'smtp', got {delivery.transport!r}")

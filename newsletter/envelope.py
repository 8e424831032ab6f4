"""Composed wire bytes → what a transport takes: signed with DKIM when configured, with their SMTP envelope.

The signature is relaxed/relaxed rsa-sha256 over SIGNED_HEADERS; `checklist/signing.py` verifies it the way
a receiving provider does. With [bounces] address set, a delivery's envelope sender is its own signed bounce
address (VERP, `feedback/verp.py`), so a late bounce names the exact email.
"""

from __future__ import annotations

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.feedback.verp import bounce_address
from newsletter.message import wire_recipient
from newsletter.transports import Envelope

# Every header we write that a mailbox provider acts on. Reply-To and Precedence are named even in an email
# without them: a name signed with no such field in the email keeps anyone on the way from adding one
# (RFC 6376 section 5.4); a relay-added Reply-To would take readers' answers elsewhere. Google counts
# Feedback-ID only when a DKIM signature covers it. X-Newsletter-Delivery is left out: only our own bounce
# matching reads it (and trusts it only next to the reader's address), and a relay that strips unknown X-
# headers would otherwise break every signature.
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"feedback-id",
    b"auto-submitted",
    b"precedence",
    b"mime-version",
    b"content-type",
)


def signed(settings: Settings, data: bytes) -> bytes:
    """The wire bytes with a DKIM-Signature prepended when a key is configured."""
    return dkim_sign(settings, data) if settings.dkim.selector else data


def wire_envelope(
    settings: Settings, data: bytes, *, to_email: str, message_id: str, delivery_id: int | None = None
) -> Envelope:
    """Composed bytes, signed, with their SMTP envelope: what the send path hands to a transport.

    With [bounces] address set, a delivery's envelope sender is its own signed bounce address (VERP).
    """
    recipient = wire_recipient(to_email)
    sender = (bounce_address(settings, delivery_id) if delivery_id is not None else None) or settings.sender.from_
    return Envelope(sender, (recipient,), signed(settings, data), message_id)


def dkim_sign(settings: Settings, data: bytes) -> bytes:
    """Prepend a DKIM-Signature (relaxed/relaxed, rsa-sha256) over the headers that matter to providers."""
    import dkim

    key_path = settings.dkim.private_key
    if key_path is None or not key_path.is_file():
        raise ConfigError(f"[dkim] private_key must be a readable PEM file, got {str(key_path or '')!r}")
    domain = settings.dkim.domain or settings.sender_domain
    try:
        signature = dkim.sign(
            data,
            settings.dkim.selector.encode(),
            domain.encode(),
            key_path.read_bytes(),
            include_headers=list(SIGNED_HEADERS),
            canonicalize=(b"relaxed", b"relaxed"),
        )
    except dkim.DKIMException as error:
        raise ConfigError(f"[dkim] private_key {key_path}: cannot sign with it: {error}") from None
    return bytes(signature) + data

"""A bounce address per delivery (VERP): `bounces+<delivery id>-<signature>@domain` as the envelope sender.

A DSN goes back to the envelope sender, so the address it was sent to names the delivery even when the
report itself is mangled or quotes nothing of the original. The signature (an HMAC of the id with the
secret key, truncated to 65 bits) keeps anyone from writing to a made-up bounce address to suppress a
reader. Local parts may be lower-cased on the way (RFC 5321 says they must not be, some MTAs do): the
id is decimal and the signature lower-case base32, so case never matters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from newsletter.config import Settings

SIGNATURE_CHARACTERS = 13  # base32 characters: 65 bits of HMAC-SHA256


def _signature(settings: Settings, delivery_id: int) -> str:
    digest = hmac.new(settings.secret_key, f"verp:{delivery_id}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:SIGNATURE_CHARACTERS]


def bounce_address(settings: Settings, delivery_id: int) -> str | None:
    """The envelope sender for one delivery, or None when [bounces] address is not set."""
    if not settings.bounces.address:
        return None
    local, _, domain = settings.bounces.address.rpartition("@")
    return f"{local}+{delivery_id}-{_signature(settings, delivery_id)}@{domain}"


def _pattern(settings: Settings) -> re.Pattern[str] | None:
    if not settings.bounces.address:
        return None
    local, _, domain = settings.bounces.address.rpartition("@")
    return re.compile(
        rf"(?<![\w.+-]){re.escape(local)}\+(\d{{1,18}})-([a-z2-7]{{{SIGNATURE_CHARACTERS}}})@{re.escape(domain)}\b",
        re.IGNORECASE,
    )


def delivery_id_in(settings: Settings, text: str) -> int | None:
    """The delivery a signed bounce address anywhere in `text` names; None if there is none or it is forged."""
    pattern = _pattern(settings)
    if pattern is None:
        return None
    for match in pattern.finditer(text):
        delivery_id = int(match.group(1))
        if hmac.compare_digest(match.group(2).lower(), _signature(settings, delivery_id)):
            return delivery_id
    return None

"""A bounce address per delivery (VERP): `bounces+<delivery id>-<signature>@domain` as the envelope sender.

A DSN goes back to the envelope sender, so the address it was sent to names the delivery even when the
report itself is mangled or quotes nothing of the original. The signature (an HMAC of the id with the
secret key, truncated to 65 bits) keeps anyone from writing to a made-up bounce address to suppress a
reader. Local parts may be lower-cased on the way (RFC 5321 says they must not be, some MTAs do): the
id is decimal and the signature lower-case base32, so case never matters.

The same signed form, with a tag after the "+", names a reader in their mailto: unsubscribe address
(`mailto.py`): by default it shares [bounces] address's local part and domain, so one MX rule (Postfix:
`recipient_delimiter = +`) delivers them all to the one mailbox; [bounces] unsubscribe_address gives it its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from newsletter.config import Settings

SIGNATURE_CHARACTERS = 13  # base32 characters: 65 bits of HMAC-SHA256
_VERP = "verp"


def signature(settings: Settings, purpose: str, number: int) -> str:
    """The signature of one number for one purpose: lower-case base32, SIGNATURE_CHARACTERS long."""
    digest = hmac.new(settings.secret_key, f"{purpose}:{number}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:SIGNATURE_CHARACTERS]


def signed_address(settings: Settings, base: str, tag: str, purpose: str, number: int) -> str | None:
    """`<local>+<tag><number>-<signature>@<domain>` of the `base` address, or None when `base` is empty."""
    if not base:
        return None
    local, _, domain = base.rpartition("@")
    return f"{local}+{tag}{number}-{signature(settings, purpose, number)}@{domain}"


def signed_number_in(settings: Settings, base: str, text: str, tag: str, purpose: str) -> int | None:
    """The number a genuine signed address of `base` with this tag in `text` names; None if none, or forged."""
    if not base:
        return None
    local, _, domain = base.rpartition("@")
    pattern = re.compile(
        rf"(?<![\w.+-]){re.escape(local)}\+{re.escape(tag)}(\d{{1,18}})-([a-z2-7]{{{SIGNATURE_CHARACTERS}}})"
        rf"@{re.escape(domain)}\b",
        re.IGNORECASE,
    )
    for match in pattern.finditer(text):
        number = int(match.group(1))
        if hmac.compare_digest(match.group(2).lower(), signature(settings, purpose, number)):
            return number
    return None


def bounce_address(settings: Settings, delivery_id: int) -> str | None:
    """The envelope sender for one delivery, or None when [bounces] address is not set."""
    return signed_address(settings, settings.bounces.address, "", _VERP, delivery_id)


def delivery_id_in(settings: Settings, text: str) -> int | None:
    """The delivery a signed bounce address anywhere in `text` names; None if there is none or it is forged."""
    return signed_number_in(settings, settings.bounces.address, text, "", _VERP)

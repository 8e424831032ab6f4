"""Signed, scoped, expiring tokens for the links in our emails and pages.

A token is `<payload>.<signature>`, both base64url without padding. The payload is
`scope:subscriber_id:expires` (expires in Unix seconds, 0 for never); the signature is HMAC-SHA256 over the
scope-tagged payload, truncated to 128 bits. Tokens carry the subscriber's database id, never the address,
and are short enough that a List-Unsubscribe URL stays on one header line.

Lifetimes, decided: a confirm link lasts 7 days (then the subscriber asks again); preferences links last 180
days (every email carries a fresh one); unsubscribe links never expire, because a reader may act on an old
email and RFC 8058 one-click requests come from the mailbox provider at any time later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from newsletter.errors import TokenError

Scope = Literal["confirm", "unsubscribe", "preferences"]
SCOPES: tuple[Scope, ...] = ("confirm", "unsubscribe", "preferences")
LIFETIMES: dict[Scope, timedelta | None] = {
    "confirm": timedelta(days=7),
    "unsubscribe": None,
    "preferences": timedelta(days=180),
}
SIGNATURE_BYTES = 16


@dataclass(frozen=True)
class TokenClaims:
    scope: Scope
    subscriber_id: int
    expires: datetime | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, b"newsletter-token:" + payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]


def issue(key: bytes, scope: Scope, subscriber_id: int, now: datetime | None = None) -> str:
    """Sign a token for one purpose and one subscriber."""
    lifetime = LIFETIMES[scope]
    expires = 0
    if lifetime is not None:
        expires = int(((now or datetime.now(UTC)) + lifetime).timestamp())
    payload = f"{scope}:{subscriber_id}:{expires}".encode("ascii")
    return f"{_b64(payload)}.{_b64(_signature(key, payload))}"


def verify(key: bytes, token: str, scope: Scope, now: datetime | None = None) -> TokenClaims:
    """Check signature, purpose and expiry; raise TokenError for anything untrustworthy."""
    try:
        encoded_payload, encoded_signature = token.split(".")
        payload = _unb64(encoded_payload)
        signature = _unb64(encoded_signature)
    except ValueError:
        raise TokenError("this link is malformed; use the link from your latest email") from None
    if not hmac.compare_digest(signature, _signature(key, payload)):
        raise TokenError("this link is not valid; use the link from your latest email")
    try:
        token_scope, subscriber, expires_text = payload.decode("ascii").split(":")
        subscriber_id, expires_at = int(subscriber), int(expires_text)
    except ValueError:
        raise TokenError("this link is malformed; use the link from your latest email") from None
    if token_scope != scope:
        raise TokenError(f"this link is for {token_scope}, not {scope}")
    expires = datetime.fromtimestamp(expires_at, UTC) if expires_at else None
    if expires is not None and (now or datetime.now(UTC)) >= expires:
        raise TokenError("this link has expired; use the link from your latest email")
    return TokenClaims(scope=scope, subscriber_id=subscriber_id, expires=expires)

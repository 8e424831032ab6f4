"""The suppression list: addresses never to be mailed again, surviving erase and re-signup.

Kept as HMAC-SHA256 of the address under the secret key, never in clear: an erased person's address is not
stored, and without the key the list cannot be tested against a list of guessed addresses (a plain
SHA-256 could). The price: a changed secret key cannot match the old rows; each row records which key
made it, and `newsletter suppressions list` counts the ones that no longer match.

What adds to it: a hard bounce, three soft bounces of the last five deliveries, a complaint, the operator
(`suppressions add`), and every erase, so that an old CSV import cannot bring an erased person back. A plain
unsubscribe does not: the subscriber's row already keeps imports and `subscribers add` from re-adding them,
and they may come back through the sign-up form, which asks them to confirm again. A suppressed address
gets nothing at all, not even a confirmation email; the sign-up form shows the same page as for anyone.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.errors import SubscriberError
from newsletter.models import Feedback, Subscriber, Suppression

if TYPE_CHECKING:
    from newsletter.project import Project

_LOOKUP_CHUNK = 500


def address_hash(settings: Settings, address: str) -> str:
    """The keyed hash an address is suppressed under; `address` as the subscribers table holds it."""
    return hmac.new(settings.secret_key, f"suppression:{address.strip().lower()}".encode(), hashlib.sha256).hexdigest()


def key_id(settings: Settings) -> str:
    """Which secret key made a hash, without revealing the key."""
    return hmac.new(settings.secret_key, b"suppression-key-id", hashlib.sha256).hexdigest()[:16]


def is_suppressed(session: Session, settings: Settings, address: str) -> bool:
    """Whether `address` must never be mailed."""
    digest = address_hash(settings, address)
    return session.scalar(select(Suppression.id).where(Suppression.address_hash == digest)) is not None


def suppressed_among(session: Session, settings: Settings, addresses: Iterable[str]) -> set[str]:
    """The addresses of `addresses` that are suppressed (one query per 500, for imports)."""
    by_hash = {address_hash(settings, address): address for address in addresses}
    hashes, found = list(by_hash), set()
    for start in range(0, len(hashes), _LOOKUP_CHUNK):
        chunk = hashes[start : start + _LOOKUP_CHUNK]
        found |= set(session.scalars(select(Suppression.address_hash).where(Suppression.address_hash.in_(chunk))))
    return {by_hash[digest] for digest in found}


def suppress(session: Session, settings: Settings, address: str, *, reason: str, source: str, now: datetime) -> bool:
    """Add `address` (the first reason stays); return whether it was new."""
    if is_suppressed(session, settings, address):
        return False
    row = Suppression(
        address_hash=address_hash(settings, address), key_id=key_id(settings), reason=reason, source=source
    )
    row.created_at = now
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # another process suppressed it a moment ago
        return False
    return True


def forget_subscriber(session: Session, settings: Settings, subscriber: Subscriber, *, now: datetime) -> None:
    """Before an erase: keep the address suppressed, and drop bounce diagnostics that may quote it."""
    suppress(session, settings, subscriber.email, reason="erased", source="erase", now=now)
    session.execute(update(Feedback).where(Feedback.subscriber_id == subscriber.id).values(diagnostic=""))


@dataclass(frozen=True)
class SuppressionEntry:
    """One row as the operator sees it: the address only while a subscriber still has it."""

    address: str
    reason: str
    source: str
    created_at: datetime
    matches_current_key: bool
    address_hash: str


def list_suppressions(session: Session, settings: Settings) -> list[SuppressionEntry]:
    """Every suppression, oldest first, named by address where a subscriber row still holds one."""
    known = {
        address_hash(settings, email): email
        for email in session.scalars(select(Subscriber.email).where(Subscriber.status.in_(("unsubscribed", "bounced"))))
    }
    current = key_id(settings)
    return [
        SuppressionEntry(
            address=known.get(row.address_hash, ""),
            reason=row.reason,
            source=row.source,
            created_at=row.created_at,
            matches_current_key=row.key_id == current,
            address_hash=row.address_hash,
        )
        for row in session.scalars(select(Suppression).order_by(Suppression.id))
    ]


def add_suppression(session: Session, project: Project, address: str, *, now: datetime) -> bool:
    """The operator suppresses an address: its subscriber, if any, is unsubscribed at once; return whether new."""
    from newsletter.subscribers import find_subscriber, normalise_email, unsubscribe  # subscribers imports us

    normalised = normalise_email(address)
    added = suppress(session, project.settings, normalised, reason="operator", source="cli", now=now)
    subscriber = find_subscriber(session, normalised)
    if subscriber is not None and subscriber.status not in ("unsubscribed", "bounced"):
        unsubscribe(session, project, subscriber, now=now, source="suppression")
    return added


def remove_suppression(session: Session, settings: Settings, address: str) -> None:
    """Take an address off the list; it may subscribe again (nobody is re-subscribed by this)."""
    from newsletter.subscribers import normalise_email  # subscribers imports us

    normalised = normalise_email(address)
    removed = session.execute(delete(Suppression).where(Suppression.address_hash == address_hash(settings, normalised)))
    if not getattr(removed, "rowcount", 0):
        raise SubscriberError(f"{normalised} is not on the suppression list; nothing changed")

"""Per-recipient-domain backoff, shared by every sender through the database.

A domain's server that answers a recipient with "slow down" (421, 451, an enhanced 4.7.x policy code, or
words of rate limiting) is paused: one row in `domain_pauses` says until when, and that domain's pending
rows are moved to that time, so they leave the due range and every sender — other processes, other
machines — passes them by at no cost while the others go on. A row a sender had already claimed for a
paused domain goes back unsent (`Dispatcher._take`). Each pause in a row doubles the next
(`[delivery] domain_pause_seconds` up to `domain_pause_max_seconds`); the first message the domain accepts
after a pause ends clears its strikes. Only the rows that met the refusal spend an attempt
(`max_attempts`); the rows that waited did not try.

Why no `subscribers.domain` column: a pause is rare, and one scan of subscribers by `email LIKE '%@domain'`
per pause costs less than keeping a copy of each address's domain right on every path that writes one.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Connection, Table, delete, insert, select, update

from newsletter.config import Settings
from newsletter.errors import TransientSendError
from newsletter.ledger.wire import Claimed, release_unstarted
from newsletter.models import Delivery, DomainPause, Subscriber

log = logging.getLogger(__name__)

DELIVERIES, SUBSCRIBERS, PAUSES = (cast(Table, model.__table__) for model in (Delivery, Subscriber, DomainPause))

THROTTLE_CODES = frozenset({421, 451})
_POLICY_STATUS = re.compile(r"\b4\.7\.\d{1,3}\b")
_RATE_WORDS = re.compile(r"rate.?limit|too many|throttl|slow down|try again later|temporarily deferred", re.I)


class DomainPauses:
    """One sender's view of the paused domains: read with each claim, changed as replies land."""

    def __init__(self, settings: Settings, owner: str) -> None:
        self.settings = settings
        self.owner = owner
        self._until: dict[str, datetime] = {}  # domains with strikes; a time past means the pause is over

    def read(self, connection: Connection, now: datetime) -> dict[str, datetime]:
        """Read the pauses again (with each claim); return the domains paused at `now` (a read: no write lock)."""
        self._until = pauses(connection)
        return {domain: until for domain, until in self._until.items() if until > now}

    def passing(self, connection: Connection, claimed: list[Claimed], paused: Mapping[str, datetime]) -> list[Claimed]:
        """The claimed rows whose domain is not `paused`; the others go back unsent, to wait for the pause."""
        return self._send_back(connection, claimed, paused) if paused else claimed

    def pause(
        self, connection: Connection, item: Claimed, error: TransientSendError, now: datetime, held: deque[Claimed]
    ) -> datetime:
        """Pause the recipient's domain; rows of it in `held` (claimed, not started) go back to wait for it."""
        domain = domain_of(item.subscriber.email)
        was = self._until.get(domain)
        until = self._until[domain] = pause_domain(connection, self.settings, domain, error.reply, now)
        if was is None or was <= now:
            waits = until.isoformat(timespec="seconds")
            # The code, not the reply: a reply names the recipient, and the log keeps addresses out.
            log.warning("%s asked to slow down (%s): its readers wait until %s", domain, error.code, waits)
        kept = self._send_back(connection, held, {domain: until})
        held.clear()
        held.extend(kept)
        return until

    def _send_back(
        self, connection: Connection, rows: Iterable[Claimed], paused: Mapping[str, datetime]
    ) -> list[Claimed]:
        """The rows of no paused domain; the others go back unsent, to wait until their domain's pause ends."""
        kept: list[Claimed] = []
        waiting: dict[datetime, list[int]] = defaultdict(list)
        for item in rows:
            until = paused.get(domain_of(item.subscriber.email))
            if until is None:
                kept.append(item)
            else:
                waiting[until].append(item.delivery_id)
        for until, ids in waiting.items():  # one statement per paused domain, not per row
            release_unstarted(connection, ids, self.owner, due_at=until)
        return kept

    def clear_recovered(self, connection: Connection, sent: list[tuple[Claimed, str, datetime]]) -> None:
        """A domain that accepts mail after its pause ended loses its strikes."""
        if not self._until:
            return
        recovered = set()
        for item, _, at in sent:
            domain = domain_of(item.subscriber.email)
            until = self._until.get(domain)
            if until is not None and until <= at:
                recovered.add(domain)
        clear(connection, recovered)
        for domain in recovered:
            del self._until[domain]


def domain_of(address: str) -> str:
    """The domain part of an address, lower-cased: what a pause is kept by."""
    return address.rpartition("@")[2].lower()


def is_throttle(error: TransientSendError) -> bool:
    """Whether the recipient's server asked us to slow down, rather than refused one mailbox for now."""
    if not error.by_recipient:
        return False  # the relay's own 4xx at connect or greeting: a retry, nothing to do with the domain
    reply = error.reply or ""
    return error.code in THROTTLE_CODES or bool(_POLICY_STATUS.search(reply) or _RATE_WORDS.search(reply))


def pause_domain(connection: Connection, settings: Settings, domain: str, reply: str, now: datetime) -> datetime:
    """Pause `domain` (or keep its running pause), move its pending rows to the end; return until when."""
    row = connection.execute(select(PAUSES.c.until, PAUSES.c.strikes).where(PAUSES.c.domain == domain)).first()
    if row is not None and row.until > now:
        return cast(datetime, row.until)  # already paused, by us or another sender: the pause stands
    strikes = (row.strikes if row is not None else 0) + 1
    delivery = settings.delivery
    seconds = min(delivery.domain_pause_seconds * 2 ** (strikes - 1), delivery.domain_pause_max_seconds)
    until = now + timedelta(seconds=seconds)
    values = {"until": until, "strikes": strikes, "reply": reply[:500], "updated_at": now}
    if row is None:
        connection.execute(insert(PAUSES).values(domain=domain, **values))
    else:
        connection.execute(update(PAUSES).where(PAUSES.c.domain == domain).values(**values))
    readers = select(SUBSCRIBERS.c.id).where(SUBSCRIBERS.c.email.like(f"%@{_escaped(domain)}", escape="\\"))
    connection.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.status == "pending", DELIVERIES.c.due_at < until)
        .where(DELIVERIES.c.subscriber_id.in_(readers))
        .values(due_at=until)
    )
    return until


def pauses(connection: Connection) -> dict[str, datetime]:
    """Every domain with strikes, and until when it is paused (a time past: the pause is over)."""
    return {row.domain: row.until for row in connection.execute(select(PAUSES.c.domain, PAUSES.c.until))}


def clear(connection: Connection, domains: set[str]) -> None:
    """Forget the strikes of domains that accepted mail again."""
    if domains:
        connection.execute(delete(PAUSES).where(PAUSES.c.domain.in_(sorted(domains))))


def _escaped(domain: str) -> str:
    return domain.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

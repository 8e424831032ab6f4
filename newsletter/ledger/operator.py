"""What an operator may put back into the queue (`newsletter retry`), and why a row stays where it is."""

from __future__ import annotations

from datetime import datetime

from newsletter.ledger.waiting import Gates
from newsletter.ledger.wire import may_receive
from newsletter.models import GATE_HOLDS, Delivery, DeliveryStatus, Subscriber

RETRYABLE: tuple[DeliveryStatus, ...] = ("failed", "held")


def why_not_retried(delivery: Delivery, subscriber: Subscriber, gates: Gates) -> str | None:
    """Why `retry` leaves this row as it is (None: it goes back to pending, due now)."""
    if not may_receive(delivery.lesson, subscriber.status):
        return f"the subscriber is {subscriber.status}"
    gate = gates.get(delivery.lesson)
    if gate is not None or delivery.hold in GATE_HOLDS:
        reason = gate.detail if gate else "the lesson may not go out yet"
        return f"{delivery.lesson!r} is held for the whole course ({reason}); it goes out once that is fixed"
    return None


def put_back(delivery: Delivery, now: datetime) -> None:
    """Back to pending, due now, attempts from zero; it keeps its Message-ID."""
    delivery.status, delivery.due_at, delivery.attempts, delivery.hold = "pending", now, 0, None
    delivery.lease_owner = delivery.lease_until = delivery.smtp_started_at = None
    delivery.updated_at = now

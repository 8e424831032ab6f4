"""RFC 3464 delivery status notifications, read with the standard `email` package.

A DSN is `multipart/report; report-type=delivery-status` with a `message/delivery-status` part: one block
of per-message fields, then one block per recipient (Final-Recipient, Action, Status, Diagnostic-Code).
The email package already splits that part into one header block each. Postfix, Exim 4.9x, Gmail and
Exchange Online all write this format; they differ in what they put around it, which we do not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime

from newsletter.feedback.report import clean_recipient, enhanced_status, one_line

DELIVERY_STATUS = "message/delivery-status"


@dataclass(frozen=True)
class RecipientStatus:
    """One recipient's block: `action` is failed, delayed, delivered, relayed or expanded (RFC 3464 2.3.3)."""

    recipient: str
    action: str
    status: str
    diagnostic: str
    when: datetime | None


def delivery_status(message: Message) -> list[RecipientStatus] | None:
    """Each recipient a DSN reports on; None when `message` is not a DSN."""
    part = next((p for p in message.walk() if p.get_content_type() == DELIVERY_STATUS), None)
    if part is None:
        return None
    payload = part.get_payload()
    blocks = [block for block in payload if isinstance(block, Message)] if isinstance(payload, list) else []
    if not blocks:
        return []
    per_message = blocks[0]
    arrived = parse_date(str(per_message.get("Arrival-Date", "")))
    statuses = []
    for block in blocks[1:]:
        recipient = clean_recipient(str(block.get("Final-Recipient") or block.get("Original-Recipient") or ""))
        if not recipient:
            continue
        diagnostic = str(block.get("Diagnostic-Code", "")).partition(";")
        text = one_line(diagnostic[2] if diagnostic[1] else diagnostic[0])
        statuses.append(
            RecipientStatus(
                recipient=recipient,
                action=str(block.get("Action", "")).strip().lower(),
                status=enhanced_status(str(block.get("Status", ""))) or enhanced_status(text),
                diagnostic=text,
                when=parse_date(str(block.get("Last-Attempt-Date", ""))) or arrived,
            )
        )
    return statuses


def parse_date(text: str) -> datetime | None:
    """An RFC 5322 date as an aware UTC instant, or None when it is missing or unreadable."""
    if not text.strip():
        return None
    try:
        moment = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)

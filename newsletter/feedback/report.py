"""`FeedbackReport`: one bounce or complaint about one recipient, whatever it came from, and how it is judged.

Hard or soft, decided once here for every source. RFC 3463 says 5.x.x is permanent and 4.x.x transient,
and that is the rule, with two exceptions, because they are about our message and not about the address:
5.7.x (policy: a blocklisted relay, a DMARC failure, content judged as spam) and 5.2.2 (mailbox full,
which several providers send as permanent though a reader clears it in a day). Suppressing readers for
those would empty the list the day our relay is blocklisted; they count as soft bounces instead, so an
address that keeps refusing is still suppressed by the "3 soft of the last 5" rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

HARD_BOUNCE = "hard_bounce"
SOFT_BOUNCE = "soft_bounce"
COMPLAINT = "complaint"
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SOFT_EVEN_IF_PERMANENT = ("5.7.", "5.2.2")


@dataclass(frozen=True)
class FeedbackReport:
    """What a source says about one message to one recipient, with every anchor it offers to find our delivery.

    `verp_delivery_id` and `message_ids` can only come from us (the first is signed, the second carries an
    HMAC); `header_delivery_id` (X-Newsletter-Delivery) is a plain number anyone could write, so it is
    believed only when the report's recipient is that delivery's subscriber. `authenticated` says the source
    proved who it is (a signed webhook): only then may the recipient address alone find the delivery.
    """

    kind: str
    external_id: str
    source: str
    recipient: str = ""
    status: str = ""
    diagnostic: str = ""
    reported_at: datetime | None = None
    verp_delivery_id: int | None = None
    message_ids: tuple[str, ...] = ()  # our Message-ID as the report quotes it (a bounce may quote several)
    header_delivery_id: int | None = None
    authenticated: bool = False


def enhanced_status(text: str) -> str:
    """The first RFC 3463 status code in `text` ("5.1.1"), or ""."""
    match = _STATUS.search(text or "")
    return ".".join(match.groups()) if match else ""


def bounce_kind(status: str, *, permanent: bool | None = None) -> str:
    """Hard or soft for a failed delivery; `permanent` is the source's own verdict when it gives no code."""
    if status.startswith("5.") and not status.startswith(_SOFT_EVEN_IF_PERMANENT):
        return HARD_BOUNCE
    if status:
        return SOFT_BOUNCE
    return HARD_BOUNCE if permanent else SOFT_BOUNCE


def clean_recipient(text: str) -> str:
    """An address as a report writes it ("rfc822; <Ann@Example.com>") in the form our table holds."""
    address = text.rpartition(";")[2] if ";" in text else text
    return address.strip().strip("<>").strip().lower()


def one_line(text: str, limit: int = 1000) -> str:
    """A diagnostic folded onto one line and bounded, as it is stored."""
    return " ".join(str(text or "").split())[:limit]

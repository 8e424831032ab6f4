"""A message from the bounce mailbox → the feedback reports it holds, each with the anchors to find its delivery.

In order: an RFC 3464 DSN (`dsn`), an RFC 5965 complaint (`arf`), else a free-form bounce (`heuristic`).
Anchors are looked for everywhere a bounce may keep them: our signed bounce address (VERP) in the headers
the receiving side added (Delivered-To, X-Original-To, the original's Return-Path) or anywhere in the text;
our Message-ID in the returned original, in In-Reply-To / References, or quoted in a text part; the
X-Newsletter-Delivery header likewise. A message that is none of the three is not feedback at all.
"""

from __future__ import annotations

import email
import hashlib
import re
from dataclasses import dataclass, field, replace
from email import policy
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses

from newsletter.config import Settings
from newsletter.feedback.arf import abuse_report
from newsletter.feedback.dsn import delivery_status
from newsletter.feedback.heuristic import failed_addresses
from newsletter.feedback.report import COMPLAINT, FeedbackReport, bounce_kind
from newsletter.feedback.verp import delivery_id_in
from newsletter.message import DELIVERY_HEADER

_QUOTED_MESSAGE_ID = re.compile(r"^[ >]*Message-ID:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
_QUOTED_DELIVERY = re.compile(rf"^[ >]*{DELIVERY_HEADER}:\s*(\d{{1,18}})\s*$", re.IGNORECASE | re.MULTILINE)
_ANGLE_ID = re.compile(r"<[^<>\s]+>")
MAX_MESSAGE_IDS = 10


@dataclass(frozen=True)
class Classified:
    """The reports in one message; `recognised` False means it is not a bounce or a complaint at all."""

    reports: list[FeedbackReport] = field(default_factory=list)
    recognised: bool = False


@dataclass(frozen=True)
class _Anchors:
    verp_delivery_id: int | None
    message_ids: tuple[str, ...]
    header_delivery_id: int | None
    original_to: str


def classify(settings: Settings, raw: bytes, *, source: str = "mailbox") -> Classified:
    """Read one message; a DSN about a delay or a delivery is recognised and holds no report."""
    message = email.message_from_bytes(raw, policy=policy.default)
    anchors = _anchors(settings, message, raw)
    base = _external_base(message, raw, source)
    found: list[FeedbackReport] = []
    statuses = delivery_status(message)
    abuse = abuse_report(message) if statuses is None else None
    if statuses is not None:
        for status in statuses:
            if status.action == "failed":
                kind = bounce_kind(status.status, permanent=True)
                found.append(
                    FeedbackReport(
                        kind, "", source, status.recipient, status.status, status.diagnostic, reported_at=status.when
                    )
                )
    elif abuse is not None:
        if abuse.is_complaint:
            found.append(
                FeedbackReport(
                    COMPLAINT,
                    "",
                    source,
                    abuse.recipient or anchors.original_to,
                    diagnostic=f"{abuse.feedback_type} report from {abuse.user_agent or 'an unnamed feedback loop'}",
                    reported_at=abuse.when,
                )
            )
    else:
        temporary, permanent = failed_addresses(raw)
        if not temporary and not permanent:
            return Classified()
        subject = " ".join(str(message.get("Subject", "")).split())[:200]
        found += [FeedbackReport("soft_bounce", "", source, address, diagnostic=subject) for address in temporary]
        found += [FeedbackReport("hard_bounce", "", source, address, diagnostic=subject) for address in permanent]
    reports = [
        replace(
            report,
            external_id=f"{base}:{number}",
            verp_delivery_id=anchors.verp_delivery_id,
            message_ids=anchors.message_ids,
            header_delivery_id=anchors.header_delivery_id,
        )
        for number, report in enumerate(found, start=1)
    ]
    return Classified(reports=reports, recognised=True)


def _external_base(message: Message, raw: bytes, source: str) -> str:
    """The same for every copy of one message: its own Message-ID, else its bytes."""
    own = str(message.get("Message-ID", "")).strip()
    return f"{source}:{hashlib.sha256(own.encode() if own else raw).hexdigest()[:40]}"


def _original_headers(message: Message) -> Message | None:
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif kind == "text/rfc822-headers":
            return HeaderParser(policy=policy.default).parsestr(_text_of(part))
    return None


def _text_of(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, UnicodeError, KeyError, AttributeError):
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def _texts(message: Message, raw: bytes) -> str:
    """The raw message and every decoded text part: an original quoted in base64 or QP is found too."""
    decoded = [_text_of(part) for part in message.walk() if part.get_content_maintype() == "text"]
    return "\n".join([raw.decode("latin-1"), *decoded])


def _anchors(settings: Settings, message: Message, raw: bytes) -> _Anchors:
    texts = _texts(message, raw)
    original = _original_headers(message)
    own_id = str(message.get("Message-ID", "")).strip()
    candidates = [str(original.get("Message-ID", "")).strip()] if original is not None else []
    for name in ("In-Reply-To", "References"):
        candidates += _ANGLE_ID.findall(str(message.get(name, "")))
    candidates += _QUOTED_MESSAGE_ID.findall(texts)
    message_ids = tuple(dict.fromkeys(c for c in candidates if c and c != own_id))[:MAX_MESSAGE_IDS]
    header = str(original.get(DELIVERY_HEADER, "")).strip() if original is not None else ""
    quoted = _QUOTED_DELIVERY.search(texts)
    header_id = int(header) if header.isdigit() else (int(quoted.group(1)) if quoted else None)
    to = getaddresses([str(original.get("To", ""))]) if original is not None else []
    return _Anchors(
        verp_delivery_id=delivery_id_in(settings, texts),
        message_ids=message_ids,
        header_delivery_id=header_id,
        original_to=to[0][1].lower() if to and "@" in to[0][1] else "",
    )

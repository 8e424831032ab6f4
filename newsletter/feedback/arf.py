"""RFC 5965 abuse reports (ARF): the complaint feedback loops of Yahoo, Microsoft (JMRP) and most others.

An ARF report is `multipart/report; report-type=feedback-report`: a human-readable part, a
`message/feedback-report` part of header-style fields (Feedback-Type, User-Agent, Version, and optionally
Original-Rcpt-To, Arrival-Date), and the original message or its headers. Recipients are often redacted
(RFC 6590), so the original's Message-ID is what usually finds the delivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import Message

from newsletter.feedback.dsn import parse_date
from newsletter.feedback.report import clean_recipient

FEEDBACK_REPORT = "message/feedback-report"
# RFC 5965 3.5 and RFC 6591: only these say a person did not want the message.
COMPLAINT_TYPES = ("abuse", "fraud", "other", "virus")


@dataclass(frozen=True)
class AbuseReport:
    feedback_type: str
    recipient: str
    user_agent: str
    when: datetime | None

    @property
    def is_complaint(self) -> bool:
        """Whether the reader marked it as unwanted ("not-spam" and "auth-failure" reports are not complaints)."""
        return self.feedback_type in COMPLAINT_TYPES


def abuse_report(message: Message) -> AbuseReport | None:
    """The report's fields; None when `message` is not an ARF report."""
    part = next((p for p in message.walk() if p.get_content_type() == FEEDBACK_REPORT), None)
    if part is None:
        return None
    payload = part.get_payload()
    fields = payload[0] if isinstance(payload, list) and payload and isinstance(payload[0], Message) else part
    return AbuseReport(
        feedback_type=str(fields.get("Feedback-Type", "")).strip().lower(),
        recipient=clean_recipient(str(fields.get("Original-Rcpt-To", ""))),
        user_agent=str(fields.get("User-Agent", "")).strip(),
        when=parse_date(str(fields.get("Arrival-Date") or fields.get("Received-Date") or "")),
    )

"""`POST /webhooks/postmark`: Postmark's bounce and spam complaint webhooks, behind HTTP basic auth.

Postmark authenticates a webhook by the credentials in its URL, sent as HTTP basic auth: give Postmark
`https://<user>:<password>@<host>/webhooks/postmark` with [webhooks] postmark_username and
NEWSLETTER_WEBHOOKS_POSTMARK_PASSWORD. Postmark reports carry no header of ours, so the delivery is the
recipient's latest email.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from datetime import datetime

from newsletter.errors import WebhookError
from newsletter.feedback.dsn import parse_date
from newsletter.feedback.report import (
    COMPLAINT,
    HARD_BOUNCE,
    SOFT_BOUNCE,
    FeedbackReport,
    clean_recipient,
    enhanced_status,
    one_line,
)
from newsletter.feedback.webhooks import WebhookResult, not_configured, parse_json, record_reports
from newsletter.project import Project

# Postmark's bounce types (its "Bounce webhook" reference) that say something about the address.
BOUNCE_KINDS = {
    "HardBounce": HARD_BOUNCE,
    "BadEmailAddress": HARD_BOUNCE,
    "SoftBounce": SOFT_BOUNCE,
    "DnsError": SOFT_BOUNCE,
    "Blocked": SOFT_BOUNCE,
    "DMARCPolicy": SOFT_BOUNCE,
    "SpamNotification": COMPLAINT,
    "SpamComplaint": COMPLAINT,
}


def handle_postmark(project: Project, body: bytes, headers: Mapping[str, str], now: datetime) -> WebhookResult:
    """Check the basic-auth credentials, then record the bounce or complaint."""
    webhooks = project.settings.webhooks
    if not webhooks.postmark_password:
        raise not_configured("postmark", "NEWSLETTER_WEBHOOKS_POSTMARK_PASSWORD")
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    try:
        user, _, password = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        user = password = ""
    expected = f"{webhooks.postmark_username}:{webhooks.postmark_password}".encode()
    if scheme.lower() != "basic" or not hmac.compare_digest(f"{user}:{password}".encode(), expected):
        raise WebhookError("postmark webhook: wrong or missing basic-auth credentials", status=401)
    record = parse_json(body, "postmark")
    if not isinstance(record, dict):
        raise WebhookError("postmark webhook: expected one record (a JSON object)", status=400)
    record_type = str(record.get("RecordType", ""))
    kind = COMPLAINT if record_type == "SpamComplaint" else BOUNCE_KINDS.get(str(record.get("Type", "")))
    if record_type not in ("Bounce", "SpamComplaint") or kind is None or not record.get("ID"):
        return WebhookResult(ignored=1, note=f"{record_type or 'record'} {record.get('Type', '')} needs nothing")
    details = one_line(record.get("Details") or record.get("Description") or "")
    report = FeedbackReport(
        kind=kind,
        external_id=f"postmark:{record_type}:{record['ID']}",
        source="postmark",
        recipient=clean_recipient(str(record.get("Email", ""))),
        status=enhanced_status(details),
        diagnostic=details,
        reported_at=parse_date_iso(str(record.get("BouncedAt", ""))),
        authenticated=True,
    )
    return record_reports(project, [report], now=now)


def parse_date_iso(text: str) -> datetime | None:
    """Postmark's ISO 8601 time, or None."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return parse_date(text)

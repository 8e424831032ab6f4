"""`POST /webhooks/sendgrid`: SendGrid's Signed Event Webhook.

SendGrid signs `timestamp + body` with ECDSA P-256 / SHA-256 and sends the base64 DER signature in
X-Twilio-Email-Event-Webhook-Signature and the timestamp in X-Twilio-Email-Event-Webhook-Timestamp; the
public "verification key" it shows goes in [webhooks] sendgrid_public_key. The signature covers the whole
body, and each event is recorded once by its sg_event_id, so a replayed request changes nothing; there is
no time window that a retry, hours later, could fall outside of.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from newsletter.errors import WebhookError
from newsletter.feedback.report import COMPLAINT, SOFT_BOUNCE, FeedbackReport, bounce_kind, clean_recipient, one_line
from newsletter.feedback.webhooks import WebhookResult, not_configured, parse_json, record_reports
from newsletter.project import Project

SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"


def verification_key(text: str) -> ec.EllipticCurvePublicKey:
    """The key as SendGrid shows it: base64 of a DER SubjectPublicKeyInfo (PEM armour is tolerated)."""
    body = "".join(line for line in text.strip().splitlines() if not line.startswith("-----"))
    try:
        key = load_der_public_key(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise WebhookError("[webhooks] sendgrid_public_key is not SendGrid's verification key (base64)", status=500)
    return key


def handle_sendgrid(project: Project, body: bytes, headers: Mapping[str, str], now: datetime) -> WebhookResult:
    """Verify the signature, then record every bounce, drop and spam report in the batch."""
    configured = project.settings.webhooks.sendgrid_public_key
    if not configured:
        raise not_configured("sendgrid", "[webhooks] sendgrid_public_key")
    signature, timestamp = headers.get(SIGNATURE_HEADER, ""), headers.get(TIMESTAMP_HEADER, "")
    if not signature or not timestamp:
        raise WebhookError("sendgrid webhook: unsigned (no signature or timestamp header)", status=401)
    try:
        verification_key(configured).verify(
            base64.b64decode(signature, validate=True), timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
        )
    except (binascii.Error, ValueError, InvalidSignature):
        raise WebhookError("sendgrid webhook: the signature does not verify", status=403) from None
    events = parse_json(body, "sendgrid")
    if not isinstance(events, list):
        raise WebhookError("sendgrid webhook: expected a JSON list of events", status=400)
    reports = [report for event in events if isinstance(event, dict) for report in _report(event)]
    return record_reports(project, reports, now=now, ignored=len(events) - len(reports))


def _report(event: dict[str, Any]) -> list[FeedbackReport]:
    name, reason = str(event.get("event", "")), str(event.get("reason", ""))
    status = str(event.get("status", ""))
    if name == "bounce":
        kind = SOFT_BOUNCE if event.get("type") == "blocked" else bounce_kind(status, permanent=True)
    elif name == "spamreport" or (name == "dropped" and reason == "Spam Reporting Address"):
        kind = COMPLAINT
    elif name == "dropped" and reason == "Bounced Address":
        kind = bounce_kind("", permanent=True)
    else:
        return []  # delivered, deferred (SendGrid retries), opens, clicks, other drops
    if not event.get("sg_event_id"):
        return []
    moment = event.get("timestamp")
    smtp_id = str(event.get("smtp-id", "")).strip()
    return [
        FeedbackReport(
            kind=kind,
            external_id=f"sendgrid:{event['sg_event_id']}",
            source="sendgrid",
            recipient=clean_recipient(str(event.get("email", ""))),
            status=status,
            diagnostic=one_line(reason),
            reported_at=datetime.fromtimestamp(moment, UTC) if isinstance(moment, int | float) else None,
            message_ids=(smtp_id,) if smtp_id else (),
            authenticated=True,
        )
    ]

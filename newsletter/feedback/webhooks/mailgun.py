"""`POST /webhooks/mailgun`: Mailgun's event webhooks (JSON), signed with the webhook signing key.

Mailgun signs only `timestamp + token` (HMAC-SHA256, hex), not the body, so a captured signature could
carry another body: each token is therefore accepted once (kept in the database, so every process and
machine agrees), and a timestamp older than the window is refused. The window is 12 hours because
Mailgun retries a failed call for 8 hours and we cannot count on each retry being signed afresh; the
window only bounds how long tokens are remembered. Temporary failures are not recorded: Mailgun retries
them itself and sends a permanent failure (reason "old", counted as soft) if it gives up.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from newsletter.errors import WebhookError
from newsletter.feedback.report import (
    COMPLAINT,
    SOFT_BOUNCE,
    FeedbackReport,
    bounce_kind,
    clean_recipient,
    enhanced_status,
    one_line,
)
from newsletter.feedback.webhooks import WebhookResult, not_configured, parse_json, record_reports
from newsletter.project import Project

REPLAY_WINDOW = timedelta(hours=12)


def handle_mailgun(project: Project, body: bytes, headers: Mapping[str, str], now: datetime) -> WebhookResult:
    """Verify the signature and the token's freshness, then record the failure or complaint."""
    key = project.settings.webhooks.mailgun_signing_key
    if not key:
        raise not_configured("mailgun", "NEWSLETTER_WEBHOOKS_MAILGUN_SIGNING_KEY")
    payload = parse_json(body, "mailgun")
    signature = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(signature, dict):
        raise WebhookError("mailgun webhook: no signature object in the body", status=401)
    timestamp, token = str(signature.get("timestamp", "")), str(signature.get("token", ""))
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not token or not hmac.compare_digest(str(signature.get("signature", "")).encode(), expected.encode()):
        raise WebhookError("mailgun webhook: the signature does not verify", status=403)
    if not timestamp.isdigit() or abs(now - datetime.fromtimestamp(int(timestamp), UTC)) > REPLAY_WINDOW:
        raise WebhookError("mailgun webhook: the signature's timestamp is too old (a replay?)", status=406)
    event = payload.get("event-data")
    reports = _report(event) if isinstance(event, dict) else []
    return record_reports(
        project, reports, now=now, ignored=0 if reports else 1, nonce=("mailgun", token, REPLAY_WINDOW)
    )


def _report(event: dict[str, Any]) -> list[FeedbackReport]:
    name, severity, reason = event.get("event"), event.get("severity"), str(event.get("reason", ""))
    status_block = event.get("delivery-status") or {}
    said = one_line(status_block.get("description") or status_block.get("message") or reason)
    status = str(status_block.get("enhanced-code") or "") or enhanced_status(said)
    if not status and str(status_block.get("code", "")).startswith(("4", "5")):
        status = f"{str(status_block['code'])[0]}.0.0"
    if name == "complained":
        kind = COMPLAINT
    elif name == "failed" and severity == "permanent":
        kind = SOFT_BOUNCE if reason == "old" else bounce_kind(status, permanent=True)
    else:
        return []  # delivered, opened, temporary failures (Mailgun retries them), …
    if not event.get("id"):
        return []
    headers = (event.get("message") or {}).get("headers") or {}
    message_id = str(headers.get("message-id", "")).strip().strip("<>")
    moment = event.get("timestamp")
    return [
        FeedbackReport(
            kind=kind,
            external_id=f"mailgun:{event['id']}",
            source="mailgun",
            recipient=clean_recipient(str(event.get("recipient", ""))),
            status=status,
            diagnostic=said,
            reported_at=datetime.fromtimestamp(moment, UTC) if isinstance(moment, int | float) else None,
            message_ids=(f"<{message_id}>",) if message_id else (),
            authenticated=True,
        )
    ]

"""Provider webhooks: each module checks a provider's proof of origin, then turns its events into reports.

    ses.py       Amazon SES through SNS: the SNS signature (sns.py), the allowed topics, the subscription flow
    postmark.py  HTTP basic auth, as Postmark documents for webhook URLs
    sendgrid.py  the Signed Event Webhook: ECDSA P-256 over timestamp + body
    mailgun.py   HMAC-SHA256 of timestamp + token, each token accepted once

Every report goes through `record.record_report`, like the mailbox's, with an external id made from the
provider's own event id, so a redelivered event changes nothing. Handlers take the raw body and the
request headers (names lower-cased) and raise `WebhookError` with the HTTP status to answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from newsletter.errors import WebhookError
from newsletter.feedback.record import DUPLICATE, RECORDED, record_report
from newsletter.feedback.report import FeedbackReport
from newsletter.models import WebhookNonce
from newsletter.project import Project


@dataclass
class WebhookResult:
    """What one call did, as the endpoint answers it."""

    recorded: int = 0
    duplicates: int = 0
    unmatched: int = 0
    ignored: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_json(body: bytes, provider: str) -> Any:
    """The body as JSON; a WebhookError (400) when it is not."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookError(f"{provider} webhook: the body is not JSON", status=400) from None


def not_configured(provider: str, setting: str) -> WebhookError:
    return WebhookError(f"the {provider} webhook is not configured ({setting})", status=404)


def record_reports(
    project: Project,
    reports: Sequence[FeedbackReport],
    *,
    now: datetime,
    ignored: int = 0,
    nonce: tuple[str, str, timedelta] | None = None,
) -> WebhookResult:
    """Record every report in one transaction; `nonce` (provider, value, how long to keep it) is used up first."""
    result = WebhookResult(ignored=ignored)
    with project.db.session() as session:
        if nonce is not None and not _use_nonce(session, *nonce, now=now):
            result.note = "already processed"
            return result
        for report in reports:
            outcome = record_report(session, project, report, now=now).outcome
            result.recorded += outcome == RECORDED
            result.duplicates += outcome == DUPLICATE
            result.unmatched += outcome not in (RECORDED, DUPLICATE)
    return result


def _use_nonce(session: Session, provider: str, value: str, keep: timedelta, *, now: datetime) -> bool:
    """Record a signature nonce; False when it was used before (a replay, or a redelivery already recorded)."""
    session.execute(delete(WebhookNonce).where(WebhookNonce.seen_at < now - keep))
    seen = select(WebhookNonce.id).where(WebhookNonce.provider == provider, WebhookNonce.nonce == value)
    if session.scalar(seen) is not None:
        return False
    session.add(WebhookNonce(provider=provider, nonce=value, seen_at=now))
    session.flush()  # a concurrent use of the same nonce fails here, on the unique constraint
    return True

"""`POST /webhooks/ses`: Amazon SES bounce and complaint notifications, delivered by an SNS topic.

Give SNS the URL `<base_url>/webhooks/ses` as an HTTPS subscription of the topic SES publishes to, and put
the topic's ARN in [webhooks] ses_topic_arns: a valid SNS signature only proves that *some* SNS topic sent
the message, and anyone can make one. The subscription confirms itself (we fetch its SubscribeURL once
the signature and topic check out). Both SES formats are read: notifications (`notificationType`) and
event publishing (`eventType`). A delivery is found by X-Newsletter-Delivery in the original headers
(turn on "include original headers"), else by Message-ID, else by the recipient's latest email.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from newsletter.errors import WebhookError
from newsletter.feedback.report import COMPLAINT, SOFT_BOUNCE, FeedbackReport, bounce_kind, clean_recipient, one_line
from newsletter.feedback.webhooks import WebhookResult, not_configured, parse_json, record_reports
from newsletter.feedback.webhooks.sns import SnsVerifier, checked_sns_url
from newsletter.message import DELIVERY_HEADER
from newsletter.project import Project

VERIFIER = SnsVerifier()


def allowed_topics(project: Project) -> set[str]:
    return set(re.split(r"[\s,]+", project.settings.webhooks.ses_topic_arns.strip())) - {""}


def handle_ses(
    project: Project, body: bytes, headers: Mapping[str, str], now: datetime, verifier: SnsVerifier | None = None
) -> WebhookResult:
    """Verify an SNS message and act on it: confirm a subscription, or record the SES notification it carries."""
    verifier = verifier or VERIFIER  # one process-wide certificate cache
    topics = allowed_topics(project)
    if not topics:
        raise not_configured("ses", "[webhooks] ses_topic_arns")
    message = parse_json(body, "ses")
    if not isinstance(message, dict):
        raise WebhookError("ses webhook: expected an SNS message (a JSON object)", status=400)
    verifier.verify(message, now)
    if message.get("TopicArn") not in topics:
        raise WebhookError(f"ses webhook: topic {str(message.get('TopicArn'))[:200]!r} is not allowed", status=403)
    kind = message.get("Type")
    if kind == "SubscriptionConfirmation":
        verifier.fetch(checked_sns_url(message.get("SubscribeURL"), "SubscribeURL"))
        return WebhookResult(note="subscription confirmed")
    if kind != "Notification":
        return WebhookResult(ignored=1, note=f"{kind} needs nothing from us")
    try:
        notification = json.loads(str(message.get("Message", "")))
    except ValueError:
        raise WebhookError("ses webhook: the notification's Message is not JSON", status=400) from None
    if not isinstance(notification, dict):
        raise WebhookError("ses webhook: the notification's Message is not a JSON object", status=400)
    reports = ses_reports(notification, str(message.get("MessageId", "")))
    return record_reports(project, reports, now=now, ignored=0 if reports else 1)


def ses_reports(notification: dict[str, Any], sns_message_id: str) -> list[FeedbackReport]:
    """The bounce or complaint in one SES notification, one report per recipient."""
    kind = notification.get("notificationType") or notification.get("eventType")
    mail = notification.get("mail") or {}
    headers = {str(h.get("name", "")).lower(): str(h.get("value", "")) for h in mail.get("headers") or []}
    common = mail.get("commonHeaders") or {}
    message_ids = tuple(dict.fromkeys(i for i in (headers.get("message-id"), common.get("messageId")) if i))
    delivery = headers.get(DELIVERY_HEADER.lower(), "")
    anchors: dict[str, Any] = {
        "message_ids": message_ids,
        "header_delivery_id": int(delivery) if delivery.isdigit() else None,
        "authenticated": True,
    }
    if kind == "Bounce":
        bounce = notification.get("bounce") or {}
        permanent = bounce.get("bounceType") == "Permanent"
        feedback_id = bounce.get("feedbackId") or sns_message_id
        reports = []
        for number, recipient in enumerate(bounce.get("bouncedRecipients") or [], start=1):
            status = str(recipient.get("status") or "")
            reports.append(
                FeedbackReport(
                    kind=bounce_kind(status, permanent=True) if permanent else SOFT_BOUNCE,
                    external_id=f"ses:{feedback_id}:{number}",
                    source="ses",
                    recipient=clean_recipient(str(recipient.get("emailAddress", ""))),
                    status=status,
                    diagnostic=one_line(recipient.get("diagnosticCode") or bounce.get("bounceSubType") or ""),
                    **anchors,
                )
            )
        return reports
    if kind == "Complaint":
        complaint = notification.get("complaint") or {}
        if complaint.get("complaintFeedbackType") == "not-spam":
            return []
        feedback_id = complaint.get("feedbackId") or sns_message_id
        return [
            FeedbackReport(
                kind=COMPLAINT,
                external_id=f"ses:{feedback_id}:{number}",
                source="ses",
                recipient=clean_recipient(str(recipient.get("emailAddress", ""))),
                diagnostic=one_line(complaint.get("complaintFeedbackType") or "complaint"),
                **anchors,
            )
            for number, recipient in enumerate(complaint.get("complainedRecipients") or [], start=1)
        ]
    return []

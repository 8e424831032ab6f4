"""Record one feedback report against its delivery, once, and act on it: the one door every source goes through.

    hard bounce   the reader is suppressed at once (status bounced; the address joins the suppression list)
    soft bounce   counted; soft bounces on 3 of the reader's last 5 sent emails suppress as a hard one does
    complaint     the reader is unsubscribed at once and the address suppressed

The delivery is found by, in order: the signed bounce address (VERP), our Message-ID, the
X-Newsletter-Delivery header when the report's recipient is that delivery's reader, and, for sources that
authenticated themselves (webhooks), the recipient's latest sent delivery. A report that matches none is
"unmatched" and changes nothing: a bounce mailbox accepts mail from anyone. Every report carries an
external id (the provider's event id, or a hash of the bounce message); the same id a second time is
"duplicate" and changes nothing either, which makes every source safe to redeliver.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.feedback.report import COMPLAINT, HARD_BOUNCE, SOFT_BOUNCE, FeedbackReport
from newsletter.feedback.suppression import suppress
from newsletter.models import Delivery, Feedback, Subscriber
from newsletter.project import Project
from newsletter.subscribers import cancel_pending, find_subscriber, record_event, unsubscribe

RECORDED, DUPLICATE, UNMATCHED = "recorded", "duplicate", "unmatched"
_STILL_MAILED = ("pending", "active", "paused", "completed")


@dataclass(frozen=True)
class Recorded:
    """What became of a report: `outcome` recorded / duplicate / unmatched; `action` what it did to the reader."""

    outcome: str
    kind: str
    action: str = ""  # "suppressed", "unsubscribed", "counted", or "" when nothing more was needed


def record_report(session: Session, project: Project, report: FeedbackReport, *, now: datetime) -> Recorded:
    """Store the report and apply its consequence, in the caller's transaction."""
    if _seen(session, report.external_id):
        return Recorded(DUPLICATE, report.kind)
    delivery = find_delivery(session, report)
    if delivery is None:
        return Recorded(UNMATCHED, report.kind)
    subscriber = session.get(Subscriber, delivery.subscriber_id)
    assert subscriber is not None  # deliveries are deleted with their subscriber
    row = Feedback(
        external_id=report.external_id,
        source=report.source,
        kind=report.kind,
        delivery_id=delivery.id,
        subscriber_id=subscriber.id,
        status=report.status[:16],
        diagnostic=report.diagnostic,
        reported_at=report.reported_at,
        recorded_at=now,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # another process recorded the same report a moment ago
        return Recorded(DUPLICATE, report.kind)
    return Recorded(RECORDED, report.kind, _act(session, project, subscriber, report, now))


def _seen(session: Session, external_id: str) -> bool:
    return session.scalar(select(Feedback.id).where(Feedback.external_id == external_id)) is not None


def find_delivery(session: Session, report: FeedbackReport) -> Delivery | None:
    """The delivery the report is about, by the strongest anchor it carries; None when it names none of ours."""
    if report.verp_delivery_id is not None:
        delivery = session.get(Delivery, report.verp_delivery_id)
        if delivery is not None:
            return delivery
    if report.message_ids:
        delivery = session.scalars(
            select(Delivery).where(Delivery.message_id.in_(report.message_ids)).order_by(Delivery.id).limit(1)
        ).first()
        if delivery is not None:
            return delivery
    if report.header_delivery_id is not None and report.recipient:
        delivery = session.get(Delivery, report.header_delivery_id)
        if delivery is not None:
            subscriber = session.get(Subscriber, delivery.subscriber_id)
            if subscriber is not None and subscriber.email == report.recipient:
                return delivery
    if report.authenticated and report.recipient:
        subscriber = find_subscriber(session, report.recipient)
        if subscriber is not None:
            return session.scalars(
                select(Delivery)
                .where(Delivery.subscriber_id == subscriber.id, Delivery.sent_at.is_not(None))
                .order_by(Delivery.sent_at.desc(), Delivery.id.desc())
                .limit(1)
            ).first()
    return None


def _act(session: Session, project: Project, subscriber: Subscriber, report: FeedbackReport, now: datetime) -> str:
    settings = project.settings
    if report.kind == COMPLAINT:
        unsubscribed = subscriber.status != "unsubscribed"
        unsubscribe(session, project, subscriber, now=now, source=report.source)
        suppress(session, settings, subscriber.email, reason="complaint", source=report.source, now=now)
        return "unsubscribed" if unsubscribed else ""
    if report.kind == SOFT_BOUNCE and not _too_many_soft_bounces(session, project, subscriber):
        return "counted"
    reason = "hard_bounce" if report.kind == HARD_BOUNCE else "soft_bounces"
    newly = suppress(session, settings, subscriber.email, reason=reason, source=report.source, now=now)
    if subscriber.status in _STILL_MAILED:
        cancel_pending(session, subscriber)
        subscriber.status, subscriber.updated_at = "bounced", now
        subscriber.paused_at = subscriber.pause_until = None
        limits = settings.bounces
        why = report.diagnostic or report.status or report.kind
        if report.kind == SOFT_BOUNCE:
            why = f"{limits.soft_bounce_limit} of the last {limits.soft_bounce_window} emails soft-bounced: {why}"
        record_event(session, subscriber, "bounced", source=report.source, at=now, detail=why[:1000])
        return "suppressed"
    return "suppressed" if newly else ""


def _too_many_soft_bounces(session: Session, project: Project, subscriber: Subscriber) -> bool:
    """Whether soft bounces hit at least `soft_bounce_limit` of the reader's last `soft_bounce_window` sent emails."""
    limits = project.settings.bounces
    recent = (
        select(Delivery.id)
        .where(Delivery.subscriber_id == subscriber.id, Delivery.sent_at.is_not(None))
        .order_by(Delivery.sent_at.desc(), Delivery.id.desc())
        .limit(limits.soft_bounce_window)
        .subquery()
    )
    bounced = session.scalar(
        select(func.count(func.distinct(Feedback.delivery_id))).where(
            Feedback.kind == SOFT_BOUNCE, Feedback.delivery_id.in_(select(recent.c.id))
        )
    )
    return (bounced or 0) >= limits.soft_bounce_limit

"""What an operator asks of the ledger: where the course stands, which deliveries exist, and retry.

    status_report     subscribers by status; per lesson sent / due / later / failed / held and the readers
                      who unsubscribed right after it; the oldest overdue delivery; the latest errors
    ledger_gauges     the counts `/metrics` exports
    list_deliveries   ledger rows, filtered by status ("retry": pending again after a failed attempt) or address
    retry_deliveries  failed and held rows back to pending, due now

Every function takes `now`; nothing here reads the clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from newsletter.dispatch import may_receive
from newsletter.errors import NewsletterError
from newsletter.metrics import LedgerGauges
from newsletter.models import CONFIRMATION_WEEK, DELIVERY_STATUSES, SUBSCRIBER_STATUSES, Delivery, Event, Subscriber
from newsletter.planning import CONFIRMATION_SLUG
from newsletter.project import Project
from newsletter.subscribers import get_subscriber

RECENT_ERRORS = 10
DELIVERY_FILTERS = (*DELIVERY_STATUSES, "retry")
RETRYABLE = ("failed", "held")
# subscribers.create_subscriber writes this detail when an address arrives already suppressed (an imported
# suppression list): such a reader never unsubscribed after a lesson, so the funnel leaves them out.
SUPPRESSED_ON_ADD = "added as suppressed"


@dataclass(frozen=True)
class LessonLine:
    """One row of the course funnel; week 0 is the confirmation email."""

    week: int
    slug: str
    sent: int = 0
    sending: int = 0
    due: int = 0  # pending and due now (overdue included)
    later: int = 0  # pending and due in the future
    failed: int = 0
    held: int = 0
    unsubscribed_after: int = 0  # readers who unsubscribed while this was the last lesson they had


@dataclass(frozen=True)
class DeliveryRow:
    """One ledger row as an operator reads it."""

    id: int
    email: str
    week: int
    slug: str
    status: str
    due_at: datetime
    attempts: int
    sent_at: datetime | None
    updated_at: datetime
    smtp_reply: str | None
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in asdict(self).items()}


@dataclass(frozen=True)
class StatusReport:
    generated_at: datetime
    subscribers: dict[str, int]
    deliveries: dict[str, int]
    lessons: list[LessonLine]
    oldest_overdue: DeliveryRow | None
    next_due: DeliveryRow | None
    recent_errors: list[DeliveryRow] = field(default_factory=list)

    @property
    def overdue_seconds(self) -> float:
        if self.oldest_overdue is None:
            return 0.0
        return max(0.0, (self.generated_at - self.oldest_overdue.due_at).total_seconds())

    def as_json(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at.isoformat(),
            "subscribers": self.subscribers,
            "deliveries": self.deliveries,
            "lessons": [asdict(line) for line in self.lessons],
            "oldest_overdue": self.oldest_overdue.as_json() if self.oldest_overdue else None,
            "overdue_seconds": self.overdue_seconds,
            "next_due": self.next_due.as_json() if self.next_due else None,
            "recent_errors": [row.as_json() for row in self.recent_errors],
        }


@dataclass(frozen=True)
class RetryResult:
    retried: list[DeliveryRow]
    left: list[tuple[DeliveryRow, str]]  # rows not put back, and why


def _rows_query() -> Any:
    return select(
        Delivery.id,
        Subscriber.email,
        Delivery.week,
        Delivery.slug,
        Delivery.status,
        Delivery.due_at,
        Delivery.attempts,
        Delivery.sent_at,
        Delivery.updated_at,
        Delivery.smtp_reply,
        Delivery.error,
    ).join(Subscriber, Subscriber.id == Delivery.subscriber_id)


def _counts(session: Session, column: Any, statuses: tuple[str, ...]) -> dict[str, int]:
    found: dict[str, int] = dict(session.execute(select(column, func.count()).group_by(column)).all())
    return {status: int(found.get(status, 0)) for status in statuses}


def _oldest_due(session: Session, now: datetime) -> DeliveryRow | None:
    query = _rows_query().where(Delivery.status == "pending", Delivery.due_at <= now)
    row = session.execute(query.order_by(Delivery.due_at, Delivery.id).limit(1)).first()
    return DeliveryRow(*row) if row else None


def _funnel(session: Session, project: Project, now: datetime) -> list[LessonLine]:
    by_week: dict[int, Counter[str]] = {}
    slugs = {CONFIRMATION_WEEK: CONFIRMATION_SLUG, **{lesson.week: lesson.slug for lesson in project.series}}
    # One statement, so the due / later split is consistent even under READ COMMITTED.
    due_now = func.sum(case((Delivery.due_at <= now, 1), else_=0))
    ledger = session.execute(
        select(Delivery.week, func.max(Delivery.slug), Delivery.status, func.count(), due_now).group_by(
            Delivery.week, Delivery.status
        )
    )
    for week, slug, status, count, due in ledger:
        slugs.setdefault(week, slug)
        counts = by_week.setdefault(week, Counter())
        if status == "pending":
            counts["due"] += int(due or 0)
            counts["later"] += count - int(due or 0)
        else:
            counts[status] += count
    # Grouped by the column, not by coalesce(week, 0): PostgreSQL takes two bound 0s for two expressions.
    unsubscribes = session.execute(
        select(Event.week, func.count())
        .where(Event.kind == "unsubscribed", Event.detail != SUPPRESSED_ON_ADD)
        .group_by(Event.week)
    )
    for event_week, count in unsubscribes:
        week = event_week or 0
        slugs.setdefault(week, f"week {week}")
        by_week.setdefault(week, Counter())["unsubscribed_after"] += count
    lines = []
    for week in sorted(slugs):
        counts = by_week.get(week, Counter())
        fields = ("sent", "sending", "due", "later", "failed", "held", "unsubscribed_after")
        lines.append(LessonLine(week=week, slug=slugs[week], **{name: int(counts[name]) for name in fields}))
    return lines


def status_report(project: Project, now: datetime) -> StatusReport:
    """Where the course stands at `now`, read in one transaction."""
    with project.db.reading() as session:
        subscribers = _counts(session, Subscriber.status, SUBSCRIBER_STATUSES)
        deliveries = _counts(session, Delivery.status, DELIVERY_STATUSES)
        lessons = _funnel(session, project, now)
        oldest = _oldest_due(session, now)
        upcoming = session.execute(
            _rows_query()
            .where(Delivery.status == "pending", Delivery.due_at > now)
            .order_by(Delivery.due_at, Delivery.id)
            .limit(1)
        ).first()
        errors = session.execute(
            _rows_query()
            .where(Delivery.error.is_not(None), Delivery.status.in_(("failed", "held", "pending")))
            .order_by(Delivery.updated_at.desc(), Delivery.id.desc())
            .limit(RECENT_ERRORS)
        )
        return StatusReport(
            generated_at=now,
            subscribers=subscribers,
            deliveries=deliveries,
            lessons=lessons,
            oldest_overdue=oldest,
            next_due=DeliveryRow(*upcoming) if upcoming else None,
            recent_errors=[DeliveryRow(*row) for row in errors],
        )


def ledger_gauges(project: Project, now: datetime) -> LedgerGauges:
    """Deliveries and subscribers by status, and how late the oldest due delivery is, for `/metrics`."""
    with project.db.reading() as session:
        oldest = _oldest_due(session, now)
        return LedgerGauges(
            reachable=True,
            deliveries=_counts(session, Delivery.status, DELIVERY_STATUSES),
            subscribers=_counts(session, Subscriber.status, SUBSCRIBER_STATUSES),
            oldest_due_seconds=max(0.0, (now - oldest.due_at).total_seconds()) if oldest else 0.0,
        )


def list_deliveries(
    project: Project, status: str | None = None, email: str | None = None, limit: int | None = 50
) -> list[DeliveryRow]:
    """Ledger rows: pending ones soonest first, the rest newest first; status "retry" is pending after a failure."""
    if status is not None and status not in DELIVERY_FILTERS:
        raise NewsletterError(f"delivery status {status!r} is unknown; expected one of {', '.join(DELIVERY_FILTERS)}")
    with project.db.session() as session:
        query = _rows_query()
        if email is not None:
            query = query.where(Delivery.subscriber_id == get_subscriber(session, email).id)
        if status == "retry":
            query = query.where(Delivery.status == "pending", Delivery.attempts > 0)
        elif status is not None:
            query = query.where(Delivery.status == status)
        if status in ("pending", "retry", "sending"):
            query = query.order_by(Delivery.due_at, Delivery.id)
        else:
            query = query.order_by(Delivery.updated_at.desc(), Delivery.id.desc())
        return [DeliveryRow(*row) for row in session.execute(query.limit(limit))]


def _why_not(delivery: Delivery, subscriber: Subscriber) -> str | None:
    """Why the dispatcher would not send this row again, or None when it would."""
    if not may_receive(delivery.week, subscriber.status):
        return f"the subscriber is {subscriber.status}"
    return None


def retry_deliveries(
    project: Project, *, now: datetime, email: str | None = None, all_failed: bool = False
) -> RetryResult:
    """Put failed and held deliveries (of one address, or all of them) back to pending, due at `now`.

    Attempts start again from zero and the row keeps its Message-ID. Rows the dispatcher would not send
    (the reader unsubscribed, bounced or paused) stay as they are and are reported.
    """
    if (email is None) == (not all_failed):
        raise NewsletterError("retry needs exactly one of an address or all failed deliveries")
    with project.db.session() as session:
        query = select(Delivery, Subscriber).join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        query = query.where(Delivery.status.in_(RETRYABLE))
        if email is not None:
            query = query.where(Delivery.subscriber_id == get_subscriber(session, email).id)
        retried: list[DeliveryRow] = []
        left: list[tuple[DeliveryRow, str]] = []
        for delivery, subscriber in session.execute(query.order_by(Delivery.id).with_for_update()):
            reason = _why_not(delivery, subscriber)
            if reason is None:
                delivery.status, delivery.due_at, delivery.attempts = "pending", now, 0
                delivery.lease_owner = delivery.lease_until = delivery.smtp_started_at = None
                delivery.updated_at = now
            row = DeliveryRow(
                delivery.id,
                subscriber.email,
                delivery.week,
                delivery.slug,
                delivery.status,
                delivery.due_at,
                delivery.attempts,
                delivery.sent_at,
                delivery.updated_at,
                delivery.smtp_reply,
                delivery.error,
            )
            if reason is None:
                retried.append(row)
            else:
                left.append((row, reason))
    return RetryResult(retried=retried, left=left)

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

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.counts import deliveries_by_lesson, deliveries_by_status, subscribers_by_status
from newsletter.errors import NewsletterError
from newsletter.ledger.operator import RETRYABLE, put_back, why_not_retried
from newsletter.ledger.waiting import Gate, file_gates
from newsletter.metrics import LedgerGauges
from newsletter.models import (
    CONFIRMATION,
    DELIVERY_STATUSES,
    SUBSCRIBER_STATUSES,
    Delivery,
    DomainPause,
    Event,
    HoldReason,
    Subscriber,
)
from newsletter.project import Project

RECENT_ERRORS = 10
# The latest errors are read backwards from the partial index of rows with an error, keeping the rows in
# these statuses. Written as the statuses left out: `status IN (…)` let SQLite's planner pick the
# (status, due_at) index instead and read every pending row (1 s at a million readers) to sort them.
ERROR_STATUSES = ("failed", "held", "pending")
_NOT_ERROR_STATUSES = tuple(status for status in DELIVERY_STATUSES if status not in ERROR_STATUSES)
DELIVERY_FILTERS = (*DELIVERY_STATUSES, "retry")
# subscribers.create_subscriber writes this detail when an address arrives already suppressed (an imported
# suppression list): such a reader never unsubscribed after a lesson, so the funnel leaves them out.
SUPPRESSED_ON_ADD = "added as suppressed"


@dataclass(frozen=True)
class LessonLine:
    """One row of the course funnel: position 0 is the confirmation email, None a lesson no longer in the course."""

    position: int | None
    lesson: str
    sent: int = 0
    sending: int = 0
    due: int = 0  # pending and due now (overdue included)
    later: int = 0  # pending and due in the future
    failed: int = 0
    held: int = 0
    unsubscribed_after: int = 0  # readers who unsubscribed while this was the last lesson they had
    held_because: str = ""  # why its deliveries are held when the lesson may not go out (draft, checklist…)


@dataclass(frozen=True)
class DeliveryRow:
    """One ledger row as an operator reads it."""

    id: int
    email: str
    lesson: str
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
class PausedDomain:
    """A recipient domain that asked us to slow down: its readers' rows wait until `until`."""

    domain: str
    until: datetime
    strikes: int  # pauses in a row; each doubles the next
    reply: str  # what its server said

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "until": self.until.isoformat()}


@dataclass(frozen=True)
class StatusReport:
    generated_at: datetime
    subscribers: dict[str, int]
    deliveries: dict[str, int]
    lessons: list[LessonLine]
    oldest_overdue: DeliveryRow | None
    next_due: DeliveryRow | None
    recent_errors: list[DeliveryRow] = field(default_factory=list)
    paused_domains: list[PausedDomain] = field(default_factory=list)

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
            "paused_domains": [pause.as_json() for pause in self.paused_domains],
        }


@dataclass(frozen=True)
class RetryResult:
    retried: list[DeliveryRow]
    left: list[tuple[DeliveryRow, str]]  # rows not put back, and why


def _subscriber_id(session: Session, email: str) -> int:
    from newsletter.subscribers import get_subscriber  # address checks (email_validator): not for `status`

    return get_subscriber(session, email).id


def _rows_query() -> Any:
    return select(
        Delivery.id,
        Subscriber.email,
        Delivery.lesson,
        Delivery.status,
        Delivery.due_at,
        Delivery.attempts,
        Delivery.sent_at,
        Delivery.updated_at,
        Delivery.smtp_reply,
        Delivery.error,
    ).join(Subscriber, Subscriber.id == Delivery.subscriber_id)


def _every(statuses: tuple[str, ...], found: dict[str, int]) -> dict[str, int]:
    return {status: found.get(status, 0) for status in statuses}


def _oldest_due(session: Session, now: datetime) -> DeliveryRow | None:
    query = _rows_query().where(Delivery.status == "pending", Delivery.due_at <= now)
    row = session.execute(query.order_by(Delivery.due_at, Delivery.id).limit(1)).first()
    return DeliveryRow(*row) if row else None


def _held_for(session: Session, slug: str, reason: HoldReason) -> bool:
    """Whether some row of the lesson is held for this reason (read off the (lesson, status, due_at) index)."""
    query = select(Delivery.id).where(Delivery.lesson == slug, Delivery.status == "held", Delivery.hold == reason)
    return session.execute(query.limit(1)).first() is not None


def _funnel(session: Session, project: Project, now: datetime) -> tuple[list[LessonLine], dict[str, int]]:
    """The course funnel, and the ledger's rows by status (the funnel's columns added up)."""
    series = project.series
    positions: dict[str, int | None] = {CONFIRMATION: 0, **{lesson.slug: lesson.week for lesson in series}}
    counts: dict[str, Counter[str]] = {name: Counter() for name in positions}
    by_status: Counter[str] = Counter()
    held: list[tuple[str, str]] = []  # (slug in the ledger, lesson) of rows held
    # From the counts the database keeps (newsletter/counts.py), in one statement: the due / later split is
    # consistent even under READ COMMITTED.
    for slug, found in deliveries_by_lesson(session, now).items():
        name = slug if slug == CONFIRMATION else (series.identity(slug) or slug)
        line = counts.setdefault(name, Counter())
        positions.setdefault(name, None)
        due = found.pop("due", 0)
        if found.get("held"):
            held.append((slug, name))
        for status, count in found.items():
            by_status[status] += count
            if status == "pending":
                line["due"] += due
                line["later"] += count - due
            else:
                line[status] += count
    unsubscribes = session.execute(
        select(Event.lesson, func.count())
        .where(Event.kind == "unsubscribed", Event.detail != SUPPRESSED_ON_ADD)
        .group_by(Event.lesson)
    )
    for lesson, count in unsubscribes:
        name = CONFIRMATION if lesson is None else (series.identity(lesson) or lesson)
        positions.setdefault(name, None)
        counts.setdefault(name, Counter())["unsubscribed_after"] += count
    # Which lessons are drafts or broken, their files say. Whether an email fails the checklist, the rows say:
    # the sender holds a failing lesson's rows with that reason. Asking the checklist again would render every
    # email, most of the time `status` took; `newsletter check` does that.
    gates = file_gates(series, project.settings.root)
    for slug, name in held:
        if name not in gates and _held_for(session, slug, "checklist"):
            gates[name] = Gate("checklist", "")
    fields = ("sent", "sending", "due", "later", "failed", "held", "unsubscribed_after")
    ordered = sorted(positions, key=lambda name: (positions[name] is None, positions[name] or 0, name))
    lines = [
        LessonLine(
            position=positions[name],
            lesson=name,
            held_because=gates[name].reason if name in gates else "",
            **{field_name: int(counts[name][field_name]) for field_name in fields},
        )
        for name in ordered
    ]
    return lines, {status: int(by_status[status]) for status in DELIVERY_STATUSES}


def status_report(project: Project, now: datetime) -> StatusReport:
    """Where the course stands at `now`, read in one transaction."""
    with project.db.reading() as session:
        subscribers = _every(SUBSCRIBER_STATUSES, subscribers_by_status(session))
        lessons, deliveries = _funnel(session, project, now)
        oldest = _oldest_due(session, now)
        upcoming = session.execute(
            _rows_query()
            .where(Delivery.status == "pending", Delivery.due_at > now)
            .order_by(Delivery.due_at, Delivery.id)
            .limit(1)
        ).first()
        errors = session.execute(  # from the end of the partial index of rows with an error
            _rows_query()
            .where(Delivery.error.is_not(None), Delivery.status.not_in(_NOT_ERROR_STATUSES))
            .order_by(Delivery.updated_at.desc(), Delivery.id.desc())
            .limit(RECENT_ERRORS)
        )
        paused = session.execute(
            select(DomainPause.domain, DomainPause.until, DomainPause.strikes, DomainPause.reply)
            .where(DomainPause.until > now)
            .order_by(DomainPause.until, DomainPause.domain)
        )
        return StatusReport(
            generated_at=now,
            subscribers=subscribers,
            deliveries=deliveries,
            lessons=lessons,
            oldest_overdue=oldest,
            next_due=DeliveryRow(*upcoming) if upcoming else None,
            recent_errors=[DeliveryRow(*row) for row in errors],
            paused_domains=[PausedDomain(*row) for row in paused],
        )


def ledger_gauges(project: Project, now: datetime) -> LedgerGauges:
    """Deliveries and subscribers by status, and how late the oldest due delivery is, for `/metrics`."""
    with project.db.reading() as session:
        oldest = _oldest_due(session, now)
        return LedgerGauges(
            reachable=True,
            deliveries=_every(DELIVERY_STATUSES, deliveries_by_status(session)),
            subscribers=_every(SUBSCRIBER_STATUSES, subscribers_by_status(session)),
            oldest_due_seconds=max(0.0, (now - oldest.due_at).total_seconds()) if oldest else 0.0,
        )


def list_deliveries(
    project: Project, status: str | None = None, email: str | None = None, limit: int | None = 50
) -> list[DeliveryRow]:
    """Ledger rows: pending ones soonest first, the rest newest first; status "retry" is pending after a failure."""
    if status is not None and status not in DELIVERY_FILTERS:
        raise NewsletterError(f"delivery status {status!r} is unknown; expected one of {', '.join(DELIVERY_FILTERS)}")
    with project.db.reading() as session:
        query = _rows_query()
        if email is not None:
            query = query.where(Delivery.subscriber_id == _subscriber_id(session, email))
        if status == "retry":
            query = query.where(Delivery.status == "pending", Delivery.attempts > 0)
        elif status is not None:
            query = query.where(Delivery.status == status)
        if status in ("pending", "retry", "sending"):
            query = query.order_by(Delivery.due_at, Delivery.id)
        else:
            query = query.order_by(Delivery.updated_at.desc(), Delivery.id.desc())
        return [DeliveryRow(*row) for row in session.execute(query.limit(limit))]


def retry_deliveries(
    project: Project, *, now: datetime, email: str | None = None, all_failed: bool = False
) -> RetryResult:
    """Put failed and held deliveries (of one address, or all of them) back to pending, due at `now`.

    Attempts start again from zero and the row keeps its Message-ID. Rows the dispatcher would not send
    (the reader unsubscribed, bounced or paused; the lesson is a draft or fails the checklist) stay as
    they are and are reported.
    """
    if (email is None) == (not all_failed):
        raise NewsletterError("retry needs exactly one of an address or all failed deliveries")
    with project.db.session() as session:
        query = select(Delivery, Subscriber).join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        query = query.where(Delivery.status.in_(RETRYABLE))
        if email is not None:
            query = query.where(Delivery.subscriber_id == _subscriber_id(session, email))
        retried: list[DeliveryRow] = []
        left: list[tuple[DeliveryRow, str]] = []
        for delivery, subscriber in session.execute(query.order_by(Delivery.id).with_for_update()):
            reason = why_not_retried(delivery, subscriber, project.gates)
            if reason is None:
                put_back(delivery, now)
            row = DeliveryRow(
                delivery.id,
                subscriber.email,
                delivery.lesson,
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

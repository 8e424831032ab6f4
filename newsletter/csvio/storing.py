"""The batched bulk insert behind `import_subscribers`: checked rows in, subscribers planned as one would be.

It is `subscribers.create_subscriber` for many at once (tests/test_csvio.py holds the two to the same
result): a new subscriber has no history, so what planning would query is known, and one statement per
table instead of several per row is what lets large files import quickly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table
from sqlalchemy.orm import Session

from newsletter.csvio.bulk import BulkInsert, ids_by_email
from newsletter.csvio.report import ImportReport
from newsletter.csvio.rows import ImportRow, Suppression
from newsletter.feedback.suppression import suppressed_among
from newsletter.message import message_id_for
from newsletter.models import CONFIRMATION, Delivery, Event, Subscriber
from newsletter.planning import Progress, next_send
from newsletter.schedule import Cadence

if TYPE_CHECKING:
    from newsletter.project import Project

PLANS_REMEMBERED = 50_000
Decided = tuple[ImportRow, Suppression | None]  # a row, and whether (and why) it is suppressed
SUBSCRIBERS, EVENTS, DELIVERIES = (cast(Table, model.__table__) for model in (Subscriber, Event, Delivery))


class BatchStore:
    """Inserts batches of checked rows, multi-row INSERTs per table; known addresses count as unchanged.

    The rows go to the driver through `bulk.BulkInsert`, and what a row comes to (its status, first
    lesson and events) is worked out once per distinct state, schedule and place in the course.
    """

    def __init__(self, project: Project, report: ImportReport, now: datetime) -> None:
        self._project = project
        self._report = report
        self._now = now
        self._plans: dict[tuple[str, Cadence, int, Suppression | None], _Plan] = {}
        self._inserts: tuple[BulkInsert, BulkInsert, BulkInsert] | None = None

    def add(self, session: Session, batch: list[Decided]) -> None:
        """Store the new rows of a batch, each with the suppression `importing.suppression_for` decided."""
        report, now = self._report, self._now
        connection = session.connection()
        fresh = self._fresh(session, batch)
        if not fresh:
            return
        subscribers, events, deliveries = self._statements(connection)
        rows = [(row, self._plan(row, suppression, deliveries)) for row, suppression in fresh]
        at = subscribers.bind("created_at", now)  # the same for every table's timestamps
        values = [_subscriber(row, plan, at, subscribers) for row, plan in rows]
        inserted = subscribers.run(connection, values, returning="email, id")
        ids: dict[str, int] = dict(inserted)
        if report.first_added_id is None:
            report.first_added_id = min(ids.values())
        event_rows: list[tuple[Any, ...]] = []
        delivery_rows: list[tuple[Any, ...]] = []
        settings, slug = self._project.settings, self._project.series.slug
        for row, plan in rows:
            subscriber_id = ids[row.email]
            last = plan.last_lesson
            event_rows.extend((subscriber_id, kind, at, "import", last, detail) for kind, detail in plan.events)
            if plan.status == "pending":
                message_id = message_id_for(settings, slug, subscriber_id, "confirm1")
                confirmation = (CONFIRMATION, at, at, "pending", None, 0, message_id, None, at, at)
                delivery_rows.append((subscriber_id, *confirmation))
            elif plan.lesson is not None:
                delivery_rows.append((subscriber_id, *plan.lesson))
            if plan.suppression is not None:
                report.suppressed[plan.suppression.because] += 1
        events.run(connection, event_rows)
        deliveries.run(connection, delivery_rows)
        report.added += len(fresh)

    def _statements(self, connection: Connection) -> tuple[BulkInsert, BulkInsert, BulkInsert]:
        if self._inserts is None:
            self._inserts = (
                BulkInsert(connection, SUBSCRIBERS, SUBSCRIBER_COLUMNS),
                BulkInsert(connection, EVENTS, EVENT_COLUMNS),
                BulkInsert(connection, DELIVERIES, DELIVERY_COLUMNS),
            )
        return self._inserts

    def _fresh(self, session: Session, batch: list[Decided]) -> list[Decided]:
        """The batch's rows with new addresses; repeated, known and suppressed ones go to the report."""
        report = self._report
        emails = [row.email for row, _ in batch]
        known = ids_by_email(session.connection(), SUBSCRIBERS, emails)
        suppressed = suppressed_among(session, self._project.settings, emails)  # never mailed again: "unchanged"
        fresh: list[Decided] = []
        first_line: dict[str, int] = {}
        for decided in batch:
            row = decided[0]
            email = row.email
            subscriber_id = known.get(email)
            if email in first_line:
                report.reject(row.line, f"duplicate of line {first_line[email]} ({email})")
                continue
            first_line[email] = row.line
            if subscriber_id is None and email not in suppressed:
                fresh.append(decided)
            elif subscriber_id is not None and subscriber_id >= (report.first_added_id or subscriber_id + 1):
                report.reject(row.line, f"duplicate of an earlier line ({email}), already imported by this run")
            else:
                report.unchanged += 1
        return fresh

    def _plan(self, row: ImportRow, suppression: Suppression | None, deliveries: BulkInsert) -> _Plan:
        """What storing this row comes to; the same for every row of its state, schedule, place and reason."""
        key = (row.status, row.cadence, row.position, suppression)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= PLANS_REMEMBERED:
                self._plans.clear()
            plan = self._plans[key] = self._new_plan(row, suppression, deliveries)
        return plan

    def _new_plan(self, row: ImportRow, suppression: Suppression | None, deliveries: BulkInsert) -> _Plan:
        project, now = self._project, self._now
        series = project.series
        position = min(row.position, len(series))
        last = series.lessons[position - 1].slug if position else None
        if suppression is not None:
            # A tool's reason is kept in the trail; the engine's own status column says no more than the status.
            detail = f"added as suppressed: {row.reason}" if row.reason else "added as suppressed"
            events = ((suppression.status, detail),)
            return _Plan(suppression.status, position, last, suppression, events, None, False)
        planned = next_send(project.settings, series, progress=Progress(last), cadence=row.cadence, now=now)
        # Readers who finished the course elsewhere are "completed": lessons appended later reach them.
        status = "completed" if row.status == "active" and planned is None else row.status
        lesson = None
        if status == "active" and planned is not None:
            gate = project.gates.get(planned.lesson.slug)
            bind = deliveries.bind
            due, at = bind("due_at", planned.due_at), bind("created_at", now)
            state, hold, error = ("held", gate.reason, gate.detail) if gate else ("pending", None, None)
            lesson = (planned.lesson.slug, due, due, state, hold, 0, None, error, at, at)
        confirmed = row.status in ("active", "paused")
        return _Plan(status, position, last, None, _EVENTS[row.status], lesson, confirmed)


@dataclass(frozen=True)
class _Plan:
    """What storing a row comes to: its status and place, why it is suppressed, its events, its first lesson."""

    status: str
    position: int
    last_lesson: str | None
    suppression: Suppression | None
    events: tuple[tuple[str, str], ...]  # the events `create_subscriber` records, in order: (kind, detail)
    lesson: tuple[Any, ...] | None  # the next lesson's delivery row after its subscriber id, for active readers
    confirmed: bool  # confirmed by the operator: `confirmed_at` is the import's time


# In each table's own order (`BulkInsert` checks). The first delivery is the confirmation or the next lesson.
SUBSCRIBER_COLUMNS = (
    "email",
    "name",
    "timezone",
    "weekday",
    "send_time",
    "status",
    "last_lesson",
    "position",
    "hard_bounces",
    "source",
    "created_at",
    "confirmed_at",
    "paused_at",
    "unsubscribed_at",
    "updated_at",
)
EVENT_COLUMNS = ("subscriber_id", "kind", "at", "source", "lesson", "detail")
DELIVERY_COLUMNS = (
    "subscriber_id",
    "lesson",
    "slot_at",
    "due_at",
    "status",
    "hold",
    "attempts",
    "message_id",
    "error",
    "created_at",
    "updated_at",
)
_EVENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "pending": (("subscribed", ""),),
    "active": (("subscribed", ""), ("confirmed", "confirmed by the operator")),
    "paused": (("subscribed", ""), ("confirmed", "confirmed by the operator"), ("paused", "")),
}


def _subscriber(row: ImportRow, plan: _Plan, at: Any, subscribers: BulkInsert) -> tuple[Any, ...]:
    """The subscriber's row in SUBSCRIBER_COLUMNS; `at` is the import's time as the driver takes it."""
    cadence = row.cadence
    return (
        row.email,
        row.name,
        cadence.timezone,
        cadence.weekday,
        subscribers.bind("send_time", cadence.send_time),
        plan.status,
        plan.last_lesson,
        plan.position,
        0,
        "import",
        subscribers.bind("created_at", row.signed_up) if row.signed_up else at,
        at if plan.confirmed else None,
        at if plan.status == "paused" else None,
        at if plan.suppression is not None else None,
        at,
    )

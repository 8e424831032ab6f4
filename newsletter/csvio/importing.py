"""Import subscribers from CSV: columns, validation, and a batched bulk insert that streams the file.

Import is idempotent: an address already in the database is left exactly as it is and counted "unchanged".
Every good row is imported; every bad row is reported with its line number and the reason, and the rest go
on. Rows are read, checked and committed a batch at a time, so memory stays flat for any size of file and
an interrupted import can simply be run again. The first `MAX_REPORTED_ROWS` rejected rows are listed one
by one; beyond that they are counted.

A `status` column can only make a row more careful than `confirmed=` would: `unsubscribed` and `bounced`
rows are stored suppressed (nothing is sent); `pending` stays pending; `active`, `completed` and `paused`
count as confirmed only with `confirmed=True`, else they get a confirmation email like any new address.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from newsletter.csvio.exporting import COLUMNS, unescape_formula
from newsletter.csvio.reading import Record, detect_encoding, read_records, sniff_delimiter
from newsletter.errors import SubscriberError
from newsletter.feedback import consent
from newsletter.feedback.suppression import suppressed_among
from newsletter.lessons import Series
from newsletter.message import message_id_for
from newsletter.models import CONFIRMATION, SUBSCRIBER_STATUSES, Delivery, Event, Subscriber
from newsletter.planning import NextSend, Progress, next_send
from newsletter.subscribers import ValidSubscriber, clean_name, normalise_email, resolve_cadence

if TYPE_CHECKING:
    from newsletter.project import Project

BATCH_SIZE = 1000
MAX_REPORTED_ROWS = 10_000
# Header spellings people use, after lower-casing and dropping everything but letters.
_ALIASES = {"emailaddress": "email", "zone": "timezone", "day": "weekday", "sendtime": "time"}
# A physical line that looks like a whole row of its own (an address, separators): swallowed by a stray quote.
_LOOKS_LIKE_A_ROW = re.compile(r"[^\s,;\t\"]+@[^\s,;\t\"]+\s*[,;\t]")


@dataclass(frozen=True)
class RejectedRow:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class ImportRow:
    line: int
    subscriber: ValidSubscriber
    status: str
    position: int


@dataclass
class ImportReport:
    encoding: str
    rows: int = 0
    added: int = 0
    unchanged: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    rejected_unlisted: int = 0  # rejected rows beyond MAX_REPORTED_ROWS, counted only
    ignored_columns: list[str] = field(default_factory=list)
    first_added_id: int | None = None  # ids from here on, made by this import, tell later duplicates apart

    @property
    def rejected_count(self) -> int:
        return len(self.rejected) + self.rejected_unlisted

    def reject(self, line: int, reason: str) -> None:
        if len(self.rejected) < MAX_REPORTED_ROWS:
            self.rejected.append(RejectedRow(line, reason))
        else:
            self.rejected_unlisted += 1


def import_subscribers(
    project: Project,
    path: Path,
    *,
    confirmed: bool,
    now: datetime,
    encoding: str | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import a CSV file: add the new addresses, leave known ones alone, report bad rows by line.

    `progress(bytes_read, file_size)` is called after each committed batch.
    """
    try:
        raw = path.open("rb")
    except OSError as error:
        raise SubscriberError(f"{path}: cannot read: {error.strerror}") from None
    with raw:
        try:
            used = detect_encoding(raw, encoding)
        except SubscriberError as error:
            raise SubscriberError(f"{path}: {error}") from None
        size = path.stat().st_size
        report = ImportReport(encoding=used)
        text = io.TextIOWrapper(raw, encoding=used, newline="")
        rows = _valid_rows(text, project, confirmed, report, str(path))
        while batch := list(islice(rows, batch_size)):
            with project.db.session() as session:
                _store_batch(session, project, batch, now, report)
            if progress is not None:
                progress(raw.tell(), size)
    report.rejected.sort(key=lambda rejected: rejected.line)  # duplicates are found after the rest of their batch
    return report


def _valid_rows(
    text: Iterable[str], project: Project, confirmed: bool, report: ImportReport, source_name: str
) -> Iterator[ImportRow]:
    """Every good row of the file in order; bad ones go to the report (duplicates are caught when stored)."""
    lines = iter(text)
    first = next(lines, "").removeprefix("\ufeff")
    header: list[str] = []
    columns: dict[str, int] = {}

    def is_genuine(cells: list[str], swallowed: list[str]) -> bool:
        # A quoted value may span lines (notes in another tool's export; validation then refuses one in a
        # column of ours, saying why), but not when the record is wider than the header or took lines that
        # look like rows of their own: that is a quote left open, swallowing the rows after it.
        if not header or len(cells) > len(header):
            return False
        return not any(_LOOKS_LIKE_A_ROW.search(line) for line in swallowed)

    records = read_records(chain([first], lines), sniff_delimiter(first), is_genuine)
    found = next((record for record in records if record.problem or any(cell.strip() for cell in record.cells)), None)
    if found is None or found.problem:
        _columns([], found.line if found else 1, source_name, report)  # raises: no header
        return
    header = found.cells
    columns = _columns(header, found.line, source_name, report)
    for record in records:
        if record.problem:
            report.rows += 1
            report.reject(record.line, record.problem)
        elif any(cell.strip() for cell in record.cells):
            report.rows += 1
            row = _row(record, header, columns, project, confirmed, report)
            if row is not None:
                yield row


def _row(
    record: Record, header: list[str], columns: dict[str, int], project: Project, confirmed: bool, report: ImportReport
) -> ImportRow | None:
    cells = record.cells
    if len(cells) > len(header) and any(cell.strip() for cell in cells[len(header) :]):
        report.reject(
            record.line, f"has {len(cells)} fields but the header names {len(header)}; quote a value with a comma"
        )
        return None
    values = {name: unescape_formula(cells[index]) if index < len(cells) else "" for name, index in columns.items()}
    row, reasons = _validate_row(values, project, confirmed, record.line)
    if reasons or row is None:
        report.reject(record.line, "; ".join(reasons))
        return None
    return row


def _store_batch(
    session: Session, project: Project, batch: list[ImportRow], now: datetime, report: ImportReport
) -> None:
    """Insert the batch's new addresses with three multi-row INSERTs; count the known ones as unchanged.

    This is `subscribers.create_subscriber` for many at once (tests/test_subscribers.py holds the two to the
    same result): a new subscriber has no history, so what planning would query is known, and one statement
    per table instead of several per row is what lets large files import quickly.
    """
    emails = [row.subscriber.email for row in batch]
    known = dict(session.execute(select(Subscriber.email, Subscriber.id).where(Subscriber.email.in_(emails))).all())
    suppressed = suppressed_among(session, project.settings, emails)  # never mailed again: counted "unchanged"
    fresh: dict[str, ImportRow] = {}
    first_line: dict[str, int] = {}
    for row in batch:
        email = row.subscriber.email
        subscriber_id = known.get(email)
        if email in first_line:
            report.reject(row.line, f"duplicate of line {first_line[email]} ({email})")
            continue
        first_line[email] = row.line
        if subscriber_id is None and email not in suppressed:
            fresh[email] = row
        elif subscriber_id is not None and report.first_added_id is not None and subscriber_id >= report.first_added_id:
            report.reject(row.line, f"duplicate of an earlier line ({email}), already imported by this run")
        else:
            report.unchanged += 1
    if not fresh:
        return
    series = project.series
    nexts = {row.line: _next_lesson(project, row, now) for row in fresh.values()}
    statuses = {row.line: _initial_status(row, nexts[row.line]) for row in fresh.values()}
    inserted = session.execute(
        insert(Subscriber).returning(Subscriber.email, Subscriber.id),
        [_subscriber_values(row, statuses[row.line], now, series) for row in fresh.values()],
    )
    ids: dict[str, int] = dict(inserted.all())
    if report.first_added_id is None:
        report.first_added_id = min(ids.values())
    deliveries: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for row in fresh.values():
        subscriber_id, status = ids[row.subscriber.email], statuses[row.line]
        last = _last_lesson(series, row)
        events.extend(_event_values(subscriber_id, kind, last, now, detail) for kind, detail in _EVENTS[row.status])
        delivery = _first_delivery(project, subscriber_id, status, nexts[row.line], now)
        if delivery is not None:
            deliveries.append(delivery)
    session.execute(insert(Event), events)
    if deliveries:
        session.execute(insert(Delivery), deliveries)
    report.added += len(fresh)


# The events `create_subscriber` records for each starting status, in order: (kind, detail).
_EVENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "pending": (("subscribed", ""),),
    "active": (("subscribed", ""), ("confirmed", "confirmed by the operator")),
    "paused": (("subscribed", ""), ("confirmed", "confirmed by the operator"), ("paused", "")),
    "unsubscribed": (("unsubscribed", "added as suppressed"),),
    "bounced": (("bounced", "added as suppressed"),),
}


def _last_lesson(series: Series, row: ImportRow) -> str | None:
    """The lesson a reader imported at `position` last received (their place in the course)."""
    position = min(row.position, len(series))
    return series.lessons[position - 1].slug if position else None


def _next_lesson(project: Project, row: ImportRow, now: datetime) -> NextSend | None:
    progress = Progress(_last_lesson(project.series, row))
    return next_send(project.settings, project.series, progress=progress, cadence=row.subscriber.cadence, now=now)


def _initial_status(row: ImportRow, planned: NextSend | None) -> str:
    if row.status == "active" and planned is None:
        return "completed"  # they finished the course elsewhere; appended lessons will reach them
    return row.status


def _subscriber_values(row: ImportRow, status: str, now: datetime, series: Series) -> dict[str, Any]:
    valid, confirmed = row.subscriber, row.status in ("active", "paused")
    return {
        "email": valid.email,
        "name": valid.name,
        "timezone": valid.cadence.timezone,
        "weekday": valid.cadence.weekday,
        "send_time": valid.cadence.send_time,
        "status": status,
        "position": min(row.position, len(series)),
        "last_lesson": _last_lesson(series, row),
        "hard_bounces": 0,
        "source": "import",
        "created_at": now,
        "confirmed_at": now if confirmed else None,
        "paused_at": now if status == "paused" else None,
        "pause_until": None,
        "unsubscribed_at": now if status in ("unsubscribed", "bounced") else None,
        "updated_at": now,
    }


def _event_values(subscriber_id: int, kind: str, lesson: str | None, now: datetime, detail: str) -> dict[str, Any]:
    return {
        "subscriber_id": subscriber_id,
        "kind": kind,
        "at": now,
        "source": "import",
        "lesson": lesson,
        "detail": detail,
    }


def _first_delivery(
    project: Project, subscriber_id: int, status: str, planned: NextSend | None, now: datetime
) -> dict[str, Any] | None:
    """The row planning would write first: the confirmation (pending) or the next lesson (active)."""
    settings, series = project.settings, project.series
    gate = None
    if status == "pending":
        lesson, due = CONFIRMATION, now
        message_id = message_id_for(settings, series.slug, subscriber_id, "confirm1")
    elif status == "active" and planned is not None:
        lesson, due, message_id = planned.lesson.slug, planned.due_at, None
        gate = project.gates.get(lesson)
    else:
        return None
    return {
        "subscriber_id": subscriber_id,
        "lesson": lesson,
        "slot_at": due,
        "due_at": due,
        "status": "held" if gate else "pending",
        "hold": gate.reason if gate else None,
        "error": gate.detail if gate else None,
        "attempts": 0,
        "message_id": message_id,
        "created_at": now,
        "updated_at": now,
    }


def _columns(header: list[str], line: int, source_name: str, report: ImportReport) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, raw in enumerate(header):
        key = re.sub(r"[^a-z]", "", raw.lower())
        name = _ALIASES.get(key, key)
        if name not in COLUMNS:
            if name not in consent.EXPORT_COLUMN_KEYS:  # the export's consent columns: evidence, not imported
                report.ignored_columns.append(raw.strip())
            continue
        if name in columns:
            raise SubscriberError(f"{source_name} line {line}: the header names the column {name!r} twice")
        columns[name] = index
    if "email" not in columns:
        looks_like_data = any("@" in cell for cell in header)
        hint = f" (line {line} looks like data, not a header)" if looks_like_data else ""
        raise SubscriberError(
            f"{source_name} line {line or 1}: no header row naming an `email` column{hint}; "
            "the first line must name the columns, such as: email,name,timezone,weekday,time"
        )
    return columns


def _validate_row(
    values: dict[str, str], project: Project, confirmed: bool, line: int
) -> tuple[ImportRow | None, list[str]]:
    """Check each field on its own, so one report lists everything wrong with the row."""
    reasons: list[str] = []
    email = name = ""
    try:
        email = normalise_email(values["email"])
    except SubscriberError as error:
        reasons.append(str(error))
    try:
        name = clean_name(values.get("name", ""))
    except SubscriberError as error:
        reasons.append(str(error))
    cadence = None
    parts = {"timezone": values.get("timezone") or None, "weekday": values.get("weekday") or None}
    parts["send_time"] = values.get("time") or None
    for part, value in parts.items():
        try:
            resolve_cadence(project.settings, **{part: value})
        except SubscriberError as error:
            reasons.append(str(error))
    if not reasons:
        cadence = resolve_cadence(project.settings, **parts)
    status, position = _status_and_position(values, confirmed, reasons)
    if reasons or cadence is None:
        return None, reasons
    return ImportRow(line, ValidSubscriber(email=email, name=name, cadence=cadence), status, position), reasons


def _status_and_position(values: dict[str, str], confirmed: bool, reasons: list[str]) -> tuple[str, int]:
    given = values.get("status", "").strip().lower()
    if given and given not in SUBSCRIBER_STATUSES:
        reasons.append(f"status {given!r}: expected one of {', '.join(SUBSCRIBER_STATUSES)}")
    if given in ("unsubscribed", "bounced", "pending"):
        status = given
    elif given == "paused" and confirmed:
        status = "paused"
    else:
        status = "active" if confirmed else "pending"
    raw_position = values.get("position", "").strip() or "0"
    if not raw_position.isdigit():
        reasons.append(f"position {raw_position!r}: expected a whole number of lessons already sent, 0 or more")
        return status, 0
    return status, int(raw_position)

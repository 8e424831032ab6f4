"""Subscribers in and out of CSV files.

Columns are named by a header row, in any order and any case: `email` (required), `name`, `timezone`,
`weekday`, `time`, and the two that export adds so that an export re-imports as it was, `status` and
`position`. Export also writes the consent evidence (`feedback.consent.EXPORT_COLUMNS`), which import reads
past. Empty cells take the [schedule] defaults. The separator is whichever of comma, semicolon or tab
the header line uses (spreadsheets in many locales write semicolons).

Encoding, decided: a byte-order mark wins (UTF-8, UTF-16 LE or BE); NUL bytes without a BOM mean UTF-16;
otherwise the file is UTF-8 if it decodes as UTF-8, else Windows-1252 (what spreadsheets on Windows write;
its printable characters include all of Latin-1's). `encoding=` overrides the guess.

Import is idempotent: an address already in the database is left exactly as it is and counted "unchanged".
Every good row is imported; every bad row is reported with its line number and the reason, and the rest go
on. Rows are committed in batches, so a large file imports quickly and an interrupted import can be re-run.

A `status` column can only make a row more careful than `confirmed=` would: `unsubscribed` and `bounced`
rows are stored suppressed (nothing is sent); `pending` stays pending; `active`, `completed` and `paused`
count as confirmed only with `confirmed=True`, else they get a confirmation email like any new address.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, cast

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from newsletter.errors import SubscriberError
from newsletter.feedback import consent
from newsletter.feedback.suppression import suppressed_among
from newsletter.lessons import Series
from newsletter.message import message_id_for
from newsletter.models import CONFIRMATION_WEEK, SUBSCRIBER_STATUSES, Delivery, Event, Subscriber
from newsletter.planning import CONFIRMATION_SLUG
from newsletter.schedule import WEEKDAY_NAMES, first_lesson_due, next_slot_after
from newsletter.subscribers import ValidSubscriber, clean_name, normalise_email, resolve_cadence

if TYPE_CHECKING:
    from newsletter.project import Project

COLUMNS = ("email", "name", "timezone", "weekday", "time", "status", "position")
BATCH_SIZE = 1000
# Header spellings people use, after lower-casing and dropping everything but letters.
_ALIASES = {"emailaddress": "email", "zone": "timezone", "day": "weekday", "sendtime": "time"}
# A cell starting with one of these runs as a formula when a spreadsheet opens the file (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_DELIMITERS = (",", ";", "\t")


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
    ignored_columns: list[str] = field(default_factory=list)


def decode(data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """Return (text, encoding used) by the rules in the module docstring."""
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise SubscriberError(f"encoding {encoding!r} is unknown; try utf-8, utf-16 or cp1252") from None
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError as error:
            raise SubscriberError(f"not {encoding} text: {error.reason} at byte {error.start}") from None
    for bom, name in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return decode(data, name)[0], name
    if b"\x00" in data[:4096]:
        name = "utf-16-le" if data[1:2] == b"\x00" else "utf-16-be"
        return decode(data, name)[0], name
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def parse_import(
    text: str, project: Project, *, confirmed: bool, source_name: str = "the file"
) -> tuple[list[ImportRow], ImportReport]:
    """Validate every row; return the good rows and a report holding the bad ones."""
    report = ImportReport(encoding="")
    records = _records(text)
    header_line, header = next(((line, cells) for line, cells in records if any(c.strip() for c in cells)), (0, []))
    columns = _columns(header, header_line, source_name, report)
    good: list[ImportRow] = []
    first_line_of: dict[str, int] = {}
    for line, cells in records:
        if not any(cell.strip() for cell in cells):
            continue
        report.rows += 1
        if len(cells) > len(header) and any(cell.strip() for cell in cells[len(header) :]):
            report.rejected.append(
                RejectedRow(
                    line, f"has {len(cells)} fields but the header names {len(header)}; quote a value with a comma"
                )
            )
            continue
        values = {name: _unescape(cells[index]) if index < len(cells) else "" for name, index in columns.items()}
        row, reasons = _validate_row(values, project, confirmed, line)
        if row is not None and row.subscriber.email in first_line_of:
            reasons.append(f"duplicate of line {first_line_of[row.subscriber.email]} ({row.subscriber.email})")
        if reasons or row is None:
            report.rejected.append(RejectedRow(line, "; ".join(reasons)))
            continue
        first_line_of[row.subscriber.email] = line
        good.append(row)
    return good, report


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
    """Import a CSV file: add the new addresses, leave known ones alone, report bad rows by line."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SubscriberError(f"{path}: cannot read: {error.strerror}") from None
    try:
        text, used = decode(data, encoding)
    except SubscriberError as error:
        raise SubscriberError(f"{path}: {error}") from None
    rows, report = parse_import(text, project, confirmed=confirmed, source_name=str(path))
    report.encoding = used
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        with project.db.session() as session:
            added = _store_batch(session, project, batch, now)
        report.added += added
        report.unchanged += len(batch) - added
        if progress is not None:
            progress(start + len(batch), len(rows))
    return report


def _store_batch(session: Session, project: Project, batch: list[ImportRow], now: datetime) -> int:
    """Insert the batch's new addresses with three multi-row INSERTs; return how many were new.

    This is `subscribers.create_subscriber` for many at once (tests/test_subscribers.py holds the two to the
    same result): a new subscriber has no history, so what planning would query is known, and one statement
    per table instead of several per row is what lets 100,000 rows import in seconds.
    """
    emails = [row.subscriber.email for row in batch]
    known = set(session.scalars(select(Subscriber.email).where(Subscriber.email.in_(emails))))
    known |= suppressed_among(session, project.settings, emails)  # never mailed again: counted "unchanged"
    fresh = [row for row in batch if row.subscriber.email not in known]
    if not fresh:
        return 0
    series = project.series
    statuses = {row.line: _initial_status(row, series) for row in fresh}
    inserted = session.execute(
        insert(Subscriber).returning(Subscriber.email, Subscriber.id),
        [_subscriber_values(row, statuses[row.line], now) for row in fresh],
    )
    ids: dict[str, int] = dict(inserted.all())
    deliveries: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for row in fresh:
        subscriber_id, status = ids[row.subscriber.email], statuses[row.line]
        events.extend(
            _event_values(subscriber_id, kind, row.position, now, detail) for kind, detail in _EVENTS[row.status]
        )
        delivery = _first_delivery(project, row, subscriber_id, status, now)
        if delivery is not None:
            deliveries.append(delivery)
    session.execute(insert(Event), events)
    if deliveries:
        session.execute(insert(Delivery), deliveries)
    return len(fresh)


# The events `create_subscriber` records for each starting status, in order: (kind, detail).
_EVENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "pending": (("subscribed", ""),),
    "active": (("subscribed", ""), ("confirmed", "confirmed by the operator")),
    "paused": (("subscribed", ""), ("confirmed", "confirmed by the operator"), ("paused", "")),
    "unsubscribed": (("unsubscribed", "added as suppressed"),),
    "bounced": (("bounced", "added as suppressed"),),
}


def _initial_status(row: ImportRow, series: Series) -> str:
    if row.status == "active" and series.week(row.position + 1) is None:
        return "completed"  # they finished the course elsewhere; appended lessons will reach them
    return row.status


def _subscriber_values(row: ImportRow, status: str, now: datetime) -> dict[str, Any]:
    valid, confirmed = row.subscriber, row.status in ("active", "paused")
    return {
        "email": valid.email,
        "name": valid.name,
        "timezone": valid.cadence.timezone,
        "weekday": valid.cadence.weekday,
        "send_time": valid.cadence.send_time,
        "status": status,
        "position": row.position,
        "hard_bounces": 0,
        "source": "import",
        "created_at": now,
        "confirmed_at": now if confirmed else None,
        "paused_at": now if status == "paused" else None,
        "pause_until": None,
        "unsubscribed_at": now if status in ("unsubscribed", "bounced") else None,
        "updated_at": now,
    }


def _event_values(subscriber_id: int, kind: str, week: int, now: datetime, detail: str) -> dict[str, Any]:
    return {"subscriber_id": subscriber_id, "kind": kind, "at": now, "source": "import", "week": week, "detail": detail}


def _first_delivery(
    project: Project, row: ImportRow, subscriber_id: int, status: str, now: datetime
) -> dict[str, Any] | None:
    """The row planning would write first: the confirmation (pending) or the next lesson (active)."""
    settings, series, cadence = project.settings, project.series, row.subscriber.cadence
    if status == "pending":
        week, slug, due, key = CONFIRMATION_WEEK, CONFIRMATION_SLUG, now, "confirm1"
    elif status == "active":
        lesson = series.week(row.position + 1)
        assert lesson is not None  # _initial_status made it "completed" otherwise
        first = cast(Literal["next_slot", "immediately"], settings.schedule.first_lesson)
        due = first_lesson_due(cadence, now, first) if row.position == 0 else next_slot_after(cadence, now)
        week, slug, key = lesson.week, lesson.slug, f"w{lesson.week}"
    else:
        return None
    return {
        "subscriber_id": subscriber_id,
        "week": week,
        "slug": slug,
        "slot_at": due,
        "due_at": due,
        "status": "pending",
        "attempts": 0,
        "message_id": message_id_for(settings, series.slug, subscriber_id, key),
        "created_at": now,
        "updated_at": now,
    }


def export_subscribers(session: Session, stream: TextIO, *, status: str | None = None) -> int:
    """Write every subscriber (or those in one status) as CSV that `import_subscribers` reads back; return the count."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(COLUMNS + consent.EXPORT_COLUMNS)
    query = (
        select(Subscriber, *consent.export_columns()).order_by(Subscriber.id).execution_options(yield_per=BATCH_SIZE)
    )
    if status is not None:
        query = query.where(Subscriber.status == status)
    count = 0
    for subscriber, *evidence in session.execute(query):
        writer.writerow(
            (
                _escape(subscriber.email),
                _escape(subscriber.name),
                subscriber.timezone,
                WEEKDAY_NAMES[subscriber.weekday],
                f"{subscriber.send_time:%H:%M}",
                subscriber.status,
                subscriber.position,
                *(_escape(cell) for cell in consent.export_cells(*evidence)),
            )
        )
        count += 1
    return count


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (line where the record starts, cells); a quoted value may span lines."""
    first_line = text.lstrip("\ufeff\r\n").split("\n", 1)[0]
    delimiter = max(_DELIMITERS, key=first_line.count) if any(d in first_line for d in _DELIMITERS) else ","
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), delimiter=delimiter)
    start = 1
    for cells in reader:
        yield start, cells
        start = reader.line_num + 1


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


def _escape(value: str) -> str:
    """Keep a spreadsheet from running a cell as a formula; `_unescape` restores the value exactly."""
    return "'" + value if value.startswith((*_FORMULA_STARTS, "'")) else value


def _unescape(value: str) -> str:
    if value.startswith("'") and value[1:].startswith((*_FORMULA_STARTS, "'")):
        return value[1:]
    return value

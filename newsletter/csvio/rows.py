"""One CSV record checked into an `ImportRow`: each field on its own, so one report lists all that is wrong.

The engine's own columns are the operator's to fix, so every bad value rejects its row. In a tool's export
(`presets.py`) the address, the name and the state are checked as strictly, but a time zone that is no IANA
name gives the row the [schedule] default, and a sign-up date that cannot be read keeps the import's time:
both are counted for the report rather than costing the reader.

The work per row stays small: addresses go through `addresses.checked_address` (each domain is checked
once), and the schedule (zone, weekday, time) is resolved once per distinct combination in the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from operator import itemgetter
from typing import Literal, NamedTuple

from newsletter.config import Settings
from newsletter.csvio.addresses import checked_address
from newsletter.csvio.columns import Layout, read_header
from newsletter.csvio.exporting import unescape_formula
from newsletter.csvio.presets import Preset, ToolStatus, json_fields, read_date
from newsletter.csvio.reading import read_records, sniff_delimiter
from newsletter.csvio.report import ImportReport
from newsletter.errors import SubscriberError
from newsletter.models import SUBSCRIBER_STATUSES, SubscriberStatus
from newsletter.schedule import Cadence, parse_timezone
from newsletter.subscribers import clean_name, resolve_cadence

CADENCES_REMEMBERED = 50_000  # distinct schedules (and tools' zone names) a checker keeps
# A physical line that looks like a whole row of its own (an address, separators): swallowed by a stray quote.
_LOOKS_LIKE_A_ROW = re.compile(r"[^\s,;\t\"]+@[^\s,;\t\"]+\s*[,;\t]")


class ImportRow(NamedTuple):
    """A row ready to store: who, in which state, where in the course, since when, and why it is suppressed."""

    line: int
    email: str
    name: str
    cadence: Cadence
    status: SubscriberStatus
    position: int
    signed_up: datetime | None = None  # from a tool's export; None: the time of the import
    reason: str = ""  # why a tool's unsubscribed or bounced row is suppressed, in the tool's words


@dataclass(frozen=True)
class Suppression:
    """A row that must never be sent anything: the status it is stored in, and why."""

    status: Literal["unsubscribed", "bounced"]
    because: str


# The fields a row's cells are read into, in this order (`Layout.fields` says where each one is).
FIELDS = (
    "email",
    "name",
    "first_name",
    "last_name",
    "timezone",
    "weekday",
    "time",
    "status",
    "position",
    "fields_json",
)


class RowChecker:
    """Checks the rows of one file against its layout, remembering what repeats from row to row."""

    def __init__(
        self, settings: Settings, layout: Layout, report: ImportReport, *, confirmed: bool, position: int, now: datetime
    ) -> None:
        self._settings = settings
        self._layout = layout
        self._report = report
        self._confirmed = confirmed
        self._position = position  # for rows that carry no position of their own
        self._default_status: SubscriberStatus = "active" if confirmed else "pending"  # for rows without a status
        self._now = now
        self._cadences: dict[tuple[str, str, str], tuple[Cadence | None, tuple[str, ...]]] = {}
        self._zones: dict[str, str | None] = {}
        # A field the file lacks reads the blank cell that `check` puts after the header's last column.
        self._fields = itemgetter(*(layout.fields.get(field, layout.width) for field in FIELDS))
        self._blanks = [""] * (layout.width + 1)

    def check(self, line: int, cells: list[str]) -> ImportRow | None:
        """The row, or None once its every problem is in the report."""
        width = self._layout.width
        if len(cells) > width:
            if any(cell.strip() for cell in cells[width:]):
                reason = f"has {len(cells)} fields but the header names {width}; quote a value with a comma"
                self._report.reject(line, reason)
                return None
            cells = cells[:width] + self._blanks[:1]
        else:
            cells = cells + self._blanks[len(cells) :]
        preset = self._layout.preset
        row, reasons = self._tool_row(line, cells, preset) if preset else self._own_row(line, cells)
        if row is None:
            self._report.reject(line, "; ".join(reasons))
        return row

    def _own_row(self, line: int, cells: list[str]) -> tuple[ImportRow | None, list[str]]:
        """A row in the engine's columns (what `subscribers export` writes): every bad value is a reason."""
        email, name, first, last, zone, weekday, send_time, status, position, _ = self._fields(cells)
        reasons: list[str] = []
        email = self._checked(checked_address, unescape_formula(email), reasons)
        name = unescape_formula(name)
        if first or last:
            name = _name_text(name, unescape_formula(first), unescape_formula(last))
        name = self._checked(clean_name, name, reasons)
        cadence, problems = self._cadence(zone, weekday, send_time)
        if problems:
            reasons.extend(problems)
        if status or position:
            state, place = self._status_and_position(status, position, reasons)
        else:
            state, place = self._default_status, self._position
        if reasons or cadence is None:
            return None, reasons
        return ImportRow(line, email, name, cadence, state, place), reasons

    def _tool_row(self, line: int, cells: list[str], preset: Preset) -> tuple[ImportRow | None, list[str]]:
        """A row of a tool's export: its words for the state, its sign-up date, its zone if it is a real one."""
        email, full, first, last, zone, _, _, word, _, fields_json = self._fields(cells)
        extra = json_fields(fields_json)
        if extra:  # a tool's JSON column fills in what its own columns leave empty
            full, first, last = (
                own or extra.get(key, "")
                for own, key in zip((full, first, last), ("name", "first_name", "last_name"), strict=True)
            )
            zone = zone or extra.get("timezone", "")
        reasons: list[str] = []
        email = self._checked(checked_address, email, reasons)
        name = self._checked(clean_name, _name_text(full, first, last), reasons)
        cadence, _ = self._cadence(self._tool_zone(zone), "", "")
        standing = self._tool_status(cells, word, preset, reasons)
        if reasons or cadence is None or standing is None:
            return None, reasons
        status: SubscriberStatus = standing.standing
        if status == "active" and not self._confirmed:
            status = "pending"
        signed_up = self._signed_up(cells)
        return ImportRow(line, email, name, cadence, status, self._position, signed_up, standing.reason), reasons

    @staticmethod
    def _checked(check: Callable[[str], str], text: str, reasons: list[str]) -> str:
        """`check(text)`, or "" with what is wrong among the reasons."""
        try:
            return check(text)
        except SubscriberError as error:
            reasons.append(str(error))
            return ""

    def _cadence(self, zone: str, weekday: str, send_time: str) -> tuple[Cadence | None, tuple[str, ...]]:
        """The schedule these three cells give (empty: the default), or why not; resolved once per combination."""
        key = (zone, weekday, send_time)
        found = self._cadences.get(key)
        if found is None:
            found = _resolve_cadence(self._settings, zone, weekday, send_time)
            if len(self._cadences) >= CADENCES_REMEMBERED:
                self._cadences.clear()
            self._cadences[key] = found
        return found

    def _tool_zone(self, text: str) -> str:
        """A tool's time zone if it is an IANA name, else "" (the default), counted for the report."""
        if not text.strip():
            return ""
        if text not in self._zones:
            if len(self._zones) >= CADENCES_REMEMBERED:
                self._zones.clear()
            try:
                self._zones[text] = parse_timezone(text)
            except SubscriberError:
                self._zones[text] = None
        zone = self._zones[text]
        if zone is None:
            self._report.default_zone(text.strip())
            return ""
        return zone

    def _tool_status(self, cells: list[str], word: str, preset: Preset, reasons: list[str]) -> ToolStatus | None:
        if preset.status is None:
            marked = next((state for index, state in self._layout.markers if _filled(cells, index)), None)
            return preset.statuses[marked or self._layout.file_status]
        standing = preset.statuses.get(word.strip().lower())
        if standing is None:
            words = ", ".join(sorted(known for known in preset.statuses if known))
            reasons.append(f"{preset.status} {word!r}: expected one of {words} (the {preset.title} export's words)")
        return standing

    def _signed_up(self, cells: list[str]) -> datetime | None:
        text = next((cells[index] for index in self._layout.signed_up if _filled(cells, index)), "")
        if not text:
            return None
        moment = read_date(text)
        if moment is None or moment > self._now:
            self._report.unread_date(text.strip())
            return None
        return moment

    def _status_and_position(self, given: str, raw_position: str, reasons: list[str]) -> tuple[SubscriberStatus, int]:
        word = given.strip().lower()
        if word and word not in SUBSCRIBER_STATUSES:
            reasons.append(f"status {word!r}: expected one of {', '.join(SUBSCRIBER_STATUSES)}")
        status: SubscriberStatus
        if word in ("unsubscribed", "bounced", "pending"):
            status = word  # type: ignore[assignment]  # checked against the literal's values just above
        elif word == "paused" and self._confirmed:
            status = "paused"
        else:
            status = self._default_status
        number = raw_position.strip()
        if not number:
            return status, self._position
        if not number.isdigit():
            reasons.append(f"position {number!r}: expected a whole number of lessons already sent, 0 or more")
            return status, 0
        return status, int(number)


def _resolve_cadence(
    settings: Settings, zone: str, weekday: str, send_time: str
) -> tuple[Cadence | None, tuple[str, ...]]:
    """Check each part on its own, so that every bad one is named, then the whole."""
    parts = {"timezone": zone or None, "weekday": weekday or None, "send_time": send_time or None}
    reasons: list[str] = []
    for part, value in parts.items():
        try:
            resolve_cadence(settings, **{part: value})
        except SubscriberError as error:
            reasons.append(str(error))
    if reasons:
        return None, tuple(reasons)
    return resolve_cadence(settings, **parts), ()


def _name_text(full: str, first: str, last: str) -> str:
    """The name as given, or first and last name joined; unstripped, so `clean_name` sees every character."""
    if full.strip(" "):
        return full
    return " ".join(part.strip(" ") for part in (first, last) if part.strip())


def _filled(cells: list[str], index: int) -> bool:
    return index < len(cells) and bool(cells[index].strip())


def checked_rows(
    text: Iterable[str],
    settings: Settings,
    report: ImportReport,
    *,
    source_name: str,
    file_name: str,
    confirmed: bool,
    position: int,
    now: datetime,
) -> Iterator[ImportRow]:
    """Every good row of the file in order; bad ones go to the report (duplicates are caught when stored)."""
    lines = iter(text)
    first = next(lines, "").removeprefix("\ufeff")
    header: list[str] = []

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
        read_header([], found.line if found else 1, source_name, file_name)  # raises: no header
        return
    header = found.cells
    layout = read_header(header, found.line, source_name, file_name)
    report.preset = layout.preset.title if layout.preset else None
    report.ignored_columns = layout.ignored
    report.default_timezone = settings.schedule.timezone
    checker = RowChecker(settings, layout, report, confirmed=confirmed, position=position, now=now)
    for record in records:
        if record.problem:
            report.rows += 1
            report.reject(record.line, record.problem)
        elif any(map(str.strip, record.cells)):
            report.rows += 1
            row = checker.check(record.line, record.cells)
            if row is not None:
                yield row

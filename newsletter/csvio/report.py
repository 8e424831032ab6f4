"""What an import did: counts, every rejected row by line, and the few lines that sum up the rest."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from newsletter.csvio.columns import KNOWN_COLUMNS

MAX_REPORTED_ROWS = 10_000
MAX_EXAMPLES = 3


@dataclass(frozen=True)
class RejectedRow:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ImportReport:
    encoding: str
    preset: str | None = None  # the tool whose export the file is ("Mailchimp"), None for the engine's columns
    default_timezone: str = ""
    rows: int = 0
    added: int = 0
    unchanged: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    rejected_unlisted: int = 0  # rejected rows beyond MAX_REPORTED_ROWS, counted only
    ignored_columns: list[str] = field(default_factory=list)
    suppressed: Counter[str] = field(default_factory=Counter)  # added as suppressed, by reason
    zones_defaulted: int = 0  # a tool's time zone that is no IANA name: the row got the default
    zone_examples: list[str] = field(default_factory=list)
    dates_unread: int = 0  # a tool's sign-up date that cannot be read: the row keeps the import time
    date_examples: list[str] = field(default_factory=list)
    first_added_id: int | None = None  # ids from here on, made by this import, tell later duplicates apart

    @property
    def rejected_count(self) -> int:
        return len(self.rejected) + self.rejected_unlisted

    def reject(self, line: int, reason: str) -> None:
        if len(self.rejected) < MAX_REPORTED_ROWS:
            self.rejected.append(RejectedRow(line, reason))
        else:
            self.rejected_unlisted += 1

    def default_zone(self, value: str) -> None:
        self.zones_defaulted += 1
        _remember(self.zone_examples, value)

    def unread_date(self, value: str) -> None:
        self.dates_unread += 1
        _remember(self.date_examples, value)

    def summary(self, file_name: str) -> str:
        """The one line that says what happened to the file."""
        what = f"{self.encoding}, {self.preset} export" if self.preset else self.encoding
        suppressed = sum(self.suppressed.values())
        of_which = f" ({suppressed} suppressed)" if suppressed else ""
        return (
            f"{file_name} ({what}): {self.added} added{of_which}, {self.unchanged} unchanged, "
            f"{self.rejected_count} rejected"
        )

    def notes(self) -> list[str]:
        """One line each for the ignored columns, the defaults a tool's values fell back to, and the suppressed."""
        lines: list[str] = []
        ignored = self.ignored_columns
        if ignored and self.preset:
            lines.append(f"ignored {_count(len(ignored), 'column')} of the {self.preset} export: {', '.join(ignored)}")
        elif ignored:
            quoted = ", ".join(repr(column) for column in ignored)
            known = ", ".join(KNOWN_COLUMNS)
            lines.append(f"ignored {len(ignored)} column(s) {quoted}: known columns are {known}")
        if self.zones_defaulted:
            examples = _examples(self.zone_examples)
            lines.append(
                f"time zone: {_count(self.zones_defaulted, 'row')} named no IANA zone ({examples}) and got the "
                f"default {self.default_timezone}; `newsletter subscribers set EMAIL --timezone` changes one"
            )
        if self.dates_unread:
            lines.append(
                f"sign-up date: {_count(self.dates_unread, 'row')} had a date that cannot be read "
                f"({_examples(self.date_examples)}) and keep the time of this import instead"
            )
        if self.suppressed:
            reasons = "; ".join(f"{count} {reason}" for reason, count in self.suppressed.most_common())
            total = _count(sum(self.suppressed.values()), "row")
            lines.append(f"suppressed {total}, nothing is sent to them: {reasons}")
        return lines


def _remember(examples: list[str], value: str) -> None:
    if len(examples) < MAX_EXAMPLES and value not in examples:
        examples.append(value)


def _examples(values: list[str]) -> str:
    return "such as " + ", ".join(repr(value[:40]) for value in values)


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'s' if number != 1 else ''}"

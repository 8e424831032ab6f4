"""Subscribers in and out of CSV files, in the engine's own columns or as other tools export them.

    reading.py    encodings, separators, and records that survive a broken quote (streamed, flat memory)
    columns.py    the header: which column holds each field; the engine's spellings, or a tool's preset
    presets.py    the exports of Mailchimp, Kit, Substack, listmonk and Buttondown, recognised by their header
    addresses.py  addresses checked exactly as email_validator checks them, each domain once
    rows.py       one record checked into a row to store; every bad value named
    report.py     what an import did, and its summary lines
    importing.py  the import: the file in batches, which rows are suppressed and why, `start_week`
    storing.py    a batch stored as `create_subscriber` would store each row, in one statement per table
    bulk.py       multi-row INSERTs with values bound once per distinct value
    exporting.py  the columns import reads back, with spreadsheet formulas defused

The engine's columns are named by a header row, in any order and any case: `email` (required), `name` (or
`first name` and `last name`), `timezone`, `weekday`, `time`, and the two that export adds so that an export
re-imports as it was, `status` and `position`. Export also writes the consent evidence
(`feedback.consent.EXPORT_COLUMNS`), which import reads past. Empty cells take the [schedule] defaults. The separator is
whichever of comma, semicolon or tab the header line uses (spreadsheets in many locales write semicolons).
"""

from newsletter.csvio.exporting import COLUMNS, export_subscribers
from newsletter.csvio.importing import check_start_week, import_subscribers, suppression_for
from newsletter.csvio.reading import detect_encoding
from newsletter.csvio.report import ImportReport, RejectedRow
from newsletter.csvio.rows import Suppression

__all__ = [
    "COLUMNS",
    "ImportReport",
    "RejectedRow",
    "Suppression",
    "check_start_week",
    "detect_encoding",
    "export_subscribers",
    "import_subscribers",
    "suppression_for",
]

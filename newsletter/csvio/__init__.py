"""Subscribers in and out of CSV files.

    reading.py    encodings, separators, and records that survive a broken quote (streamed, flat memory)
    importing.py  columns, validation and the batched bulk insert; every bad row reported by line
    exporting.py  the columns import reads back, with spreadsheet formulas defused

Columns are named by a header row, in any order and any case: `email` (required), `name`, `timezone`,
`weekday`, `time`, and the two that export adds so that an export re-imports as it was, `status` and
`position`. Export also writes the consent evidence (`feedback.consent.EXPORT_COLUMNS`), which import reads
past. Empty cells take the [schedule] defaults. The separator is whichever of comma, semicolon or tab
the header line uses (spreadsheets in many locales write semicolons).
"""

from newsletter.csvio.exporting import COLUMNS, export_subscribers
from newsletter.csvio.importing import ImportReport, RejectedRow, import_subscribers
from newsletter.csvio.reading import detect_encoding

__all__ = ["COLUMNS", "ImportReport", "RejectedRow", "detect_encoding", "export_subscribers", "import_subscribers"]

"""Import subscribers from CSV: the file streamed in batches, which rows are suppressed and why, and `start_week`.

Import is idempotent: an address already in the database is left exactly as it is and counted "unchanged".
Every good row is imported; every bad row is reported with its line number and the reason, and the rest go
on. Rows are read, checked and committed a batch at a time, so memory stays flat for any size of file and
an interrupted import can simply be run again. The first `MAX_REPORTED_ROWS` rejected rows are listed one
by one; beyond that they are counted.

A `status` column (or a tool's word for a reader's state, `presets.py`) can only make a row more careful
than `confirmed=` would: unsubscribed, cleaned, bounced and complained rows are stored suppressed
(`suppression_for`: nothing is ever sent to them); unconfirmed ones stay pending; readers in good standing
count as confirmed only with `confirmed=True`, else they get a confirmation email like any new address.

`start_week=N` places readers moved from another tool where they were: their next lesson is week N of the
current course, as if weeks 1 to N-1 had been sent (`position` N-1). It applies to rows that carry no
position of their own; N = weeks + 1 means they finished the course.
"""

from __future__ import annotations

import gc
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.csvio.reading import detect_encoding
from newsletter.csvio.report import ImportReport
from newsletter.csvio.rows import ImportRow, Suppression, checked_rows
from newsletter.csvio.storing import BatchStore
from newsletter.errors import SubscriberError
from newsletter.lessons import Series

if TYPE_CHECKING:
    from newsletter.project import Project

BATCH_SIZE = 5000  # rows per transaction: the write lock is held for a fraction of a second


def suppression_for(row: ImportRow) -> Suppression | None:
    """Whether this row is suppressed, and because of what (in the words of the file or tool); None for a reader."""
    if row.status in ("unsubscribed", "bounced"):
        return Suppression(row.status, row.reason or f"status {row.status} in the file")
    return None


def check_start_week(series: Series, week: int) -> int:
    """The position `start_week` gives (weeks before it count as sent); a SubscriberError outside the course."""
    if not 1 <= week <= series.weeks + 1:
        raise SubscriberError(
            f"start week {week}: expected a week of the course, 1 to {series.weeks} "
            f"(or {series.weeks + 1} for readers who finished it)"
        )
    return week - 1


def import_subscribers(
    project: Project,
    path: Path,
    *,
    confirmed: bool,
    now: datetime,
    encoding: str | None = None,
    start_week: int | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import a CSV file: add the new addresses, leave known ones alone, report bad rows by line.

    `progress(bytes_read, file_size)` is called after each committed batch.
    """
    position = check_start_week(project.series, start_week) if start_week is not None else 0
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
        rows = checked_rows(
            text,
            project.settings,
            report,
            source_name=str(path),
            file_name=path.name,
            confirmed=confirmed,
            position=position,
            now=now,
        )
        store = BatchStore(project, report, now)
        with _collecting_per_batch() as collect:
            while batch := list(islice(rows, batch_size)):
                decided = [(row, suppression_for(row)) for row in batch]
                with project.db.session() as session:
                    store.add(session, decided)
                collect()
                if progress is not None:
                    progress(raw.tell(), size)
    report.rejected.sort(key=lambda rejected: rejected.line)  # duplicates are found after the rest of their batch
    return report


@contextmanager
def _collecting_per_batch() -> Iterator[Callable[[], object]]:
    """Pause the cyclic garbage collector for the import, and collect the young objects after each batch.

    A batch is thousands of tuples and strings that reference counting frees; left running, the collector
    would also walk every object the process holds, again and again, for about a tenth of the import's time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield lambda: gc.collect(1)
    finally:
        if was_enabled:
            gc.enable()

"""Subscribers out to CSV, in the columns `import` reads back, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.feedback import consent
from newsletter.models import Subscriber
from newsletter.schedule import WEEKDAY_NAMES

COLUMNS = ("email", "name", "timezone", "weekday", "time", "status", "position")
EXPORT_BATCH = 1000
# A cell starting with one of these runs as a formula when a spreadsheet opens the file (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def export_subscribers(session: Session, stream: TextIO, *, status: str | None = None) -> int:
    """Write every subscriber (or those in one status) as CSV that `import_subscribers` reads back; return the count."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(COLUMNS + consent.EXPORT_COLUMNS)
    query = (
        select(Subscriber, *consent.export_columns()).order_by(Subscriber.id).execution_options(yield_per=EXPORT_BATCH)
    )
    if status is not None:
        query = query.where(Subscriber.status == status)
    count = 0
    for subscriber, *evidence in session.execute(query):
        writer.writerow(
            (
                escape_formula(subscriber.email),
                escape_formula(subscriber.name),
                subscriber.timezone,
                WEEKDAY_NAMES[subscriber.weekday],
                f"{subscriber.send_time:%H:%M}",
                subscriber.status,
                subscriber.position,
                *(escape_formula(cell) for cell in consent.export_cells(*evidence)),
            )
        )
        count += 1
    return count


def escape_formula(value: str) -> str:
    """Keep a spreadsheet from running a cell as a formula; `unescape_formula` restores the value exactly."""
    return "'" + value if value.startswith((*FORMULA_STARTS, "'")) else value


def unescape_formula(value: str) -> str:
    if value.startswith("'") and value[1:].startswith((*FORMULA_STARTS, "'")):
        return value[1:]
    return value

"""Many rows into a table in a few INSERT statements, each value bound as SQLAlchemy would bind it.

SQLAlchemy's executemany converts every value of every row in Python (an aware UTC datetime goes through
two processors on its way to SQLite text), which on a large import costs more than the insert itself, and
a driver's own executemany pays its overhead once per row. Here the statement is compiled once by
SQLAlchemy for the connection's dialect, a column's own bind processor runs once per distinct value
(`BulkInsert.bind`: an import stamps every row with the same `now`, and a file has a handful of
schedules), and the rows go in bulk: on SQLite `ROWS_PER_STATEMENT` rows to a multi-row VALUES list, on
PostgreSQL all of them as one array per column through `unnest` (psycopg rewrites the placeholders of a
statement it has not cached in Python, which for a long VALUES list costs more than the insert). Both
answer with RETURNING.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

from sqlalchemy import Connection, Table, insert

DISTINCT_VALUES_REMEMBERED = 10_000
ROWS_PER_STATEMENT = 500
MAX_PARAMETERS = 32_766  # SQLite's limit on the parameters of one statement
LOOKUP_CHUNK = 5000
# An array casts to VARCHAR, not VARCHAR(320): the column then refuses a value too long instead of cutting it.
_LENGTH = re.compile(r"\(\d+\)")

Processor = Callable[[Any], Any]


class BulkInsert:
    """INSERT INTO `table` (`columns`) for many rows: tuples in the order of `columns`, values from `bind`."""

    def __init__(self, connection: Connection, table: Table, columns: Sequence[str]) -> None:
        dialect = connection.dialect
        self.columns = tuple(columns)
        compiled = insert(table).inline().compile(dialect=dialect, column_keys=list(columns)).string
        head, _, row = compiled.partition(" VALUES ")
        listed = tuple(name.strip('"') for name in head[head.index("(") + 1 : head.rindex(")")].split(", "))
        if listed != self.columns:
            raise ValueError(f"give the columns of {table.name} in the order {', '.join(listed)}")
        self._head, self._row = head, row.strip()
        self._rows_per_statement = min(ROWS_PER_STATEMENT, MAX_PARAMETERS // len(columns))
        self._arrays = ""
        if dialect.name == "postgresql":
            types = [_LENGTH.sub("", table.c[name].type.compile(dialect=dialect)) for name in columns]
            self._arrays = f"{head} SELECT * FROM unnest({', '.join(f'%b::{name}[]' for name in types)})"
        self._statements: dict[tuple[int, str], str] = {}
        self._binders: dict[str, Processor] = {}
        for name in columns:
            processor = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            self._binders[name] = _remembering(processor) if processor is not None else _as_is

    def bind(self, column: str, value: Any) -> Any:
        """`value` as the driver takes it for `column` (a UTC datetime as SQLite text, for one)."""
        return self._binders[column](value)

    def run(self, connection: Connection, rows: Sequence[tuple[Any, ...]], returning: str = "") -> list[Any]:
        """Insert the rows (values through `bind` wherever the column's type converts them).

        With `returning` ("email, id"), the inserted rows' values of those columns, in no particular order.
        """
        tail = f" RETURNING {returning}" if returning else ""
        if self._arrays:
            if not rows:
                return []
            arrays = tuple(list(values) for values in zip(*rows, strict=True))
            result = connection.exec_driver_sql(self._arrays + tail, arrays)
            return list(result.all()) if returning else []
        found: list[Any] = []
        step = self._rows_per_statement
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            parameters = tuple(chain.from_iterable(chunk))
            result = connection.exec_driver_sql(self._statement(len(chunk), tail), parameters)
            if returning:
                found.extend(result.all())
        return found

    def _statement(self, count: int, tail: str) -> str:
        key = (count, tail)
        if key not in self._statements:
            self._statements[key] = f"{self._head} VALUES {', '.join([self._row] * count)}{tail}"
        return self._statements[key]


def ids_by_email(connection: Connection, table: Table, emails: Sequence[str]) -> dict[str, int]:
    """The ids of the rows of `table` with these addresses: one query (on SQLite, per `LOOKUP_CHUNK` of them)."""
    if connection.dialect.name == "postgresql":  # one array parameter, as in BulkInsert
        found = connection.exec_driver_sql(f"SELECT email, id FROM {table.name} WHERE email = ANY(%s)", (list(emails),))
        return dict(found.all())
    ids: dict[str, int] = {}
    for start in range(0, len(emails), LOOKUP_CHUNK):
        chunk = tuple(emails[start : start + LOOKUP_CHUNK])
        marks = ", ".join(["?"] * len(chunk))
        found = connection.exec_driver_sql(f"SELECT email, id FROM {table.name} WHERE email IN ({marks})", chunk)
        ids.update(found.all())
    return ids


def _as_is(value: Any) -> Any:
    return value


def _remembering(processor: Processor) -> Processor:
    """The processor, run once per distinct value (None is passed through, as SQLAlchemy's processors do)."""
    seen: dict[Any, Any] = {}

    def convert(value: Any) -> Any:
        if value is None:
            return None
        try:
            return seen[value]
        except KeyError:
            pass
        if len(seen) >= DISTINCT_VALUES_REMEMBERED:
            seen.clear()
        seen[value] = processed = processor(value)
        return processed

    return convert

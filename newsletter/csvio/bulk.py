"""Many rows into a table in multi-row INSERT statements, each value bound as SQLAlchemy would bind it.

SQLAlchemy's executemany converts every value of every row in Python (an aware UTC datetime goes through
two processors on its way to SQLite text), which on a large import costs more than the insert itself, and
the driver's own executemany pays its per-row overhead once per row. Here the row's placeholders are
compiled once by SQLAlchemy for the connection's dialect (with PostgreSQL's casts), a column's own bind
processor runs once per distinct value (`BulkInsert.bind`: an import stamps every row with the same `now`,
and a file has a handful of schedules), and `ROWS_PER_STATEMENT` rows go in one statement, which SQLite
and PostgreSQL both insert in one go and answer with RETURNING.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, insert

DISTINCT_VALUES_REMEMBERED = 10_000
ROWS_PER_STATEMENT = 500
MAX_PARAMETERS = 32_766  # SQLite's limit on the parameters of one statement (PostgreSQL's is 65,535)
LOOKUP_CHUNK = 5000
# How a driver writes a positional parameter: SQLite's qmark, psycopg's format.
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_NAMED_PARAMETER = re.compile(r"%\((\w+)\)s")

Processor = Callable[[Any], Any]


class BulkInsert:
    """INSERT INTO `table` (`columns`) for many rows: tuples in the order of `columns`, values from `bind`."""

    def __init__(self, connection: Connection, table: Table, columns: Sequence[str]) -> None:
        dialect = connection.dialect
        self.columns = tuple(columns)
        compiled = insert(table).inline().compile(dialect=dialect, column_keys=list(columns)).string
        head, _, values = compiled.partition(" VALUES ")
        named = _NAMED_PARAMETER.findall(values)
        if named:  # psycopg: "%(email)s::VARCHAR" becomes a positional "%s::VARCHAR"
            values = _NAMED_PARAMETER.sub("%s", values)
        order = named or list(columns)
        if tuple(order) != self.columns:
            raise ValueError(f"give the columns of {table.name} in the order {', '.join(order)}")
        self._head, self._row = head, values.strip()
        self._rows_per_statement = min(ROWS_PER_STATEMENT, MAX_PARAMETERS // len(columns))
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
        found: list[Any] = []
        step = self._rows_per_statement
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            parameters = tuple(value for row in chunk for value in row)
            result = connection.exec_driver_sql(self._statement(len(chunk), returning), parameters)
            if returning:
                found.extend(result.all())
        return found

    def _statement(self, count: int, returning: str) -> str:
        key = (count, returning)
        if key not in self._statements:
            tail = f" RETURNING {returning}" if returning else ""
            self._statements[key] = f"{self._head} VALUES {', '.join([self._row] * count)}{tail}"
        return self._statements[key]


def ids_by_email(connection: Connection, table: Table, emails: Sequence[str]) -> dict[str, int]:
    """The ids of the rows of `table` with these addresses, in one query per `LOOKUP_CHUNK` of them."""
    placeholder = _PLACEHOLDERS[connection.dialect.paramstyle]
    ids: dict[str, int] = {}
    for start in range(0, len(emails), LOOKUP_CHUNK):
        chunk = tuple(emails[start : start + LOOKUP_CHUNK])
        marks = ", ".join([placeholder] * len(chunk))
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

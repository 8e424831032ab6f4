"""A batch of rows as one statement: their values joined in from a subquery, not one execution per row.

An `executemany` of an UPDATE runs the statement once per row: on PostgreSQL that is one execution per row
for the server (on the same two cores, in the benchmarks), so a sender's commit of 8 messages ran 8 UPDATEs
to mark them sent and 8 more to mark the next ones on the wire. One statement over all the rows is one
execution: `send --processes 2` on PostgreSQL went from 1,149 to 1,290 msg/s (benchmarks/README.md); on
SQLite, where a statement costs no round trip, it measured the same either way. The rows come in as
`(SELECT :a_row0 AS a, … UNION ALL SELECT :a_row1, …) AS name`: SQLAlchemy caches the compiled form of
that, not of a `VALUES` list (which it compiles anew on every execution), and a subquery rather than a
`WITH` keeps the statement starting with its verb, which is how Python 3.11's sqlite3 knows to report the
rows it changed. A statement is built once per batch size by its caller (`functools.cache`), and
`execute_rows` runs it over at most `MAX_ROWS` rows at a time (SQLite allows 500 parts to a compound SELECT).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Executable, Subquery, bindparam, select, union_all
from sqlalchemy.types import TypeEngine

MAX_ROWS = 100


def rows_subquery(name: str, size: int, columns: Mapping[str, TypeEngine[Any]]) -> Subquery:
    """A subquery of `size` rows of bound values, one column per entry of `columns`, to join a statement on."""
    rows = [
        select(*(bindparam(bound_name(key, n), type_=kind).label(key) for key, kind in columns.items()))
        for n in range(size)
    ]
    return (rows[0] if size == 1 else union_all(*rows)).subquery(name)


def bound_name(key: str, row: int) -> str:
    """The bound parameter of `key` in row `row` of a batch statement (never one of SQLAlchemy's `key_1`)."""
    return f"{key}_row{row}"


def execute_rows(
    connection: Connection,
    statement: Callable[[int], Executable],
    rows: Sequence[Mapping[str, object]],
    **shared: object,
) -> int:
    """Run `statement(size)` over the rows, `MAX_ROWS` at a time, with `shared` parameters; the rows changed."""
    changed = 0
    for start in range(0, len(rows), MAX_ROWS):
        chunk = rows[start : start + MAX_ROWS]
        flat = dict(shared)
        for n, row in enumerate(chunk):
            flat.update((bound_name(key, n), value) for key, value in row.items())
        changed += connection.execute(statement(len(chunk)), flat).rowcount
    return changed

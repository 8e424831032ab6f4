"""The counts the database keeps (migration 0007), checked against counting the tables with plain SQL."""

from __future__ import annotations

from sqlalchemy import Engine, text


def counts_disagreement(engine: Engine) -> str:
    """How the counts the database keeps (migration 0007) differ from counting the tables; "" if they agree."""
    pairs = (
        (
            "SELECT lesson, status, count(*) FROM deliveries GROUP BY lesson, status",
            "SELECT lesson, status, sum(n) FROM delivery_counts GROUP BY lesson, status",
        ),
        (
            "SELECT status, count(*) FROM subscribers GROUP BY status",
            "SELECT status, sum(n) FROM subscriber_counts GROUP BY status",
        ),
    )
    found = []
    with engine.connect() as connection:
        for counted, kept in pairs:
            tables = {tuple(row[:-1]): int(row[-1]) for row in connection.execute(text(counted))}
            counts = {tuple(row[:-1]): int(row[-1]) for row in connection.execute(text(kept)) if row[-1]}
            if tables != counts:
                found.append(f"counted {sorted(tables.items())}, kept {sorted(counts.items())}")
    return "; ".join(found)

"""Index what the reports read: the funnel's (lesson, status, due_at) and the latest errors.

`newsletter status` counts the ledger by lesson and status; with this index that is a walk of the index in
its own order instead of a scan and sort of the whole table. Its "latest errors" are the newest rows with an
error: a partial index holds only those rows, newest last, so the ten newest are read from its end.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

WITH_AN_ERROR = sa.text("error IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_deliveries_lesson_status_due_at", "deliveries", ["lesson", "status", "due_at"])
    op.create_index(
        "ix_deliveries_errors_updated_at",
        "deliveries",
        ["updated_at", "id"],
        sqlite_where=WITH_AN_ERROR,
        postgresql_where=WITH_AN_ERROR,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_errors_updated_at", table_name="deliveries")
    op.drop_index("ix_deliveries_lesson_status_due_at", table_name="deliveries")

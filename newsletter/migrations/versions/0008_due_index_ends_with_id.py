"""The ledger's (status, due_at) index ends with id: the oldest and the next due row are its first entry.

`status`, `deliveries` and `/metrics` ask for pending rows in (due_at, id) order, a few at a time. Readers
share instants (everyone whose slot is Monday 07:00 UTC is due then), and an index of (status, due_at)
gives no order among rows due at the same instant: PostgreSQL read and sorted every row tied at the first
one, 12,502 rows and 30 ms at 100,000 readers, half a second at a million, and more in a backlog, when the
operator looks. SQLite ends every index with the rowid (`id`) anyway; the index is the same there, so the
schema is one.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_status_due_at", table_name="deliveries")
    op.create_index("ix_deliveries_status_due_at", "deliveries", ["status", "due_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_status_due_at", table_name="deliveries")
    op.create_index("ix_deliveries_status_due_at", "deliveries", ["status", "due_at"])

"""Index subscribers on (status, position); it replaces the index on status alone.

A send run looks for completed readers below the last lesson (lessons appended later reach them): with
most of a million readers completed, that was a scan of the status index; now it is one index lookup.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_subscribers_status_position", "subscribers", ["status", "position"])
    op.drop_index("ix_subscribers_status", table_name="subscribers")


def downgrade() -> None:
    op.create_index("ix_subscribers_status", "subscribers", ["status"])
    op.drop_index("ix_subscribers_status_position", table_name="subscribers")

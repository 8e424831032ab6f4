"""A lesson's identity is its slug: the ledger, progress and events keyed by lesson, not by week.

deliveries: `week` goes, `slug` becomes `lesson` (unique per subscriber), and `hold` says why a row is held.
subscribers: `last_lesson` names the last lesson received; `position` stays as its place in the order.
events: `week` becomes `lesson`. course_state: the course the ledger was last planned for.

History is kept whole. Week numbers become slugs from each subscriber's own ledger rows (the slug a row
was sent under), else from the course on disk (the caller passes it as the `course_slugs` attribute, a
callable giving the slugs in week order), so a reader imported at a position keeps it. If a renumbering
once gave a reader the same slug under two weeks, the later row is kept as `<slug>~w<week>`.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_DELIVERY_COLUMNS = (
    "id, subscriber_id, {lesson}, slot_at, due_at, status, attempts, lease_owner, lease_until, message_id, "
    "smtp_started_at, sent_at, smtp_reply, error, created_at, updated_at"
)


_CONSTRAINTS = (
    "ck_deliveries_status",
    "ck_deliveries_hold",
    "fk_deliveries_subscriber_id_subscribers",
    "pk_deliveries",
    "uq_deliveries_subscriber_id_lesson",
)


def _course_slugs() -> list[str]:
    provider: Callable[[], list[str]] | None = context.config.attributes.get("course_slugs")
    return list(provider()) if provider is not None else []


def upgrade() -> None:
    bind = op.get_bind()
    slugs = _course_slugs()

    # Rows that once got one slug under two weeks keep their history under a distinct name.
    op.execute(
        """
        UPDATE deliveries SET slug = slug || '~w' || CAST(week AS VARCHAR(10))
        WHERE EXISTS (
            SELECT 1 FROM deliveries AS earlier
            WHERE earlier.subscriber_id = deliveries.subscriber_id AND earlier.slug = deliveries.slug
              AND earlier.week < deliveries.week
        )
        """
    )

    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("last_lesson", sa.String(length=100), nullable=True))
    op.execute(
        """
        UPDATE subscribers SET last_lesson = (
            SELECT d.slug FROM deliveries AS d WHERE d.subscriber_id = subscribers.id AND d.week = subscribers.position
        )
        WHERE position > 0
        """
    )
    _fill_from_course(bind, "subscribers", "last_lesson", "position", slugs)
    missing = bind.execute(sa.text("SELECT count(*) FROM subscribers WHERE position > 0 AND last_lesson IS NULL"))
    if missing.scalar():
        raise RuntimeError(
            "some subscribers are at a week no ledger row names and the course was not given; run "
            "`newsletter db upgrade` in the project folder, whose lessons say which lesson each week is"
        )

    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("lesson", sa.String(length=100), nullable=True))
    op.execute(
        """
        UPDATE events SET lesson = (
            SELECT d.slug FROM deliveries AS d WHERE d.subscriber_id = events.subscriber_id AND d.week = events.week
        )
        WHERE week > 0
        """
    )
    _fill_from_course(bind, "events", "lesson", "week", slugs)
    with op.batch_alter_table("events") as batch:
        batch.drop_column("week")

    # PostgreSQL names constraints schema-wide: the new table takes interim names until the old one is gone.
    interim = "_new" if bind.dialect.name == "postgresql" else ""
    op.create_table(
        "deliveries_new",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("lesson", sa.String(length=100), nullable=False),
        sa.Column("slot_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("hold", sa.String(length=16), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("smtp_started_at", sa.DateTime(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("smtp_reply", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed', 'held', 'cancelled')",
            name=op.f("ck_deliveries_status" + interim),
        ),
        sa.CheckConstraint(
            "hold IS NULL OR hold IN ('draft', 'checklist', 'broken', 'render', 'relay', 'error')",
            name=op.f("ck_deliveries_hold" + interim),
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_deliveries_subscriber_id_subscribers" + interim),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries" + interim)),
        sa.UniqueConstraint("subscriber_id", "lesson", name=op.f("uq_deliveries_subscriber_id_lesson" + interim)),
    )
    op.execute(
        f"INSERT INTO deliveries_new ({_DELIVERY_COLUMNS.format(lesson='lesson')}) "
        f"SELECT {_DELIVERY_COLUMNS.format(lesson='slug')} FROM deliveries"
    )
    # Rows held before this revision were held for a render error (the only reason there was).
    op.execute("UPDATE deliveries_new SET hold = 'render' WHERE status = 'held'")
    op.drop_index("ix_deliveries_status_due_at", table_name="deliveries")
    op.drop_table("deliveries")
    op.rename_table("deliveries_new", "deliveries")
    if interim:
        for name in _CONSTRAINTS:
            op.execute(f"ALTER TABLE deliveries RENAME CONSTRAINT {name}{interim} TO {name}")
        op.execute("ALTER SEQUENCE deliveries_new_id_seq RENAME TO deliveries_id_seq")
        op.execute("SELECT setval('deliveries_id_seq', COALESCE((SELECT max(id) FROM deliveries), 0) + 1, false)")
    op.create_index("ix_deliveries_status_due_at", "deliveries", ["status", "due_at"])

    op.create_table(
        "course_state",
        sa.Column("series", sa.String(length=100), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("lessons", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("series", name=op.f("pk_course_state")),
    )


def _fill_from_course(bind: sa.Connection, table: str, column: str, week_column: str, slugs: list[str]) -> None:
    for week, slug in enumerate(slugs, start=1):
        bind.execute(
            sa.text(f"UPDATE {table} SET {column} = :slug WHERE {week_column} = :week AND {column} IS NULL"),
            {"slug": slug, "week": week},
        )


def downgrade() -> None:
    raise NotImplementedError(
        "0003 re-keys the ledger by lesson; going back would lose which lesson each row was. Restore the "
        "backup taken before upgrading (README: Backups)."
    )

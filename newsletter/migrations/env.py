"""Alembic environment: runs on the connection `newsletter.db.upgrade` hands over, inside its transaction."""

from __future__ import annotations

from alembic import context

from newsletter.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `newsletter db upgrade`, which supplies the connection")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

"""The append-only event trail: one statement that every change of a subscriber's state records."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, insert

from newsletter.models import Event

EVENTS = cast(Table, Event.__table__)


def record_event(
    connection: Connection,
    subscriber_id: int | None,
    kind: str,
    *,
    source: str,
    at: datetime,
    lesson: str | None = None,
    detail: str = "",
) -> None:
    """Append one event; `lesson` is the subscriber's last lesson when it happened."""
    connection.execute(
        insert(EVENTS).values(
            subscriber_id=subscriber_id, kind=kind, at=at, source=source, lesson=lesson, detail=detail
        )
    )

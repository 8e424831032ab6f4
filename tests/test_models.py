"""The tables on SQLite and PostgreSQL: constraints, the due index, and UTC-aware times."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone

import pytest
from sqlalchemy import delete, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from newsletter.models import Delivery, Event, Subscriber
from newsletter.project import Project

KATHMANDU = timezone(timedelta(hours=5, minutes=45))
DUE_QUERY = "SELECT id FROM deliveries WHERE status = 'pending' AND due_at <= :now ORDER BY due_at LIMIT 100"


def a_subscriber(email: str = "ann@example.com") -> Subscriber:
    return Subscriber(email=email, name="Ann", timezone="Asia/Kathmandu", weekday=4, send_time=time(9, 0))


def a_delivery(subscriber: Subscriber, lesson: str = "muscle", due_at: datetime | None = None) -> Delivery:
    due_at = due_at or datetime(2026, 3, 6, 3, 15, tzinfo=UTC)
    return Delivery(subscriber_id=subscriber.id, lesson=lesson, slot_at=due_at, due_at=due_at)


def test_the_tables_and_their_columns_exist(any_project: Project) -> None:
    inspector = inspect(any_project.db.engine)
    assert {"subscribers", "deliveries", "events", "alembic_version"} <= set(inspector.get_table_names())
    columns = {table: {c["name"] for c in inspector.get_columns(table)} for table in ("subscribers", "deliveries")}
    assert {"email", "timezone", "weekday", "send_time", "status", "position", "last_lesson"} <= columns["subscribers"]
    assert {"lesson", "due_at", "status", "hold", "attempts", "lease_owner", "lease_until", "message_id"} <= (
        columns["deliveries"]
    )
    assert "week" not in columns["deliveries"]


def test_one_delivery_per_subscriber_and_lesson(any_project: Project) -> None:
    with any_project.db.session() as session:
        subscriber = a_subscriber()
        session.add(subscriber)
        session.flush()
        session.add(a_delivery(subscriber, "muscle"))
        session.add(a_delivery(subscriber, "knees"))
    with pytest.raises(IntegrityError), any_project.db.session() as session:
        session.add(a_delivery(session.scalars(select(Subscriber)).one(), "muscle"))
        session.flush()


def test_a_hold_reason_is_checked(any_project: Project) -> None:
    with pytest.raises(IntegrityError), any_project.db.session() as session:
        subscriber = a_subscriber()
        session.add(subscriber)
        session.flush()
        held = a_delivery(subscriber)
        held.status, held.hold = "held", "because"  # type: ignore[assignment]
        session.add(held)
        session.flush()


def test_addresses_are_unique_and_statuses_checked(any_project: Project) -> None:
    with any_project.db.session() as session:
        session.add(a_subscriber())
    with pytest.raises(IntegrityError), any_project.db.session() as session:
        session.add(a_subscriber())
        session.flush()
    with pytest.raises(IntegrityError), any_project.db.session() as session:
        rebel = a_subscriber("bo@example.com")
        rebel.status = "vip"
        session.add(rebel)
        session.flush()


def test_the_status_due_index_exists_and_serves_the_due_query(any_project: Project) -> None:
    engine = any_project.db.engine
    indexes = {index["name"]: index["column_names"] for index in inspect(engine).get_indexes("deliveries")}
    assert indexes["ix_deliveries_status_due_at"] == ["status", "due_at", "id"]
    now = datetime(2026, 3, 6, 4, 0)
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            plan = connection.execute(text("EXPLAIN QUERY PLAN " + DUE_QUERY), {"now": now}).all()
        else:
            # Tiny tables are cheaper to scan; forbid the scan to see whether the index can serve the query.
            connection.execute(text("SET LOCAL enable_seqscan = off"))
            plan = connection.execute(text("EXPLAIN " + DUE_QUERY), {"now": now}).all()
    assert "ix_deliveries_status_due_at" in " ".join(str(row) for row in plan)


def test_times_come_back_as_aware_utc(any_project: Project) -> None:
    nine_in_kathmandu = datetime(2026, 3, 6, 9, 0, tzinfo=KATHMANDU)
    with any_project.db.session() as session:
        subscriber = a_subscriber()
        subscriber.confirmed_at = nine_in_kathmandu
        session.add(subscriber)
        session.flush()
        session.add(a_delivery(subscriber, due_at=nine_in_kathmandu))
    with any_project.db.sessions() as session:
        stored = session.scalars(select(Subscriber)).one()
        delivery = session.scalars(select(Delivery)).one()
        assert stored.confirmed_at == nine_in_kathmandu and stored.confirmed_at.tzinfo is UTC
        assert delivery.due_at == datetime(2026, 3, 6, 3, 15, tzinfo=UTC) and delivery.due_at.tzinfo is UTC
        assert stored.send_time == time(9, 0)
        raw = session.execute(text("SELECT due_at FROM deliveries")).scalar_one()
        assert str(raw).startswith("2026-03-06 03:15:00")  # stored in UTC, whatever zone it came in


def test_a_naive_time_is_refused(any_project: Project) -> None:
    with pytest.raises(StatementError, match="naive datetime"), any_project.db.session() as session:
        subscriber = a_subscriber()
        subscriber.confirmed_at = datetime(2026, 3, 6, 9, 0)
        session.add(subscriber)
        session.flush()


def test_deleting_a_subscriber_removes_deliveries_and_keeps_events(any_project: Project) -> None:
    with any_project.db.session() as session:
        subscriber = a_subscriber()
        session.add(subscriber)
        session.flush()
        session.add(a_delivery(subscriber))
        session.add(Event(subscriber_id=subscriber.id, kind="subscribed", at=datetime(2026, 3, 1, tzinfo=UTC)))
    with any_project.db.session() as session:
        session.execute(delete(Subscriber))
    with any_project.db.session() as session:
        assert session.scalars(select(Delivery)).all() == []
        assert [(e.kind, e.subscriber_id) for e in session.scalars(select(Event))] == [("subscribed", None)]


def test_an_erased_subscribers_id_is_never_reused(project: Project) -> None:
    """Old unsubscribe links and Message-IDs carry the id: a newcomer must not inherit it (SQLite AUTOINCREMENT)."""
    from newsletter.subscribers import SubscriberInput, add_subscriber, erase

    now = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    with project.db.session() as session:
        first = add_subscriber(session, project, SubscriberInput("first@example.com"), confirmed=True, now=now)
        first_id = first.id
        erase(session, project, first, now=now)
    with project.db.session() as session:
        second = add_subscriber(session, project, SubscriberInput("second@example.com"), confirmed=True, now=now)
        assert second.id > first_id

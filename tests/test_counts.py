"""The counts the database keeps (migration 0007, `newsletter/counts.py`) against counting the tables.

Every test that opens a project also checks them when it ends (`conftest.check_counts`); these make the
changes a course makes on purpose, including ones no code of ours makes (an operator's SQL), on both backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import opened_project, reset_postgres, settings_on
from counting import counts_disagreement
from smtp_sink import FaultPlan, SmtpSink, permanent, temporary
from sqlalchemy import text

from newsletter.counts import FOLD_LOCK, deliveries_by_lesson, deliveries_by_status, fold, subscribers_by_status
from newsletter.dispatch import send_due
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber, erase, get_subscriber, unsubscribe
from newsletter.transports import SmtpTransport

CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday
FIRST_SLOT = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
READERS = ("ada", "bo", "cy", "dee", "eve", "fay")


def run_lesson_one(project: Project) -> None:
    """Six readers; lesson 1 goes out, bo@ refused for good, cy@ for now; eve@ unsubscribes, fay@ is erased."""
    with project.db.session() as session:
        for name in READERS:
            reader = SubscriberInput(f"{name}@example.com", name.title(), "UTC", "Monday", "07:00")
            add_subscriber(session, project, reader, confirmed=True, now=CONFIRMED_AT)
    faults = FaultPlan({"bo@example.com": permanent(550), "cy@example.com": temporary(450, times=None)})
    with (
        SmtpSink(faults=faults) as sink,
        closing(SmtpTransport("127.0.0.1", sink.port, "none", connections=2)) as relay,
    ):
        send_due(project, relay, now=FIRST_SLOT)
    later = FIRST_SLOT + timedelta(hours=1)
    with project.db.session() as session:
        unsubscribe(session, project, get_subscriber(session, "eve@example.com"), now=later)
        erase(session, project, get_subscriber(session, "fay@example.com"), now=later)


def test_the_counts_follow_a_course_and_an_operators_sql(any_project: Project) -> None:
    run_lesson_one(any_project)
    engine = any_project.db.engine
    assert counts_disagreement(engine) == ""
    with any_project.db.reading() as session:
        assert subscribers_by_status(session) == {"active": 4, "unsubscribed": 1}  # fay@ erased; bo@ once
        by_status = deliveries_by_status(session)
        lessons = deliveries_by_lesson(session, FIRST_SLOT + timedelta(hours=2))
    assert by_status == {"sent": 3, "failed": 1, "pending": 4, "cancelled": 1}
    # ada@ and dee@ had lesson 1; bo@'s moved on after the 5xx; eve@'s lesson 2 was cancelled; cy@'s retry is due.
    assert lessons["muscle"] == {"sent": 3, "failed": 1, "pending": 1, "due": 1}
    assert lessons["knees"] == {"pending": 3, "cancelled": 1}

    with engine.begin() as connection:  # what only an operator's SQL does: rename, delete, cascade, bulk update
        connection.execute(text("UPDATE deliveries SET lesson = 'legs' WHERE lesson = 'knees'"))
        connection.execute(text("DELETE FROM deliveries WHERE status = 'failed'"))
        connection.execute(text("DELETE FROM subscribers WHERE email = 'dee@example.com'"))
        connection.execute(text("UPDATE deliveries SET status = 'held', hold = 'error' WHERE status = 'pending'"))
        connection.execute(text("UPDATE subscribers SET status = 'paused' WHERE status = 'active'"))
    assert counts_disagreement(engine) == ""
    with any_project.db.reading() as session:
        assert deliveries_by_lesson(session, FIRST_SLOT)["legs"] == {"held": 2, "cancelled": 1}
        assert subscribers_by_status(session) == {"paused": 3, "unsubscribed": 1}


def test_a_change_rolled_back_is_not_counted(any_project: Project) -> None:
    run_lesson_one(any_project)
    with any_project.db.reading() as session:
        before = deliveries_by_status(session), subscribers_by_status(session)
    with pytest.raises(RuntimeError), any_project.db.engine.begin() as connection:
        connection.execute(text("UPDATE deliveries SET status = 'cancelled'"))
        connection.execute(text("DELETE FROM subscribers"))
        raise RuntimeError("given up")
    with any_project.db.reading() as session:
        assert (deliveries_by_status(session), subscribers_by_status(session)) == before


@pytest.fixture
def postgres_project(project_dir: Path, env: dict[str, str], postgres_server_url: str) -> Iterator[Project]:
    reset_postgres(postgres_server_url)
    with opened_project(settings_on(project_dir, env, postgres_server_url)) as opened:
        yield opened


@pytest.mark.postgres
def test_postgresql_writers_never_wait_on_a_counter_and_a_fold_keeps_the_sums(postgres_project: Project) -> None:
    run_lesson_one(postgres_project)
    engine = postgres_project.db.engine
    with engine.begin() as connection:
        fold(connection)  # what the sign-ups, the unsubscribe and the erasure added since the run folded
    hold = "UPDATE deliveries SET status = 'held', hold = 'error' WHERE id = :id"
    with engine.connect() as first, engine.connect() as second:
        pending = first.execute(text("SELECT id FROM deliveries WHERE status = 'pending' ORDER BY id")).scalars()
        one, other = list(pending)[:2]
        first.commit()
        # Two open transactions change the same status of the same lesson: with one counter row per key the
        # second would wait for the first to commit, and fail its lock timeout.
        first.execute(text(hold), {"id": one})
        second.execute(text("SET LOCAL lock_timeout = '2s'"))
        second.execute(text(hold), {"id": other})
        second.commit()
        first.commit()
    with engine.connect() as connection:
        shards = connection.execute(text("SELECT count(DISTINCT shard) FROM delivery_counts WHERE shard <> 0"))
        assert shards.scalar() == 2  # each transaction's own rows
    assert counts_disagreement(engine) == ""

    with engine.connect() as other:  # a fold under way elsewhere: this one neither waits nor folds
        other.execute(text(f"SELECT pg_advisory_xact_lock({FOLD_LOCK})"))
        with engine.begin() as connection:
            assert fold(connection) == 0
        other.rollback()
    with engine.begin() as connection:
        assert fold(connection) > 0
    with engine.connect() as connection:
        for table in ("delivery_counts", "subscriber_counts"):
            assert connection.execute(text(f"SELECT count(*) FROM {table} WHERE shard <> 0")).scalar() == 0
    assert counts_disagreement(engine) == ""
    with engine.begin() as connection:
        assert fold(connection) == 0

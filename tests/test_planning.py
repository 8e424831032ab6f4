"""The next-lesson row: one rule (`next_lesson`), one writer (`put_pending`), and the send path's Core version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from newsletter.models import Delivery, Subscriber
from newsletter.planning import advance_after_delivery, plan_next_lesson, put_pending, reconcile
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber

CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday
FIRST_SLOT = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)


def add_reader(project: Project, email: str, weekday: str = "Monday") -> int:
    with project.db.session() as session:
        reader = SubscriberInput(email, "Reader", "Europe/Berlin", weekday, "07:00")
        return add_subscriber(session, project, reader, confirmed=True, now=CONFIRMED_AT).id


def rows(project: Project, subscriber_id: int) -> dict[int, Delivery]:
    with project.db.session() as session:
        found = session.scalars(select(Delivery).where(Delivery.subscriber_id == subscriber_id))
        return {row.week: row for row in found}


def mark_sent(project: Project, subscriber_id: int, week: int, at: datetime) -> None:
    with project.db.session() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.subscriber_id == subscriber_id, Delivery.week == week)
            .values(status="sent", sent_at=at)
        )


def test_put_pending_creates_or_resets_a_row_but_never_touches_a_sent_or_sending_one(any_project: Project) -> None:
    reader = add_reader(any_project, "put@example.com")
    due = FIRST_SLOT + timedelta(weeks=3)
    with any_project.db.session() as session:
        session.execute(update(Delivery).values(status="failed", attempts=5, error="550 gone"))
        put_pending(session.connection(), reader, 1, "muscle", due, "<a@b>")  # the failed row comes back
        put_pending(session.connection(), reader, 2, "knees", due, "<c@d>")  # a new row
    first, second = rows(any_project, reader)[1], rows(any_project, reader)[2]
    assert (first.status, first.attempts, first.error, first.due_at, first.message_id) == (
        "pending",
        0,
        None,
        due,
        "<a@b>",
    )
    assert (second.status, second.slot_at, second.due_at, second.slug) == ("pending", due, due, "knees")
    for status in ("sent", "sending"):
        with any_project.db.session() as session:
            session.execute(update(Delivery).where(Delivery.week == 1).values(status=status, due_at=FIRST_SLOT))
            put_pending(session.connection(), reader, 1, "muscle", due, "<x@y>")
        assert (rows(any_project, reader)[1].status, rows(any_project, reader)[1].due_at) == (status, FIRST_SLOT)


def test_the_send_path_plans_exactly_what_plan_next_lesson_plans(any_project: Project) -> None:
    by_orm, by_core = add_reader(any_project, "orm@example.com"), add_reader(any_project, "core@example.com")
    sent_at = FIRST_SLOT + timedelta(seconds=3)
    for reader in (by_orm, by_core):
        mark_sent(any_project, reader, 1, sent_at)
    with any_project.db.session() as session:
        subscriber = session.get(Subscriber, by_orm)
        assert subscriber is not None
        subscriber.position = 1
        plan_next_lesson(session, any_project.settings, any_project.series, subscriber, now=sent_at, after=FIRST_SLOT)
        moved = advance_after_delivery(
            session.connection(),
            any_project.settings,
            any_project.series,
            subscriber_id=by_core,
            week=1,
            after=FIRST_SLOT,
            now=sent_at,
            last_sent_at=sent_at,
        )
    assert moved
    orm, core = rows(any_project, by_orm)[2], rows(any_project, by_core)[2]
    assert (core.status, core.due_at, core.slot_at, core.slug) == (orm.status, orm.due_at, orm.slot_at, orm.slug)
    assert core.message_id != orm.message_id and (core.message_id or "").startswith("<running.w2.")
    with any_project.db.session() as session:
        assert session.get(Subscriber, by_core).position == 1  # type: ignore[union-attr]


def test_the_send_path_reads_the_schedule_back_and_never_moves_anyone_back(any_project: Project) -> None:
    reader = add_reader(any_project, "moved@example.com")
    mark_sent(any_project, reader, 1, FIRST_SLOT)
    with any_project.db.session() as session:
        # The reader moved to Thursdays while lesson 1 was on the wire, and has two hard bounces behind them.
        session.execute(update(Subscriber).values(weekday=3, hard_bounces=2))
    arguments = {"after": FIRST_SLOT, "now": FIRST_SLOT, "last_sent_at": FIRST_SLOT}
    settings, series = any_project.settings, any_project.series
    with any_project.db.session() as session:
        assert advance_after_delivery(session.connection(), settings, series, subscriber_id=reader, week=1, **arguments)
    assert rows(any_project, reader)[2].due_at.weekday() == 3  # Thursday 07:00 Berlin
    with any_project.db.session() as session:
        session.execute(update(Subscriber).values(hard_bounces=1))
        # A late resend of lesson 1 (the reader is past it) only clears the bounces.
        assert not advance_after_delivery(
            session.connection(), settings, series, subscriber_id=reader, week=1, **arguments
        )
        subscriber = session.get(Subscriber, reader)
        assert subscriber is not None and (subscriber.position, subscriber.hard_bounces) == (1, 0)


def test_reconcile_brings_a_lesson_appended_later_to_readers_who_had_finished(any_project: Project) -> None:
    finished, waiting = add_reader(any_project, "done@example.com"), add_reader(any_project, "wait@example.com")
    weeks = any_project.series.weeks
    with any_project.db.session() as session:
        session.execute(update(Subscriber).where(Subscriber.id == finished).values(status="completed", position=weeks))
        session.execute(
            update(Subscriber).where(Subscriber.id == waiting).values(status="completed", position=weeks - 1)
        )
        session.execute(update(Delivery).values(status="sent", sent_at=FIRST_SLOT))
        assert reconcile(session, any_project.settings, any_project.series, FIRST_SLOT + timedelta(days=1)) == 1
    with any_project.db.session() as session:
        assert session.get(Subscriber, waiting).status == "active"  # type: ignore[union-attr]
        assert session.get(Subscriber, finished).status == "completed"  # type: ignore[union-attr]
    assert rows(any_project, waiting)[weeks].status == "pending" and weeks not in rows(any_project, finished)
    with any_project.db.session() as session:  # everyone at the end: nothing to do
        session.execute(update(Subscriber).values(status="completed", position=weeks))
        assert reconcile(session, any_project.settings, any_project.series, FIRST_SLOT + timedelta(days=2)) == 0

"""The ledger's waiting rows on both backends: one writer, gates that hold and release, re-planning a changed course."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, time, timedelta
from functools import cache
from pathlib import Path

from sqlalchemy import Integer, String, Update, bindparam, delete, event, select, update

from newsletter.ledger import Gate, apply_gates, load_readers, plan_next, put_waiting
from newsletter.ledger.course import preview, reconcile
from newsletter.ledger.outcomes import record_sent_many
from newsletter.ledger.rows import MAX_ROWS, execute_rows, rows_subquery
from newsletter.ledger.waiting import SUBSCRIBERS
from newsletter.ledger.wire import Claimed
from newsletter.models import Delivery, Subscriber
from newsletter.planning import Progress
from newsletter.project import Project
from newsletter.schedule import Cadence
from newsletter.subscribers import SubscriberInput, add_subscriber

CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday
FIRST_SLOT = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)


def add_reader(project: Project, email: str, weekday: str = "Monday") -> int:
    with project.db.session() as session:
        reader = SubscriberInput(email, "Reader", "UTC", weekday, "07:00")
        return add_subscriber(session, project, reader, confirmed=True, now=CONFIRMED_AT).id


def rows(project: Project, subscriber_id: int) -> dict[str, Delivery]:
    with project.db.reading() as session:
        found = session.scalars(select(Delivery).where(Delivery.subscriber_id == subscriber_id))
        return {row.lesson: row for row in found}


def reader_state(project: Project, subscriber_id: int) -> tuple[str, str | None, int]:
    with project.db.reading() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        assert subscriber is not None
        return subscriber.status, subscriber.last_lesson, subscriber.position


def test_put_waiting_creates_or_resets_a_row_but_never_touches_a_sent_sending_or_failed_one(
    any_project: Project,
) -> None:
    reader = add_reader(any_project, "put@example.com")
    due = FIRST_SLOT + timedelta(weeks=3)
    with any_project.db.session() as session:
        assert put_waiting(session.connection(), reader, "knees", due, None)  # a new row
        assert put_waiting(session.connection(), reader, "brain", due, Gate("draft", "draft = true"))
    knees, brain = rows(any_project, reader)["knees"], rows(any_project, reader)["brain"]
    assert (knees.status, knees.slot_at, knees.due_at) == ("pending", due, due)
    assert (brain.status, brain.hold) == ("held", "draft")
    for status in ("sent", "sending", "failed"):
        with any_project.db.session() as session:
            session.execute(update(Delivery).where(Delivery.lesson == "muscle").values(status=status))
            assert not put_waiting(session.connection(), reader, "muscle", due, None)
        assert rows(any_project, reader)["muscle"].status == status


def test_plan_next_never_plans_a_lesson_the_reader_had(any_project: Project) -> None:
    reader = add_reader(any_project, "had@example.com")
    with any_project.db.session() as session:
        # They had "knees" out of order (a retried lesson); planning after "muscle" must skip to "brain".
        session.execute(update(Delivery).values(status="sent", sent_at=FIRST_SLOT))
        put_waiting(session.connection(), reader, "knees", FIRST_SLOT, None)
        session.execute(update(Delivery).where(Delivery.lesson == "knees").values(status="sent", sent_at=FIRST_SLOT))
        session.execute(update(Subscriber).values(last_lesson="muscle", position=1))
    with any_project.db.session() as session:
        loaded = load_readers(session.connection(), [reader])[reader]
        guessed = type(loaded)(loaded.id, loaded.status, loaded.cadence, type(loaded.progress)("muscle", {"muscle"}))
        planned = plan_next(
            session.connection(),
            any_project.settings,
            any_project.series,
            {},
            guessed,
            now=FIRST_SLOT,
            after=FIRST_SLOT,
        )
    assert planned is not None and planned.lesson.slug == "brain"
    assert rows(any_project, reader)["brain"].status == "pending"


def test_load_readers_sums_up_each_history_from_the_lessons_received_only(any_project: Project) -> None:
    had, fresh, bare = (add_reader(any_project, f"{name}@example.com") for name in ("had", "fresh", "bare"))
    sent_at, slot = FIRST_SLOT + timedelta(minutes=3), FIRST_SLOT + timedelta(weeks=1)
    with any_project.db.session() as session:
        connection = session.connection()
        for lesson, weeks in (("knees", 1), ("brain", 2), ("mood", 3), ("sleep", 4)):
            put_waiting(connection, had, lesson, FIRST_SLOT + timedelta(weeks=weeks), None)
        outcomes = {  # lesson: (status, sent_at); the later slots are not received, so not the latest slot
            "muscle": ("sent", sent_at),
            "knees": ("failed", None),  # refused for good: received, never sent
            "brain": ("cancelled", None),
            "mood": ("sending", None),
            "sleep": ("pending", None),
        }
        for lesson, (status, when) in outcomes.items():
            session.execute(
                update(Delivery)
                .where(Delivery.subscriber_id == had, Delivery.lesson == lesson)
                .values(status=status, sent_at=when)
            )
        session.execute(delete(Delivery).where(Delivery.subscriber_id == bare))
        session.execute(update(Subscriber).where(Subscriber.id == had).values(last_lesson="knees"))
    with any_project.db.reading() as session:
        loaded = load_readers(session.connection(), [had, fresh, bare, 10_000])
    assert sorted(loaded) == [had, fresh, bare]  # an unknown id is left out
    assert loaded[had].progress == Progress("knees", frozenset({"muscle", "knees"}))
    assert (loaded[had].last_sent_at, loaded[had].last_slot_at) == (sent_at, slot)
    for reader in (fresh, bare):  # only lesson 1 waiting, or no row at all: nothing received
        assert loaded[reader].progress == Progress(None, frozenset())
        assert (loaded[reader].last_sent_at, loaded[reader].last_slot_at) == (None, None)
    assert loaded[had].cadence == loaded[fresh].cadence == Cadence("UTC", 0, time(7, 0))


def test_the_send_path_reads_the_schedule_back_and_never_moves_anyone_back(any_project: Project) -> None:
    reader = add_reader(any_project, "moved@example.com")
    muscle = rows(any_project, reader)["muscle"]
    item = Claimed(muscle.id, "muscle", FIRST_SLOT, None, Subscriber(id=reader))
    with any_project.db.session() as session:
        # The reader moved to Thursdays while lesson 1 was on the wire, and has two hard bounces behind them.
        session.execute(update(Subscriber).values(weekday=3, hard_bounces=2))
        session.execute(update(Delivery).values(status="sending", lease_owner="me"))
        sent = [(item, "250", FIRST_SLOT)]
        assert record_sent_many(session.connection(), any_project.settings, any_project.series, {}, sent, "me")
    assert rows(any_project, reader)["knees"].due_at.weekday() == 3
    assert reader_state(any_project, reader) == ("active", "muscle", 1)
    with any_project.db.session() as session:
        # A late resend of lesson 1 once they are past it: it does not move them back.
        session.execute(update(Subscriber).values(last_lesson="brain", position=3, hard_bounces=1))
        session.execute(update(Delivery).where(Delivery.lesson == "muscle").values(status="sending", lease_owner="me"))
        sent = [(item, "250", FIRST_SLOT)]
        assert record_sent_many(session.connection(), any_project.settings, any_project.series, {}, sent, "me")
        subscriber = session.get(Subscriber, reader)
        assert subscriber is not None and (subscriber.last_lesson, subscriber.position, subscriber.hard_bounces) == (
            "brain",
            3,
            0,
        )


def test_a_batch_of_sent_messages_moves_every_reader_on_and_plans_each_next_lesson(any_project: Project) -> None:
    readers = [add_reader(any_project, f"r{n}@example.com") for n in range(5)]
    with any_project.db.session() as session:
        # r3 had "knees" already (a retried lesson, received out of order); r4 left while lesson 1 was on the wire.
        put_waiting(session.connection(), readers[3], "knees", FIRST_SLOT, None)
        session.execute(update(Delivery).where(Delivery.lesson == "knees").values(status="sent"))
        session.execute(update(Subscriber).where(Subscriber.id == readers[4]).values(status="paused"))
        session.execute(update(Delivery).where(Delivery.lesson == "muscle").values(status="sending", lease_owner="me"))
        ids = dict(
            session.execute(select(Delivery.subscriber_id, Delivery.id).where(Delivery.lesson == "muscle")).all()
        )
    items = [Claimed(ids[reader], "muscle", FIRST_SLOT, None, Subscriber(id=reader)) for reader in readers]
    with any_project.db.session() as session:
        sent = [(item, "250 ok", FIRST_SLOT) for item in items]
        recorded = record_sent_many(session.connection(), any_project.settings, any_project.series, {}, sent, "me")
    assert len(recorded) == 5
    for reader in readers[:3]:
        assert rows(any_project, reader)["knees"].status == "pending"
        assert reader_state(any_project, reader) == ("active", "muscle", 1)
    assert rows(any_project, readers[3])["brain"].status == "pending"  # the rule, asked again
    assert set(rows(any_project, readers[4])) == {"muscle"} and reader_state(any_project, readers[4])[0] == "paused"
    with any_project.db.session() as session:  # another sender took a row over meanwhile: only ours count
        session.execute(update(Delivery).where(Delivery.lesson == "knees").values(status="sending", lease_owner="me"))
        knees = dict(
            session.execute(select(Delivery.subscriber_id, Delivery.id).where(Delivery.lesson == "knees")).all()
        )
        later = [
            (Claimed(knees[r], "knees", FIRST_SLOT, None, Subscriber(id=r)), "250", FIRST_SLOT) for r in readers[:3]
        ]
        taken = later[1][0].delivery_id
        session.execute(update(Delivery).where(Delivery.id == taken).values(lease_owner="them"))
        recorded = record_sent_many(session.connection(), any_project.settings, any_project.series, {}, later, "me")
    assert [item.subscriber.id for item in recorded] == [readers[0], readers[2]]


def test_a_batch_is_recorded_in_three_statements_whatever_its_size(any_project: Project) -> None:
    """Mark sent, move the readers on, plan their next lessons: no statement per reader, no query asking again."""
    readers = [add_reader(any_project, f"s{n}@example.com") for n in range(12)]
    with any_project.db.session() as session:
        session.execute(update(Delivery).where(Delivery.lesson == "muscle").values(status="sending", lease_owner="me"))
        ids = dict(session.execute(select(Delivery.subscriber_id, Delivery.id)).all())
    statements: list[str] = []

    def remember(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(any_project.db.engine, "before_cursor_execute", remember)
    try:
        for batch in (readers[:2], readers[2:]):
            items = [Claimed(ids[r], "muscle", FIRST_SLOT, None, Subscriber(id=r)) for r in batch]
            with any_project.db.session() as session:
                sent = [(item, "250 ok", FIRST_SLOT) for item in items]
                settings, series = any_project.settings, any_project.series
                assert len(record_sent_many(session.connection(), settings, series, {}, sent, "me")) == len(batch)
    finally:
        event.remove(any_project.db.engine, "before_cursor_execute", remember)
    verbs = [statement.split()[0] for statement in statements if statement.split()[0] not in ("BEGIN", "COMMIT")]
    assert verbs == ["UPDATE", "UPDATE", "INSERT"] * 2
    assert all(rows(any_project, reader)["knees"].status == "pending" for reader in readers)


def test_one_reader_twice_in_a_batch_is_moved_on_once_per_lesson(any_project: Project) -> None:
    """A lesson and a late resend of the one before it, landing together: both count, the next is planned once."""
    reader = add_reader(any_project, "twice@example.com")
    with any_project.db.session() as session:
        put_waiting(session.connection(), reader, "knees", FIRST_SLOT, None)
        session.execute(update(Delivery).values(status="sending", lease_owner="me"))
        ids = dict(session.execute(select(Delivery.lesson, Delivery.id)).all())
    items = [Claimed(ids[lesson], lesson, FIRST_SLOT, None, Subscriber(id=reader)) for lesson in ("muscle", "knees")]
    with any_project.db.session() as session:
        sent = [(item, "250 ok", FIRST_SLOT) for item in items]
        recorded = record_sent_many(session.connection(), any_project.settings, any_project.series, {}, sent, "me")
    assert len(recorded) == 2
    assert {lesson: row.status for lesson, row in rows(any_project, reader).items()} == {
        "muscle": "sent",
        "knees": "sent",
        "brain": "pending",
    }
    assert reader_state(any_project, reader) == ("active", "knees", 2)


def test_execute_rows_takes_any_number_of_rows_at_most_max_rows_a_statement(any_project: Project) -> None:
    readers = [add_reader(any_project, f"n{n}@example.com") for n in range(2 * MAX_ROWS + 5)]
    with any_project.db.session() as session:
        session.execute(update(Subscriber).where(Subscriber.id == readers[-1]).values(status="paused"))

    @cache
    def renamed(size: int) -> Update:
        named = rows_subquery("named", size, {"id": Integer(), "name": String()})
        return (
            update(SUBSCRIBERS)
            .where(SUBSCRIBERS.c.id == named.c.id, SUBSCRIBERS.c.status == bindparam("only"))
            .values(name=named.c.name)
        )

    statements: list[str] = []

    def remember(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    rows = [{"id": reader, "name": f"Reader {n}"} for n, reader in enumerate(readers)]
    event.listen(any_project.db.engine, "before_cursor_execute", remember)
    try:
        with any_project.db.session() as session:
            changed = execute_rows(session.connection(), renamed, rows, only="active")
    finally:
        event.remove(any_project.db.engine, "before_cursor_execute", remember)
    assert changed == len(readers) - 1  # the rows changed, summed over the statements: not the paused reader
    assert [statement.split()[0] for statement in statements if statement.startswith("UPDATE")] == ["UPDATE"] * 3
    with any_project.db.reading() as session:
        names = dict(session.execute(select(Subscriber.id, Subscriber.name)).all())
    assert [names[reader] for reader in readers[:-1]] == [f"Reader {n}" for n in range(len(readers) - 1)]
    assert names[readers[-1]] == "Reader"


def test_gates_hold_and_release_waiting_rows(any_project: Project) -> None:
    reader = add_reader(any_project, "gate@example.com")
    with any_project.db.session() as session:
        assert apply_gates(session.connection(), {"muscle": Gate("checklist", "item 20")}) == (1, 0)
    assert (rows(any_project, reader)["muscle"].status, rows(any_project, reader)["muscle"].hold) == (
        "held",
        "checklist",
    )
    with any_project.db.session() as session:
        assert apply_gates(session.connection(), {}) == (0, 1)
    assert rows(any_project, reader)["muscle"].status == "pending"


def edit_course(project: Project, change: str) -> Project:
    """The project with its lessons folder edited; a fresh Project, as the next process would open it."""
    lessons = project.settings.newsletter.lessons
    files = sorted(lessons.glob("*.md"))
    if change == "append":
        text = files[-1].read_text(encoding="utf-8")
        text = text.replace("week = 7", "week = 8").replace('slug = "longevity"', 'slug = "recovery"')
        (lessons / "08-recovery.md").write_text(text, encoding="utf-8")
    elif change == "insert":
        for path in files[2:]:
            text = path.read_text(encoding="utf-8")
            week = int(path.name[:2])
            path.write_text(text.replace(f"week = {week}", f"week = {week + 1}"), encoding="utf-8")
        text = (
            files[0]
            .read_text(encoding="utf-8")
            .replace("week = 1", "week = 3")
            .replace('slug = "muscle"', 'slug = "hydration"')
        )
        (lessons / "02b-hydration.md").write_text(text, encoding="utf-8")
    elif change == "remove":
        files[1].unlink()
        for path in files[2:]:
            text = path.read_text(encoding="utf-8")
            week = int(path.name[:2])
            path.write_text(text.replace(f"week = {week}", f"week = {week - 1}"), encoding="utf-8")
    elif change == "draft":
        path = files[1]
        path.write_text(path.read_text(encoding="utf-8").replace("+++\n", "+++\ndraft = true\n", 1), encoding="utf-8")
    return Project(project.settings)


def test_a_lesson_appended_later_reaches_readers_who_had_finished(any_project: Project) -> None:
    finished = add_reader(any_project, "done@example.com")
    with any_project.db.session() as session:
        reconcile(session, any_project, FIRST_SLOT)  # the ledger is planned against this course
        session.execute(update(Subscriber).values(status="completed", last_lesson="longevity", position=7))
        session.execute(update(Delivery).values(status="sent", sent_at=FIRST_SLOT))
    longer = edit_course(any_project, "append")
    with longer.db.session() as session:
        note = reconcile(session, longer, FIRST_SLOT + timedelta(days=1))
    assert any("inserted 'recovery' at 8: 1 readers get it next" in line for line in note.changes), note.changes
    assert reader_state(any_project, finished)[0] == "active"
    assert rows(any_project, finished)["recovery"].status == "pending"
    longer.close()


def test_inserting_removing_and_drafting_move_waiting_rows_and_say_so(any_project: Project, tmp_path: Path) -> None:
    before = add_reader(any_project, "before@example.com")  # waiting on lesson 3 (brain)
    past = add_reader(any_project, "past@example.com")  # waiting on lesson 5 (sleep)
    with any_project.db.session() as session:
        reconcile(session, any_project, FIRST_SLOT)
        session.execute(update(Delivery).values(status="sent", sent_at=FIRST_SLOT))
        for reader, last, position, waiting in ((before, "knees", 2, "brain"), (past, "mood", 4, "sleep")):
            session.execute(
                update(Subscriber).where(Subscriber.id == reader).values(last_lesson=last, position=position)
            )
            put_waiting(session.connection(), reader, waiting, FIRST_SLOT + timedelta(weeks=1), None)
    original = tmp_path / "lessons"
    shutil.copytree(any_project.settings.newsletter.lessons, original)

    inserted = edit_course(any_project, "insert")
    lines = preview(inserted, FIRST_SLOT)
    assert lines == ["inserted 'hydration' at 3: 1 readers get it next, 1 past it skip it"]
    assert rows(any_project, before)["brain"].status == "pending"  # a preview changes nothing
    with inserted.db.session() as session:
        assert reconcile(session, inserted, FIRST_SLOT).changes == lines
    assert "hydration" in rows(any_project, before) and "brain" not in rows(any_project, before)
    assert rows(any_project, past)["sleep"].status == "pending"
    assert reader_state(any_project, past)[2] == 5  # "mood" is lesson 5 now
    inserted.close()

    shutil.rmtree(any_project.settings.newsletter.lessons)
    shutil.copytree(original, any_project.settings.newsletter.lessons)
    removed = edit_course(any_project, "remove")  # "knees" goes
    with removed.db.session() as session:
        changes = reconcile(session, removed, FIRST_SLOT).changes
    assert "removed 'hydration': 1 waiting deliveries cancelled; instead 1 get 'brain'" in changes
    assert rows(any_project, before)["brain"].status == "pending"
    removed.close()

    shutil.rmtree(any_project.settings.newsletter.lessons)
    shutil.copytree(original, any_project.settings.newsletter.lessons)
    drafted = edit_course(any_project, "draft")  # "knees" is a draft now; "brain" and "sleep" are still fine
    with drafted.db.session() as session:
        note = reconcile(session, drafted, FIRST_SLOT)
    assert any("'knees' may not go out (draft" in line for line in note.changes), note.changes
    drafted.close()

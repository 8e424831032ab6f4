"""Editing a course while readers are in the middle of it, as a property: random edits between send runs.

Hypothesis draws sequences of edits (insert, remove, reorder, rename, draft, undraft) interleaved with
`send` runs over simulated days, for readers at different places in the course and on different days of
the week. Whatever the edits, on a real SQLite ledger:

- nobody ever receives the same lesson twice (a renamed lesson counts as the lesson it was);
- nobody receives two lessons closer together than `min_gap`;
- a draft is never sent, and neither is a lesson that was removed;
- what `plan` listed as due from the ledger is exactly what the next run sent;
- once the drafts are published and enough weeks pass, the rule has nothing left for anyone: every reader
  has received every lesson after their place in the course (lessons inserted behind them are skipped).
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from newsletter.config import load_settings
from newsletter.dispatch import send_due
from newsletter.ledger import load_readers
from newsletter.models import Delivery, Subscriber
from newsletter.plan import upcoming_sends
from newsletter.planning import next_lesson
from newsletter.project import Project
from newsletter.subscribers import ValidSubscriber, create_subscriber, resolve_cadence
from newsletter.transports import MemoryTransport

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday
WEEKDAYS = ("Monday", "Wednesday", "Friday", "Sunday")
BODY = (REPO / "lessons" / "01-muscle.md").read_text(encoding="utf-8").split("+++", 2)[2]


@dataclass
class Lesson:
    identity: int
    slug: str
    earlier: list[str] = field(default_factory=list)  # slugs it had before renames
    draft: bool = False
    catch_up: bool = False


@dataclass
class Course:
    """The test's own model of the course, written to disk as lesson files."""

    lessons: list[Lesson]
    names: itertools.count = field(default_factory=lambda: itertools.count(100))
    identity_of: dict[str, int] = field(default_factory=dict)
    drafted_ever: set[int] = field(default_factory=set)
    removed: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        for lesson in self.lessons:
            self.identity_of[lesson.slug] = lesson.identity

    def new_slug(self) -> str:
        return f"lesson-{next(self.names)}"

    def write(self, folder: Path) -> None:
        for old in folder.glob("*.md"):
            old.unlink()
        for week, lesson in enumerate(self.lessons, start=1):
            front = [
                f"week = {week}",
                f'slug = "{lesson.slug}"',
                f'title = "Lesson {lesson.slug}"',
                f'subject = "Lesson {week}: {lesson.slug}"',
                'preheader = "What this lesson is about, in a line."',
            ]
            if lesson.earlier:
                front.append("replaces = [" + ", ".join(f'"{slug}"' for slug in lesson.earlier) + "]")
            if lesson.draft:
                front.append("draft = true")
            if lesson.catch_up:
                front.append('catch_up = "send"')
            (folder / f"{week:02d}-{lesson.slug}.md").write_text("+++\n" + "\n".join(front) + "\n+++" + BODY)


@st.composite
def edits(draw: st.DrawFn) -> list[tuple[str, int, int, bool]]:
    """(kind, a, b, flag) steps; positions are taken modulo the course's length when applied."""
    kinds = st.sampled_from(["insert", "remove", "swap", "rename", "draft", "undraft", "days", "days", "days"])
    step = st.tuples(kinds, st.integers(0, 20), st.integers(1, 9), st.booleans())
    return draw(st.lists(step, min_size=3, max_size=14))


def apply(course: Course, kind: str, a: int, b: int, flag: bool) -> None:
    lessons = course.lessons
    index = a % len(lessons)
    if kind == "insert" and len(lessons) < 8:
        lesson = Lesson(identity=next(course.names), slug=course.new_slug(), catch_up=flag)
        course.identity_of[lesson.slug] = lesson.identity
        lessons.insert(a % (len(lessons) + 1), lesson)
    elif kind == "remove" and len(lessons) > 2:
        course.removed.add(lessons.pop(index).identity)
    elif kind == "swap":
        other = (index + b) % len(lessons)
        lessons[index], lessons[other] = lessons[other], lessons[index]
    elif kind == "rename":
        lesson = lessons[index]
        lesson.earlier.append(lesson.slug)
        lesson.slug = course.new_slug()
        course.identity_of[lesson.slug] = lesson.identity
    elif kind == "draft":
        lessons[index].draft = True
        course.drafted_ever.add(lessons[index].identity)
    elif kind == "undraft":
        lessons[index].draft = False


class Run:
    """A project folder on a real SQLite file, readers at different places, and send runs at chosen times."""

    def __init__(self, folder: Path) -> None:
        root = folder / "project"
        root.mkdir()
        (root / "lessons").mkdir()
        shutil.copy(REPO / "lessons" / "series.toml", root / "lessons" / "series.toml")
        config = (REPO / "config.toml").read_text(encoding="utf-8")
        templates = REPO / "newsletter" / "starter" / "templates"
        config = config.replace('templates = "newsletter/starter/templates"', f'templates = "{templates}"')
        (root / "config.toml").write_text(config, encoding="utf-8")
        self.root = root
        self.environment = {
            "NEWSLETTER_SECRET_KEY": "property-test-key-0123456789",
            "NEWSLETTER_DATABASE_URL": f"sqlite:///{root / 'newsletter.db'}",
        }
        self.now = START
        self.transport = MemoryTransport()
        self.sent_at: dict[str, list[datetime]] = {}

    def project(self) -> Project:
        return Project(load_settings(self.root / "config.toml", env=self.environment))

    def add_readers(self, project: Project, count: int) -> None:
        with project.db.session() as session:
            for n in range(count):
                cadence = resolve_cadence(project.settings, timezone="UTC", weekday=WEEKDAYS[n % 4], send_time="07:00")
                reader = ValidSubscriber(f"reader{n}@example.com", "", cadence)
                position = n % (len(project.series) + 1)
                create_subscriber(
                    session, project, reader, status="active", now=self.now, source="test", position=position
                )

    def send(self, project: Project) -> set[tuple[str, str]]:
        before = len(self.transport.sent)
        send_due(project, self.transport, now=self.now)
        sent = set()
        with project.db.reading() as session:
            for envelope in self.transport.sent[before:]:
                address = envelope.recipients[0]
                self.sent_at.setdefault(address, []).append(self.now)
                row = session.scalar(select(Delivery.lesson).where(Delivery.message_id == envelope.message_id))
                assert row is not None
                sent.add((address, row))
        return sent


def check_ledger(project: Project, course: Course, min_gap: timedelta, run: Run) -> None:
    with project.db.reading() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.lesson).join(Delivery).where(Delivery.status.in_(("sent", "sending")))
        ).all()
    had: dict[str, list[int]] = {}
    for address, lesson in rows:
        if lesson != "confirmation":
            had.setdefault(address, []).append(course.identity_of[lesson])
    for address, identities in had.items():
        assert len(identities) == len(set(identities)), f"{address} received a lesson twice: {identities}"
    assert len(run.transport.sent) == len(rows), "a message went out that the ledger does not show as sent"
    for address, moments in run.sent_at.items():
        for earlier, later in itertools.pairwise(sorted(moments)):
            assert later - earlier >= min_gap, f"{address}: two lessons {later - earlier} apart"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=edits())
def test_no_edit_ever_sends_a_lesson_twice_bursts_or_skips_one(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int, int, bool]]
) -> None:
    run = Run(tmp_path_factory.mktemp("course"))
    course = Course([Lesson(identity=n, slug=slug) for n, slug in enumerate(["a", "b", "c", "d", "e"])])
    course.write(run.root / "lessons")
    project = run.project()
    run.add_readers(project, 6)
    min_gap = project.settings.schedule.min_gap
    for kind, a, b, flag in steps:
        if kind == "days":
            with project.db.reading() as session:
                planned = upcoming_sends(session, project, now=run.now, days=b, project_later_lessons=False)
            horizon = run.now + timedelta(days=b)
            expected = {(entry.email, entry.slug) for entry in planned if not entry.held and entry.due_at <= horizon}
            run.now = horizon
            sent = run.send(project)
            assert sent == expected, "plan listed something else than the run sent"
        else:
            apply(course, kind, a, b, flag)
            course.write(run.root / "lessons")
            project.close()
            project = run.project()
            run.now += timedelta(minutes=1)
            sent = run.send(project)  # the run that notices the edit and re-plans
        check_ledger(project, course, min_gap, run)
        drafts = {lesson.identity for lesson in course.lessons if lesson.draft}
        identities = {course.identity_of[lesson] for _address, lesson in sent if lesson != "confirmation"}
        assert not identities & drafts, "a draft was sent"
        assert not identities & course.removed, "a removed lesson was sent"
    # Publish every draft and let the weeks pass: the rule must have nothing left for anyone.
    for lesson in course.lessons:
        lesson.draft = False
    course.write(run.root / "lessons")
    project.close()
    project = run.project()
    for _ in range(7 * (len(course.lessons) + 2)):  # a run a day: each reader's lessons come weekly
        run.now += timedelta(days=1)
        run.send(project)
    check_ledger(project, course, min_gap, run)
    with project.db.reading() as session:
        readers = load_readers(session.connection(), session.scalars(select(Subscriber.id)).all())
        pending = session.scalars(select(Delivery).where(Delivery.status.in_(("pending", "held")))).all()
    for reader in readers.values():
        assert next_lesson(project.series, reader.progress) is None, reader
        assert reader.status == "completed"
    assert pending == []
    project.close()

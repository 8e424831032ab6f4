"""A course that changed on disk: re-plan every reader's waiting row against it, and say what that does.

The ledger remembers the course it was last planned for (`course_state`: a fingerprint of the order,
identities, drafts and gates, and the order itself). Every run starts with `reconcile`: if the course on
disk differs, `replan` walks every reader and puts their waiting row on the lesson the one rule now gives
them (same due time; only which lesson changes), reopens readers who had finished when lessons were
appended, moves on readers whose next lesson was removed, keeps each reader's `position` in step with the
new order, and holds or releases rows for lessons that may not go out. `preview` runs the same walk and
rolls it back, so the impact it prints is exactly what the next run will do.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, cast

from sqlalchemy import Connection, Table, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsletter.events import record_event
from newsletter.ledger.waiting import (
    DELIVERIES,
    RECEIVING,
    SUBSCRIBERS,
    WAITING,
    Gates,
    apply_gates,
    load_readers,
    plan_next,
    put_waiting,
    withdraw_waiting,
)
from newsletter.lessons import Lesson, Series
from newsletter.models import CONFIRMATION, GATE_HOLDS, CourseState
from newsletter.planning import Progress, anchor_index, next_lesson, position_of

if TYPE_CHECKING:
    from newsletter.project import Project

REPLAN_BATCH = 1000
COURSE_STATE = cast(Table, CourseState.__table__)
Transition = tuple[str | None, str | None]  # a reader's waiting lesson before and after


@dataclass
class Replan:
    """What re-planning did: readers whose next lesson changed, and readers past a lesson they never had."""

    transitions: Counter[Transition] = field(default_factory=Counter)
    passed: Counter[str] = field(default_factory=Counter)  # lesson → readers already past it who never had it
    readers: int = 0


@dataclass
class CourseNote:
    """What a run found about the course: whether it re-planned, and which lessons' deliveries are held."""

    changes: list[str] = field(default_factory=list)
    held: Counter[tuple[str, str]] = field(default_factory=Counter)  # (lesson, reason) → held deliveries

    def held_line(self) -> str:
        """ "held: 41 deliveries of 'hydration' (draft), 3 of 'sleep' (checklist)", or "" when nothing is held."""
        parts = [f"{count} of {lesson!r} ({reason})" for (lesson, reason), count in sorted(self.held.items())]
        if not parts:
            return ""
        total = sum(self.held.values())
        return f"held: {total} deliveries: " + ", ".join(parts)


def course_fingerprint(series: Series, gates: Gates) -> str:
    gated = ",".join(f"{lesson}:{gate.reason}" for lesson, gate in sorted(gates.items()))
    return f"{series.fingerprint()}/{gated}"


def reconcile(session: Session, project: Project, now: datetime) -> CourseNote:
    """What each run does before it claims: follow a changed course, resume ended pauses, count holds."""
    connection = session.connection()
    series, gates = project.series, project.gates
    note = CourseNote()
    fingerprint = course_fingerprint(series, gates)
    _ensure_state_row(connection, series.slug, now)
    # Locked: of several senders starting together, one re-plans and the others then find it done.
    state = session.get(CourseState, series.slug, with_for_update=True, populate_existing=True)
    assert state is not None
    if state.fingerprint != fingerprint:
        previous = json.loads(state.lessons) if state.lessons else None
        done = replan(connection, project, now)
        note.changes = describe(previous, series, gates, done)
        state.fingerprint, state.updated_at = fingerprint, now
        state.lessons = json.dumps([_lesson_state(lesson.slug, lesson, gates) for lesson in series])
        session.flush()
    _resume_ended_pauses(connection, project, now)
    held = connection.execute(
        select(DELIVERIES.c.lesson, DELIVERIES.c.hold, func.count())
        .where(DELIVERIES.c.status == "held", DELIVERIES.c.hold.in_(GATE_HOLDS))
        .group_by(DELIVERIES.c.lesson, DELIVERIES.c.hold)
    )
    note.held.update({(lesson, reason): count for lesson, reason, count in held})
    return note


def _ensure_state_row(connection: Connection, series_slug: str, now: datetime) -> None:
    """The course_state row, created empty (never planned) if this is the ledger's first run."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    empty = {"series": series_slug, "fingerprint": "", "lessons": "", "updated_at": now}
    connection.execute(dialect.insert(COURSE_STATE).values(**empty).on_conflict_do_nothing(index_elements=["series"]))


def preview(project: Project, now: datetime) -> list[str]:
    """What the next run will do with the course on disk, per change, without changing anything."""
    with project.db.engine.connect() as connection:
        transaction = connection.begin()
        try:
            state = connection.execute(
                select(CourseState.lessons).where(CourseState.series == project.series.slug)
            ).scalar()
            done = replan(connection, project, now)
            return describe(json.loads(state) if state else None, project.series, project.gates, done)
        finally:
            transaction.rollback()


def replan(connection: Connection, project: Project, now: datetime) -> Replan:
    """Put every reader's waiting row on the lesson the rule gives them against the course on disk."""
    settings, series, gates = project.settings, project.series, project.gates
    done = Replan()
    last_id = 0
    statuses = (*RECEIVING, "paused")
    while True:
        ids = list(
            connection.scalars(
                select(SUBSCRIBERS.c.id)
                .where(SUBSCRIBERS.c.status.in_(statuses), SUBSCRIBERS.c.id > last_id)
                .order_by(SUBSCRIBERS.c.id)
                .limit(REPLAN_BATCH)
            )
        )
        if not ids:
            break
        last_id = ids[-1]
        readers = load_readers(connection, ids)
        waiting = {
            row.subscriber_id: row
            for row in connection.execute(
                select(DELIVERIES.c.subscriber_id, DELIVERIES.c.lesson, DELIVERIES.c.due_at, DELIVERIES.c.slot_at)
                .where(DELIVERIES.c.subscriber_id.in_(ids), DELIVERIES.c.lesson != CONFIRMATION)
                .where(DELIVERIES.c.status.in_(WAITING))
            )
        }
        positions: list[dict[str, object]] = []
        for subscriber_id in ids:
            reader = readers[subscriber_id]
            done.readers += 1
            positions.append({"reader": subscriber_id, "at": position_of(series, reader.progress)})
            _count_passed(series, reader.progress, done)
            if reader.status not in RECEIVING:
                continue
            row = waiting.get(subscriber_id)
            expected = next_lesson(series, reader.progress)
            old, new = (row.lesson if row else None), (expected.slug if expected else None)
            if old == new:
                continue
            done.transitions[old, new] += 1
            withdraw_waiting(connection, subscriber_id)
            if expected is not None and row is not None:
                put_waiting(
                    connection, subscriber_id, expected.slug, row.due_at, gates.get(expected.slug), slot=row.slot_at
                )
            elif expected is not None:
                after = max(reader.last_slot_at or now, now)
                plan_next(connection, settings, series, gates, reader, now=now, after=after)
            status = "active" if expected is not None else "completed"
            if status != reader.status:
                connection.execute(update(SUBSCRIBERS).where(SUBSCRIBERS.c.id == subscriber_id).values(status=status))
        connection.execute(_SET_POSITION, positions)
    apply_gates(connection, gates)
    return done


def _count_passed(series: Series, progress: Progress, done: Replan) -> None:
    had = {series.identity(slug) for slug in progress.received}
    for lesson in series.lessons[: max(anchor_index(series, progress), 0)]:
        if lesson.slug not in had and lesson.catch_up == "skip":
            done.passed[lesson.slug] += 1


_SET_POSITION = update(SUBSCRIBERS).where(SUBSCRIBERS.c.id == bindparam("reader")).values(position=bindparam("at"))


def _resume_ended_pauses(connection: Connection, project: Project, now: datetime) -> None:
    ended = list(
        connection.execute(
            select(SUBSCRIBERS.c.id, SUBSCRIBERS.c.last_lesson)
            .where(SUBSCRIBERS.c.status == "paused", SUBSCRIBERS.c.pause_until.is_not(None))
            .where(SUBSCRIBERS.c.pause_until <= now)
        )
    )
    for subscriber_id, last_lesson in ended:
        connection.execute(
            update(SUBSCRIBERS)
            .where(SUBSCRIBERS.c.id == subscriber_id)
            .values(status="active", paused_at=None, pause_until=None, updated_at=now)
        )
        record_event(
            connection, subscriber_id, "resumed", source="schedule", at=now, lesson=last_lesson, detail="pause ended"
        )
        withdraw_waiting(connection, subscriber_id)
        reader = load_readers(connection, [subscriber_id])[subscriber_id]
        planned = plan_next(connection, project.settings, project.series, project.gates, reader, now=now, after=now)
        if planned is None:
            connection.execute(update(SUBSCRIBERS).where(SUBSCRIBERS.c.id == subscriber_id).values(status="completed"))


def _lesson_state(slug: str, lesson: Lesson, gates: Gates) -> dict[str, object]:
    gate = gates.get(slug)
    return {"slug": slug, "replaces": list(lesson.replaces), "gate": gate.reason if gate else None}


def describe(previous: list[dict[str, object]] | None, series: Series, gates: Gates, done: Replan) -> list[str]:
    """One line per change to the course, with how many readers it affects and how."""
    current = [lesson.slug for lesson in series]
    if previous is None:
        moved = sum(done.transitions.values())
        return [f"first plan of this course: {moved} readers' next lesson set by the rule"] if moved else []
    before = [str(entry["slug"]) for entry in previous]
    renamed = {old: lesson.slug for lesson in series for old in lesson.replaces if old in before}
    lines: list[str] = []
    explained: set[Transition] = set()
    for old, new in renamed.items():
        moving = [t for t in done.transitions if t[0] == old]
        explained.update(moving)
        count = sum(done.transitions[t] for t in moving)
        lines.append(
            f"renamed {old!r} to {new!r}: readers who had it are not sent it again; {count} waiting rows follow"
        )
    for index, slug in enumerate(current, start=1):
        if slug in before or set(series.lesson(slug).replaces) & set(before):
            continue
        getting = [t for t in done.transitions if t[1] == slug]
        explained.update(getting)
        next_count = sum(done.transitions[t] for t in getting)
        lines.append(
            f"inserted {slug!r} at {index}: {next_count} readers get it next, {done.passed[slug]} past it skip it"
            if series.lesson(slug).catch_up == "skip"
            else f"inserted {slug!r} at {index} (catch_up = send): {next_count} readers get it next"
        )
    for slug in before:
        if series.identity(slug) is not None:
            continue
        leaving = [t for t in done.transitions if t[0] == slug]
        explained.update(leaving)
        instead = Counter({t[1]: done.transitions[t] for t in leaving})
        count = sum(instead.values())
        then = ", ".join(
            f"{n} get {lesson!r}" if lesson else f"{n} have finished" for lesson, n in instead.most_common()
        )
        lines.append(f"removed {slug!r}: {count} waiting deliveries cancelled" + (f"; instead {then}" if then else ""))
    kept_before = [slug for slug in before if series.identity(slug) is not None]
    kept_now = [slug for slug in current if slug in before]
    if [series.identity(slug) for slug in kept_before] != kept_now:
        lines.append("reordered: " + " → ".join(kept_now))
    old_gates = {str(entry["slug"]): entry.get("gate") for entry in previous}
    for slug in current:
        gate = gates.get(slug)
        was = old_gates.get(slug)
        if gate and gate.reason != was:
            lines.append(f"{slug!r} may not go out ({gate.reason}: {gate.detail}): readers wait before it, held")
        elif was and not gate:
            lines.append(f"{slug!r} may go out again: its held deliveries are released")
    for transition, count in sorted(done.transitions.items(), key=lambda item: -item[1]):
        if transition not in explained:
            lines.append(f"{count} readers: next lesson {transition[0]!r} → {transition[1]!r}")
    return lines or ["no change to any reader"]

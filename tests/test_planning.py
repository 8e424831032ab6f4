"""The one rule for "next lesson, when", as a pure function of the course and a reader's progress."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from newsletter.config import Settings
from newsletter.lessons import Lesson, Series
from newsletter.planning import Progress, anchor_index, next_lesson, next_send, position_of
from newsletter.schedule import Cadence

MONDAY_7 = Cadence("UTC", 0, time(7, 0))
CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday


def lesson(slug: str, week: int, **extra: object) -> Lesson:
    return Lesson(week, slug, slug.title(), f"Lesson {week}", "preheader", "", "body\n", Path(f"{slug}.md"), **extra)  # type: ignore[arg-type]


def course(*slugs: str, **extras: dict[str, object]) -> Series:
    lessons = tuple(lesson(slug, week, **extras.get(slug, {})) for week, slug in enumerate(slugs, start=1))
    return Series("Course", "course", "", "weekly", lessons, Path("."))


def nxt(series: Series, last: str | None, *received: str) -> str | None:
    found = next_lesson(series, Progress(last, set(received)))
    return found.slug if found else None


def test_a_reader_walks_the_course_in_order() -> None:
    series = course("a", "b", "c")
    assert nxt(series, None) == "a"
    assert nxt(series, "a", "a") == "b"
    assert nxt(series, "c", "a", "b", "c") is None


def test_a_lesson_inserted_behind_a_reader_is_skipped_unless_it_asks_to_catch_up() -> None:
    inserted = course("a", "new", "b", "c")
    assert nxt(inserted, "b", "a", "b") == "c"  # past it: skipped
    assert nxt(inserted, "a", "a") == "new"  # just before it: they get it next
    catching_up = course("a", "new", "b", "c", new={"catch_up": "send"})
    assert nxt(catching_up, "b", "a", "b") == "new"
    assert nxt(catching_up, "b", "a", "b", "new") == "c"  # and then on from where they were


def test_a_removed_lesson_is_never_waited_for_and_a_removed_anchor_falls_back() -> None:
    removed = course("a", "c", "d")
    assert nxt(removed, "a", "a") == "c"  # "b" is gone
    assert nxt(removed, "b", "a", "b") == "c"  # their last lesson is gone: the furthest one still here counts


def test_a_reordered_course_never_sends_a_lesson_twice() -> None:
    reordered = course("a", "c", "b", "d")
    assert nxt(reordered, "b", "a", "b") == "d"  # "c" moved behind them
    assert nxt(reordered, "c", "a", "c") == "b"
    swapped = course("b", "a", "c")
    assert nxt(swapped, "a", "a") == "c"  # "b" is behind them now, and not a catch-up lesson
    assert nxt(course("a", "b", "c"), "a", "a", "b") == "c"  # had "b" out of order: not again


def test_a_rename_counts_what_readers_had_under_the_old_slug() -> None:
    renamed = course("a", "b2", "c", b2={"replaces": ("b",)})
    assert nxt(renamed, "b", "a", "b") == "c"
    assert nxt(renamed, "a", "a") == "b2"
    assert anchor_index(renamed, Progress("b", {"a", "b"})) == 1
    assert position_of(renamed, Progress("b", {"a", "b"})) == 2


def test_readers_wait_before_a_draft() -> None:
    drafted = course("a", "b", "c", b={"draft": True})
    assert nxt(drafted, "a", "a") == "b"  # the ledger holds their row until it is published


def test_progress_moves_forward_only() -> None:
    series = course("a", "new", "b", "c", new={"catch_up": "send"})
    after_b = Progress("b", {"a", "b"})
    assert after_b.after(series, series.lesson("new")).last_lesson == "b"  # a catch-up lesson is behind them
    assert after_b.after(series, series.lesson("c")).last_lesson == "c"


def test_lesson_one_comes_at_the_first_slot_after_confirming_then_weekly(settings: Settings) -> None:
    series = course("a", "b")
    first = next_send(settings, series, progress=Progress(), cadence=MONDAY_7, now=CONFIRMED_AT)
    assert first is not None and (first.lesson.slug, first.due_at) == ("a", CONFIRMED_AT.replace(hour=7))
    at_once = replace(settings.schedule, first_lesson="immediately")
    eager = next_send(
        replace(settings, schedule=at_once), series, progress=Progress(), cadence=MONDAY_7, now=CONFIRMED_AT
    )
    assert eager is not None and eager.due_at == CONFIRMED_AT
    sent = CONFIRMED_AT.replace(hour=7)
    second = next_send(
        settings, series, progress=Progress("a", {"a"}), cadence=MONDAY_7, now=sent, after=sent, last_sent_at=sent
    )
    assert second is not None and (second.lesson.slug, second.due_at) == ("b", sent + timedelta(weeks=1))


@pytest.mark.parametrize("late_by", [timedelta(days=5), timedelta(days=6, hours=23)])
def test_an_outage_delays_the_next_lesson_but_never_bursts_it(settings: Settings, late_by: timedelta) -> None:
    series = course("a", "b")
    slot = CONFIRMED_AT.replace(hour=7)
    sent = slot + late_by  # lesson 1 went out days late
    second = next_send(
        settings, series, progress=Progress("a", {"a"}), cadence=MONDAY_7, now=sent, after=slot, last_sent_at=sent
    )
    assert second is not None
    assert second.due_at - sent >= settings.schedule.min_gap
    assert second.due_at == slot + timedelta(weeks=2)

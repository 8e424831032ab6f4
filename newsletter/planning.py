"""The one rule for "next lesson, when": which lesson a reader gets next, and when it is due.

Which (`next_lesson`): the first lesson after the last one they received, in the current order, that they
have not received; before that, any lesson behind them marked `catch_up = "send"` that they never had.
Drafts and broken lessons count in the order, so readers wait before them (the ledger holds their row).
When (`next_send`): lesson 1 at the first slot after confirmation (or at once, `first_lesson =
"immediately"`); every later lesson at the first slot after the previous lesson's slot that is also at
least `min_gap` after the previous actual send, so an outage delays lessons but never bursts them. The
calendar itself is `schedule.py`'s; this module reads no database and no clock.

Everything that decides a next lesson calls `next_send`: the ledger after each delivery, confirmations,
resumes, changes of day, course edits, imports, `plan`'s projection and the preferences page.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from newsletter.lessons import Lesson, Series
from newsletter.schedule import WEEKDAY_NAMES, Cadence, first_lesson_due, next_due

if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.models import Subscriber


@dataclass(frozen=True)
class Progress:
    """Where a reader stands: the last lesson received in course order, and every lesson they have had.

    `received` holds ledger slugs (a renamed lesson's old slug counts as the lesson, through the series):
    lessons sent, and lessons refused for good (the reader moved on from those).
    """

    last_lesson: str | None = None
    received: Collection[str] = ()

    def after(self, series: Series, lesson: Lesson) -> Progress:
        """This progress once `lesson` is received: it becomes the last lesson unless it was behind it."""
        current = series.index(self.last_lesson) if self.last_lesson else None
        index = series.index(lesson.slug)
        moves = current is None or (index is not None and index > current)
        last = lesson.slug if moves else self.last_lesson
        return Progress(last, {*self.received, lesson.slug})


@dataclass(frozen=True)
class NextSend:
    """A reader's next lesson and when it is due."""

    lesson: Lesson
    due_at: datetime


def anchor_index(series: Series, progress: Progress) -> int:
    """Where the reader stands in the current order: the index of their last lesson (-1 before the first).

    If that lesson was removed from the course, the furthest lesson they received that is still there.
    """
    if progress.last_lesson is not None:
        index = series.index(progress.last_lesson)
        if index is not None:
            return index
    indexes = [index for slug in progress.received if (index := series.index(slug)) is not None]
    return max(indexes, default=-1)


def position_of(series: Series, progress: Progress) -> int:
    """The reader's place for people and for the ledger's `position`: 1-based, 0 before the first lesson."""
    return anchor_index(series, progress) + 1


def next_lesson(series: Series, progress: Progress) -> Lesson | None:
    """The lesson this reader gets next, or None when there is none (for now)."""
    had = {identity for slug in progress.received if (identity := series.identity(slug)) is not None}
    anchor = anchor_index(series, progress)
    for lesson in series.lessons[: max(anchor, 0)]:
        if lesson.catch_up == "send" and lesson.slug not in had:
            return lesson
    return next((lesson for lesson in series.lessons[anchor + 1 :] if lesson.slug not in had), None)


def next_send(
    settings: Settings,
    series: Series,
    *,
    progress: Progress,
    cadence: Cadence,
    now: datetime,
    after: datetime | None = None,
    last_sent_at: datetime | None = None,
) -> NextSend | None:
    """The reader's next lesson and when it is due; None when the course has nothing more for them.

    `after` is the instant the next slot must follow: the slot of the lesson just delivered, or `now` after
    a confirmation, resume or change of day. `last_sent_at` is their latest actual send, if any.
    """
    lesson = next_lesson(series, progress)
    if lesson is None:
        return None
    if not progress.received and progress.last_lesson is None and last_sent_at is None:
        due = first_lesson_due(cadence, after or now, settings.schedule.first_lesson)
    else:
        due = next_due(cadence, after=after or now, last_sent_at=last_sent_at, min_gap=settings.schedule.min_gap)
    return NextSend(lesson, due)


def cadence_of(subscriber: Subscriber) -> Cadence:
    return Cadence(timezone=subscriber.timezone, weekday=subscriber.weekday, send_time=subscriber.send_time)


def describe_cadence(subscriber: Subscriber) -> str:
    """How the footer and pages say it: "Monday at 07:00 (Europe/Berlin)"."""
    return f"{WEEKDAY_NAMES[subscriber.weekday]} at {subscriber.send_time:%H:%M} ({subscriber.timezone})"

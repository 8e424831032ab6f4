"""The upcoming sends, soonest first: what `newsletter plan` shows, and what the studio's chart counts.

The ledger holds one waiting row per reader: their next email. For a readable week ahead, the lessons
after that row are projected too, by the one rule the sender applies when it records a send
(`planning.next_send`), assuming each lesson goes out when it is due, or now if it is already overdue.
Projected entries are marked `projected`: they are not in the database yet, and they move if a send is
late, or the reader pauses or changes their day. A held row (its lesson is a draft, fails the checklist
or is broken) is shown with the reason and nothing is projected after it: the reader waits there.

Rows are read in batches inside one read-only transaction (on PostgreSQL through a server-side cursor),
so a large ledger streams in flat memory and no sender waits for it. Soonest first without holding every
entry: the database returns the ledger's rows in the printed order (due time, then address), and a row's
projections always come after the row itself. So each row is given out as it arrives, after the
projections that come before it, which wait in a heap until then. The heap holds only projections still
ahead of the ledger (for a week's plan, those of overdue readers); past HEAP_LIMIT entries (a long
`--days`) it goes to a temporary file as a sorted run and is merged back from there, so memory stays
flat for any horizon.
"""

from __future__ import annotations

import heapq
import pickle
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import count, islice, pairwise
from typing import IO, TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from newsletter.ledger import WAITING, Reader, load_readers
from newsletter.models import CONFIRMATION, Delivery, Subscriber
from newsletter.planning import next_send
from newsletter.subscribers import get_subscriber

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from newsletter.project import Project

PLAN_BATCH = 1000
HEAP_LIMIT = 50_000  # projections held in memory before they go to a temporary file
SortKey = tuple[datetime, str, int]


@dataclass(frozen=True, slots=True)
class PlannedSend:
    """One email expected to go out: from the ledger, or projected beyond it."""

    email: str
    week: int  # the lesson's place in the course (0: the confirmation email)
    slug: str
    due_at: datetime
    timezone: str
    projected: bool = False
    held: str = ""  # why it waits (draft, checklist, broken), if it does

    @property
    def key(self) -> SortKey:
        """Soonest first; equal times by address."""
        return (self.due_at, self.email, self.week)

    @property
    def local(self) -> datetime:
        """Return the due time on the subscriber's own clock."""
        return self.due_at.astimezone(ZoneInfo(self.timezone))

    def as_json(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "week": self.week,
            "slug": self.slug,
            "due_at": self.due_at.astimezone(UTC).isoformat(),
            "local": self.local.isoformat(),
            "timezone": self.timezone,
            "projected": self.projected,
            "held": self.held,
        }


def upcoming_sends(
    session: Session,
    project: Project,
    *,
    now: datetime,
    days: float = 7,
    email: str | None = None,
    project_later_lessons: bool = True,
) -> Iterator[PlannedSend]:
    """Yield what is due up to `days` after `now` (overdue rows included), soonest first, as it is read."""
    later = _Later(HEAP_LIMIT)
    try:
        for send in iter_upcoming(
            session, project, now=now, days=days, email=email, project_later=project_later_lessons
        ):
            if send.projected:
                later.push(send)
                continue
            yield from later.before(send.key)
            yield send
        yield from later.before(None)
    finally:
        later.close()


def iter_upcoming(
    session: Session,
    project: Project,
    *,
    now: datetime,
    days: float = 7,
    email: str | None = None,
    project_later: bool = True,
) -> Iterator[PlannedSend]:
    """The same entries, not sorted: the ledger's rows soonest first, each followed by its projections."""
    horizon = now + timedelta(days=days)
    # Python orders strings by code point: on PostgreSQL that is the "C" collation, not the database's own.
    address = Subscriber.email.collate("C") if session.get_bind().dialect.name == "postgresql" else Subscriber.email
    query = (
        select(
            Subscriber.id,
            Subscriber.email,
            Subscriber.timezone,
            Delivery.lesson,
            Delivery.status,
            Delivery.hold,
            Delivery.due_at,
            Delivery.slot_at,
        )
        .join(Subscriber, Delivery.subscriber_id == Subscriber.id)
        .where(Delivery.status.in_(WAITING), Delivery.due_at <= horizon)
        .order_by(Delivery.due_at, address)
        .execution_options(yield_per=PLAN_BATCH)
    )
    if email is not None:
        query = query.where(Subscriber.id == get_subscriber(session, email).id)
    rows = iter(session.execute(query))
    while batch := list(islice(rows, PLAN_BATCH)):
        readers = load_readers(session.connection(), {row.id for row in batch}) if project_later else {}
        for row in batch:
            yield from _entries(project, row, readers.get(row.id), now=now, horizon=horizon)


def _entries(
    project: Project, row: Any, reader: Reader | None, *, now: datetime, horizon: datetime
) -> Iterator[PlannedSend]:
    series = project.series
    position = 0 if row.lesson == CONFIRMATION else (series.index(row.lesson) or 0) + 1
    held = (row.hold or "held") if row.status == "held" else ""
    yield PlannedSend(row.email, position, row.lesson, row.due_at, row.timezone, held=held)
    if reader is None or held or row.lesson == CONFIRMATION or reader.status != "active":
        return
    current = series.lesson(series.identity(row.lesson) or row.lesson)
    progress, slot, assumed_sent = reader.progress.after(series, current), row.slot_at, max(row.due_at, now)
    for _ in range(len(series)):
        planned = next_send(
            project.settings,
            series,
            progress=progress,
            cadence=reader.cadence,
            now=assumed_sent,
            after=slot,
            last_sent_at=assumed_sent,
        )
        if planned is None or planned.due_at > horizon:
            return
        gate = project.gates.get(planned.lesson.slug)
        yield PlannedSend(
            row.email,
            planned.lesson.week,
            planned.lesson.slug,
            planned.due_at,
            row.timezone,
            projected=True,
            held=gate.reason if gate else "",
        )
        if gate is not None:
            return  # the reader will wait there
        progress, slot = progress.after(series, planned.lesson), planned.due_at
        assumed_sent = planned.due_at


class _Later:
    """Projected sends not given out yet, smallest key first: a heap, and sorted runs on disk when it grows."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._order = count()  # a tie-breaker, so that sends themselves are never compared
        self._heap: list[tuple[SortKey, int, PlannedSend]] = []
        self._runs: list[tuple[SortKey, int, PlannedSend, Iterator[PlannedSend]]] = []  # each run's next send
        self._files = ExitStack()  # the sorted runs: temporary files, gone once closed

    def push(self, send: PlannedSend) -> None:
        heapq.heappush(self._heap, (send.key, next(self._order), send))
        if len(self._heap) > self._limit:
            self._spill()

    def before(self, key: SortKey | None) -> Iterator[PlannedSend]:
        """Take out every send that comes before `key` (all of them for None), smallest first."""
        while self._heap or self._runs:
            from_heap = bool(self._heap) and (not self._runs or self._heap[0][0] <= self._runs[0][0])
            smallest = self._heap[0][0] if from_heap else self._runs[0][0]
            if key is not None and smallest >= key:
                return
            if from_heap:
                yield heapq.heappop(self._heap)[2]
            else:
                _key, _order, send, run = heapq.heappop(self._runs)
                self._next_of(run)
                yield send

    def close(self) -> None:
        self._files.close()

    def _spill(self) -> None:
        file = self._files.enter_context(tempfile.TemporaryFile())  # noqa: SIM115  (read back later; close() ends it)
        for _key, _order, send in sorted(self._heap):
            pickle.dump(send, file)
        self._heap = []
        file.seek(0)
        self._next_of(_read_run(file))

    def _next_of(self, run: Iterator[PlannedSend]) -> None:
        send = next(run, None)
        if send is not None:
            heapq.heappush(self._runs, (send.key, next(self._order), send, run))


def _read_run(file: IO[bytes]) -> Iterator[PlannedSend]:
    while True:
        try:
            send = pickle.load(file)
        except EOFError:
            return
        yield send


@dataclass(frozen=True)
class DayCount:
    day: date
    count: int

    @property
    def label(self) -> str:
        return f"{self.day:%a} {self.day.day} {self.day:%b}"


@dataclass(frozen=True)
class SendsByDay:
    """What `plan` lists, counted: overdue now, then per day of one zone; held entries apart."""

    overdue: int
    days: list[DayCount]
    held: int


def sends_per_day(session: Session, project: Project, *, now: datetime, days: int, zone: str) -> SendsByDay:
    """Count `plan`'s entries from `now` to the end of the `days`th day in `zone` (today is the first)."""
    local = ZoneInfo(zone)
    today = now.astimezone(local).date()
    bounds = [datetime.combine(today + timedelta(days=offset), time(0), local) for offset in range(days + 1)]
    horizon = (bounds[-1] - now).total_seconds() / 86400
    per_day: Counter[date] = Counter()
    overdue = held = 0
    for send in iter_upcoming(session, project, now=now, days=horizon):
        if send.held:
            held += 1
        elif send.due_at <= now:
            overdue += 1
        elif send.due_at < bounds[-1]:
            per_day[send.due_at.astimezone(local).date()] += 1
    return SendsByDay(
        overdue, [DayCount(start.date(), per_day[start.date()]) for start, _end in pairwise(bounds)], held
    )

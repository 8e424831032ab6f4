"""The studio's upcoming-sends chart: what `newsletter plan` lists, counted per day, kept off the request path.

The chart counts plan's own entries (`plan.sends_per_day`): the ledger's waiting rows and the lessons
projected after them, by the one rule the sender follows. At a million readers that is most of a minute
of work, far too slow for a page, so each version of the course keeps its last count, and a page older
than MAX_AGE starts a new one in a background thread and shows the last one meanwhile, with the time it
was made. A ledger of at most SMALL_LEDGER waiting rows is counted on the request itself: cheap there, and
the chart is never missing when it need not be.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from newsletter.errors import NewsletterError
from newsletter.ledger.waiting import WAITING
from newsletter.models import Delivery
from newsletter.plan import SendsByDay, sends_per_day
from newsletter.project import Project

CHART_DAYS = 28
MAX_AGE = timedelta(minutes=1)
SMALL_LEDGER = 5_000  # waiting rows counted on the request itself (milliseconds of work)


@dataclass(frozen=True)
class Chart:
    """One count of the upcoming sends, or why it could not be made."""

    counted_at: datetime
    sends: SendsByDay | None
    error: str = ""


class UpcomingChart:
    """The last chart of one version of the course, counted again when it is older than MAX_AGE."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chart: Chart | None = None
        self._counting = False

    def get(self, project: Project, now: datetime) -> Chart | None:
        """The newest chart there is (None while the first is counted); start a new count if it is old."""
        with self._lock:
            chart = self._chart
            if self._counting or (chart is not None and now - chart.counted_at <= MAX_AGE):
                return chart
            self._counting = True
        if _is_small(project):
            self._count(project, now)
            return self._chart
        threading.Thread(target=self._count, args=(project, now), name="studio-chart", daemon=True).start()
        return chart

    def _count(self, project: Project, now: datetime) -> None:
        chart = Chart(now, None, "the upcoming sends could not be counted")
        try:
            with project.db.reading() as session:
                zone = project.settings.schedule.timezone
                chart = Chart(now, sends_per_day(session, project, now=now, days=CHART_DAYS, zone=zone))
        except (NewsletterError, SQLAlchemyError) as error:
            chart = Chart(now, None, str(error))
        finally:
            with self._lock:
                self._chart, self._counting = chart, False


def _is_small(project: Project) -> bool:
    """Whether the ledger has at most SMALL_LEDGER waiting rows: one short walk of the (status, due_at) index."""
    try:
        with project.db.reading() as session:
            beyond = select(Delivery.id).where(Delivery.status.in_(WAITING)).offset(SMALL_LEDGER).limit(1)
            return session.scalar(beyond) is None
    except SQLAlchemyError:
        return True  # counted here, so that the chart says what is wrong at once


_charts: weakref.WeakKeyDictionary[Project, UpcomingChart] = weakref.WeakKeyDictionary()
_charts_lock = threading.Lock()


def upcoming_chart(project: Project, now: datetime) -> Chart | None:
    """The studio's chart for this version of the course (a reloaded course is a new Project, counted anew)."""
    with _charts_lock:
        chart = _charts.setdefault(project, UpcomingChart())
    return chart.get(project, now)

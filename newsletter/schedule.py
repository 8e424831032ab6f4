"""A subscriber's calendar: weekly send slots in their own zone, and when the next lesson is due.

Pure functions of a `Cadence` and instants passed in; nothing here reads the clock or a database.
Every instant in or out is timezone-aware, and every instant returned is in UTC.

A slot is the cadence's weekday at its local time. Wall-clock times are resolved to one instant:
an ambiguous time (autumn fold) fires once, at its first occurrence; a time skipped by a
spring-forward gap fires at the first instant after the gap, which is the transition itself.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, assert_never
from zoneinfo import ZoneInfo

from newsletter.errors import ScheduleValueError, SubscriberError
from newsletter.zones import form_zones, known_spellings, known_zones, offset_hint

WEEKDAY_NAMES: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Each way of writing a day that `parse_weekday` reads, lower-cased.
_WEEKDAY_WORDS = {
    **{name.lower(): number for number, name in enumerate(WEEKDAY_NAMES)},
    **{name.lower()[:3]: number for number, name in enumerate(WEEKDAY_NAMES)},
    "tues": 1,
    "thur": 3,
    "thurs": 3,
}
_ONE_WEEK = timedelta(days=7)
_SEND_TIME = re.compile(r"([0-9]{1,2}):([0-9]{2})")


@dataclass(frozen=True)
class Cadence:
    """When one subscriber receives lessons: a weekday and a wall-clock time in their zone."""

    timezone: str
    weekday: int
    send_time: time

    def __post_init__(self) -> None:
        canonical = parse_timezone(self.timezone)
        if canonical != self.timezone:
            raise SubscriberError(f"time zone {self.timezone!r}: spell it exactly {canonical!r}")
        if not 0 <= self.weekday <= 6:
            raise SubscriberError(f"weekday {self.weekday!r}: expected 0 (Monday) to 6 (Sunday)")
        if self.send_time.tzinfo is not None:
            raise SubscriberError(f"send time {self.send_time!r}: expected a local wall-clock time without a zone")

    @property
    def zone(self) -> ZoneInfo:
        """Return the zone the send time is read in."""
        return ZoneInfo(self.timezone)


def slot_on(cadence: Cadence, local_date: date) -> datetime:
    """Return the UTC instant of the slot on `local_date`, which must fall on the cadence's weekday."""
    if local_date.weekday() != cadence.weekday:
        raise ValueError(
            f"{local_date.isoformat()} is a {WEEKDAY_NAMES[local_date.weekday()]}, "
            f"not a {WEEKDAY_NAMES[cadence.weekday]}"
        )
    return _resolve_wall_time(datetime.combine(local_date, cadence.send_time), cadence.zone)


def next_slot_after(cadence: Cadence, instant: datetime) -> datetime:
    """Return the first slot strictly after `instant`."""
    return next(slots_after(cadence, instant))


def slots_after(cadence: Cadence, instant: datetime) -> Iterator[datetime]:
    """Yield consecutive slots strictly after `instant`, one per local week, forever."""
    _require_aware(instant, "instant")
    local_today = instant.astimezone(cadence.zone).date()
    days_back = (local_today.weekday() - cadence.weekday) % 7
    # The slot on or before today's local date is the earliest that can still lie after `instant`.
    candidate = local_today - timedelta(days=days_back)
    while True:
        slot = slot_on(cadence, candidate)
        if slot > instant:
            yield slot
        candidate += _ONE_WEEK


def first_lesson_due(
    cadence: Cadence, confirmed_at: datetime, first_lesson: Literal["next_slot", "immediately"]
) -> datetime:
    """Return when lesson 1 is due for a subscriber who confirmed at `confirmed_at`."""
    _require_aware(confirmed_at, "confirmed_at")
    if first_lesson == "immediately":
        return confirmed_at.astimezone(UTC)
    if first_lesson == "next_slot":
        return next_slot_after(cadence, confirmed_at)
    assert_never(first_lesson)


def next_due(cadence: Cadence, *, after: datetime, last_sent_at: datetime | None, min_gap: timedelta) -> datetime:
    """Return the first slot strictly after `after` and no earlier than `last_sent_at + min_gap`.

    The one rule behind: lesson k+1 after lesson k (`after` = slot of lesson k), resume
    (`after` = resumed_at) and a change of weekday, time or zone (`after` = now). A slot exactly
    `min_gap` after the last send is allowed: that gap is not closer than `min_gap`.
    """
    _require_aware(after, "after")
    if min_gap < timedelta(0):
        raise ValueError(f"min_gap must not be negative, got {min_gap}")
    if last_sent_at is None:
        return next_slot_after(cadence, after)
    _require_aware(last_sent_at, "last_sent_at")
    earliest_allowed = last_sent_at + min_gap
    return next(slot for slot in slots_after(cadence, after) if slot >= earliest_allowed)


def parse_weekday(text: str) -> int:
    """Return 0 (Monday) to 6 (Sunday) for a day's name or its abbreviation, in any case.

    The one reading of a weekday: config.toml's [schedule] weekday, the CLI, imports and the forms use it.
    Abbreviations are the ones people write (Mon … Sun, and Tues, Thur, Thurs), not any prefix: "Mond" is
    more likely a slip than a Monday, and "T" or "S" would be a guess.
    """
    number = _WEEKDAY_WORDS.get(text.strip().lower())
    if number is not None:
        return number
    hint = " (numbers are ambiguous: 0 is Sunday to cron, Monday to Python)" if text.strip().isdigit() else ""
    allowed = ", ".join(WEEKDAY_NAMES)
    raise ScheduleValueError("weekday", text, f"one of {allowed}, or Mon, Tue, Wed, Thu, Fri, Sat, Sun{hint}")


def weekday_name(text: str) -> str:
    """Return the day's full name ("Monday") for anything `parse_weekday` reads."""
    return WEEKDAY_NAMES[parse_weekday(text)]


def parse_send_time(text: str) -> time:
    """Return the wall-clock time written as HH:MM on a 24-hour clock."""
    match = _SEND_TIME.fullmatch(text.strip())
    if match is not None:
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour <= 23 and minute <= 59:
            return time(hour, minute)
    raise ScheduleValueError("send time", text, "HH:MM on a 24-hour clock, 00:00 to 23:59")


def parse_timezone(text: str) -> str:
    """Return the exact spelling of an IANA zone name such as 'Europe/London'.

    The one reading of a zone (config.toml, the CLI, imports, the forms). Any zone of the tz database is
    accepted, links included: a reader may hold one. `zones.caveat` says which ones are not places.
    """
    name = text.strip()
    if name in known_spellings():  # every reader's zone, as stored: `plan` asks once per reader
        return name
    spelled = known_zones().get(name.lower())
    if spelled is not None:
        return spelled
    # An offset is explained rather than matched: "GMT+2" is close to the zone GMT+0, which it does not mean.
    hint = offset_hint(name)
    if hint is not None:
        hint = f"; {hint}"
    else:
        close = difflib.get_close_matches(name, form_zones(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ScheduleValueError(
        "time zone", text, f"an IANA zone name such as 'Europe/London' or 'America/New_York'{hint}"
    )


@functools.lru_cache(maxsize=16384)
def _resolve_wall_time(wall: datetime, zone: ZoneInfo) -> datetime:
    """Return the first UTC instant at which the clocks in `zone` read `wall` or later.

    Remembered: readers share zones, weekdays and send times, so `plan` over a million readers asks for
    the same few thousand wall times again and again (each answer costs four zone conversions or more).
    """
    readings = [_utc_if_real(wall, zone, fold) for fold in (0, 1)]
    real = [instant for instant in readings if instant is not None]
    if real:
        return min(real)
    # `wall` falls in a gap. With fold=0 zoneinfo reads it with the offset from before the gap,
    # with fold=1 with the offset after; the transition lies between those two readings.
    before_gap = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    after_gap = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    return _first_instant_reading_at_least(wall, zone, before_gap, after_gap)


def _utc_if_real(wall: datetime, zone: ZoneInfo, fold: int) -> datetime | None:
    """Return the UTC instant that reads `wall` with this fold, or None if clocks never show it."""
    instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    return None


def _first_instant_reading_at_least(wall: datetime, zone: ZoneInfo, low: datetime, high: datetime) -> datetime:
    """Bisect [low, high] for the first instant whose local reading is `wall` or later."""

    def reaches_wall(posix_seconds: int) -> bool:
        return datetime.fromtimestamp(posix_seconds, zone).replace(tzinfo=None) >= wall

    # Transitions fall on whole seconds, so bisecting whole POSIX seconds finds them exactly.
    below = math.floor(low.timestamp())
    above = math.ceil(high.timestamp())
    while above - below > 1:
        middle = (below + above) // 2
        if reaches_wall(middle):
            above = middle
        else:
            below = middle
    return datetime.fromtimestamp(above, UTC)


def _require_aware(instant: datetime, name: str) -> None:
    """Refuse a naive datetime: without a zone it names no instant."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {instant.isoformat()}")

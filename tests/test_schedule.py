"""The calendar against a brute-force reference that only ever converts UTC to local time."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.errors import SubscriberError
from newsletter.schedule import (
    WEEKDAY_NAMES,
    Cadence,
    first_lesson_due,
    next_due,
    next_slot_after,
    parse_send_time,
    parse_timezone,
    parse_weekday,
    slot_on,
    slots_after,
)

ZONES = (
    "Australia/Lord_Howe",
    "America/Santiago",
    "Europe/London",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "America/New_York",
    "Europe/Berlin",
    "UTC",
    "America/St_Johns",
)
TIMES = (time(0, 0), time(0, 30), time(1, 30), time(2, 0), time(2, 30), time(23, 59))
ONE_MINUTE = timedelta(minutes=1)
ONE_WEEK = timedelta(days=7)

zones = st.sampled_from(ZONES)
weekdays = st.integers(min_value=0, max_value=6)
send_times = st.one_of(
    st.sampled_from(TIMES), st.builds(time, st.integers(min_value=0, max_value=23), st.integers(0, 59))
)
local_dates = st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 24))
instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 24), timezones=st.just(UTC))
min_gaps = st.sampled_from([timedelta(0), timedelta(days=1), timedelta(days=3), timedelta(days=6, hours=12)])


def reading(instant: datetime, zone_name: str) -> datetime:
    """What the wall clocks in the zone show at this instant."""
    return instant.astimezone(ZoneInfo(zone_name)).replace(tzinfo=None)


def reference_slot(zone_name: str, local_date: date, send_time: time) -> datetime:
    """Scan UTC minute by minute for the first instant whose clocks read the wall time or later."""
    wall = datetime.combine(local_date, send_time)
    # No zone is more than 14 hours ahead of UTC, so every earlier instant reads less than `wall`.
    candidate = wall.replace(tzinfo=UTC) - timedelta(hours=14)
    while reading(candidate, zone_name) < wall:
        candidate += ONE_MINUTE
    return candidate


def reference_next_slot(zone_name: str, weekday: int, send_time: time, instant: datetime) -> datetime:
    """The earliest reference slot strictly after `instant`, trying the weekdays around it."""
    local_date = reading(instant, zone_name).date()
    nearby = (local_date + timedelta(days=offset) for offset in range(-8, 9))
    slots = (reference_slot(zone_name, day, send_time) for day in nearby if day.weekday() == weekday)
    return min(slot for slot in slots if slot > instant)


def transitions(zone_name: str, start: datetime, end: datetime) -> list[tuple[datetime, timedelta, timedelta]]:
    """Every offset change between two UTC instants: (instant, offset before, offset after)."""
    zone = ZoneInfo(zone_name)
    found = []
    day = start
    while day < end:
        before, after = day.astimezone(zone).utcoffset(), (day + timedelta(days=1)).astimezone(zone).utcoffset()
        assert before is not None and after is not None
        if before != after:
            # Offsets change on whole minutes: bisect the minutes of that day.
            low, high = 0, 24 * 60
            while high - low > 1:
                middle = (low + high) // 2
                if (day + middle * ONE_MINUTE).astimezone(zone).utcoffset() == before:
                    low = middle
                else:
                    high = middle
            found.append((day + high * ONE_MINUTE, before, after))
        day += timedelta(days=1)
    return found


def assert_is_slot(cadence: Cadence, slot: datetime) -> None:
    """The slot reads the cadence's weekday and time at its first occurrence, or is the end of a gap."""
    assert slot.tzinfo is UTC
    shown = reading(slot, cadence.timezone)
    assert shown.weekday() == cadence.weekday
    wall = datetime.combine(shown.date(), cadence.send_time)
    if shown == wall:
        # An autumn fold shows the same wall time twice within its length (at most an hour here).
        earlier = (reading(slot - ONE_MINUTE * minutes, cadence.timezone) for minutes in range(1, 121))
        assert wall not in earlier
    else:
        assert reading(slot - ONE_MINUTE, cadence.timezone) < wall < shown


@settings(max_examples=300, deadline=None)
@given(zone_name=zones, local_date=local_dates, send_time=send_times)
def test_slot_on_matches_the_reference(zone_name: str, local_date: date, send_time: time) -> None:
    cadence = Cadence(zone_name, local_date.weekday(), send_time)
    assert slot_on(cadence, local_date) == reference_slot(zone_name, local_date, send_time)


@pytest.mark.parametrize("zone_name", [zone for zone in ZONES if zone not in ("UTC", "Asia/Kathmandu")])
def test_every_wall_time_near_every_transition_matches_the_reference(zone_name: str) -> None:
    found = transitions(zone_name, datetime(2020, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC))
    assert len(found) >= 20
    for instant, before, after in found:
        first_affected = instant + min(before, after) - timedelta(minutes=30)
        last_affected = instant + max(before, after) + timedelta(minutes=30)
        wall = first_affected.replace(tzinfo=None)
        while wall <= last_affected.replace(tzinfo=None):
            cadence = Cadence(zone_name, wall.weekday(), wall.time())
            expected = reference_slot(zone_name, wall.date(), wall.time())
            assert slot_on(cadence, wall.date()) == expected, wall
            assert_is_slot(cadence, expected)
            wall += timedelta(minutes=15)


@settings(max_examples=120, deadline=None)
@given(zone_name=zones, weekday=weekdays, send_time=send_times, instant=instants)
def test_slots_after_are_weekly_minimal_and_fire_once(
    zone_name: str, weekday: int, send_time: time, instant: datetime
) -> None:
    cadence = Cadence(zone_name, weekday, send_time)
    slots = list(islice(slots_after(cadence, instant), 6))
    assert slots[0] == next_slot_after(cadence, instant)
    assert slots[0] == reference_next_slot(zone_name, weekday, send_time, instant)
    assert slots[0] > instant
    for slot in slots:
        assert_is_slot(cadence, slot)
    for earlier, later in pairwise(slots):
        assert reading(later, zone_name).date() - reading(earlier, zone_name).date() == ONE_WEEK
        assert abs(later - earlier - ONE_WEEK) <= timedelta(hours=1)
        assert later == reference_next_slot(zone_name, weekday, send_time, earlier)


@settings(max_examples=120, deadline=None)
@given(zone_name=zones, weekday=weekdays, send_time=send_times, instant=instants, local_zone=zones)
def test_next_slot_after_accepts_instants_in_any_zone(
    zone_name: str, weekday: int, send_time: time, instant: datetime, local_zone: str
) -> None:
    cadence = Cadence(zone_name, weekday, send_time)
    elsewhere = instant.astimezone(ZoneInfo(local_zone))
    assert next_slot_after(cadence, elsewhere) == next_slot_after(cadence, instant)


@pytest.mark.parametrize(
    ("zone_name", "local_date", "send_time", "expected"),
    [
        # New York springs forward at 02:00 to 03:00: 02:00 and 02:30 fire at 03:00 EDT.
        ("America/New_York", date(2026, 3, 8), time(2, 30), datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
        ("America/New_York", date(2026, 3, 8), time(2, 0), datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
        ("America/New_York", date(2026, 3, 8), time(1, 59), datetime(2026, 3, 8, 6, 59, tzinfo=UTC)),
        # ... and falls back at 02:00 to 01:00: 01:30 fires once, in EDT.
        ("America/New_York", date(2026, 11, 1), time(1, 30), datetime(2026, 11, 1, 5, 30, tzinfo=UTC)),
        ("America/New_York", date(2026, 11, 1), time(2, 0), datetime(2026, 11, 1, 7, 0, tzinfo=UTC)),
        # London: 01:00 GMT becomes 02:00 BST; 02:00 BST becomes 01:00 GMT.
        ("Europe/London", date(2026, 3, 29), time(1, 30), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        ("Europe/London", date(2026, 3, 29), time(0, 30), datetime(2026, 3, 29, 0, 30, tzinfo=UTC)),
        ("Europe/London", date(2026, 10, 25), time(1, 0), datetime(2026, 10, 25, 0, 0, tzinfo=UTC)),
        ("Europe/London", date(2026, 10, 25), time(1, 30), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        # Lord Howe shifts by 30 minutes: 02:00 LHDT back to 01:30 LHST, 02:00 LHST on to 02:30 LHDT.
        ("Australia/Lord_Howe", date(2026, 4, 5), time(1, 45), datetime(2026, 4, 4, 14, 45, tzinfo=UTC)),
        ("Australia/Lord_Howe", date(2026, 4, 5), time(2, 0), datetime(2026, 4, 4, 15, 30, tzinfo=UTC)),
        ("Australia/Lord_Howe", date(2026, 10, 4), time(2, 0), datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),
        ("Australia/Lord_Howe", date(2026, 10, 4), time(2, 15), datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),
        ("Australia/Lord_Howe", date(2026, 10, 4), time(2, 30), datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),
        # Santiago changes at midnight: Sunday 00:00 does not exist in September.
        ("America/Santiago", date(2026, 9, 6), time(0, 0), datetime(2026, 9, 6, 4, 0, tzinfo=UTC)),
        ("America/Santiago", date(2026, 9, 6), time(0, 30), datetime(2026, 9, 6, 4, 0, tzinfo=UTC)),
        ("America/Santiago", date(2026, 9, 6), time(1, 0), datetime(2026, 9, 6, 4, 0, tzinfo=UTC)),
        # ... and Saturday 23:00 to 24:00 happens twice in April.
        ("America/Santiago", date(2026, 4, 4), time(23, 30), datetime(2026, 4, 5, 2, 30, tzinfo=UTC)),
        ("America/Santiago", date(2026, 4, 5), time(0, 0), datetime(2026, 4, 5, 4, 0, tzinfo=UTC)),
    ],
)
def test_dst_days_of_2026(zone_name: str, local_date: date, send_time: time, expected: datetime) -> None:
    assert slot_on(Cadence(zone_name, local_date.weekday(), send_time), local_date) == expected


def test_a_midnight_slot_keeps_the_week_santiago_skips_midnight() -> None:
    sunday_midnight = Cadence("America/Santiago", 6, time(0, 0))
    slots = list(islice(slots_after(sunday_midnight, datetime(2026, 8, 24, tzinfo=UTC)), 3))
    assert slots == [
        datetime(2026, 8, 30, 4, 0, tzinfo=UTC),
        datetime(2026, 9, 6, 4, 0, tzinfo=UTC),
        datetime(2026, 9, 13, 3, 0, tzinfo=UTC),
    ]


def test_an_ambiguous_slot_fires_once_in_the_fold() -> None:
    sunday_early = Cadence("America/New_York", 6, time(1, 30))
    just_before_fold = datetime(2026, 11, 1, 5, 0, tzinfo=UTC)
    first, second = islice(slots_after(sunday_early, just_before_fold), 2)
    assert first == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert second == datetime(2026, 11, 8, 6, 30, tzinfo=UTC)
    # The repeated 01:30 (06:30 UTC that night) is not a slot.
    assert next_slot_after(sunday_early, first) == second


def test_next_slot_after_is_strictly_after() -> None:
    cadence = Cadence("Europe/Berlin", 0, time(8, 0))
    slot = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
    assert next_slot_after(cadence, slot - timedelta(microseconds=1)) == slot
    assert next_slot_after(cadence, slot) == slot + ONE_WEEK


def test_first_lesson_waits_for_the_next_slot_or_goes_at_once() -> None:
    cadence = Cadence("Asia/Kathmandu", 2, time(6, 0))
    confirmed_at = datetime(2026, 6, 3, 9, 0, tzinfo=ZoneInfo("Asia/Kathmandu"))
    next_wednesday = datetime(2026, 6, 10, 0, 15, tzinfo=UTC)
    assert first_lesson_due(cadence, confirmed_at, "next_slot") == next_wednesday
    immediately = first_lesson_due(cadence, confirmed_at, "immediately")
    assert immediately == confirmed_at
    assert immediately.tzinfo is UTC


@settings(max_examples=120, deadline=None)
@given(
    zone_name=zones,
    weekday=weekdays,
    send_time=send_times,
    confirmed_at=instants,
    outage_starts_after=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=50)),
    outage_length=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)),
    min_gap=min_gaps,
)
def test_an_outage_delays_lessons_without_bursting_or_skipping_a_week(
    zone_name: str,
    weekday: int,
    send_time: time,
    confirmed_at: datetime,
    outage_starts_after: timedelta,
    outage_length: timedelta,
    min_gap: timedelta,
) -> None:
    cadence = Cadence(zone_name, weekday, send_time)
    outage_start = confirmed_at + outage_starts_after
    outage_end = outage_start + outage_length
    due = first_lesson_due(cadence, confirmed_at, "next_slot")
    sent_times = []
    for _lesson in range(7):
        sent_at = outage_end if outage_start <= due < outage_end else due
        sent_times.append(sent_at)
        following = next_due(cadence, after=due, last_sent_at=sent_at, min_gap=min_gap)
        assert_is_slot(cadence, following)
        assert following > due
        assert following >= sent_at + min_gap
        # Minimal: the slot a week earlier breaks one of the two rules, so no week is lost.
        week_before = reference_slot(zone_name, reading(following, zone_name).date() - ONE_WEEK, send_time)
        assert week_before <= due or week_before < sent_at + min_gap
        due = following
    for earlier, later in pairwise(sent_times):
        assert later - earlier >= min_gap


def test_after_an_outage_lessons_resume_weekly_from_the_first_allowed_slot() -> None:
    monday_nine = Cadence("America/New_York", 0, time(9, 0))
    lesson_two_slot = datetime(2026, 6, 8, 13, 0, tzinfo=UTC)
    sent_after_outage = datetime(2026, 6, 26, 20, 0, tzinfo=UTC)  # a Friday, three weeks late
    lesson_three = next_due(
        monday_nine, after=lesson_two_slot, last_sent_at=sent_after_outage, min_gap=timedelta(days=3)
    )
    assert lesson_three == datetime(2026, 7, 6, 13, 0, tzinfo=UTC)  # not Monday 29 June: too close
    lesson_four = next_due(monday_nine, after=lesson_three, last_sent_at=lesson_three, min_gap=timedelta(days=3))
    assert lesson_four == datetime(2026, 7, 13, 13, 0, tzinfo=UTC)


def test_a_slot_exactly_min_gap_after_the_last_send_is_allowed() -> None:
    monday_nine_utc = Cadence("UTC", 0, time(9, 0))
    sent_on_slot = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    following = next_due(monday_nine_utc, after=sent_on_slot, last_sent_at=sent_on_slot, min_gap=ONE_WEEK)
    assert following == sent_on_slot + ONE_WEEK


def test_resume_schedules_the_first_slot_after_resuming() -> None:
    monday_eight = Cadence("Europe/Berlin", 0, time(8, 0))
    last_sent = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
    resumed_at = datetime(2026, 4, 15, 10, 0, tzinfo=UTC)
    resumed = next_due(monday_eight, after=resumed_at, last_sent_at=last_sent, min_gap=timedelta(days=3))
    assert resumed == datetime(2026, 4, 20, 6, 0, tzinfo=UTC)  # 08:00 CEST


def test_resume_soon_after_a_late_send_still_respects_min_gap() -> None:
    monday_eight = Cadence("Europe/Berlin", 0, time(8, 0))
    sent_late_on_saturday = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    resumed_on_sunday = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    resumed = next_due(
        monday_eight, after=resumed_on_sunday, last_sent_at=sent_late_on_saturday, min_gap=timedelta(days=3)
    )
    assert resumed == datetime(2026, 3, 16, 7, 0, tzinfo=UTC)


def test_a_new_subscriber_without_sends_gets_the_next_slot() -> None:
    friday_noon = Cadence("Pacific/Chatham", 4, time(12, 0))
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert next_due(friday_noon, after=now, last_sent_at=None, min_gap=timedelta(days=3)) == next_slot_after(
        friday_noon, now
    )


@pytest.mark.parametrize(
    ("new_cadence", "expected"),
    [
        (Cadence("America/New_York", 4, time(7, 0)), datetime(2026, 6, 5, 11, 0, tzinfo=UTC)),
        # Tuesday 2 June is a day after the last lesson: too close, so the Tuesday after.
        (Cadence("America/New_York", 1, time(9, 0)), datetime(2026, 6, 9, 13, 0, tzinfo=UTC)),
        (Cadence("Asia/Kathmandu", 2, time(6, 0)), datetime(2026, 6, 10, 0, 15, tzinfo=UTC)),
        (Cadence("America/St_Johns", 3, time(23, 59)), datetime(2026, 6, 5, 2, 29, tzinfo=UTC)),
    ],
)
def test_changing_weekday_time_or_zone_moves_the_next_lesson(new_cadence: Cadence, expected: datetime) -> None:
    sent_monday_nine_new_york = datetime(2026, 6, 1, 13, 0, tzinfo=UTC)
    changed_at = datetime(2026, 6, 1, 18, 0, tzinfo=UTC)
    moved = next_due(new_cadence, after=changed_at, last_sent_at=sent_monday_nine_new_york, min_gap=timedelta(days=3))
    assert moved == expected


def test_naive_instants_and_wrong_weekdays_are_refused() -> None:
    cadence = Cadence("UTC", 0, time(9, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        next_slot_after(cadence, datetime(2026, 6, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        next_due(cadence, after=datetime(2026, 6, 1, tzinfo=UTC), last_sent_at=datetime(2026, 6, 1), min_gap=ONE_WEEK)
    with pytest.raises(ValueError, match="2026-06-02 is a Tuesday, not a Monday"):
        slot_on(cadence, date(2026, 6, 2))


@pytest.mark.parametrize(
    ("timezone", "weekday", "send_time", "message"),
    [
        ("Mars/Olympus_Mons", 0, time(9, 0), "'Mars/Olympus_Mons'"),
        ("europe/london", 0, time(9, 0), "spell it exactly 'Europe/London'"),
        ("UTC", 7, time(9, 0), "weekday 7: expected 0 (Monday) to 6 (Sunday)"),
        ("UTC", 0, time(9, 0, tzinfo=UTC), "without a zone"),
    ],
)
def test_cadence_refuses_bad_values(timezone: str, weekday: int, send_time: time, message: str) -> None:
    with pytest.raises(SubscriberError, match=re.escape(message)):
        Cadence(timezone, weekday, send_time)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Monday", 0),
        ("monday", 0),
        ("Mon", 0),
        ("mon", 0),
        (" TUESDAY ", 1),
        ("Tues", 1),
        ("wed", 2),
        ("Thurs", 3),
        ("thu", 3),
        ("Fri", 4),
        ("Saturday", 5),
        ("sun", 6),
    ],
)
def test_parse_weekday_accepts_names_and_abbreviations(text: str, expected: int) -> None:
    assert parse_weekday(text) == expected
    assert WEEKDAY_NAMES[expected].lower().startswith(text.strip().lower())


@pytest.mark.parametrize("text", ["", "Mo", "Mond", "Wednes", "Satur", "Mondays", "Funday", "7", "0", "Montag"])
def test_parse_weekday_refuses_everything_else_listing_the_days(text: str) -> None:
    with pytest.raises(SubscriberError, match="Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday"):
        parse_weekday(text)


def test_parse_weekday_explains_why_numbers_are_refused() -> None:
    with pytest.raises(SubscriberError, match="numbers are ambiguous"):
        parse_weekday("1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("00:00", time(0, 0)), ("09:05", time(9, 5)), ("9:05", time(9, 5)), (" 23:59 ", time(23, 59))],
)
def test_parse_send_time_accepts_24_hour_times(text: str, expected: time) -> None:
    assert parse_send_time(text) == expected


@pytest.mark.parametrize("text", ["25:00", "24:00", "12:60", "9", "9am", "09:00:00", "0900", "", "-1:00", "１２:００"])
def test_parse_send_time_refuses_everything_else(text: str) -> None:
    with pytest.raises(SubscriberError, match=re.escape(f"send time {text!r}: expected HH:MM on a 24-hour clock")):
        parse_send_time(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Europe/London", "Europe/London"),
        (" europe/london ", "Europe/London"),
        ("utc", "UTC"),
        ("America/Argentina/Buenos_Aires", "America/Argentina/Buenos_Aires"),
        ("Asia/Calcutta", "Asia/Calcutta"),
    ],
)
def test_parse_timezone_returns_the_canonical_name(text: str, expected: str) -> None:
    assert parse_timezone(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "local", "localtime", "posixrules", "Factory", "/etc/localtime", "../../etc/passwd", "America", "EST+5"],
)
def test_parse_timezone_refuses_what_is_not_a_place(text: str) -> None:
    with pytest.raises(SubscriberError, match=re.escape(f"time zone {text!r}: expected an IANA zone name")):
        parse_timezone(text)


def test_parse_timezone_suggests_a_close_name() -> None:
    with pytest.raises(SubscriberError, match="did you mean 'Europe/London'"):
        parse_timezone("Europe/Londn")

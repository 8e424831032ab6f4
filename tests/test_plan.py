"""`newsletter plan` across daylight-saving changes, pauses, resumes and changes of day.

Every expected instant below is written out by hand from the zone's rules, not computed by the code under
test: e.g. London springs forward on Sunday 29 March 2026 at 01:00 UTC (01:00 GMT → 02:00 BST), so a
Sunday 01:30 slot that day does not exist and fires at 02:00 BST = 01:00 UTC.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import event

from newsletter.cli import main
from newsletter.cli.options import parse_instant, parse_now
from newsletter.ledger.waiting import load_readers
from newsletter.plan import PLAN_BATCH
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber

Run = Callable[..., Result]


@pytest.fixture
def run(project_dir: Path, env: dict[str, str]) -> Run:
    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, ["--config", str(project_dir / "config.toml"), *args])

    return invoke


def plan(run: Run, *args: str) -> list[dict[str, Any]]:
    result = run("plan", "--json", *args)
    assert result.exit_code == 0, result.output
    parsed: list[dict[str, Any]] = json.loads(result.stdout)
    return parsed


def due(entries: list[dict[str, Any]]) -> list[tuple[str, int, str, str, bool]]:
    return [(e["email"], e["week"], e["due_at"], e["local"], e["projected"]) for e in entries]


def confirmed(project: Project, email: str, zone: str, weekday: str, at: str, now: str) -> None:
    with project.db.session() as session:
        data = SubscriberInput(email, "", zone, weekday, at)
        add_subscriber(session, project, data, confirmed=True, now=datetime.fromisoformat(now))


# (zone, weekday, time, confirmed at) → lesson 1 and the projected lesson 2: (UTC, local)
DST_CASES = {
    "london-spring-gap": (
        ("Europe/London", "Sunday", "01:30", "2026-03-25T12:00:00+00:00"),
        [("2026-03-29T01:00:00+00:00", "2026-03-29T02:00:00+01:00"),  # 01:30 never happens: 02:00 BST
         ("2026-04-05T00:30:00+00:00", "2026-04-05T01:30:00+01:00")],
    ),
    "london-autumn-fold": (
        ("Europe/London", "Sunday", "01:30", "2026-10-21T12:00:00+00:00"),
        [("2026-10-25T00:30:00+00:00", "2026-10-25T01:30:00+01:00"),  # 01:30 happens twice: the first, BST
         ("2026-11-01T01:30:00+00:00", "2026-11-01T01:30:00+00:00")],
    ),
    "lord-howe-half-hour-gap": (
        ("Australia/Lord_Howe", "Sunday", "02:15", "2026-09-30T00:00:00+00:00"),
        [("2026-10-03T15:30:00+00:00", "2026-10-04T02:30:00+11:00"),  # 02:00 → 02:30: fires at 02:30
         ("2026-10-10T15:15:00+00:00", "2026-10-11T02:15:00+11:00")],
    ),
    "lord-howe-half-hour-fold": (
        ("Australia/Lord_Howe", "Sunday", "01:45", "2026-04-01T00:00:00+00:00"),
        [("2026-04-04T14:45:00+00:00", "2026-04-05T01:45:00+11:00"),  # 02:00 → 01:30: first 01:45 at +11
         ("2026-04-11T15:15:00+00:00", "2026-04-12T01:45:00+10:30")],
    ),
    "santiago-midnight-fold": (
        ("America/Santiago", "Saturday", "23:30", "2026-04-01T00:00:00+00:00"),
        [("2026-04-05T02:30:00+00:00", "2026-04-04T23:30:00-03:00"),  # 24:00 → 23:00 Saturday
         ("2026-04-12T03:30:00+00:00", "2026-04-11T23:30:00-04:00")],
    ),
    "santiago-midnight-gap": (
        ("America/Santiago", "Sunday", "00:30", "2026-09-02T00:00:00+00:00"),
        [("2026-09-06T04:00:00+00:00", "2026-09-06T01:00:00-03:00"),  # 00:00 → 01:00: fires at 01:00
         ("2026-09-13T03:30:00+00:00", "2026-09-13T00:30:00-03:00")],
    ),
    "kathmandu-quarter-hour": (
        ("Asia/Kathmandu", "Friday", "09:00", "2026-03-02T00:00:00+00:00"),
        [("2026-03-06T03:15:00+00:00", "2026-03-06T09:00:00+05:45"),
         ("2026-03-13T03:15:00+00:00", "2026-03-13T09:00:00+05:45")],
    ),
    "chatham-gap": (
        ("Pacific/Chatham", "Sunday", "03:00", "2026-09-23T00:00:00+00:00"),
        [("2026-09-26T14:00:00+00:00", "2026-09-27T03:45:00+13:45"),  # 02:45 → 03:45: fires at 03:45
         ("2026-10-03T13:15:00+00:00", "2026-10-04T03:00:00+13:45")],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DST_CASES))
def test_due_times_follow_each_zones_rules_across_dst(run: Run, project: Project, case: str) -> None:
    (zone, weekday, at, now), expected = DST_CASES[case]
    confirmed(project, "reader@example.com", zone, weekday, at, now)
    entries = plan(run, "--now", now, "--days", "14")
    assert [(e["due_at"], e["local"]) for e in entries] == expected
    assert [(e["week"], e["slug"], e["projected"], e["timezone"]) for e in entries] == [
        (1, project.series.week(1).slug, False, zone),
        (2, project.series.week(2).slug, True, zone),
    ]


def test_pause_empties_the_plan_and_resume_plans_the_first_slot_after_it(run: Run, project: Project) -> None:
    confirmed(project, "ann@example.com", "Asia/Kathmandu", "Friday", "09:00", "2026-03-02T00:00:00+00:00")
    assert run("subscribers", "pause", "ann@example.com", "--now", "2026-03-03T00:00Z").exit_code == 0
    assert plan(run, "--now", "2026-03-03T00:00Z", "--days", "30") == []
    assert run("subscribers", "resume", "ann@example.com", "--now", "2026-03-13T04:00Z").exit_code == 0
    # Friday 13 March's 03:15 UTC slot passed 45 minutes before the resume: lesson 1 moves a week on.
    assert due(plan(run, "--now", "2026-03-13T04:00Z", "--days", "8")) == [
        ("ann@example.com", 1, "2026-03-20T03:15:00+00:00", "2026-03-20T09:00:00+05:45", False),
    ]


def test_a_new_weekday_time_and_zone_move_the_next_lesson(run: Run, project: Project) -> None:
    confirmed(project, "ann@example.com", "Asia/Kathmandu", "Friday", "09:00", "2026-03-02T00:00:00+00:00")
    moved = run("subscribers", "set", "ann@example.com", "--weekday", "Tue", "--now", "2026-03-02T00:00Z")
    assert moved.exit_code == 0, moved.output
    assert due(plan(run, "--now", "2026-03-02T00:00Z", "--days", "2")) == [
        ("ann@example.com", 1, "2026-03-03T03:15:00+00:00", "2026-03-03T09:00:00+05:45", False),
    ]
    run("subscribers", "set", "ann@example.com", "--timezone", "America/Santiago", "--time", "23:30",
        "--now", "2026-03-02T00:00Z")  # fmt: skip
    assert due(plan(run, "--now", "2026-03-02T00:00Z", "--days", "3")) == [
        ("ann@example.com", 1, "2026-03-04T02:30:00+00:00", "2026-03-03T23:30:00-03:00", False),
    ]


def test_an_overdue_lesson_is_shown_and_the_next_keeps_the_minimum_gap(run: Run, project: Project) -> None:
    confirmed(project, "ann@example.com", "Asia/Kathmandu", "Friday", "09:00", "2026-03-02T00:00:00+00:00")
    # Nothing was sent for a week: lesson 1 is overdue. Sent now (Thursday 12 March 02:00 UTC), lesson 2
    # cannot go on Friday 13 March, only a day later, under the 3-day gap: it waits for Friday 20 March.
    assert due(plan(run, "--now", "2026-03-12T02:00Z", "--days", "10")) == [
        ("ann@example.com", 1, "2026-03-06T03:15:00+00:00", "2026-03-06T09:00:00+05:45", False),
        ("ann@example.com", 2, "2026-03-20T03:15:00+00:00", "2026-03-20T09:00:00+05:45", True),
    ]


def test_projection_stops_at_the_horizon_and_at_the_end_of_the_course(
    run: Run, project: Project, tmp_path: Path
) -> None:
    weeks = project.series.weeks
    source = tmp_path / "late.csv"
    source.write_text(
        f"email,timezone,weekday,time,position\nlate@example.com,UTC,Monday,07:00,{weeks - 1}\n", encoding="utf-8"
    )
    assert run("subscribers", "import", str(source), "--confirmed", "--now", "2026-03-01T00:00Z").exit_code == 0
    confirmed(project, "new@example.com", "UTC", "Monday", "07:00", "2026-03-01T00:00:00+00:00")
    entries = plan(run, "--now", "2026-03-01T00:00Z", "--days", "365")
    assert [(e["email"], e["week"]) for e in entries if e["email"] == "late@example.com"] == [
        ("late@example.com", weeks)
    ]
    assert [e["week"] for e in entries if e["email"] == "new@example.com"] == list(range(1, weeks + 1))
    # Both are due Monday 07:00; equal times list by address.
    assert [e["week"] for e in plan(run, "--now", "2026-03-01T00:00Z", "--days", "9")] == [weeks, 1, 2]
    assert plan(run, "--now", "2026-03-01T00:00Z", "--days", "1") == []


def test_pending_confirmations_and_one_subscriber_only(run: Run, project: Project) -> None:
    confirmed(project, "ann@example.com", "UTC", "Monday", "07:00", "2026-03-01T00:00:00+00:00")
    assert run("subscribers", "add", "bo@example.com", "--now", "2026-03-01T00:00Z").exit_code == 0
    everyone = plan(run, "--now", "2026-03-01T00:00Z", "--days", "1.5")
    assert [(e["email"], e["week"], e["slug"], e["due_at"]) for e in everyone] == [
        ("bo@example.com", 0, "confirmation", "2026-03-01T00:00:00+00:00"),
        ("ann@example.com", 1, project.series.week(1).slug, "2026-03-02T07:00:00+00:00"),
    ]
    only_ann = plan(run, "--email", "ANN@example.com", "--now", "2026-03-01T00:00Z", "--days", "1.5")
    assert [e["email"] for e in only_ann] == ["ann@example.com"]
    unknown = run("plan", "--email", "nobody@example.com")
    assert unknown.exit_code == 1 and "no subscriber nobody@example.com" in unknown.stderr


def test_the_text_view_groups_by_day(run: Run, project: Project) -> None:
    confirmed(project, "ann@example.com", "Asia/Kathmandu", "Friday", "09:00", "2026-03-02T00:00:00+00:00")
    confirmed(project, "bo@example.com", "Europe/London", "Friday", "03:15", "2026-03-02T00:00:00+00:00")
    confirmed(project, "cy@example.com", "UTC", "Saturday", "08:00", "2026-03-02T00:00:00+00:00")
    result = run("plan", "--now", "2026-03-02T00:00Z", "--days", "6")
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    assert [line for line in lines if line.endswith("2026")] == ["Friday 06 March 2026", "Saturday 07 March 2026"]
    friday = lines.index("Friday 06 March 2026")
    assert lines[friday + 2].split()[:3] == ["03:15", "ann@example.com", "1"]
    assert lines[friday + 3].split()[:3] == ["03:15", "bo@example.com", "1"]
    assert "Fri 09:00 Asia/Kathmandu" in lines[friday + 2]
    assert run("plan", "--now", "2026-03-02T00:00Z", "--days", "1").stdout.strip() == "nothing due in the next 1 days"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T09:00:00+00:00", datetime(2026, 3, 1, 9, 0, tzinfo=UTC)),
        ("2026-03-01T09:00Z", datetime(2026, 3, 1, 9, 0, tzinfo=UTC)),
        ("2026-03-01T09:00", datetime(2026, 3, 1, 9, 0, tzinfo=UTC)),
        ("2026-03-01T14:45:00+05:45", datetime(2026, 3, 1, 9, 0, tzinfo=UTC)),
        (" 2026-03-01 ", datetime(2026, 3, 1, 0, 0, tzinfo=UTC)),
    ],
)
def test_now_accepts_iso_8601_and_reads_no_offset_as_utc(text: str, expected: datetime) -> None:
    parsed = parse_instant(text)
    assert parsed == expected and parsed.utcoffset() is not None and parsed.tzinfo is UTC
    assert parse_now(None, None, text) == expected
    assert parse_now(None, None, None) is None


def test_a_bad_now_is_a_usage_error(run: Run) -> None:
    with pytest.raises(click.BadParameter, match="not an ISO 8601 instant"):
        parse_now(None, None, "next tuesday")
    result = run("plan", "--now", "2026-13-01T00:00Z")
    assert result.exit_code == 2 and "Invalid value for '--now'" in result.stderr


def test_plan_and_db_upgrade_explain_themselves() -> None:
    for args in (["plan", "--help"], ["db", "upgrade", "--help"], ["db", "--help"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0 and "Usage:" in result.output
    assert "projected" in CliRunner().invoke(main, ["plan", "--help"]).output


def test_a_batch_of_readers_is_read_by_reader_not_by_status(project: Project) -> None:
    """At a million readers, a batch's history read through the status index took seconds a batch (SQLite)."""
    statements: list[tuple[str, Any]] = []

    def remember(_connection: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    engine = project.db.engine
    event.listen(engine, "before_cursor_execute", remember)
    try:
        with engine.connect() as connection:
            load_readers(connection, range(1, PLAN_BATCH + 1))  # one batch of `plan`, as it asks for it
    finally:
        event.remove(engine, "before_cursor_execute", remember)
    with engine.connect() as connection:
        plans = [
            " ".join(str(step[3]) for step in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
            for sql, params in statements
        ]
    assert plans and not [plan for plan in plans if "ix_deliveries_status_due_at" in plan], plans


@pytest.mark.parametrize(
    "items",
    [
        [],
        [{}],
        [{"email": "zoë@example.com", "slug": 'a "quoted"\nline', "held": None, "projected": True, "week": 2}],
        [{"ratio": 1.5, "huge": 1e20, "nan": float("nan"), "inf": float("-inf")}],
        [{"100%": "50% off", "%s": 1, 'a "b"': False, "é": -(2**70)}],  # keys the item template must escape
        [{"int key": 1}, {1: "one", "two": 2}],  # a key json.dumps turns into a string
        [{"weekday": IntEnum("Day", "MON")(1), "status": StrEnum("Status", "ACTIVE")("active")}],  # subclasses
        [{"same": 1}, {"same": "keys"}, {"other": None}],
        [{"nested": {"list": [1, 2]}, "empty": []}, {"flat": "after a nested one"}],
        [{"n": n, "name": f"reader {n}"} for n in range(1203)],  # more than one write's worth of items
    ],
)
def test_a_json_list_is_printed_exactly_as_json_dumps_would_print_it_whole(
    items: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    from newsletter.cli.subscribers import ECHO_ITEMS, _echo_json_list

    assert ECHO_ITEMS < 1203  # the long case takes more than one write
    _echo_json_list(iter(items))
    assert capsys.readouterr().out == json.dumps(items, indent=2) + "\n"

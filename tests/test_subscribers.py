"""Subscribers: validation, every state change with its event and planned delivery, and the CLI commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.cli import main
from newsletter.errors import SubscriberError
from newsletter.models import CONFIRMATION, Delivery, Event, Subscriber
from newsletter.project import Project
from newsletter.subscribers import (
    SubscriberInput,
    add_subscriber,
    change_schedule,
    clean_name,
    confirm,
    erase,
    find_subscriber,
    get_subscriber,
    next_lesson_due,
    normalise_email,
    pause,
    request_subscription,
    resubscribe,
    resume,
    unsubscribe,
)

# Monday 2 March 2026; a reader in Kathmandu (+05:45, no DST) on Fridays at 09:00 gets lesson 1 on
# Friday 6 March at 09:00 local = 03:15 UTC, then every Friday at 03:15 UTC.
MONDAY = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
KATHMANDU_FRIDAY = SubscriberInput("ann@example.com", "Ann", "Asia/Kathmandu", "Friday", "09:00")
FIRST_FRIDAY = datetime(2026, 3, 6, 3, 15, tzinfo=UTC)

Run = Callable[..., Result]


@pytest.fixture
def run(project_dir: Path, env: dict[str, str]) -> Run:
    """Invoke `newsletter --config <the test project> ARGS…` in-process."""

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, ["--config", str(project_dir / "config.toml"), *args], input=input)

    return invoke


def deliveries(session: Session, subscriber: Subscriber) -> list[tuple[str, str, datetime]]:
    rows = session.scalars(select(Delivery).where(Delivery.subscriber_id == subscriber.id).order_by(Delivery.id))
    return [(row.lesson, row.status, row.due_at) for row in rows]


def event_kinds(session: Session, subscriber_id: int | None) -> list[str]:
    query = select(Event.kind).order_by(Event.id)
    query = query.where(
        Event.subscriber_id.is_(None) if subscriber_id is None else Event.subscriber_id == subscriber_id
    )
    return list(session.scalars(query))


def add(project: Project, data: SubscriberInput = KATHMANDU_FRIDAY, *, confirmed: bool = True) -> int:
    with project.db.session() as session:
        return add_subscriber(session, project, data, confirmed=confirmed, now=MONDAY).id


# --- validation -------------------------------------------------------------------------------------------


def test_an_address_is_trimmed_and_lower_cased() -> None:
    assert normalise_email("  Ann.Lee@Example.COM ") == "ann.lee@example.com"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ann@example.com\r\nBcc: mallory@example.com", "must be one line"),
        ("ann@example.com\n", "must be one line"),
        ("not-an-email", "not a valid address"),
        ("ann@localhost", "not a valid address"),
        ("", "email is empty"),
    ],
)
def test_a_bad_address_is_refused_and_named(text: str, expected: str) -> None:
    with pytest.raises(SubscriberError, match=expected) as caught:
        normalise_email(text)
    if text:
        assert repr(text) in str(caught.value)


@pytest.mark.parametrize("name", ["Ann\nBcc: x@example.com", "Ann\rLee", "Ann\x00", "Ann\u2028Lee", "Ann\x85"])
def test_a_name_that_could_break_a_header_is_refused(name: str) -> None:
    with pytest.raises(SubscriberError, match="control character"):
        clean_name(name)


ENCODED_WORD_NAME = "=?utf-8?b?QW5uDQpSZXBseS1UbzogeEBldmlsLmV4YW1wbGU=?="


def test_a_name_holding_an_encoded_word_is_refused() -> None:
    with pytest.raises(SubscriberError, match="encoded header"):
        clean_name(ENCODED_WORD_NAME)
    with pytest.raises(SubscriberError, match="encoded header"):
        clean_name("Ann =?utf-8?q?x?= Lee")


def test_every_entry_refuses_an_encoded_word_name(run: Run, project: Project, tmp_path: Path) -> None:
    added = run("subscribers", "add", "ann@example.com", "--name", ENCODED_WORD_NAME)
    assert added.exit_code == 1 and "encoded header" in added.output
    csv_file = tmp_path / "in.csv"
    csv_file.write_text(f"email,name\nbob@example.com,{ENCODED_WORD_NAME}\ncy@example.com,Cy\n", encoding="utf-8")
    imported = run("subscribers", "import", str(csv_file))
    assert imported.exit_code == 1, imported.output  # rows were rejected; the good one is in
    assert "line 2" in imported.output and "encoded header" in imported.output
    renamed = run("subscribers", "set", "cy@example.com", "--name", ENCODED_WORD_NAME)
    assert renamed.exit_code == 1 and "encoded header" in renamed.output
    with project.db.reading() as session:
        assert list(session.scalars(select(Subscriber.email))) == ["cy@example.com"]


def test_a_name_is_trimmed_and_limited_to_200_characters() -> None:
    assert clean_name("  Zoë Ångström ") == "Zoë Ångström"
    assert clean_name("x" * 200) == "x" * 200
    with pytest.raises(SubscriberError, match="201 characters, at most 200"):
        clean_name("x" * 201)


def test_missing_schedule_parts_take_the_project_defaults(project: Project) -> None:
    with project.db.session() as session:
        subscriber = add_subscriber(session, project, SubscriberInput("Bo@Example.com"), confirmed=False, now=MONDAY)
        assert (subscriber.email, subscriber.timezone, subscriber.weekday, f"{subscriber.send_time:%H:%M}") == (
            "bo@example.com",
            "UTC",
            0,
            "07:00",
        )


# --- adding -----------------------------------------------------------------------------------------------


def test_a_pending_subscriber_gets_a_confirmation_due_at_once(project: Project) -> None:
    subscriber_id = add(project, confirmed=False)
    with project.db.session() as session:
        subscriber = session.get_one(Subscriber, subscriber_id)
        assert subscriber.status == "pending" and subscriber.confirmed_at is None
        assert deliveries(session, subscriber) == [(CONFIRMATION, "pending", MONDAY)]
        assert event_kinds(session, subscriber_id) == ["subscribed"]
        assert next_lesson_due(session, subscriber) is None


def test_a_confirmed_subscriber_is_active_with_lesson_1_at_their_first_slot(project: Project) -> None:
    subscriber_id = add(project, confirmed=True)
    with project.db.session() as session:
        subscriber = session.get_one(Subscriber, subscriber_id)
        assert subscriber.status == "active" and subscriber.confirmed_at == MONDAY
        assert deliveries(session, subscriber) == [("muscle", "pending", FIRST_FRIDAY)]
        assert event_kinds(session, subscriber_id) == ["subscribed", "confirmed"]
        due = next_lesson_due(session, subscriber)
        assert due is not None and due.lesson == project.series.week(1).slug  # type: ignore[union-attr]


def test_adding_a_known_address_says_so_and_changes_nothing(project: Project) -> None:
    subscriber_id = add(project)
    again = SubscriberInput("ANN@example.com", "Someone Else", "Europe/London", "Monday", "06:00")
    with pytest.raises(SubscriberError, match=r"already subscribed: ann@example.com \(status active\)"):
        add(project, again, confirmed=False)
    with project.db.session() as session:
        subscriber = session.get_one(Subscriber, subscriber_id)
        assert (subscriber.name, subscriber.timezone, subscriber.status) == ("Ann", "Asia/Kathmandu", "active")
        assert deliveries(session, subscriber) == [("muscle", "pending", FIRST_FRIDAY)]
        assert event_kinds(session, subscriber_id) == ["subscribed", "confirmed"]


# --- the web form and confirmation ------------------------------------------------------------------------


def test_asking_again_while_pending_queues_a_fresh_confirmation_once_a_day(any_project: Project) -> None:
    project = any_project
    with project.db.session() as session:
        first = request_subscription(session, project, KATHMANDU_FRIDAY, now=MONDAY)
        row = session.scalars(select(Delivery).where(Delivery.subscriber_id == first.id)).one()
        old_message_id = row.message_id
        row.status, row.sent_at = "sent", MONDAY  # as the sender records it
    other_form = SubscriberInput("ann@example.com", "Mallory", "Europe/London", "Monday", "06:00")
    for hours in (2, 23):  # within a day: no second email, and nothing changes
        with project.db.session() as session:
            again = request_subscription(session, project, other_form, now=MONDAY + timedelta(hours=hours))
            assert (again.name, again.timezone) == ("Ann", "Asia/Kathmandu")
            assert deliveries(session, again) == [(CONFIRMATION, "sent", MONDAY)]
    next_day = MONDAY + timedelta(hours=24)
    with project.db.session() as session:
        again = request_subscription(session, project, KATHMANDU_FRIDAY, now=next_day)
        assert again.id == first.id and again.status == "pending"
        row = session.scalars(select(Delivery).where(Delivery.subscriber_id == first.id)).one()
        assert (row.lesson, row.status, row.due_at) == (CONFIRMATION, "pending", next_day)
        assert row.message_id != old_message_id  # mailbox providers drop a second message with the same ID
        assert event_kinds(session, first.id) == ["subscribed", "subscribed"]


def test_confirming_activates_once_and_plans_the_first_lesson(project: Project) -> None:
    with project.db.session() as session:
        subscriber_id = request_subscription(session, project, KATHMANDU_FRIDAY, now=MONDAY).id
    tuesday = MONDAY + timedelta(days=1)
    for _ in range(2):
        with project.db.session() as session:
            subscriber = confirm(session, project, subscriber_id, now=tuesday)
    with project.db.session() as session:
        subscriber = session.get_one(Subscriber, subscriber_id)
        assert subscriber.status == "active" and subscriber.confirmed_at == tuesday
        assert deliveries(session, subscriber) == [
            ("confirmation", "cancelled", MONDAY),
            ("muscle", "pending", FIRST_FRIDAY),
        ]
        assert event_kinds(session, subscriber_id) == ["subscribed", "confirmed"]


def test_the_form_reveals_nothing_and_changes_nothing_for_an_active_subscriber(project: Project) -> None:
    subscriber_id = add(project)
    other = SubscriberInput("ann@example.com", "Mallory", "Europe/London", "Monday", "06:00")
    with project.db.session() as session:
        request_subscription(session, project, other, now=MONDAY + timedelta(hours=1))
    with project.db.session() as session:
        subscriber = session.get_one(Subscriber, subscriber_id)
        assert (subscriber.name, subscriber.timezone, subscriber.status) == ("Ann", "Asia/Kathmandu", "active")
        assert event_kinds(session, subscriber_id) == ["subscribed", "confirmed"]


@pytest.mark.parametrize("left_as", ["unsubscribed", "bounced"])
def test_the_form_never_mails_someone_who_left_and_changes_nothing(any_project: Project, left_as: str) -> None:
    project = any_project
    subscriber_id = add(project)
    with project.db.session() as session:
        subscriber = session.get_one(Subscriber, subscriber_id)
        unsubscribe(session, project, subscriber, now=MONDAY)
        subscriber.status = left_as
    with project.db.session() as session:
        returning = request_subscription(session, project, KATHMANDU_FRIDAY, now=MONDAY + timedelta(days=30))
        assert (returning.status, returning.unsubscribed_at) == (left_as, MONDAY)
        assert [status for _, status, _ in deliveries(session, returning)] == ["cancelled"]
        assert event_kinds(session, subscriber_id) == ["subscribed", "confirmed", "unsubscribed"]


def test_an_unsubscribed_reader_who_resubscribes_resumes_where_they_stopped(any_project: Project) -> None:
    project = any_project
    subscriber_id = add(project)
    with project.db.session() as session:
        subscriber = session.get_one(Subscriber, subscriber_id)
        lesson_1 = session.scalars(select(Delivery).where(Delivery.subscriber_id == subscriber_id)).one()
        lesson_1.status, lesson_1.sent_at, subscriber.position, subscriber.last_lesson = (
            "sent",
            FIRST_FRIDAY,
            1,
            "muscle",
        )
        subscriber.hard_bounces = 1
        unsubscribe(session, project, subscriber, now=FIRST_FRIDAY + timedelta(days=1))
    returning = datetime(2026, 4, 1, tzinfo=UTC)  # a Wednesday
    for _ in range(2):  # the second press changes nothing
        with project.db.session() as session:
            subscriber = resubscribe(session, project, session.get_one(Subscriber, subscriber_id), now=returning)
    with project.db.session() as session:
        subscriber = session.get_one(Subscriber, subscriber_id)
        assert (subscriber.status, subscriber.position, subscriber.hard_bounces) == ("active", 1, 0)
        assert subscriber.unsubscribed_at is None and subscriber.confirmed_at == MONDAY
        due = next_lesson_due(session, subscriber)
        assert due is not None and (due.lesson, due.due_at) == ("knees", datetime(2026, 4, 3, 3, 15, tzinfo=UTC))
        assert event_kinds(session, subscriber_id) == ["subscribed", "confirmed", "unsubscribed", "resubscribed"]
        assert session.scalars(select(Event.detail).where(Event.kind == "resubscribed")).one() == "was unsubscribed"


def test_an_old_confirmation_link_does_not_resubscribe_someone_who_left(project: Project) -> None:
    subscriber_id = add(project)
    with project.db.session() as session:
        unsubscribe(session, project, session.get_one(Subscriber, subscriber_id), now=MONDAY)
    with project.db.session() as session:
        assert confirm(session, project, subscriber_id, now=MONDAY + timedelta(hours=1)).status == "unsubscribed"
        with pytest.raises(SubscriberError, match="no subscriber with id 999"):
            confirm(session, project, 999, now=MONDAY)


# --- pause, resume, change --------------------------------------------------------------------------------


def test_pause_withdraws_the_lesson_and_resume_plans_the_first_slot_after_resuming(project: Project) -> None:
    subscriber_id = add(project)
    with project.db.session() as session:
        subscriber = session.get_one(Subscriber, subscriber_id)
        pause(session, project, subscriber, now=MONDAY + timedelta(days=1))
        assert subscriber.status == "paused" and next_lesson_due(session, subscriber) is None
        assert deliveries(session, subscriber) == [("muscle", "cancelled", FIRST_FRIDAY)]
    resumed_at = datetime(2026, 3, 20, 4, 0, tzinfo=UTC)  # just after that Friday's slot
    with project.db.session() as session:
        subscriber = resume(session, project, session.get_one(Subscriber, subscriber_id), now=resumed_at)
        assert subscriber.status == "active" and subscriber.paused_at is None
        assert deliveries(session, subscriber) == [("muscle", "pending", datetime(2026, 3, 27, 3, 15, tzinfo=UTC))]
        assert event_kinds(session, subscriber_id) == ["subscribed", "confirmed", "paused", "resumed"]


def test_resume_keeps_the_minimum_gap_after_the_last_lesson(project: Project) -> None:
    subscriber_id = add(project)
    sent_at = datetime(2026, 3, 6, 20, 0, tzinfo=UTC)  # lesson 1 went out late on Friday
    with project.db.session() as session:
        subscriber = session.get_one(Subscriber, subscriber_id)
        lesson_1 = session.scalars(select(Delivery).where(Delivery.subscriber_id == subscriber_id)).one()
        lesson_1.status, lesson_1.sent_at, subscriber.position, subscriber.last_lesson = "sent", sent_at, 1, "muscle"
        pause(session, project, subscriber, now=sent_at)
        # Resumed and moved to Sunday: the first Sunday slot is only a day after lesson 1, under the 3-day gap.
        resume(session, project, subscriber, now=sent_at + timedelta(hours=1))
        change_schedule(session, project, subscriber, now=sent_at + timedelta(hours=1), weekday="Sunday")
        due = next_lesson_due(session, subscriber)
        assert due is not None and (due.lesson, due.due_at) == ("knees", datetime(2026, 3, 15, 3, 15, tzinfo=UTC))


def test_pause_until_must_lie_ahead_and_only_confirmed_readers_pause(project: Project) -> None:
    active_id = add(project)
    pending_id = add(project, SubscriberInput("bo@example.com"), confirmed=False)
    with project.db.session() as session:
        with pytest.raises(SubscriberError, match="must be later than now"):
            pause(session, project, session.get_one(Subscriber, active_id), now=MONDAY, until=MONDAY)
        with pytest.raises(SubscriberError, match=r"cannot pause bo@example\.com: status is pending"):
            pause(session, project, session.get_one(Subscriber, pending_id), now=MONDAY)
        with pytest.raises(SubscriberError, match=r"cannot resume bo@example\.com: status is pending"):
            resume(session, project, session.get_one(Subscriber, pending_id), now=MONDAY)


def test_changing_the_weekday_moves_the_next_lesson(project: Project) -> None:
    subscriber_id = add(project)
    with project.db.session() as session:
        subscriber = session.get_one(Subscriber, subscriber_id)
        change_schedule(session, project, subscriber, now=MONDAY + timedelta(hours=1), weekday="wed", send_time="18:30")
        # Wednesday 4 March 18:30 in Kathmandu = 12:45 UTC.
        assert deliveries(session, subscriber) == [("muscle", "pending", datetime(2026, 3, 4, 12, 45, tzinfo=UTC))]
        assert event_kinds(session, subscriber_id)[-1] == "changed"
        with pytest.raises(SubscriberError, match="'Funday'"):
            change_schedule(session, project, subscriber, now=MONDAY, weekday="Funday")
        with pytest.raises(SubscriberError, match="'Mars/Olympus'"):
            change_schedule(session, project, subscriber, now=MONDAY, timezone="Mars/Olympus")


def test_a_paused_readers_new_day_is_stored_and_used_when_they_resume(project: Project) -> None:
    subscriber_id = add(project)
    with project.db.session() as session:
        subscriber = session.get_one(Subscriber, subscriber_id)
        pause(session, project, subscriber, now=MONDAY)
        change_schedule(session, project, subscriber, now=MONDAY, timezone="Europe/London", weekday="Monday")
        assert next_lesson_due(session, subscriber) is None
        resume(session, project, subscriber, now=MONDAY + timedelta(hours=1))
        due = next_lesson_due(session, subscriber)
        assert due is not None and due.due_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # that very Monday, GMT


# --- leaving ----------------------------------------------------------------------------------------------


def test_unsubscribe_cancels_what_is_planned_once(project: Project) -> None:
    subscriber_id = add(project)
    for _ in range(2):
        with project.db.session() as session:
            unsubscribe(session, project, session.get_one(Subscriber, subscriber_id), now=MONDAY)
    with project.db.session() as session:
        subscriber = session.get_one(Subscriber, subscriber_id)
        assert (subscriber.status, subscriber.unsubscribed_at) == ("unsubscribed", MONDAY)
        assert deliveries(session, subscriber) == [("muscle", "cancelled", FIRST_FRIDAY)]
        assert event_kinds(session, subscriber_id).count("unsubscribed") == 1


def test_erase_removes_personal_data_and_keeps_an_anonymous_event(project: Project) -> None:
    erased_id = add(project)
    kept_id = add(project, SubscriberInput("bo@example.com", "Bo"))
    with project.db.session() as session:
        subscriber = session.get_one(Subscriber, erased_id)
        change_schedule(session, project, subscriber, now=MONDAY, timezone="Europe/Paris")
        erase(session, project, subscriber, now=MONDAY + timedelta(days=1))
    with project.db.session() as session:
        assert find_subscriber(session, "ann@example.com") is None
        assert session.scalar(select(func.count()).where(Delivery.subscriber_id == erased_id)) == 0
        anonymous = session.scalars(select(Event).where(Event.subscriber_id.is_(None)).order_by(Event.id)).all()
        assert [event.kind for event in anonymous] == ["subscribed", "confirmed", "changed", "erased"]
        assert all(event.detail == "" for event in anonymous)  # "Europe/Paris" was in the change's detail
        assert event_kinds(session, kept_id) == ["subscribed", "confirmed"]
        assert get_subscriber(session, "bo@example.com").status == "active"


def test_an_unknown_address_is_named(project: Project) -> None:
    with project.db.session() as session, pytest.raises(SubscriberError, match=r"no subscriber nobody@example\.com"):
        get_subscriber(session, "nobody@example.com")


# --- the CLI ----------------------------------------------------------------------------------------------


def test_cli_add_then_add_again(run: Run) -> None:
    added = run("subscribers", "add", "Ann@Example.com", "--name", "Ann", "--timezone", "asia/kathmandu",
                "--weekday", "fri", "--time", "09:00", "--confirmed", "--now", "2026-03-02T00:00Z")  # fmt: skip
    assert added.exit_code == 0, added.output
    assert (
        "added ann@example.com (active, Friday 09:00 Asia/Kathmandu); lesson 1 (muscle) due Fri 06 Mar 2026 09:00"
        in (added.stdout)
    )
    again = run("subscribers", "add", "ann@example.com")
    assert again.exit_code == 1
    assert "already subscribed: ann@example.com (status active); nothing changed" in again.stderr


def test_cli_add_and_set_say_what_a_zone_without_summer_time_means(run: Run) -> None:
    added = run("subscribers", "add", "ann@example.com", "--timezone", "est", "--confirmed")
    assert added.exit_code == 0, added.output
    assert "(active, Monday 07:00 EST)" in added.stdout
    assert added.stderr.startswith("note: --timezone: time zone 'EST' is UTC−5 all year, without daylight saving")
    assert "'America/New_York'" in added.stderr
    moved = run("subscribers", "set", "ann@example.com", "--timezone", "America/New_York")
    assert moved.exit_code == 0 and moved.stderr == ""
    offset = run("subscribers", "set", "ann@example.com", "--timezone", "GMT+2")  # not "corrected" to GMT+0
    assert offset.exit_code == 1
    assert "'GMT+2' is an offset from UTC, not a time zone" in offset.stderr and "GMT+0" not in offset.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("subscribers", "add", "ann@example.com\r\nBcc: mallory@example.com"),
        ("subscribers", "add", "ann@example.com", "--name", "Ann\nBcc: mallory@example.com"),
        ("subscribers", "add", "ann@example.com", "--weekday", "Funday"),
        ("subscribers", "add", "ann@example.com", "--time", "25:00"),
        ("subscribers", "add", "ann@example.com", "--timezone", "Mars/Olympus"),
    ],
)
def test_cli_add_refuses_bad_input_with_exit_1(run: Run, args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "\n" not in result.stderr.strip()
    assert run("subscribers", "list", "--json").stdout.strip() == "[]"


def test_cli_list_json_has_the_documented_shape(run: Run) -> None:
    run("subscribers", "add", "ann@example.com", "--name", "Ann", "--weekday", "Friday", "--time", "9:05")
    run("subscribers", "add", "bo@example.com", "--confirmed")
    listed = json.loads(run("subscribers", "list", "--json").stdout)
    assert [(item["email"], item["status"]) for item in listed] == [
        ("ann@example.com", "pending"),
        ("bo@example.com", "active"),
    ]
    assert {key: listed[0][key] for key in ("name", "timezone", "weekday", "time", "position")} == {
        "name": "Ann",
        "timezone": "UTC",
        "weekday": "Friday",
        "time": "09:05",
        "position": 0,
    }
    only_active = json.loads(run("subscribers", "list", "--status", "active", "--json").stdout)
    assert [item["email"] for item in only_active] == ["bo@example.com"]
    table = run("subscribers", "list").stdout
    assert "ann@example.com" in table and "Friday 09:05 UTC" in table and "2 subscribers" in table


def test_cli_pause_resume_set_unsubscribe(run: Run, project: Project) -> None:
    run("subscribers", "add", "ann@example.com", "--timezone", "Asia/Kathmandu", "--weekday", "Friday",
        "--time", "09:00", "--confirmed", "--now", "2026-03-02T00:00Z")  # fmt: skip
    paused = run("subscribers", "pause", "ann@example.com", "--weeks", "2", "--now", "2026-03-02T01:00Z")
    assert paused.exit_code == 0 and "paused ann@example.com until 2026-03-16 01:00 UTC" in paused.stdout
    resumed = run("subscribers", "resume", "ann@example.com", "--now", "2026-03-10T00:00Z")
    assert resumed.exit_code == 0 and "lesson 1 (muscle) due Fri 13 Mar 2026 09:00 local" in resumed.stdout
    changed = run("subscribers", "set", "ann@example.com", "--weekday", "Monday", "--now", "2026-03-10T00:00Z")
    assert changed.exit_code == 0 and "Monday 09:00 Asia/Kathmandu" in changed.stdout
    assert "lesson 1 (muscle) due Mon 16 Mar 2026 09:00 local" in changed.stdout
    assert run("subscribers", "set", "ann@example.com").exit_code == 2
    bad_name = run("subscribers", "set", "ann@example.com", "--name", "Ann\r\nBcc: mallory@example.com")
    assert bad_name.exit_code == 1 and "control character U+000D" in bad_name.stderr
    bad_email = run("subscribers", "set", "ann@example.com\nBcc: x@example.com", "--weekday", "Monday")
    assert bad_email.exit_code == 1 and "must be one line" in bad_email.stderr
    left = run("subscribers", "unsubscribe", "ann@example.com")
    assert left.exit_code == 0 and "unsubscribed ann@example.com" in left.stdout
    with project.db.session() as session:
        assert get_subscriber(session, "ann@example.com").status == "unsubscribed"
    cannot = run("subscribers", "resume", "ann@example.com")
    assert cannot.exit_code == 1 and "status is unsubscribed, not paused" in cannot.stderr


def test_cli_erase_asks_first(run: Run) -> None:
    run("subscribers", "add", "ann@example.com")
    declined = run("subscribers", "erase", "ann@example.com", input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.stderr
    assert "ann@example.com" in run("subscribers", "list", "--json").stdout
    erased = run("subscribers", "erase", "ann@example.com", "--yes")
    assert erased.exit_code == 0 and "erased ann@example.com" in erased.stdout
    assert run("subscribers", "list", "--json").stdout.strip() == "[]"
    unknown = run("subscribers", "erase", "ann@example.com", "--yes")
    assert unknown.exit_code == 1 and "no subscriber ann@example.com" in unknown.stderr


@pytest.mark.parametrize(
    "command",
    ["add", "import", "list", "export", "pause", "resume", "set", "unsubscribe", "erase"],
)
def test_cli_subscriber_commands_explain_themselves(command: str) -> None:
    result = CliRunner().invoke(main, ["subscribers", command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
    assert len(result.output.splitlines()) > 4

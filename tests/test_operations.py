"""`status`, `deliveries` and `retry`: the domain queries against a real ledger, and the commands over them.

The ledger is made the way production makes it: readers added, lessons sent to a real SMTP server that
refuses one address for good (5xx) and another for now (4xx), one reader unsubscribing after lesson 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest
from click.testing import CliRunner
from smtp_sink import FaultPlan, SmtpSink, permanent, temporary
from sqlalchemy import event, text

from newsletter.cli import main
from newsletter.dispatch import send_due
from newsletter.errors import NewsletterError, SubscriberError
from newsletter.ledger.pacing import pause_domain
from newsletter.ledger.waiting import Gate, apply_gates
from newsletter.operations import list_deliveries, retry_deliveries, status_report
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber, create_subscriber, get_subscriber, unsubscribe
from newsletter.subscribers import validate as validate_subscriber
from newsletter.transports import SmtpTransport

CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday
FIRST_SLOT = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
NEW_AT = FIRST_SLOT + timedelta(minutes=30)  # a sign-up after the run: its confirmation waits
LATER = FIRST_SLOT + timedelta(hours=2)
READERS = ("ada", "bo", "cy", "dee", "eve")


def invoke(project: Project, *args: str) -> tuple[int, str]:
    config = str(project.settings.config_path)
    result = CliRunner().invoke(main, ["--config", config, *args], catch_exceptions=False)
    return result.exit_code, result.output


def send_over(project: Project, sink: SmtpSink, now: datetime) -> None:
    with closing(SmtpTransport("127.0.0.1", sink.port, "none", connections=1, timeout=5)) as transport:
        send_due(project, transport, now=now)


@pytest.fixture
def course(project: Project) -> Project:
    """Lesson 1 went out: bo@ refused for good (550), cy@ for now (450), eve@ then unsubscribed; plus one
    reader added already suppressed and one whose confirmation has not gone out yet."""
    with project.db.session() as session:
        for name in READERS:
            reader = SubscriberInput(f"{name}@example.com", name.title(), "UTC", "Monday", "07:00")
            add_subscriber(session, project, reader, confirmed=True, now=CONFIRMED_AT)
        valid = validate_subscriber(project.settings, SubscriberInput("old@example.com"))
        create_subscriber(session, project, valid, status="unsubscribed", now=CONFIRMED_AT, source="import")
    faults = FaultPlan({"bo@example.com": permanent(550), "cy@example.com": temporary(450, times=None)})
    with SmtpSink(faults=faults) as sink:
        send_over(project, sink, FIRST_SLOT)
    with project.db.session() as session:
        unsubscribe(session, project, get_subscriber(session, "eve@example.com"), now=FIRST_SLOT + timedelta(hours=1))
        add_subscriber(session, project, SubscriberInput("new@example.com"), confirmed=False, now=NEW_AT)
    return project


class LedgerCounts(NamedTuple):
    subscribers: Counter[str]
    deliveries: Counter[str]
    lessons: dict[str, Counter[str]]


def ledger_counts(project: Project, now: datetime) -> LedgerCounts:
    """The numbers `status` must report, counted here straight from the tables with plain SQL."""
    with project.db.engine.connect() as connection:
        subscribers = Counter(
            dict(connection.execute(text("SELECT status, count(*) FROM subscribers GROUP BY status")).all())
        )
        deliveries = Counter(
            dict(connection.execute(text("SELECT status, count(*) FROM deliveries GROUP BY status")).all())
        )
        per_lesson: dict[str, Counter[str]] = {}
        for lesson, status, due_at in connection.execute(text("SELECT lesson, status, due_at FROM deliveries")):
            due = datetime.fromisoformat(str(due_at)).replace(tzinfo=UTC)
            key = ("due" if due <= now else "later") if status == "pending" else status
            per_lesson.setdefault(lesson, Counter())[key] += 1
        unsubscribed = connection.execute(
            text(
                "SELECT lesson, count(*) FROM events WHERE kind = 'unsubscribed' AND source != 'import' GROUP BY lesson"
            )
        )
        for lesson, count in unsubscribed:
            per_lesson.setdefault(lesson or "confirmation", Counter())["unsubscribed_after"] += count
    return LedgerCounts(subscribers, deliveries, per_lesson)


def test_status_report_matches_the_ledger(course: Project) -> None:
    report = status_report(course, LATER)
    expected = ledger_counts(course, LATER)

    assert {k: v for k, v in report.subscribers.items() if v} == expected.subscribers
    assert {k: v for k, v in report.deliveries.items() if v} == expected.deliveries
    lines = {line.lesson: line for line in report.lessons}
    for lesson, counts in expected.lessons.items():
        line = lines[lesson]
        for key in ("sent", "sending", "due", "later", "failed", "held", "unsubscribed_after"):
            assert getattr(line, key) == counts[key], (lesson, key)
    # The numbers this course must show, so the check above cannot pass on two empty tables.
    muscle, knees, confirmation = lines["muscle"], lines["knees"], lines["confirmation"]
    assert (muscle.sent, muscle.failed, muscle.due, muscle.unsubscribed_after) == (3, 1, 1, 1)
    assert knees.later == 3  # ada, dee and bo (moved on after the 5xx); eve's was cancelled
    assert confirmation.due == 1 and confirmation.unsubscribed_after == 0  # new@'s; old@ never unsubscribed
    assert [line.position for line in report.lessons] == list(range(8))  # confirmation + the seven lessons
    assert [line.lesson for line in report.lessons][1:] == [lesson.slug for lesson in course.series]


def test_status_json_equals_counts_from_the_ledger(course: Project) -> None:
    code, output = invoke(course, "status", "--json", "--now", LATER.isoformat())
    assert code == 0
    shown = json.loads(output)
    expected = ledger_counts(course, LATER)

    assert Counter({k: v for k, v in shown["subscribers"].items() if v}) == expected.subscribers
    assert Counter({k: v for k, v in shown["deliveries"].items() if v}) == expected.deliveries
    for line in shown["lessons"]:
        counts = expected.lessons.get(line["lesson"], Counter())
        assert {key: value for key, value in line.items() if key not in ("position", "lesson", "held_because")} == {
            key: counts[key] for key in ("sent", "sending", "due", "later", "failed", "held", "unsubscribed_after")
        }
    assert sum(shown["subscribers"].values()) == 7


def test_status_names_drafts_from_their_files_and_checklist_holds_from_the_rows_rendering_nothing(
    course: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    brain = course.settings.newsletter.lessons / "03-brain.md"
    brain.write_text(brain.read_text(encoding="utf-8").replace("week = 3\n", "week = 3\ndraft = true\n", 1))
    with course.db.session() as session:  # what a send run does to the rows of a lesson failing the checklist
        apply_gates(session.connection(), {"knees": Gate("checklist", "item 20 (alt text): 1 image without alt")})

    def rendering(*_args: object) -> None:
        raise AssertionError("status rendered the course to run the email checklist")

    monkeypatch.setattr("newsletter.checklist.course.lesson_gates", rendering)
    lines = {line.lesson: line for line in status_report(Project(course.settings), LATER).lessons}

    assert (lines["knees"].held, lines["knees"].held_because) == (3, "checklist")
    assert (lines["brain"].held, lines["brain"].held_because) == (0, "draft")  # nobody waits on it yet
    assert lines["muscle"].held_because == ""


def test_the_oldest_overdue_delivery_and_the_latest_errors(course: Project) -> None:
    report = status_report(course, LATER)

    oldest = report.oldest_overdue
    assert oldest is not None
    assert (oldest.email, oldest.lesson, oldest.attempts) == (
        "cy@example.com",
        "muscle",
        1,
    )  # its retry, due after backoff
    assert FIRST_SLOT < oldest.due_at < NEW_AT
    assert report.overdue_seconds == (LATER - oldest.due_at).total_seconds()
    errors = {row.email: row for row in report.recent_errors}
    assert set(errors) == {"bo@example.com", "cy@example.com"}
    assert errors["bo@example.com"].status == "failed" and "550" in (errors["bo@example.com"].smtp_reply or "")
    assert errors["cy@example.com"].status == "pending" and "450" in (errors["cy@example.com"].smtp_reply or "")
    assert report.next_due is not None and report.next_due.due_at > LATER


def test_the_latest_errors_are_read_from_their_own_index_not_from_every_pending_row(course: Project) -> None:
    assert course.db.engine.dialect.name == "sqlite"  # the plan asked about; PostgreSQL's follows its statistics
    statements: list[tuple[str, object]] = []

    def keep(conn: object, cursor: object, statement: str, parameters: object, *_: object) -> None:
        statements.append((statement, parameters))

    event.listen(course.db.engine, "before_cursor_execute", keep)
    try:
        report = status_report(course, LATER)
    finally:
        event.remove(course.db.engine, "before_cursor_execute", keep)
    assert report.recent_errors  # the ledger has some, so the statement ran and found them
    (latest,) = [(sql, args) for sql, args in statements if "deliveries.error IS NOT NULL" in sql]
    with course.db.engine.connect() as connection:
        plan = " / ".join(row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {latest[0]}", latest[1]))
    assert "USING INDEX ix_deliveries_errors_updated_at" in plan and "TEMP B-TREE" not in plan, plan


def test_the_oldest_and_the_next_due_are_read_in_index_order_even_among_rows_due_at_one_instant(
    any_project: Project,
) -> None:
    with any_project.db.session() as session:  # three readers, each lesson 1 due on Monday 07:00 UTC
        for name in ("ada", "bo", "cy"):
            reader = SubscriberInput(f"{name}@example.com", name.title(), "UTC", "Monday", "07:00")
            add_subscriber(session, any_project, reader, confirmed=True, now=CONFIRMED_AT)
    statements: list[tuple[str, object]] = []

    def keep(conn: object, cursor: object, statement: str, parameters: object, *_: object) -> None:
        statements.append((statement, parameters))

    engine = any_project.db.engine
    for moment in (FIRST_SLOT + timedelta(minutes=1), FIRST_SLOT - timedelta(minutes=1)):  # overdue, then next
        event.listen(engine, "before_cursor_execute", keep)
        try:
            report = status_report(any_project, moment)
        finally:
            event.remove(engine, "before_cursor_execute", keep)
        found = report.oldest_overdue or report.next_due
        assert found is not None and found.email == "ada@example.com"  # the lowest id of the three tied rows
    ordered = [(sql, args) for sql, args in statements if "ORDER BY deliveries.due_at, deliveries.id" in sql]
    assert len(ordered) == 4
    with engine.connect() as connection:
        for sql, args in ordered:
            if engine.dialect.name == "sqlite":
                plan = " / ".join(str(row[-1]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", args))
                assert "ix_deliveries_status_due_at" in plan and "TEMP B-TREE" not in plan, plan
            else:
                connection.exec_driver_sql("SET enable_seqscan = off")  # tiny tables are cheaper to scan
                plan = " / ".join(str(row[0]) for row in connection.exec_driver_sql(f"EXPLAIN {sql}", args))
                assert "ix_deliveries_status_due_at" in plan and "Sort" not in plan, plan


def test_nothing_overdue_when_every_due_email_went_out(project: Project) -> None:
    with project.db.session() as session:
        add_subscriber(session, project, SubscriberInput("ada@example.com"), confirmed=True, now=CONFIRMED_AT)
    with SmtpSink() as sink:
        send_over(project, sink, FIRST_SLOT)
    report = status_report(project, FIRST_SLOT)
    assert report.oldest_overdue is None and report.overdue_seconds == 0 and not report.recent_errors


def test_list_deliveries_filters_by_status_and_address(course: Project) -> None:
    def emails(**filters: object) -> list[tuple[str, int]]:
        return [(row.email, row.lesson) for row in list_deliveries(course, **filters)]  # type: ignore[arg-type]

    assert emails(status="failed") == [("bo@example.com", "muscle")]
    assert emails(status="retry") == [("cy@example.com", "muscle")]
    assert ("cy@example.com", "muscle") in emails(status="pending") and len(emails(status="pending")) == 5
    assert sorted(emails(email="BO@example.com")) == [("bo@example.com", "knees"), ("bo@example.com", "muscle")]
    assert emails(status="sent", email="ada@example.com") == [("ada@example.com", "muscle")]
    assert len(emails(limit=2)) == 2
    with pytest.raises(SubscriberError, match="no subscriber"):
        list_deliveries(course, email="nobody@example.com")
    with pytest.raises(NewsletterError, match="expected one of"):
        list_deliveries(course, status="lost")


def test_retry_puts_failed_rows_back_due_now_and_the_next_run_sends_them(course: Project) -> None:
    before = {row.id: row for row in list_deliveries(course, status="failed")}
    result = retry_deliveries(course, now=LATER, email="bo@example.com")

    assert [(row.email, row.lesson, row.status, row.attempts) for row in result.retried] == [
        ("bo@example.com", "muscle", "pending", 0)
    ]
    assert result.retried[0].due_at == LATER and result.retried[0].id in before
    assert not list_deliveries(course, status="failed")
    with SmtpSink() as sink:  # the mailbox works again
        send_over(course, sink, LATER)
        received = [message.recipients for message in sink.messages]
    assert ("bo@example.com",) in received
    assert [row.status for row in list_deliveries(course, email="bo@example.com") if row.lesson == "muscle"] == ["sent"]


def test_retry_leaves_rows_of_readers_who_left_and_says_why(course: Project) -> None:
    with course.db.session() as session:
        session.execute(text("UPDATE deliveries SET status = 'failed', error = '550 no' WHERE status = 'cancelled'"))
    result = retry_deliveries(course, now=LATER, all_failed=True)

    assert sorted((row.email, row.lesson) for row in result.retried) == [("bo@example.com", "muscle")]
    assert [(row.email, reason) for row, reason in result.left] == [
        ("eve@example.com", "the subscriber is unsubscribed")
    ]
    assert [row.email for row in list_deliveries(course, status="failed")] == ["eve@example.com"]


def test_retry_needs_exactly_one_target(course: Project) -> None:
    with pytest.raises(NewsletterError, match="exactly one"):
        retry_deliveries(course, now=LATER)
    with pytest.raises(NewsletterError, match="exactly one"):
        retry_deliveries(course, now=LATER, email="bo@example.com", all_failed=True)


def test_a_held_row_is_retried_too(course: Project) -> None:
    with course.db.session() as session:
        session.execute(
            text(
                "UPDATE deliveries SET status = 'held', hold = 'render', error = 'cannot render' "
                "WHERE status = 'pending' AND lesson = 'knees'"
            )
        )
    result = retry_deliveries(course, now=LATER, email="ada@example.com")
    assert [(row.lesson, row.status, row.due_at) for row in result.retried] == [("knees", "pending", LATER)]


def test_deliveries_and_retry_commands(course: Project) -> None:
    code, output = invoke(course, "deliveries", "--status", "failed", "--json")
    assert code == 0
    rows = json.loads(output)
    assert [(row["email"], row["lesson"], row["status"]) for row in rows] == [("bo@example.com", "muscle", "failed")]
    assert "550" in rows[0]["smtp_reply"]

    code, output = invoke(course, "deliveries", "--email", "cy@example.com")
    assert code == 0 and "cy@example.com" in output and "450" in output

    code, output = invoke(course, "deliveries", "--email", "nobody@example.com")
    assert code == 1 and "no subscriber nobody@example.com" in output

    code, output = invoke(course, "retry")
    assert code == 2 and "exactly one of --email ADDR or --all-failed" in output
    code, output = invoke(course, "retry", "--email", "bo@example.com", "--all-failed")
    assert code == 2

    code, output = invoke(course, "retry", "--all-failed", "--now", LATER.isoformat())
    assert code == 0 and "1 back to pending, due now:" in output and "bo@example.com" in output
    code, output = invoke(course, "retry", "--all-failed")
    assert code == 0 and output.startswith("nothing to retry")


def test_status_text_names_the_late_and_the_failed(course: Project) -> None:
    code, output = invoke(course, "status", "--now", LATER.isoformat())
    assert code == 0
    assert "Oldest overdue cy@example.com, muscle," in output and "1 h 59 min late" in output
    assert "550" in output and "450" in output
    assert "muscle" in output and "longevity" in output


def test_status_names_the_domains_that_asked_us_to_slow_down_until_their_pause_ends(course: Project) -> None:
    with course.db.engine.begin() as connection:
        until = pause_domain(connection, course.settings, "example.com", "421 4.7.0 [TS01] try again later", LATER)
        pause_domain(connection, course.settings, "past.example", "421 too fast", LATER - timedelta(days=1))

    code, output = invoke(course, "status", "--now", LATER.isoformat())
    assert code == 0
    assert "Paused       example.com until" in output and "[TS01] try again later" in output
    assert "past.example" not in output  # that pause is over
    code, output = invoke(course, "status", "--json", "--now", LATER.isoformat())
    shown = json.loads(output)["paused_domains"]
    assert [(pause["domain"], pause["until"], pause["strikes"]) for pause in shown] == [
        ("example.com", until.isoformat(), 1)
    ]
    code, output = invoke(course, "status", "--json", "--now", (until + timedelta(seconds=1)).isoformat())
    assert json.loads(output)["paused_domains"] == []


def test_a_relays_words_with_brackets_are_printed_as_they_came_not_read_as_markup(course: Project) -> None:
    reply = "550 5.1.1 [/var/spool] <bo@[192.0.2.1]> [bold]no such user[/bold]"
    with course.db.engine.begin() as connection:
        connection.execute(text("UPDATE deliveries SET smtp_reply = :reply WHERE status = 'failed'"), {"reply": reply})
    for command in (["status", "--now", LATER.isoformat()], ["deliveries", "--status", "failed"]):
        code, output = invoke(course, *command)
        assert code == 0, output
        assert reply in output, output


def test_status_watch_refreshes_until_interrupted(course: Project, env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "newsletter", "--config", str(course.settings.config_path), "status"]
    environment = {**os.environ, **env, "NEWSLETTER_DATABASE_URL": str(course.settings.database.url)}
    watcher = subprocess.Popen(
        [*command, "--json", "--watch", "0.5"], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert watcher.stdout is not None
    try:
        reports = [json.loads(watcher.stdout.readline()) for _ in range(2)]
        watcher.send_signal(signal.SIGINT)
        _, errors = watcher.communicate(timeout=10)
    finally:
        if watcher.poll() is None:  # never left running (or its pipes open) for the tests after this one
            watcher.kill()
            watcher.communicate()

    assert watcher.returncode == 0, errors.decode()
    assert reports[0]["generated_at"] < reports[1]["generated_at"]
    assert reports[1]["deliveries"]["failed"] == 1


def test_every_command_of_the_family_has_help() -> None:
    for name in ("run", "status", "deliveries", "retry"):
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0 and len(result.output.split("\n\n")[1].strip()) > 20, name

"""Recording feedback against its delivery on both backends: consequences, idempotence, and who may be believed."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta

import pytest
from feedback_mail import AFTER_FIRST, Sent, bounce, readers, send_week, sent
from sqlalchemy import func, inspect, select

from newsletter.feedback.classifier import classify
from newsletter.feedback.record import DUPLICATE, RECORDED, UNMATCHED, Recorded, record_report
from newsletter.feedback.report import SOFT_BOUNCE, FeedbackReport
from newsletter.feedback.suppression import is_suppressed
from newsletter.models import Base, Delivery, Event, Feedback, Subscriber
from newsletter.project import Project


def record(project: Project, raw: bytes, *, at: timedelta = timedelta()) -> list[Recorded]:
    [*reports] = classify(project.settings, raw).reports
    with project.db.session() as session:
        return [record_report(session, project, report, now=AFTER_FIRST + at) for report in reports]


def state(project: Project, email: str) -> tuple[str, list[str], bool]:
    """The reader's status, the statuses of their deliveries, and whether the address is suppressed."""
    with project.db.session() as session:
        subscriber = session.scalars(select(Subscriber).where(Subscriber.email == email)).one()
        rows = session.scalars(select(Delivery.status).where(Delivery.subscriber_id == subscriber.id))
        return subscriber.status, sorted(rows), is_suppressed(session, project.settings, email)


@pytest.fixture
def lesson_one(any_project: Project) -> dict[str, Sent]:
    readers(any_project, "ann@example.com", "bo@example.com")
    send_week(any_project, 1)
    return {email: sent(any_project, email) for email in ("ann@example.com", "bo@example.com")}


def test_a_hard_bounce_suppresses_the_reader_at_once(any_project: Project, lesson_one: dict[str, Sent]) -> None:
    ann = lesson_one["ann@example.com"]
    assert state(any_project, ann.email) == ("active", ["pending", "sent"], False)
    [outcome] = record(any_project, bounce(any_project, "postfix-hard.eml", ann))
    assert outcome == Recorded(RECORDED, "hard_bounce", "suppressed")
    assert state(any_project, ann.email) == ("bounced", ["cancelled", "sent"], True)
    assert state(any_project, "bo@example.com") == ("active", ["pending", "sent"], False)
    with any_project.db.session() as session:
        feedback = session.scalars(select(Feedback)).one()
        assert (feedback.delivery_id, feedback.subscriber_id, feedback.kind) == (
            ann.delivery_id,
            ann.subscriber_id,
            "hard_bounce",
        )
        assert feedback.status == "5.1.1" and "User unknown" in feedback.diagnostic
        event = session.scalars(select(Event).where(Event.kind == "bounced")).one()
        assert event.source == "mailbox" and "5.1.1" in event.detail


def test_the_same_report_twice_changes_nothing_the_second_time(
    any_project: Project, lesson_one: dict[str, Sent]
) -> None:
    raw = bounce(any_project, "gmail-hard.eml", lesson_one["ann@example.com"])
    assert [o.outcome for o in record(any_project, raw)] == [RECORDED]
    assert [o.outcome for o in record(any_project, raw, at=timedelta(hours=1))] == [DUPLICATE]
    with any_project.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Feedback)) == 1
        assert session.scalar(select(func.count()).select_from(Event).where(Event.kind == "bounced")) == 1


def test_a_complaint_unsubscribes_at_once_and_suppresses(any_project: Project, lesson_one: dict[str, Sent]) -> None:
    bo = lesson_one["bo@example.com"]
    [outcome] = record(any_project, bounce(any_project, "yahoo-complaint.eml", bo))
    assert outcome == Recorded(RECORDED, "complaint", "unsubscribed")
    assert state(any_project, bo.email) == ("unsubscribed", ["cancelled", "sent"], True)


def test_a_redacted_complaint_finds_the_reader_by_message_id(any_project: Project, lesson_one: dict[str, Sent]) -> None:
    bo = lesson_one["bo@example.com"]
    [outcome] = record(any_project, bounce(any_project, "outlook-complaint.eml", bo))
    assert outcome.outcome == RECORDED
    assert state(any_project, bo.email)[0] == "unsubscribed"


def test_three_soft_bounces_of_the_last_five_suppress(any_project: Project) -> None:
    readers(any_project, "cy@example.com")
    for week in range(1, 6):
        send_week(any_project, week)
    lessons = [sent(any_project, "cy@example.com", week) for week in range(1, 6)]
    # Soft bounces on weeks 1, 3 and 4: the third within the last five emails suppresses; two do not.
    outcomes = [record(any_project, bounce(any_project, "gmail-over-quota.eml", lessons[0]))[0]]
    outcomes += record(any_project, bounce(any_project, "gmail-over-quota.eml", lessons[0]).replace(b"GMR@", b"GMR2@"))
    outcomes += record(any_project, bounce(any_project, "gmail-over-quota.eml", lessons[2]).replace(b"GMR@", b"GMR3@"))
    assert [(o.outcome, o.action) for o in outcomes] == [(RECORDED, "counted")] * 3  # week 1 counts once
    assert state(any_project, "cy@example.com")[0] == "active"
    last = record(any_project, bounce(any_project, "gmail-over-quota.eml", lessons[3]).replace(b"GMR@", b"GMR4@"))
    assert last == [Recorded(RECORDED, "soft_bounce", "suppressed")]
    assert state(any_project, "cy@example.com")[0::2] == ("bounced", True)
    with any_project.db.session() as session:
        detail = session.scalars(select(Event.detail).where(Event.kind == "bounced")).one()
        assert detail.startswith("3 of the last 5 emails soft-bounced")


def test_old_soft_bounces_fall_out_of_the_window(any_project: Project) -> None:
    readers(any_project, "dee@example.com")
    for week in range(1, 8):
        send_week(any_project, week)
    lessons = [sent(any_project, "dee@example.com", week) for week in range(1, 8)]
    for n, lesson in enumerate((lessons[0], lessons[1], lessons[6])):  # weeks 1 and 2 are not among the last 5
        raw = bounce(any_project, "gmail-over-quota.eml", lesson).replace(b"GMR@", f"GMR{n}@".encode())
        assert record(any_project, raw)[0].action == "counted"
    assert state(any_project, "dee@example.com")[0] == "completed"


def test_a_report_that_names_none_of_our_deliveries_changes_nothing(
    any_project: Project, lesson_one: dict[str, Sent]
) -> None:
    ann = lesson_one["ann@example.com"]
    forged = Sent(ann.email, ann.subscriber_id, ann.delivery_id, "<someone.else@example.org>")
    [report] = classify(any_project.settings, bounce(any_project, "postfix-hard.eml", forged)).reports
    # A plain delivery number is believed only when the report's recipient is that delivery's reader.
    wrong_reader = replace(report, recipient="bo@example.com")
    no_anchor = replace(report, header_delivery_id=None)
    address_only = FeedbackReport("complaint", "mailbox:x:1", "mailbox", recipient=ann.email)
    with any_project.db.session() as session:
        outcomes = [
            record_report(session, any_project, r, now=AFTER_FIRST) for r in (wrong_reader, no_anchor, address_only)
        ]
    assert [o.outcome for o in outcomes] == [UNMATCHED] * 3
    assert state(any_project, ann.email) == ("active", ["pending", "sent"], False)
    with any_project.db.session() as session:
        assert [o.outcome for o in [record_report(session, any_project, report, now=AFTER_FIRST)]] == [RECORDED]


def test_an_authenticated_source_may_name_the_recipient_alone(
    any_project: Project, lesson_one: dict[str, Sent]
) -> None:
    ann = lesson_one["ann@example.com"]
    report = FeedbackReport(SOFT_BOUNCE, "ses:abc:1", "ses", recipient=ann.email, authenticated=True)
    with any_project.db.session() as session:
        assert record_report(session, any_project, report, now=AFTER_FIRST).action == "counted"
        assert session.scalars(select(Feedback.delivery_id)).one() == ann.delivery_id


def test_a_mangled_bounce_is_still_tied_by_its_bounce_address(any_project: Project) -> None:
    project = Project(any_project.settings.replace("bounces", address="bounces@running.example.com"))
    try:
        readers(project, "eve@example.com")
        send_week(project, 1)
        eve = sent(project, "eve@example.com")
        # The relay rewrote the Message-ID and dropped our header: only the envelope sender is left.
        mangled = bounce(project, "outlook-hard.eml", replace(eve, message_id="<rewritten@relay.example.net>"))
        raw = re.sub(rb"X-Newsletter-Delivery: \d+\n", b"", mangled)
        assert b"X-Newsletter-Delivery" not in raw and eve.message_id.encode() not in raw
        assert [o.action for o in record(project, raw)] == ["suppressed"]
        with project.db.session() as session:
            assert session.scalars(select(Feedback.delivery_id)).one() == eve.delivery_id
    finally:
        project.db.dispose()


def test_the_migrations_build_exactly_the_tables_the_models_describe(any_project: Project) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with any_project.db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    ours = {"suppressions", "feedback", "webhook_nonces"}
    assert [d for d in differences if any(name in str(d) for name in (*ours, "ix_deliveries_message_id"))] == []
    assert ours <= set(inspect(any_project.db.engine).get_table_names())


def test_erasing_a_bounced_reader_keeps_the_count_but_not_their_words(
    any_project: Project, lesson_one: dict[str, Sent]
) -> None:
    from newsletter.subscribers import erase

    ann = lesson_one["ann@example.com"]
    record(any_project, bounce(any_project, "postfix-hard.eml", ann))
    with any_project.db.session() as session:
        erase(session, any_project, session.get(Subscriber, ann.subscriber_id), now=AFTER_FIRST)  # type: ignore[arg-type]
    with any_project.db.session() as session:
        row = session.scalars(select(Feedback)).one()
        assert (row.kind, row.subscriber_id, row.delivery_id, row.diagnostic) == ("hard_bounce", None, None, "")
        assert is_suppressed(session, any_project.settings, ann.email)

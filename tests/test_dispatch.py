"""The send path against a real SMTP server (aiosmtpd), including one that misbehaves on cue."""

from __future__ import annotations

import email
import threading
from contextlib import ExitStack, closing
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from conftest import hold_the_line
from smtp_sink import FaultPlan, SmtpSink, drop_after_data, permanent, stall, temporary
from sqlalchemy import select, update

from newsletter.dispatch import dry_run, send_due
from newsletter.ledger.wire import claim_due, release_expired, retry_delay
from newsletter.message import DELIVERY_HEADER
from newsletter.models import Delivery, Subscriber
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber
from newsletter.transports import Envelope, MemoryTransport, OutboxTransport, SmtpTransport, read_outbox

CONFIRMED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday
FIRST_SLOT = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)


def add_readers(project: Project, emails: list[str], *, confirmed: bool = True) -> None:
    with project.db.session() as session:
        for address in emails:
            reader = SubscriberInput(address, address.split("@")[0].title(), "UTC", "Monday", "07:00")
            add_subscriber(session, project, reader, confirmed=confirmed, now=CONFIRMED_AT)


def ledger(project: Project) -> dict[tuple[str, int], Delivery]:
    with project.db.session() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery).join(Delivery, Delivery.subscriber_id == Subscriber.id)
        )
        series = project.series
        return {
            (address, (series.index(row.lesson) or 0) + 1 if row.lesson != "confirmation" else 0): row
            for address, row in rows
        }


def smtp_transport(sink: SmtpSink, connections: int = 2, timeout: float = 5.0) -> closing[SmtpTransport]:
    return closing(SmtpTransport("127.0.0.1", sink.port, "none", connections=connections, timeout=timeout))


def test_due_lessons_go_out_over_smtp_and_the_next_lesson_is_planned(project: Project) -> None:
    add_readers(project, ["ada@example.com", "bo@example.com", "cy@example.com"])
    assert send_due(project, MemoryTransport(), now=FIRST_SLOT - timedelta(minutes=1)).total == 0

    with SmtpSink() as sink:
        with smtp_transport(sink) as transport:
            summary = send_due(project, transport, now=FIRST_SLOT)
        received = {message.recipients[0]: message for message in sink.messages}

    assert summary.as_dict() == {"sent": 3, "retry": 0, "failed": 0, "skipped": 0}
    rows = ledger(project)
    for address in ("ada@example.com", "bo@example.com", "cy@example.com"):
        first = rows[address, 1]
        assert first.status == "sent" and first.attempts == 1 and first.smtp_reply.startswith("250")
        parsed = email.message_from_bytes(received[address].data, policy=policy.default)
        assert parsed["Message-ID"] == first.message_id
        assert parsed[DELIVERY_HEADER] == str(first.id)
        assert rows[address, 2].status == "pending"
        assert rows[address, 2].due_at == FIRST_SLOT + timedelta(weeks=1)
    with project.db.session() as session:
        assert {s.position for s in session.scalars(select(Subscriber))} == {1}


def test_a_pending_subscriber_gets_the_confirmation_at_once_and_no_lesson(project: Project) -> None:
    add_readers(project, ["new@example.com"], confirmed=False)
    transport = MemoryTransport()
    summary = send_due(project, transport, now=CONFIRMED_AT)
    assert summary.sent == 1
    parsed = email.message_from_bytes(transport.sent[0].data, policy=policy.default)
    assert parsed["Subject"].startswith("Confirm your subscription")
    assert send_due(project, transport, now=FIRST_SLOT + timedelta(weeks=3)).total == 0


def test_temporary_failures_are_retried_with_backoff_and_then_delivered(project: Project) -> None:
    add_readers(project, ["soft@example.com", "fine@example.com"])
    # 450 4.2.0: this mailbox, for now (a 421 or 451 would pause the whole domain: tests/test_pacing.py).
    faults = FaultPlan({"soft@example.com": temporary(450, times=2, text="4.2.0 mailbox busy, try later")})
    with ExitStack() as stack, SmtpSink(faults=faults) as sink:
        transport = stack.enter_context(smtp_transport(sink))
        first = send_due(project, transport, now=FIRST_SLOT)
        assert (first.sent, first.retry) == (1, 1)
        row = ledger(project)["soft@example.com", 1]
        assert row.status == "pending" and row.attempts == 1 and "450" in (row.error or "")
        assert FIRST_SLOT + timedelta(seconds=29) <= row.due_at <= FIRST_SLOT + timedelta(seconds=61)
        assert send_due(project, transport, now=FIRST_SLOT + timedelta(seconds=5)).total == 0  # not yet
        second = send_due(project, transport, now=FIRST_SLOT + timedelta(minutes=2))
        third = send_due(project, transport, now=FIRST_SLOT + timedelta(minutes=10))
        assert (second.retry, third.sent) == (1, 1)
        delivered = [m.recipients[0] for m in sink.messages]
    assert sorted(delivered) == ["fine@example.com", "soft@example.com"]
    row = ledger(project)["soft@example.com", 1]
    assert row.status == "sent" and row.attempts == 3


def test_retry_delay_doubles_with_jitter_and_is_capped() -> None:
    for attempts, base in ((1, 60), (2, 120), (3, 240)):
        delay = retry_delay(60, attempts)
        assert timedelta(seconds=base / 2) <= delay <= timedelta(seconds=base)
    assert retry_delay(60, 40) <= timedelta(hours=6)


def test_a_hard_bounce_is_recorded_with_the_reply_and_repeats_suppress(project: Project) -> None:
    add_readers(project, ["gone@example.com", "fine@example.com"])
    with ExitStack() as stack, SmtpSink(faults=FaultPlan({"gone@example.com": permanent(550)})) as sink:
        transport = stack.enter_context(smtp_transport(sink))
        assert send_due(project, transport, now=FIRST_SLOT).failed == 1
        row = ledger(project)["gone@example.com", 1]
        assert row.status == "failed" and "550" in (row.smtp_reply or row.error or "")
        # Lesson 2 is refused too: the second consecutive hard bounce suppresses the subscriber.
        assert send_due(project, transport, now=FIRST_SLOT + timedelta(weeks=1)).failed == 1
        assert send_due(project, transport, now=FIRST_SLOT + timedelta(weeks=2)).sent == 1  # fine@ only
    with project.db.session() as session:
        gone = session.scalars(select(Subscriber).where(Subscriber.email == "gone@example.com")).one()
        assert gone.status == "bounced"
        assert not session.scalars(
            select(Delivery).where(Delivery.subscriber_id == gone.id, Delivery.status == "pending")
        ).all()


@pytest.mark.parametrize("fault", [drop_after_data(times=1), stall(3.0, times=1)], ids=["dropped", "stalled"])
def test_a_lost_connection_or_stalled_server_means_retry_not_loss(project: Project, fault: object) -> None:
    add_readers(project, ["flaky@example.com", "fine@example.com"])
    with ExitStack() as stack, SmtpSink(faults=FaultPlan({"flaky@example.com": fault})) as sink:  # type: ignore[dict-item]
        transport = stack.enter_context(smtp_transport(sink, timeout=1.0))
        first = send_due(project, transport, now=FIRST_SLOT)
        assert (first.sent, first.retry) == (1, 1)
        assert send_due(project, transport, now=FIRST_SLOT + timedelta(hours=1)).sent == 1
        recipients = [m.recipients[0] for m in sink.messages]
    assert recipients.count("fine@example.com") == 1
    assert 1 <= recipients.count("flaky@example.com") <= 2  # a drop after DATA may deliver twice, never zero
    assert ledger(project)["flaky@example.com", 1].status == "sent"


def test_a_lesson_that_fails_to_render_is_held_and_the_rest_goes_on(project: Project) -> None:
    add_readers(project, ["reader@example.com"])
    add_readers(project, ["newcomer@example.com"], confirmed=False)
    template = project.settings.newsletter.templates / "lesson.mjml.j2"
    template.write_text(template.read_text().replace("{% endblock %}", "{% endblock %", 1))
    transport = MemoryTransport()
    restarted = Project(project.settings)  # the next `newsletter send` reads the broken template
    summary = send_due(restarted, transport, now=FIRST_SLOT)
    assert summary.sent == 1  # the confirmation still goes out
    held = ledger(project)["reader@example.com", 1]
    assert (held.status, held.hold) == ("held", "broken") and "lesson.mjml.j2" in (held.error or "")
    assert summary.course is not None and "of 'muscle' (broken)" in summary.course.held_line()
    restarted.close()


def test_a_subscriber_who_unsubscribes_after_the_claim_is_skipped(project: Project) -> None:
    add_readers(project, ["late@example.com"])
    with project.db.session() as session:
        assert claim_due(session.connection(), "other-sender", FIRST_SLOT, timedelta(seconds=1), 10)
    with project.db.session() as session:
        session.scalars(select(Subscriber)).one().status = "unsubscribed"
    # The other sender died; its lease expires and this run takes the row over, then sees the unsubscribe.
    with project.db.session() as session:
        assert release_expired(session.connection(), FIRST_SLOT + timedelta(seconds=2)) == 1
    summary = send_due(project, MemoryTransport(), now=FIRST_SLOT + timedelta(seconds=2))
    assert summary.as_dict() == {"sent": 0, "retry": 0, "failed": 0, "skipped": 1}


def test_a_claim_never_hands_one_row_to_two_senders(any_project: Project) -> None:
    add_readers(any_project, [f"r{n}@example.com" for n in range(30)])
    claimed: list[int] = []
    for owner in ("a", "b", "c", "d"):
        with any_project.db.session() as session:
            claimed += claim_due(session.connection(), owner, FIRST_SLOT, timedelta(minutes=5), 8)
    assert len(claimed) == len(set(claimed)) == 30


def test_a_run_for_one_lesson_sends_only_its_deliveries_and_tells_each_outcome(any_project: Project) -> None:
    add_readers(any_project, ["ada@example.com"])  # lesson 1 due at FIRST_SLOT
    add_readers(any_project, ["bo@example.com"], confirmed=False)  # a confirmation due at once
    transport = MemoryTransport()
    told: list[tuple[str, str, str]] = []
    summary = send_due(
        any_project, transport, now=FIRST_SLOT, lesson="confirmation", on_outcome=lambda *outcome: told.append(outcome)
    )
    assert summary.sent == 1 and [message.recipients for message in transport.sent] == [("bo@example.com",)]
    assert told == [("sent", "confirmation", "bo@example.com")]
    assert ledger(any_project)["ada@example.com", 1].status == "pending"


def test_dry_run_lists_without_claiming(project: Project) -> None:
    add_readers(project, ["ada@example.com"])
    planned = dry_run(project, FIRST_SLOT)
    assert [(d.email, d.lesson) for d in planned.due] == [("ada@example.com", "muscle")]
    assert ledger(project)["ada@example.com", 1].status == "pending"


def test_the_outbox_transport_receives_the_wire_bytes(project: Project, tmp_path: Path) -> None:
    add_readers(project, ["ada@example.com"])
    send_due(project, OutboxTransport(tmp_path / "outbox"), now=FIRST_SLOT)
    (stored,) = read_outbox(tmp_path / "outbox")
    assert b"\r\n" in stored.raw and stored.raw.count(b"\n") == stored.raw.count(b"\r\n")


def test_a_failed_last_lesson_can_be_retried_after_the_course_is_complete(project: Project) -> None:
    from newsletter.operations import retry_deliveries

    add_readers(project, ["last@example.com"])
    with project.db.session() as session:
        reader = session.scalars(select(Subscriber)).one()
        reader.position, reader.last_lesson = 6, "immunity"  # lesson 7 of 7 is next
        session.execute(update(Delivery).values(lesson="longevity"))
    transport = MemoryTransport()
    transport.fail_permanently("last@example.com")
    assert send_due(project, transport, now=FIRST_SLOT).failed == 1
    with project.db.session() as session:
        assert session.scalars(select(Subscriber)).one().status == "completed"
    retry_deliveries(project, now=FIRST_SLOT + timedelta(days=1), email="last@example.com")
    assert send_due(project, MemoryTransport(), now=FIRST_SLOT + timedelta(days=1)).sent == 1
    assert ledger(project)["last@example.com", 7].status == "sent"


@pytest.mark.parametrize("status", ["unsubscribed", "paused"])
def test_leaving_while_a_lesson_is_on_the_wire_is_not_undone_by_its_record(project: Project, status: str) -> None:
    add_readers(project, ["leaving@example.com"])

    class LeavesMidSend(MemoryTransport):
        def send(self, envelope: Envelope) -> str:
            with project.db.session() as session:  # the reader presses unsubscribe / pause meanwhile
                session.scalars(select(Subscriber)).one().status = status
            return super().send(envelope)

    assert send_due(project, LeavesMidSend(), now=FIRST_SLOT).sent == 1
    with project.db.session() as session:
        reader = session.scalars(select(Subscriber)).one()
        assert (reader.status, reader.position) == (status, 1)
    assert ledger(project)["leaving@example.com", 1].status == "sent"
    assert ("leaving@example.com", 2) not in ledger(project)


def test_a_sender_on_sqlite_waits_in_line_until_the_one_before_it_lets_go(project: Project, project_dir: Path) -> None:

    add_readers(project, ["ada@example.com", "bo@example.com"])
    holder = hold_the_line(project_dir, project.settings.database.url)  # another sender, mid-transaction
    transport, summaries = MemoryTransport(), []
    sender = threading.Thread(target=lambda: summaries.append(send_due(project, transport, now=FIRST_SLOT)))
    try:
        sender.start()
        sender.join(0.5)
        assert sender.is_alive() and transport.sent == [], "the sender wrote while another held the line"
    finally:
        holder.kill()
        holder.communicate()
    sender.join(30)
    assert summaries[0].sent == 2 and len(transport.sent) == 2

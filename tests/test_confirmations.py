"""`newsletter serve`'s confirmation sender: woken by a sign-up, it sends confirmations and nothing else."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from daemon_process import wait_for
from smtp_sink import FaultPlan, SmtpSink, refuse_data
from sqlalchemy import select, update

from newsletter.confirmations import ConfirmationSender
from newsletter.models import Delivery
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber
from newsletter.transports import MemoryTransport, SmtpTransport


def sign_up(project: Project, address: str, *, confirmed: bool = False) -> None:
    with project.db.session() as session:
        add_subscriber(session, project, SubscriberInput(address), confirmed=confirmed, now=datetime.now(UTC))


def test_a_nudge_sends_the_due_confirmations_and_no_lesson(any_project: Project) -> None:
    sign_up(any_project, "kai@example.com", confirmed=True)
    with any_project.db.session() as session:
        session.execute(update(Delivery).values(due_at=datetime.now(UTC) - timedelta(minutes=1)))
    transport = MemoryTransport()
    told: list[tuple[str, str, str]] = []
    sender = ConfirmationSender(
        lambda: any_project, transport, on_outcome=lambda *outcome: told.append(outcome), on_failure=print
    )
    sender.start()
    try:
        sign_up(any_project, "noor@example.com")
        sender.nudge()
        wait_for(lambda: len(told) == 1, "the confirmation", seconds=10)
        sign_up(any_project, "sam@example.com")
        sender.nudge()
        wait_for(lambda: len(told) == 2, "the second confirmation", seconds=10)
    finally:
        sender.close()
    assert told == [("sent", "confirmation", "noor@example.com"), ("sent", "confirmation", "sam@example.com")]
    assert [message.recipients for message in transport.sent] == [("noor@example.com",), ("sam@example.com",)]
    with any_project.db.session() as session:
        assert session.scalar(select(Delivery.status).where(Delivery.lesson == "muscle")) == "pending"


def test_a_relay_that_refuses_the_run_is_reported_and_the_confirmation_waits(project: Project) -> None:
    failures: list[str] = []
    reported = threading.Event()

    def on_failure(reason: str) -> None:
        failures.append(reason)
        reported.set()

    faults = FaultPlan({"*": refuse_data(554, "5.7.1 Relay access denied")})
    with SmtpSink(faults=faults) as sink:
        relay = SmtpTransport("127.0.0.1", sink.port, "none", connections=1, timeout=5)
        sender = ConfirmationSender(lambda: project, relay, on_outcome=lambda *_: None, on_failure=on_failure)
        sign_up(project, "noor@example.com")
        sender.start()
        try:
            assert reported.wait(15), "no failure was reported"
        finally:
            sender.close()
    assert "Relay access denied" in failures[0]
    with project.db.session() as session:
        assert session.scalar(select(Delivery.status).where(Delivery.lesson == "confirmation")) == "pending"

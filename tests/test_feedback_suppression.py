"""The suppression list on both backends: kept as keyed hashes, honoured by add, the sign-up form and import."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from feedback_mail import CONFIRMED_AT
from sqlalchemy import func, select, text

from newsletter.cli import main
from newsletter.csvio import import_subscribers
from newsletter.errors import SubscriberError
from newsletter.feedback.suppression import add_suppression, is_suppressed, list_suppressions, suppress
from newsletter.models import Delivery, Subscriber, Suppression
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber, erase, find_subscriber, request_subscription

Run = Callable[..., Result]


@pytest.fixture
def run(any_project: Project, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", any_project.settings.database.url)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, ["--config", str(any_project.settings.config_path), *args])

    return invoke


def suppressed(project: Project, address: str) -> bool:
    with project.db.session() as session:
        return is_suppressed(session, project.settings, address)


def test_an_erased_reader_stays_suppressed_and_no_import_brings_them_back(any_project: Project, tmp_path: Path) -> None:
    with any_project.db.session() as session:
        ann = add_subscriber(session, any_project, SubscriberInput("ann@example.com"), confirmed=True, now=CONFIRMED_AT)
        erase(session, any_project, ann, now=CONFIRMED_AT)
    assert suppressed(any_project, "ann@example.com")
    with any_project.db.session() as session:
        row = session.scalars(select(Suppression)).one()
        assert (row.reason, row.source) == ("erased", "erase")
        dump = " ".join(str(value) for value in session.execute(text("SELECT * FROM suppressions")).one())
        assert "ann" not in dump and "example.com" not in dump  # the address is not kept in clear
    old_list = tmp_path / "old.csv"
    old_list.write_text("email\nann@example.com\nbo@example.com\n", encoding="utf-8")
    report = import_subscribers(any_project, old_list, confirmed=True, now=CONFIRMED_AT)
    assert (report.added, report.unchanged) == (1, 1)
    with any_project.db.session() as session:
        assert find_subscriber(session, "ann@example.com") is None
        assert find_subscriber(session, "bo@example.com") is not None


def test_a_suppressed_address_is_refused_by_add_and_ignored_by_the_sign_up_form(any_project: Project) -> None:
    with any_project.db.session() as session:
        suppress(
            session, any_project.settings, "cy@example.com", reason="complaint", source="mailbox", now=CONFIRMED_AT
        )
    with pytest.raises(SubscriberError, match="on the suppression list"), any_project.db.session() as session:
        add_subscriber(session, any_project, SubscriberInput("Cy@Example.com"), confirmed=True, now=CONFIRMED_AT)
    with any_project.db.session() as session:
        assert request_subscription(session, any_project, SubscriberInput("cy@example.com"), now=CONFIRMED_AT) is None
    with any_project.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0  # no confirmation email either


def test_a_complained_reader_who_fills_in_the_form_again_gets_nothing(any_project: Project) -> None:
    with any_project.db.session() as session:
        dee = add_subscriber(session, any_project, SubscriberInput("dee@example.com"), confirmed=True, now=CONFIRMED_AT)
        dee_id = dee.id
        add_suppression(session, any_project, "dee@example.com", now=CONFIRMED_AT)
        assert dee.status == "unsubscribed"
    with any_project.db.session() as session:
        again = request_subscription(session, any_project, SubscriberInput("dee@example.com"), now=CONFIRMED_AT)
        assert again is not None and again.status == "unsubscribed"
        statuses = set(session.scalars(select(Delivery.status).where(Delivery.subscriber_id == dee_id)))
        assert statuses == {"cancelled"}


def test_a_plain_unsubscribe_does_not_suppress(any_project: Project) -> None:
    from newsletter.subscribers import resubscribe, unsubscribe

    with any_project.db.session() as session:
        eve = add_subscriber(session, any_project, SubscriberInput("eve@example.com"), confirmed=True, now=CONFIRMED_AT)
        unsubscribe(session, any_project, eve, now=CONFIRMED_AT)
    assert not suppressed(any_project, "eve@example.com")
    with any_project.db.session() as session:
        # A stranger typing their address mails them nothing; their own unsubscribe link brings them back.
        typed = request_subscription(session, any_project, SubscriberInput("eve@example.com"), now=CONFIRMED_AT)
        assert typed is not None and typed.status == "unsubscribed"
        back = resubscribe(session, any_project, typed, now=CONFIRMED_AT)
        assert back.status == "active"


def test_the_cli_adds_lists_and_removes(any_project: Project, run: Run) -> None:
    with any_project.db.session() as session:
        add_subscriber(session, any_project, SubscriberInput("fay@example.com"), confirmed=True, now=CONFIRMED_AT)
    added = run("suppressions", "add", "Fay@Example.com", "--now", "2026-03-02T06:00Z")
    assert added.exit_code == 0 and added.output.strip() == "suppressed Fay@Example.com"
    assert run("suppressions", "add", "fay@example.com").output.strip() == "fay@example.com was already suppressed"
    listed = run("suppressions", "list")
    assert listed.exit_code == 0
    assert "fay@example.com" in listed.output and "operator" in listed.output and "1 suppression" in listed.output
    as_json = run("suppressions", "list", "--json")
    assert '"reason": "operator"' in as_json.output and '"matches_current_key": true' in as_json.output
    removed = run("suppressions", "remove", "fay@example.com")
    assert removed.exit_code == 0 and "removed fay@example.com" in removed.output
    missing = run("suppressions", "remove", "fay@example.com")
    assert missing.exit_code == 1 and "is not on the suppression list" in missing.output
    bad = run("suppressions", "add", "not an address")
    assert bad.exit_code == 1 and "is not a valid address" in bad.output


def test_suppressions_made_with_another_secret_key_are_counted(any_project: Project, run: Run) -> None:
    with any_project.db.session() as session:
        ann = add_subscriber(session, any_project, SubscriberInput("ann@example.com"), confirmed=True, now=CONFIRMED_AT)
        erase(session, any_project, ann, now=CONFIRMED_AT)
        session.execute(text("UPDATE suppressions SET key_id = 'elsewhere'"))
        [entry] = list_suppressions(session, any_project.settings)
        assert entry.address == "" and not entry.matches_current_key
    listed = run("suppressions", "list")
    assert "(erased, hash " in listed.output and "1 were made with another secret key" in listed.output

"""Bounces and complaints as Gmail, Yahoo, Outlook, Postfix and Exim write them → the reports they hold."""

from __future__ import annotations

import pytest
from feedback_mail import FIXTURES, Sent

from newsletter.config import Settings
from newsletter.feedback.classifier import classify
from newsletter.feedback.report import COMPLAINT, HARD_BOUNCE, SOFT_BOUNCE, bounce_kind
from newsletter.feedback.verp import bounce_address

ABOUT = Sent("reader@example.org", 3, 41, "<running.w1.0123456789abcdef01234567@running.example.com>")


def filled(settings: Settings, name: str, recipient: str = ABOUT.email) -> bytes:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    to = bounce_address(settings, ABOUT.delivery_id) or settings.sender.from_
    for placeholder, value in (
        ("@@RECIPIENT@@", recipient),
        ("@@MESSAGE_ID@@", ABOUT.message_id),
        ("@@DELIVERY_ID@@", str(ABOUT.delivery_id)),
        ("@@BOUNCE_TO@@", to),
    ):
        text = text.replace(placeholder, value)
    return text.encode("utf-8")


@pytest.fixture
def verp(settings: Settings) -> Settings:
    return settings.replace("bounces", address="bounces@running.example.com")


@pytest.mark.parametrize(
    ("name", "kind", "status"),
    [
        ("postfix-hard.eml", HARD_BOUNCE, "5.1.1"),
        ("exim-dsn.eml", HARD_BOUNCE, "5.0.0"),
        ("gmail-hard.eml", HARD_BOUNCE, "5.1.1"),
        ("gmail-over-quota.eml", SOFT_BOUNCE, "5.2.2"),  # mailbox full: soft, whatever the code says
        ("outlook-hard.eml", HARD_BOUNCE, "5.1.10"),
        ("exim-classic.eml", HARD_BOUNCE, ""),  # free-form: flufl.bounce reads X-Failed-Recipients
        ("yahoo-failure-notice.eml", HARD_BOUNCE, ""),  # free-form: flufl.bounce knows Yahoo's wording
        ("yahoo-complaint.eml", COMPLAINT, ""),
    ],
)
def test_each_format_gives_one_report_with_every_anchor(verp: Settings, name: str, kind: str, status: str) -> None:
    classified = classify(verp, filled(verp, name))
    assert classified.recognised
    [report] = classified.reports
    assert (report.kind, report.status, report.recipient) == (kind, status, ABOUT.email)
    assert report.verp_delivery_id == ABOUT.delivery_id
    assert ABOUT.message_id in report.message_ids
    assert report.header_delivery_id == ABOUT.delivery_id
    assert not report.authenticated  # anyone can write to a mailbox
    assert report.external_id.startswith("mailbox:")


def test_a_dsn_keeps_the_servers_words_and_when(settings: Settings) -> None:
    [report] = classify(settings, filled(settings, "postfix-hard.eml")).reports
    assert report.diagnostic.startswith("550 5.1.1 <reader@example.org>: Recipient address rejected: User unknown")
    assert report.reported_at is not None and report.reported_at.isoformat() == "2026-03-02T07:00:02+00:00"
    [gmail] = classify(settings, filled(settings, "gmail-hard.eml")).reports
    assert gmail.reported_at is not None and gmail.reported_at.isoformat() == "2026-03-02T15:00:05+00:00"


def test_a_redacted_complaint_is_tied_by_the_original_message_id(settings: Settings) -> None:
    """Microsoft's JMRP redacts the recipient; the original's Message-ID is what is left."""
    [report] = classify(settings, filled(settings, "outlook-complaint.eml")).reports
    assert report.kind == COMPLAINT and report.recipient == "redacted@outlook.com"
    assert report.message_ids[0] == ABOUT.message_id
    assert "Hotmail FBL" in report.diagnostic


def test_without_verp_the_message_id_and_header_still_anchor(settings: Settings) -> None:
    [report] = classify(settings, filled(settings, "exim-dsn.eml")).reports
    assert report.verp_delivery_id is None
    assert report.message_ids == (ABOUT.message_id,)
    assert report.header_delivery_id == ABOUT.delivery_id


def test_a_delay_warning_is_recognised_and_asks_for_nothing(settings: Settings) -> None:
    classified = classify(settings, filled(settings, "postfix-delayed.eml"))
    assert classified.recognised and classified.reports == []


def test_an_auto_reply_is_not_feedback(settings: Settings) -> None:
    assert not classify(settings, filled(settings, "vacation-reply.eml")).recognised


def test_the_same_bounce_has_the_same_external_id_and_another_one_another(settings: Settings) -> None:
    first = classify(settings, filled(settings, "gmail-hard.eml")).reports[0].external_id
    again = classify(settings, filled(settings, "gmail-hard.eml")).reports[0].external_id
    other = classify(settings, filled(settings, "gmail-over-quota.eml")).reports[0].external_id
    assert first == again != other


@pytest.mark.parametrize(
    ("status", "permanent", "kind"),
    [
        ("5.1.1", True, HARD_BOUNCE),
        ("5.0.0", True, HARD_BOUNCE),
        ("4.2.2", True, SOFT_BOUNCE),
        ("5.2.2", True, SOFT_BOUNCE),
        ("5.7.1", True, SOFT_BOUNCE),  # policy: a blocklisted relay says nothing about the address
        ("", True, HARD_BOUNCE),
        ("", False, SOFT_BOUNCE),
    ],
)
def test_hard_or_soft(status: str, permanent: bool, kind: str) -> None:
    assert bounce_kind(status, permanent=permanent) == kind

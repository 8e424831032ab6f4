"""The mailto: unsubscribe address of each reader: its form, its signature, and the emails that count as sent to it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from feedback_mail import Sent, filled

from newsletter.config import Settings
from newsletter.feedback.classifier import classify
from newsletter.feedback.mailto import unsubscribe_address, unsubscribe_mailto
from newsletter.feedback.verp import bounce_address, delivery_id_in

GUS = Sent("gus@example.org", 3, 41, "<running.w1.0123456789abcdef01234567@running.example.com>")


@pytest.fixture
def mailing(settings: Settings, tmp_path: Path) -> Settings:
    return settings.replace("bounces", address="bounces@mail.running.example.com", mailbox=str(tmp_path / "bounces"))


def test_each_reader_has_a_signed_address_beside_the_bounce_addresses(mailing: Settings) -> None:
    address = unsubscribe_address(mailing, 12345)
    assert address is not None
    local, _, domain = address.partition("@")
    assert domain == "mail.running.example.com"  # the bounce domain: the same MX rule delivers it
    assert local.startswith("bounces+unsubscribe-12345-") and len(local) <= 64
    assert unsubscribe_mailto(mailing, 12345) == f"mailto:{address}?subject=unsubscribe"
    assert unsubscribe_address(mailing, 12346) != address
    # It is no bounce address: a reader's id never reads as a delivery's.
    assert delivery_id_in(mailing, address) is None
    assert address != bounce_address(mailing, 12345)


def test_without_a_mailbox_to_read_there_is_no_mailto(settings: Settings) -> None:
    assert unsubscribe_mailto(settings, 1) == ""
    no_mailbox = settings.replace("bounces", address="bounces@mail.running.example.com")
    assert unsubscribe_address(no_mailbox, 1) is None and unsubscribe_mailto(no_mailbox, 1) == ""
    no_address = settings.replace("bounces", mailbox="bounces")
    assert unsubscribe_address(no_address, 1) is None


@pytest.mark.parametrize("name", ["apple-mail-unsubscribe.eml", "gmail-unsubscribe.eml"])
def test_an_email_to_the_address_is_an_unsubscribe_request_whatever_it_says(mailing: Settings, name: str) -> None:
    classified = classify(mailing, filled(mailing, name, GUS))
    assert classified.recognised and classified.reports == []
    assert classified.unsubscribe_request == GUS.subscriber_id


def test_case_changed_on_the_way_still_names_the_reader(mailing: Settings) -> None:
    raw = filled(mailing, "apple-mail-unsubscribe.eml", GUS)
    address = unsubscribe_address(mailing, GUS.subscriber_id)
    assert address is not None
    assert classify(mailing, raw.replace(address.encode(), address.upper().encode())).unsubscribe_request == 3


def test_a_forged_or_altered_address_names_nobody(mailing: Settings) -> None:
    raw = filled(mailing, "apple-mail-unsubscribe.eml", GUS)
    genuine = unsubscribe_address(mailing, GUS.subscriber_id)
    assert genuine is not None
    forged = genuine.replace("unsubscribe-3-", "unsubscribe-4-")
    assert not classify(mailing, raw.replace(genuine.encode(), forged.encode())).recognised
    other_key = dataclasses.replace(mailing, secret_key=b"another key")
    assert not classify(other_key, raw).recognised


def test_the_address_in_the_body_only_is_no_request(mailing: Settings) -> None:
    """A forwarded lesson, or a reader writing to the From address about the link, asks for nothing."""
    address = unsubscribe_address(mailing, GUS.subscriber_id)
    raw = (
        "From: Gus <gus@example.org>\r\nTo: bounces@mail.running.example.com\r\nSubject: Fwd: Week 1\r\n"
        "Message-ID: <fwd-1@example.org>\r\n\r\n---------- Forwarded message ----------\r\n"
        f"List-Unsubscribe: <https://running.example.com/u/x>, <mailto:{address}?subject=unsubscribe>\r\n"
    ).encode()
    classified = classify(mailing, raw)
    assert classified.unsubscribe_request is None and not classified.recognised


def test_an_own_address_takes_the_tag_and_the_bounce_addresses_tagged_form_then_names_nobody(
    mailing: Settings,
) -> None:
    own = mailing.replace("bounces", unsubscribe_address="leave@lists.running.example.com")
    address = unsubscribe_address(own, GUS.subscriber_id)
    assert address is not None and address.startswith("leave+unsubscribe-3-")
    assert address.endswith("@lists.running.example.com")
    assert classify(own, filled(own, "gmail-unsubscribe.eml", GUS)).unsubscribe_request == GUS.subscriber_id
    # The form on the bounce address is not what these emails offer, so it asks for nothing.
    assert not classify(own, filled(mailing, "gmail-unsubscribe.eml", GUS)).recognised


def test_an_unsubscribe_mailbox_alone_is_a_mailbox_that_reads_them(settings: Settings, tmp_path: Path) -> None:
    own = settings.replace(
        "bounces", unsubscribe_address="leave@lists.running.example.com", unsubscribe_mailbox=str(tmp_path / "leave")
    )
    assert unsubscribe_mailto(own, 5).startswith("mailto:leave+unsubscribe-5-")
    assert bounce_address(own, 5) is None  # no [bounces] address: the envelope sender stays the From address

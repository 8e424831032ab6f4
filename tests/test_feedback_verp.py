"""The bounce address per delivery (VERP): its encoding, its signature, and the envelope sender on the wire."""

from __future__ import annotations

import dataclasses
import email
from collections.abc import Iterator
from email import policy
from email.headerregistry import Address

import pytest
from feedback_mail import FIRST_SLOT, readers, sent
from smtp_sink import SmtpSink

from newsletter.config import Settings
from newsletter.dispatch import send_due
from newsletter.feedback.verp import bounce_address, delivery_id_in
from newsletter.project import Project
from newsletter.transports import SmtpTransport


@pytest.fixture
def verp(settings: Settings) -> Settings:
    return settings.replace("bounces", address="bounces@mail.running.example.com")


def test_a_bounce_address_names_its_delivery_and_reads_back(verp: Settings) -> None:
    address = bounce_address(verp, 12345)
    assert address is not None
    local, _, domain = address.partition("@")
    assert domain == "mail.running.example.com"
    assert local.startswith("bounces+12345-") and len(local) <= 64
    assert delivery_id_in(verp, f"Delivered-To: {address}") == 12345
    # Some MTAs change the case of local parts, some the domain's: neither matters.
    assert delivery_id_in(verp, address.upper()) == 12345
    assert delivery_id_in(verp, f"Original-Mail-From: <{address}>\nTo: someone@example.org") == 12345


def test_a_forged_or_altered_bounce_address_names_nothing(verp: Settings) -> None:
    genuine = bounce_address(verp, 7)
    assert genuine is not None
    signature = genuine.split("-", 1)[1].split("@")[0]
    assert delivery_id_in(verp, f"bounces+8-{signature}@mail.running.example.com") is None
    assert delivery_id_in(verp, genuine.replace("mail.running", "other")) is None
    assert delivery_id_in(dataclasses.replace(verp, secret_key=b"another key"), genuine) is None


def test_without_a_bounce_address_there_is_no_verp(settings: Settings) -> None:
    assert settings.bounces.address == ""
    assert bounce_address(settings, 1) is None
    assert delivery_id_in(settings, "bounces+1-abcdefghijklm@running.example.com") is None


def email_from(data: bytes) -> str:
    header = email.message_from_bytes(data, policy=policy.default)["From"]
    address: Address = header.addresses[0]
    return address.addr_spec


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


@pytest.mark.parametrize("configured", [True, False], ids=["verp", "no-verp"])
def test_each_lesson_goes_out_with_its_own_envelope_sender(
    project: Project, sink: SmtpSink, verp: Settings, configured: bool
) -> None:
    if configured:
        project = Project(verp)
    readers(project, "ann@example.com", "bo@example.com")
    transport = SmtpTransport("127.0.0.1", sink.port)
    try:
        send_due(project, transport, now=FIRST_SLOT)
    finally:
        transport.close()
    by_recipient = {message.recipients[0]: message for message in sink.messages}
    for address in ("ann@example.com", "bo@example.com"):
        delivery = sent(project, address)
        received = by_recipient[address]
        assert email_from(received.data) == "lessons@running.example.com"  # the From header never changes
        if configured:
            assert received.mail_from == bounce_address(verp, delivery.delivery_id)
            assert delivery_id_in(verp, received.mail_from) == delivery.delivery_id
        else:
            assert received.mail_from == "lessons@running.example.com"
    project.db.dispose()

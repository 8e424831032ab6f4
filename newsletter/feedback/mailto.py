"""The mailto: unsubscribe address of each reader, and how an email to it is recognised.

List-Unsubscribe carries, after the https one-click URL, `<mailto:bounces+unsubscribe-<subscriber id>-
<signature>@domain?subject=unsubscribe>`: [bounces] address with a tag, signed as a VERP address is
(`verp.py`), so it reaches the bounce mailbox by the same MX rule, and a made-up one names nobody. Mail
clients that do not post RFC 8058 one-click requests send an email there instead, often an empty one;
`newsletter bounces` unsubscribes the reader it names whatever the email says (`record.record_unsubscribe_email`).
[bounces] unsubscribe_address puts the addresses on an address of their own, and unsubscribe_mailbox
names a mailbox of their own, which the same pass reads next to the bounce mailbox.

It is offered only when a mailbox is read (unsubscribe_mailbox, else mailbox): mail to an address that no
pass ever reads would leave a reader who asked to leave on the list.

The address counts only in the headers that say where the email was delivered (To, Cc, Delivered-To,
X-Original-To, Envelope-To), never in the body: every bounce and complaint quotes our original, its
List-Unsubscribe included, and must not read as a request to leave.
"""

from __future__ import annotations

from email.message import Message

from newsletter.config import Settings
from newsletter.feedback.verp import signed_address, signed_number_in

TAG = "unsubscribe-"
SUBJECT = "unsubscribe"
SOURCE = "mailto"  # the source of the "unsubscribed" event
_PURPOSE = "unsubscribe-mailto"
DELIVERED_TO = ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")


def unsubscribe_base(settings: Settings) -> str:
    """The address the readers' unsubscribe addresses are tagged onto: unsubscribe_address, else address."""
    return settings.bounces.unsubscribe_address or settings.bounces.address


def unsubscribe_address(settings: Settings, subscriber_id: int) -> str | None:
    """The reader's own unsubscribe address; None unless there is an address to tag and a mailbox to read."""
    if not (settings.bounces.unsubscribe_mailbox or settings.bounces.mailbox):
        return None
    return signed_address(settings, unsubscribe_base(settings), TAG, _PURPOSE, subscriber_id)


def unsubscribe_mailto(settings: Settings, subscriber_id: int) -> str:
    """The mailto: URI for List-Unsubscribe (RFC 2369, with the subject clients fill in), or ""."""
    address = unsubscribe_address(settings, subscriber_id)
    return f"mailto:{address}?subject={SUBJECT}" if address else ""


def requesting_subscriber(settings: Settings, message: Message) -> int | None:
    """The reader whose genuine unsubscribe address this email was delivered to; None if it was not."""
    delivered_to = "\n".join(str(value) for name in DELIVERED_TO for value in message.get_all(name, []))
    return signed_number_in(settings, unsubscribe_base(settings), delivered_to, TAG, _PURPOSE)

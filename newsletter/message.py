"""A rendered email plus its recipient into the exact bytes that go on the wire.

Every header of the email checklist is set here: From, To, Subject, Date, a Message-ID that is the same on
every retry of one (subscriber, lesson), List-Unsubscribe with its one-click companion (RFC 8058), List-Id
(RFC 2919), Feedback-ID, Auto-Submitted, and an X- header naming the delivery (some relays rewrite
Message-ID). Serialisation uses the SMTP policy (CRLF) with a 998-octet line limit, so a long
List-Unsubscribe URL is never folded into an RFC 2047 encoded word, which Gmail would ignore.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from newsletter.config import Settings
from newsletter.errors import ConfigError, SubscriberError
from newsletter.render import RenderedEmail
from newsletter.transports import Envelope

WIRE_POLICY = policy.SMTP.clone(max_line_length=998)
DELIVERY_HEADER = "X-Newsletter-Delivery"
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"list-id",
    b"mime-version",
    b"content-type",
)
_PHRASE_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')


def message_id_for(settings: Settings, series_slug: str, subscriber_id: int, key: str) -> str:
    """A Message-ID fixed by (subscriber, key): the same on every retry, opaque to readers."""
    digest = hmac.new(settings.secret_key, f"message-id:{subscriber_id}:{key}".encode(), hashlib.sha256)
    return f"<{series_slug}.{key}.{digest.hexdigest()[:24]}@{settings.sender_domain}>"


def list_id(settings: Settings, series_title: str, series_slug: str) -> str:
    """`List-Id: "Series Name" <series-slug.list-domain>`: quoted when the name holds specials (RFC 5322 phrase)."""
    phrase = series_title.replace("\\", "\\\\").replace('"', '\\"')
    if _PHRASE_SPECIALS.search(series_title):
        phrase = f'"{phrase}"'
    return f"{phrase} <{series_slug}.{settings.sender.list_id}>"


def _address(name: str, email: str) -> Address:
    if any(char in email for char in "\r\n") or "@" not in email:
        raise SubscriberError(f"cannot send to {email!r}: not a single email address")
    local, _, domain = email.rpartition("@")
    return Address(display_name=" ".join(name.split()), username=local, domain=domain)


def build_message(
    settings: Settings,
    rendered: RenderedEmail,
    *,
    to_email: str,
    to_name: str,
    message_id: str,
    unsubscribe_url: str,
    list_id_value: str,
    delivery_id: int | None = None,
    date: datetime | None = None,
    subject_prefix: str = "",
) -> EmailMessage:
    """Assemble the multipart/alternative message (text, then HTML; both quoted-printable UTF-8)."""
    message = EmailMessage(policy=WIRE_POLICY)
    message["From"] = _address(settings.from_name, settings.sender.from_)
    message["To"] = _address(to_name, to_email)
    message["Subject"] = subject_prefix + " ".join(rendered.subject.split())
    message["Date"] = format_datetime(date or datetime.now(UTC))
    message["Message-ID"] = message_id
    if settings.sender.reply_to:
        message["Reply-To"] = settings.sender.reply_to
    message["List-Id"] = list_id_value
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Feedback-ID"] = f"{list_id_value.rsplit('<', 1)[-1].rstrip('>')}:newsletter"
    message["Auto-Submitted"] = "auto-generated"
    if delivery_id is not None:
        message[DELIVERY_HEADER] = str(delivery_id)
    message.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message


def to_wire(settings: Settings, message: EmailMessage) -> bytes:
    """Serialise with CRLF line ends and sign with DKIM when a key is configured."""
    data = message.as_bytes(policy=WIRE_POLICY)
    if settings.dkim.selector:
        data = dkim_sign(settings, data)
    return data


def envelope_for(settings: Settings, message: EmailMessage) -> Envelope:
    """The SMTP envelope and wire bytes of a built message."""
    return Envelope(
        sender=settings.sender.from_,
        recipients=(message["To"].addresses[0].addr_spec,),
        data=to_wire(settings, message),
        message_id=str(message["Message-ID"]),
    )


def dkim_sign(settings: Settings, data: bytes) -> bytes:
    """Prepend a DKIM-Signature (relaxed/relaxed, rsa-sha256) over the headers that matter to providers."""
    import dkim

    key_path = settings.dkim.private_key
    if key_path is None or not key_path.is_file():
        raise ConfigError(f"[dkim] private_key must be a readable PEM file, got {str(key_path or '')!r}")
    domain = settings.dkim.domain or settings.sender_domain
    try:
        signature = dkim.sign(
            data,
            settings.dkim.selector.encode(),
            domain.encode(),
            key_path.read_bytes(),
            include_headers=list(SIGNED_HEADERS),
            canonicalize=(b"relaxed", b"relaxed"),
        )
    except dkim.DKIMException as error:
        raise ConfigError(f"[dkim] private_key {key_path}: cannot sign with it: {error}") from None
    return bytes(signature) + data

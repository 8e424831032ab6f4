"""A rendered email plus its recipient into the exact bytes that go on the wire.

Every header of the email checklist is set here: From, To, Subject, Date, a Message-ID that is the same on
every retry of one (subscriber, lesson), List-Unsubscribe with its one-click companion (RFC 8058), List-Id
(RFC 2919), Feedback-ID, Auto-Submitted, and an X- header naming the delivery (some relays rewrite
Message-ID). Lines end in CRLF and no header line exceeds 998 octets, so a long List-Unsubscribe URL is never
folded into an RFC 2047 encoded word, which Gmail would ignore.

`compose` writes the bytes directly, because the send path builds one message per subscriber and the email
package needs about 2 ms for that. It writes what the email package (SMTP policy, 998-octet lines) writes:
the same header fields, byte for byte, in the same order and MIME layout. Any header value that is not plain
printable ASCII goes through the email package itself, for its RFC 2047 encoded words and its refusal of
line breaks. One deliberate difference: both parts are quoted-printable in RFC 2045's 76-column lines
(`binascii.b2a_qp`, in C) instead of 998-column ones; they decode to the same text. A lesson rendered for
a subscriber arrives in pieces (the template's text, the same for every subscriber, between their values):
the template's pieces are encoded once and joined to the values' by soft line breaks, which decode to
nothing. `wire_envelope` signs composed bytes (DKIM, when configured) and adds the SMTP envelope;
`Project.envelope` is the one way every path (send, test-send, render, check, the studio) gets them.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import random
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy
from email.header import Header
from email.headerregistry import Address
from email.utils import format_datetime
from functools import lru_cache

from newsletter.config import Settings
from newsletter.errors import ConfigError, MessageError, SubscriberError
from newsletter.feedback.verp import bounce_address
from newsletter.render import RenderedEmail
from newsletter.transports import Envelope, needs_smtputf8

MAX_LINE_OCTETS = 998
WIRE_POLICY = policy.SMTP.clone(max_line_length=MAX_LINE_OCTETS)
# For a recipient whose mailbox name is not ASCII (RFC 6531/6532): UTF-8 in headers, carried with SMTPUTF8.
UTF8_WIRE_POLICY = WIRE_POLICY.clone(utf8=True)
CRLF = b"\r\n"
_TEXT_PART_HEADERS = b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n'
# The email package adds MIME-Version to a part it creates for add_alternative; kept for identical headers.
_HTML_PART_HEADERS = _TEXT_PART_HEADERS.replace(b"text/plain", b"text/html") + b"MIME-Version: 1.0\r\n"
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
# One header field as it may go on the wire: a name, then lines that only ever break as folding (CRLF + WSP).
_ONE_FIELD = re.compile(rb"[!-9;-~]+:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_QP_LINE = 76  # octets, RFC 2045
# Template text encoded once (per lesson, thousands of messages each); bounded for editors' live reloads.
_SHARED_PIECES: dict[str, bytes] = {}
_SHARED_PIECES_KEPT = 256


def message_id_for(settings: Settings, series_slug: str, subscriber_id: int, key: str) -> str:
    """A Message-ID fixed by (subscriber, key): the same on every retry, opaque to readers."""
    digest = hmac.new(settings.secret_key, f"message-id:{subscriber_id}:{key}".encode(), hashlib.sha256)
    return f"<{series_slug}.{key}.{digest.hexdigest()[:24]}@{settings.sender_domain}>"


def lesson_message_id(settings: Settings, series_slug: str, subscriber_id: int, lesson: str) -> str:
    """A lesson's Message-ID for one reader: derived from (reader, lesson), so every retry repeats it."""
    return message_id_for(settings, series_slug, subscriber_id, f"lesson-{lesson}")


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
    return Address(display_name=" ".join(name.split()), username=local, domain=smtp_domain(local, domain))


def smtp_domain(local: str, domain: str) -> str:
    """The domain as it goes on the wire: IDNA (punycode) unless the mailbox name needs SMTPUTF8 anyway."""
    if domain.isascii() or not local.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise SubscriberError(f"cannot send to {local}@{domain}: the domain is not a valid IDNA name") from None


def compose(
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
) -> bytes:
    """The multipart/alternative message (text, then HTML; both quoted-printable UTF-8) as wire bytes."""
    fields: list[tuple[str, str | Address]] = [
        ("From", _address(settings.from_name, settings.sender.from_)),
        ("To", _address(to_name, to_email)),
        ("Subject", subject_prefix + " ".join(rendered.subject.split())),
        ("Date", format_datetime(date or datetime.now(UTC))),
        ("Message-ID", message_id),
    ]
    if settings.sender.reply_to:
        fields.append(("Reply-To", settings.sender.reply_to))
    fields += [
        ("List-Id", list_id_value),
        ("List-Unsubscribe", f"<{unsubscribe_url}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("Feedback-ID", f"{list_id_value.rsplit('<', 1)[-1].rstrip('>')}:newsletter"),
        ("Auto-Submitted", "auto-generated"),
    ]
    if delivery_id is not None:
        fields.append((DELIVERY_HEADER, str(delivery_id)))
    # The email package's boundary: QP never writes "==" at the start of a line, so no body can contain it.
    boundary = f"{'=' * 15}{random.randrange(sys.maxsize):019d}==".encode("ascii")
    return b"".join(
        [
            *(_header_field(name, value) for name, value in fields),
            b"MIME-Version: 1.0\r\n",
            b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n',
            CRLF,
            b"--" + boundary + CRLF,
            _TEXT_PART_HEADERS,
            CRLF,
            quoted_printable(rendered.text, rendered.text_pieces),
            CRLF + b"--" + boundary + CRLF,
            _HTML_PART_HEADERS,
            CRLF,
            quoted_printable(rendered.html, rendered.html_pieces),
            CRLF + b"--" + boundary + b"--" + CRLF,
        ]
    )


def quoted_printable(text: str, pieces: Sequence[str] = ()) -> bytes:
    """UTF-8 text as quoted-printable with CRLF line ends and lines of at most 76 octets (RFC 2045).

    `pieces`, if given, is the same text split into template text (even positions) and values (odd
    positions). Each piece is encoded on its own and joined by soft line breaks, which decode to nothing,
    and the template's pieces are remembered: per subscriber only the values are encoded.
    """
    if any(piece.endswith("\r") for piece in pieces):
        pieces = ()  # a CR LF split between two pieces would become two line breaks: encode the whole
    parts = enumerate(pieces or ("", text))
    encoded = [_shared_piece(piece) if n % 2 == 0 else _encoded_piece(piece) for n, piece in parts if piece]
    body = b"".join(_soft_broken(piece) for piece in encoded[:-1]) + (encoded[-1] if encoded else b"")
    return body if body.endswith(CRLF) else body + CRLF


def _encoded_piece(text: str) -> bytes:
    # CR, LF and CRLF all end a line, as in the email package, which splits the encoded bytes (so U+2028
    # and kin do not); b2a_qp keeps CRLF line ends when the text has them, else breaks long lines with LF.
    data = _LINE_END.sub(CRLF, text.encode("utf-8"))
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    if CRLF not in data:
        encoded = encoded.replace(b"=\n", b"=\r\n")
    lines = encoded.split(CRLF)
    if max(map(len, lines)) <= _QP_LINE:
        return encoded
    # b2a_qp lets a line reach 77 octets when it ends in whitespace it escapes; RFC 2045 allows 76.
    return CRLF.join(_within_qp_line(line) for line in lines)


def _within_qp_line(line: bytes) -> bytes:
    if len(line) <= _QP_LINE:
        return line
    cut = _QP_LINE - 1
    if line[cut - 1 : cut] == b"=":
        cut -= 1
    elif line[cut - 2 : cut - 1] == b"=":
        cut -= 2  # never split an escape
    return line[:cut] + b"=" + CRLF + _within_qp_line(line[cut:])


def _shared_piece(text: str) -> bytes:
    encoded = _SHARED_PIECES.get(text)
    if encoded is None:
        if len(_SHARED_PIECES) >= _SHARED_PIECES_KEPT:
            _SHARED_PIECES.clear()  # templates changed (live reload) or many lessons: start over
        encoded = _SHARED_PIECES[text] = _encoded_piece(text)
    return encoded


def _soft_broken(encoded: bytes) -> bytes:
    """An encoded piece that another follows: end its last line with a soft break, within 76 octets."""
    if encoded.endswith(CRLF):
        return encoded  # it ends a line already
    last_line = len(encoded) - (encoded.rfind(b"\n") + 1)
    if last_line < _QP_LINE:
        return encoded + b"=\r\n"
    cut = len(encoded) - 1  # make room for the "=": move the last character, or escape, to a line of its own
    if encoded[cut - 2 : cut - 1] == b"=":
        cut -= 2
    elif encoded[cut - 1 : cut] == b"=":
        cut -= 1
    return encoded[:cut] + b"=\r\n" + encoded[cut:] + b"=\r\n"


def _header_field(name: str, value: str | Address) -> bytes:
    """One header line, which can never hold a line break of its own whatever the value holds.

    Plain printable ASCII is written as is; anything else goes through the email package for its RFC 2047
    encoded words and folding. Text that looks like an encoded word ("=?") is never handed to the email
    package raw, because it would decode it and write the result (a CR LF and a header of someone else's)
    unencoded: we encode such text ourselves, so it arrives as the literal characters that were given.
    """
    text = str(value)
    if "\r" in text or "\n" in text:
        raise MessageError(f"refusing to write the {name} header: its value {text[:60]!r} holds a line break")
    if text.isascii() and text.isprintable() and "=?" not in text and len(name) + 2 + len(text) <= MAX_LINE_OCTETS:
        field = f"{name}: {text}\r\n".encode("ascii")
    elif isinstance(value, str):
        field = _encoded_header_field(name, value)
    else:
        field = _address_field(name, value)
    if not _ONE_FIELD.fullmatch(field):
        raise MessageError(f"refusing to write the {name} header: its value {text[:60]!r} would break the header")
    return field


@lru_cache(maxsize=256)
def _encoded_header_field(name: str, value: str) -> bytes:
    # Cached: the subject and the From name repeat on every message of a lesson.
    if "=?" in value:
        return _own_encoded_words(name, value)
    return _email_package_field(name, value)


def _own_encoded_words(name: str, text: str) -> bytes:
    """`text` as RFC 2047 encoded words that decode to exactly `text`, folded within 78 columns."""
    words = Header(text, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {words}\r\n".encode("ascii")


def _address_field(name: str, address: Address) -> bytes:
    display = address.display_name
    if "=?" in display:
        # One encoded word, unfolded: readers join folded words in a display name with a space (names are short).
        word = Header(display, "utf-8", maxlinelen=MAX_LINE_OCTETS).encode()
        return f"{name}: {word} <{address.addr_spec}>\r\n".encode()
    if needs_smtputf8(address.addr_spec):
        name, header = UTF8_WIRE_POLICY.header_store_parse(name, address)
        return UTF8_WIRE_POLICY.fold_binary(name, header)
    return _email_package_field(name, address)


def _email_package_field(name: str, value: str | Address) -> bytes:
    """What `message[name] = value` and the SMTP generator write for this field."""
    name, header = WIRE_POLICY.header_store_parse(name, value)
    return WIRE_POLICY.fold_binary(name, header)


def signed(settings: Settings, data: bytes) -> bytes:
    """The wire bytes with a DKIM-Signature prepended when a key is configured."""
    return dkim_sign(settings, data) if settings.dkim.selector else data


def wire_envelope(
    settings: Settings, data: bytes, *, to_email: str, message_id: str, delivery_id: int | None = None
) -> Envelope:
    """Composed bytes, signed, with their SMTP envelope: what the send path hands to a transport.

    With [bounces] address set, a delivery's envelope sender is its own signed bounce address (VERP).
    """
    recipient = _address("", to_email).addr_spec
    sender = (bounce_address(settings, delivery_id) if delivery_id is not None else None) or settings.sender.from_
    return Envelope(sender, (recipient,), signed(settings, data), message_id)


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

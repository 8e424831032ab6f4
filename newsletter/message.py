"""A rendered email plus its recipient into the exact bytes that go on the wire.

Every header of the email checklist is set here: From, To, Subject, Date, a Message-ID that is the same on
every retry of one (subscriber, lesson), List-Unsubscribe (the https one-click URL, then the reader's mailto:
address when the bounce mailbox is read) with its one-click companion (RFC 8058), List-Id (RFC 2919),
Feedback-ID, Auto-Submitted, Precedence on lessons, and an X- header naming the delivery (some relays rewrite
Message-ID). Lines end in CRLF and no header line exceeds 998 octets. List-Unsubscribe is written as given on
one line or not at all: folded into RFC 2047 encoded words, as the email package does with long values,
Gmail ignores it.

`compose` writes the bytes directly, because the send path builds one message per subscriber and the email
package needs about 2 ms for that. It writes what the email package (SMTP policy, 998-octet lines) writes:
the same header fields, byte for byte, in the same order and MIME layout. Any header value that is not plain
printable ASCII goes through the email package itself, for its RFC 2047 encoded words and its refusal of
line breaks. One deliberate difference: both parts are quoted-printable in RFC 2045's 76-column lines
(`binascii.b2a_qp`, in C) instead of 998-column ones; they decode to the same text. A lesson rendered for
a subscriber arrives in pieces (the template's text, the same for every subscriber, between their values):
the template's pieces are encoded once and joined to the values' by soft line breaks, which decode to
nothing. `envelope.wire_envelope` signs composed bytes (DKIM, when configured) and adds the SMTP envelope;
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
from typing import TYPE_CHECKING

from newsletter.config import Settings
from newsletter.errors import MessageError, SubscriberError
from newsletter.transports import needs_smtputf8

if TYPE_CHECKING:
    from newsletter.render import RenderedEmail

MAX_LINE_OCTETS = 998
WIRE_POLICY = policy.SMTP.clone(max_line_length=MAX_LINE_OCTETS)
# For a recipient whose mailbox name is not ASCII (RFC 6531/6532): UTF-8 in headers, carried with SMTPUTF8.
UTF8_WIRE_POLICY = WIRE_POLICY.clone(utf8=True)
CRLF = b"\r\n"
_TEXT_PART_HEADERS = b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n'
# The email package adds MIME-Version to a part it creates for add_alternative; kept for identical headers.
_HTML_PART_HEADERS = _TEXT_PART_HEADERS.replace(b"text/plain", b"text/html") + b"MIME-Version: 1.0\r\n"
DELIVERY_HEADER = "X-Newsletter-Delivery"
# Google's Feedback-ID is `a:b:c:SenderId`, SenderId 5 to 15 characters and the same across the mail stream.
# Its reports reach only the owner of the DKIM domain that signed it, so one fixed name for this engine's
# mail serves: it sets our mail apart from any other stream the domain signs.
FEEDBACK_SENDER_ID = "newsletter"
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


def feedback_id(list_id_value: str, campaign: str, *, bulk: bool) -> str:
    """Google's `Feedback-ID: campaign:list:mail type:SenderId`, the same for every reader of one email.

    The campaign is the lesson's slug (or "confirmation"), the list the List-Id's identifier, the mail type
    "bulk" or "transactional": Postmaster Tools then shows the spam complaints of each lesson, course and kind.
    """
    list_identifier = list_id_value.rsplit("<", 1)[-1].rstrip(">")
    return f"{campaign}:{list_identifier}:{'bulk' if bulk else 'transactional'}:{FEEDBACK_SENDER_ID}"


def list_unsubscribe(unsubscribe_url: str, unsubscribe_mailto: str = "") -> str:
    """`<https://…>`, then `, <mailto:…>` when there is one (RFC 2369: the preferred URI first)."""
    return f"<{unsubscribe_url}>" + (f", <{unsubscribe_mailto}>" if unsubscribe_mailto else "")


def _address(name: str, email: str) -> Address:
    if any(char in email for char in "\r\n") or "@" not in email:
        raise SubscriberError(f"cannot send to {email!r}: not a single email address")
    local, _, domain = email.rpartition("@")
    return Address(display_name=" ".join(name.split()), username=local, domain=smtp_domain(local, domain))


def wire_recipient(email: str) -> str:
    """The recipient's address as it goes on the wire; a SubscriberError unless it is one address."""
    return _address("", email).addr_spec


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
    campaign: str,
    bulk: bool,
    unsubscribe_mailto: str = "",
    delivery_id: int | None = None,
    date: datetime | None = None,
    subject_prefix: str = "",
) -> bytes:
    """The multipart/alternative message (text, then HTML; both quoted-printable UTF-8) as wire bytes.

    `campaign` (the lesson's slug) and `bulk` make Feedback-ID; `bulk` also adds `Precedence: bulk`.
    """
    fields: list[tuple[str, str | Address]] = [
        ("From", _address(settings.from_name, settings.sender.from_)),
        ("To", _address(to_name, to_email)),
        ("Subject", subject_prefix + " ".join(rendered.subject.split())),
        ("Date", format_datetime(date or datetime.now(UTC))),
        ("Message-ID", message_id),
    ]
    if settings.sender.reply_to:
        fields.append(("Reply-To", settings.sender.reply_to))
    fields.append(("List-Id", list_id_value))
    trailing: list[tuple[str, str | Address]] = [
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("Feedback-ID", feedback_id(list_id_value, campaign, bulk=bulk)),
        ("Auto-Submitted", "auto-generated"),
    ]
    if bulk:
        trailing.append(("Precedence", "bulk"))
    if delivery_id is not None:
        trailing.append((DELIVERY_HEADER, str(delivery_id)))
    # The email package's boundary: QP never writes "==" at the start of a line, so no body can contain it.
    boundary = f"{'=' * 15}{random.randrange(sys.maxsize):019d}==".encode("ascii")
    return b"".join(
        [
            *(_header_field(name, value) for name, value in fields),
            _one_line_field("List-Unsubscribe", list_unsubscribe(unsubscribe_url, unsubscribe_mailto)),
            *(_header_field(name, value) for name, value in trailing),
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
    _refuse_line_breaks(name, text)
    if text.isascii() and text.isprintable() and "=?" not in text and len(name) + 2 + len(text) <= MAX_LINE_OCTETS:
        field = f"{name}: {text}\r\n".encode("ascii")
    elif isinstance(value, str):
        field = _encoded_header_field(name, value)
    else:
        field = _address_field(name, value)
    if not _ONE_FIELD.fullmatch(field):
        raise MessageError(f"refusing to write the {name} header: its value {text[:60]!r} would break the header")
    return field


def _one_line_field(name: str, value: str) -> bytes:
    """A header written exactly as given, on one line of at most 998 octets: never folded, never encoded."""
    _refuse_line_breaks(name, value)
    if not (value.isascii() and value.isprintable()):
        raise MessageError(
            f"cannot write the {name} header {value[:60]!r}: it must be printable ASCII "
            "(write an international [newsletter] base_url in punycode with %-escapes)"
        )
    field = f"{name}: {value}\r\n".encode("ascii")
    if len(field) - len(CRLF) > MAX_LINE_OCTETS:
        raise MessageError(
            f"cannot write the {name} header on one line: it would be {len(field) - len(CRLF)} octets, over "
            f"{MAX_LINE_OCTETS}; shorten [newsletter] base_url or [bounces] address"
        )
    return field


def _refuse_line_breaks(name: str, text: str) -> None:
    if "\r" in text or "\n" in text:
        raise MessageError(f"refusing to write the {name} header: its value {text[:60]!r} holds a line break")


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

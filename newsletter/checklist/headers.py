"""Checklist items 1–9 and 11: the envelope, the headers and the bytes on the wire."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

from newsletter.checklist.verdict import Verdict, judge
from newsletter.checklist.wire import WireEmail

REQUIRED_ONCE = ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version")
MAX_LINE_OCTETS = 998
ONE_CLICK = "List-Unsubscribe=One-Click"
# Every top-level header our messages carry; anything else on the wire is a header someone injected.
KNOWN_HEADERS = frozenset(
    {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "reply-to",
        "sender",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "list-help",
        "list-archive",
        "list-owner",
        "list-post",
        "list-subscribe",
        "feedback-id",
        "auto-submitted",
        "precedence",
        "dkim-signature",
        "x-newsletter-delivery",
    }
)
_FIELD_NAME = re.compile(r"^[!-9;-~]+$")
_MESSAGE_ID = re.compile(r"^<([^<>@\s]+)@([^<>@\s]+)>$")
_LIST_ID = re.compile(r'^(?:"(?:[^"\\]|\\.)+"|[^"<>]+?)\s*<([a-z0-9-]+)\.([a-z0-9.-]+\.[a-z]{2,})>$', re.IGNORECASE)
_ANGLE_URIS = re.compile(r"<([^<>]*)>")
_NUMERIC_ZONE = re.compile(r"[+-]\d{4}\s*$")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bq]\?[^?\s]*\?=", re.IGNORECASE)
_MAILTO = re.compile(r"^mailto:[^@?\s]+@[^@?\s]+(?:\?\S*)?$", re.IGNORECASE)
# Google's Feedback-ID: `a:b:c:SenderId`, up to three identifiers before a SenderId of 5 to 15 characters.
FEEDBACK_ID_FIELDS = 4
SENDER_ID_LENGTH = range(5, 16)
PRECEDENCE_VALUES = ("bulk", "list")


def required_headers(wire: WireEmail) -> Verdict:
    problems = []
    for name in REQUIRED_ONCE:
        count = len(wire.raw_header(name))
        if count != 1:
            problems.append(f"{name} appears {count} times, expected exactly once")
    sender = wire.message["From"]
    if sender is not None and len(sender.addresses) != 1:
        problems.append(f"From holds {len(sender.addresses)} addresses, expected one")
    return judge(problems, "From, To, Subject, Date, Message-ID and MIME-Version once each; one From address")


def message_id(wire: WireEmail) -> Verdict:
    values = wire.raw_header("Message-ID")
    if not values:
        return judge(["no Message-ID"], "")
    match = _MESSAGE_ID.match(values[0])
    if not match:
        return judge([f"Message-ID {values[0]!r} is not <local@domain>"], "")
    domain = match.group(2).lower()
    if domain != wire.from_domain:
        return judge([f"Message-ID domain {domain!r} is not the sending domain {wire.from_domain!r}"], "")
    return judge([], f"{values[0]} on the sending domain")


def date_header(wire: WireEmail) -> Verdict:
    values = wire.raw_header("Date")
    if not values:
        return judge(["no Date"], "")
    try:
        moment = parsedate_to_datetime(values[0])
    except (TypeError, ValueError):
        return judge([f"Date {values[0]!r} does not parse as an RFC 5322 date"], "")
    # "-0000" parses but means "zone unknown" (RFC 5322 section 3.3).
    if moment.tzinfo is None or not _NUMERIC_ZONE.search(values[0]) or values[0].rstrip().endswith("-0000"):
        return judge([f"Date {values[0]!r} carries no time zone offset"], "")
    return judge([], f"{values[0]} parses with its zone")


def multipart_alternative(wire: WireEmail) -> Verdict:
    message = wire.message
    if message.get_content_type() != "multipart/alternative":
        return judge([f"top level is {message.get_content_type()}, expected multipart/alternative"], "")
    types = [part.get_content_type() for part in wire.parts]
    problems = []
    if types != ["text/plain", "text/html"]:
        problems.append(f"parts are {types}, expected ['text/plain', 'text/html'] in that order")
    for part in wire.parts:
        charset = str(part.get_param("charset", "") or "").lower()
        if charset != "utf-8":
            problems.append(f"{part.get_content_type()} charset is {charset or 'missing'}, expected utf-8")
    return judge(problems, "multipart/alternative: text/plain then text/html, both UTF-8")


def wire_lines(wire: WireEmail) -> Verdict:
    problems = []
    lines = wire.raw.split(b"\n")
    bare_lf = [number for number, line in enumerate(lines[:-1], 1) if not line.endswith(b"\r")]
    if bare_lf:
        problems.append(f"{len(bare_lf)} line(s) end in a bare LF instead of CRLF, first at line {bare_lf[0]}")
    if b"\r" in b"".join(line[:-1] for line in lines):
        problems.append("a bare CR appears inside a line")
    lengths = [len(line.rstrip(b"\r")) for line in lines]
    long_lines = [(number, length) for number, length in enumerate(lengths, 1) if length > MAX_LINE_OCTETS]
    if long_lines:
        number, length = long_lines[0]
        problems.append(f"{len(long_lines)} line(s) over {MAX_LINE_OCTETS} octets, first line {number} ({length})")
    for part in wire.parts:
        if part.get_content_type() == "text/html":
            encoding = str(part.get("Content-Transfer-Encoding", "7bit")).lower()
            if encoding not in ("quoted-printable", "base64"):
                problems.append(f"the HTML part is {encoding}, expected quoted-printable or base64")
    return judge(problems, f"CRLF line ends, longest line {max(lengths)} octets")


def list_unsubscribe(wire: WireEmail) -> Verdict:
    values = wire.raw_header("List-Unsubscribe")
    if not wire.expected.expect_unsubscribe and not values:
        return judge([], "not expected for this message")
    if len(values) != 1:
        return judge([f"List-Unsubscribe appears {len(values)} times, expected once"], "")
    raw = values[0]
    if _ENCODED_WORD.search(raw):
        return judge([f"List-Unsubscribe is RFC 2047-encoded ({raw[:40]}…); Gmail ignores it"], "")
    uris = _ANGLE_URIS.findall(raw)
    https = [uri for uri in uris if uri.startswith("https://")]
    mailtos = [uri for uri in uris if uri.lower().startswith("mailto:")]
    others = [uri for uri in uris if uri not in https and uri not in mailtos]
    problems = []
    if _ANGLE_URIS.sub("", raw).replace(",", "").strip():
        problems.append(f"List-Unsubscribe {raw!r} is not a list of <URI>s")
    if len(https) != 1:
        problems.append(f"List-Unsubscribe holds {len(https)} https URIs, expected exactly one")
    if len(mailtos) > 1:
        problems.append(f"List-Unsubscribe holds {len(mailtos)} mailto URIs, expected at most one")
    malformed = [uri for uri in mailtos if not _MAILTO.match(uri)]
    problems += [f"List-Unsubscribe's {uri!r} is not mailto:address[?subject=…]" for uri in malformed]
    if others:
        problems.append(f"List-Unsubscribe holds {others}; only https and mailto URIs are allowed")
    address = wire.recipient_address.lower()
    if address and any(address in unquote(uri).lower() for uri in https + mailtos):
        problems.append("List-Unsubscribe carries the plain address; use an opaque signed token")
    if re.search(rb"^List-Unsubscribe:[^\n]*\n[ \t]", wire.head, re.IGNORECASE | re.MULTILINE):
        problems.append("List-Unsubscribe is folded over several lines; write it on one line of at most 998 octets")
    found = f"one https URI{' and one mailto' if mailtos else ''}, on one line, not encoded"
    return judge(problems, f"{found}: {https[0] if https else ''}")


def one_click_post(wire: WireEmail) -> Verdict:
    values = wire.raw_header("List-Unsubscribe-Post")
    if not wire.expected.expect_unsubscribe and not values:
        return judge([], "not expected for this message")
    if values != [ONE_CLICK]:
        return judge([f"List-Unsubscribe-Post is {values}, expected exactly [{ONE_CLICK!r}]"], "")
    return judge([], ONE_CLICK)


def list_id_header(wire: WireEmail) -> Verdict:
    values = wire.raw_header("List-Id")
    if len(values) != 1:
        return judge([f"List-Id appears {len(values)} times, expected once"], "")
    if not _LIST_ID.match(values[0]):
        return judge([f"List-Id {values[0]!r} is not `Series Name <series-slug.list-domain>`"], "")
    return judge([], values[0])


def recommended_headers(wire: WireEmail) -> Verdict:
    problems = []
    feedback = wire.raw_header("Feedback-ID")
    if len(feedback) > 1:
        problems.append(f"Feedback-ID appears {len(feedback)} times; Google counts only one")
    recipient = wire.recipient_address.lower()
    local_part = recipient.split("@")[0]
    delivery = wire.raw_header("X-Newsletter-Delivery")
    for value in feedback:
        fields = value.split(":")
        if recipient and (recipient in value.lower() or local_part in (field.lower() for field in fields)):
            problems.append(f"Feedback-ID {value!r} holds the recipient; it must be the same for every reader")
        if delivery and delivery[0] in fields:
            problems.append(f"Feedback-ID {value!r} holds the delivery id; it must be the same for every reader")
        if len(fields) > FEEDBACK_ID_FIELDS:
            problems.append(f"Feedback-ID {value!r} has {len(fields)} fields, expected at most {FEEDBACK_ID_FIELDS}")
        if len(fields[-1]) not in SENDER_ID_LENGTH:
            problems.append(f"Feedback-ID {value!r}: its last field (SenderId) must be 5 to 15 characters")
    auto = wire.raw_header("Auto-Submitted")
    if auto and auto != ["auto-generated"]:
        problems.append(f"Auto-Submitted is {auto}, expected auto-generated")
    precedence = wire.raw_header("Precedence")
    if precedence and (len(precedence) > 1 or precedence[0].lower() not in PRECEDENCE_VALUES):
        problems.append(f"Precedence is {precedence}, expected one of {', '.join(PRECEDENCE_VALUES)}")
    names = ("Feedback-ID", "Auto-Submitted", "Precedence", "List-Help", "List-Archive")
    present = [name for name in names if wire.raw_header(name)]
    return judge(problems, f"present: {', '.join(present) or 'none (optional)'}")


def no_injected_headers(wire: WireEmail) -> Verdict:
    problems = []
    for name, value in wire.raw_headers:
        if not _FIELD_NAME.match(name):
            problems.append(f"malformed header line {(name + ':' + value)[:60]!r}")
        elif name.lower() not in KNOWN_HEADERS:
            problems.append(f"unexpected header {name}: {value[:40]!r}")
    for name in ("From", "To", "Subject", "Reply-To"):
        for value in wire.header_values(name):
            if "\r" in value or "\n" in value:
                problems.append(f"{name} holds a line break")
    return judge(problems, f"{len(wire.raw_headers)} headers, all known, none injected")

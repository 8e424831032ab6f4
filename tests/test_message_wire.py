"""`compose` against the email package: the same header fields byte for byte, the same decoded parts.

The reference below is how the message used to be built (EmailMessage, set_content/add_alternative, the SMTP
policy with 998-octet lines). `compose` must write identical header blocks, top level and per part, and
parts that decode to identical text; only the quoted-printable line breaks differ (76 octets, RFC 2045).
"""

from __future__ import annotations

import email
import quopri
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest

from newsletter.config import Settings, settings_from_mapping
from newsletter.errors import MessageError
from newsletter.message import (
    CRLF,
    DELIVERY_HEADER,
    WIRE_POLICY,
    _address,
    compose,
    quoted_printable,
)
from newsletter.project import Project
from newsletter.render import RenderedEmail

NAMES = [
    "Reader 1",
    "",
    "J. Smith",
    'Bob "the" Builder',
    "O'Brien, Pat",
    "Zoë Ünal",
    "李小龙",
    "a\\b",
]
NAMES += ["x" * 300, "  spaced   out\t name ", "Émile (the) <runner>", "名" * 60]
SUBJECTS = ["Lesson 1: Running and muscle — gain or loss?", "Plain subject", "Ünïcödé " * 40]
# Values that look like RFC 2047 encoded words are where `compose` deliberately differs from the email
# package, which decodes them and writes the result raw (tests/test_message.py: header injection).
BODIES = [
    "<p>hi</p>",
    "x" * 5000 + "\n" + "é = \t \n.\nFrom x\n",
    "",
    "trailing space \nand tab\t\n",
    "\u2028separators\x0bvertical\x0cfeed\r\nmixed\rends\n",
    '<a href="https://example.com/' + "q" * 2000 + '">link</a>',
]


def settings_with(**sender: str) -> Settings:
    document = {
        "sender": {"from": "lessons@running.example.com", **sender},
        "newsletter": {"name": "Running, Explained"},
    }
    return settings_from_mapping(document, Path("."), {"NEWSLETTER_SECRET_KEY": "k" * 20})


def reference(settings: Settings, rendered: RenderedEmail, **fields: object) -> bytes:
    """The message as the email package builds and serialises it."""
    message = EmailMessage(policy=WIRE_POLICY)
    message["From"] = _address(settings.from_name, settings.sender.from_)
    message["To"] = _address(str(fields["to_name"]), str(fields["to_email"]))
    message["Subject"] = str(fields.get("subject_prefix", "")) + " ".join(rendered.subject.split())
    message["Date"] = format_datetime(fields["date"])  # type: ignore[arg-type]
    message["Message-ID"] = str(fields["message_id"])
    if settings.sender.reply_to:
        message["Reply-To"] = settings.sender.reply_to
    list_id = str(fields["list_id_value"])
    message["List-Id"] = list_id
    mailto = fields.get("unsubscribe_mailto")
    message["List-Unsubscribe"] = f"<{fields['unsubscribe_url']}>" + (f", <{mailto}>" if mailto else "")
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mail_type = "bulk" if fields["bulk"] else "transactional"
    message["Feedback-ID"] = f"{fields['campaign']}:running.running.example.com:{mail_type}:newsletter"
    message["Auto-Submitted"] = "auto-generated"
    if fields["bulk"]:
        message["Precedence"] = "bulk"
    if fields.get("delivery_id") is not None:
        message[DELIVERY_HEADER] = str(fields["delivery_id"])
    message.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message.as_bytes(policy=WIRE_POLICY)


def anatomy(raw: bytes) -> tuple[bytes, list[bytes], list[str]]:
    """(top-level header block, each part's header block, each part decoded), boundary replaced."""
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    boundary = parsed.get_boundary()
    assert boundary is not None
    raw = raw.replace(boundary.encode(), b"BOUNDARY")
    parts = raw.split(b"--BOUNDARY")[1:-1]
    decoded = [str(part.get_content()) for part in parsed.iter_parts()]
    return raw.split(b"\r\n\r\n", 1)[0], [part.split(b"\r\n\r\n", 1)[0] for part in parts], decoded


MAILTO = "mailto:bounces+unsubscribe-42-abcdefghijklm@mail.running.example.com?subject=unsubscribe"


def fields_for(name: str, case: int) -> dict[str, object]:
    return {
        "to_email": "reader.one+tag@example.com",
        "to_name": name,
        "message_id": "<running.w1.0a1b2c3d@running.example.com>",
        # The long URL and the mailto together fill the one line List-Unsubscribe may take (998 octets).
        "unsubscribe_url": "https://running.example.com/u/" + "t" * (30 if case % 2 else 856),
        "unsubscribe_mailto": MAILTO if case % 4 < 2 else "",
        "list_id_value": '"Running: Muscle" <running.running.example.com>',
        "campaign": "confirmation" if case % 3 == 1 else "muscle",
        "bulk": case % 3 != 1,
        "delivery_id": 42 if case % 2 else None,
        "date": datetime(2026, 3, 2, 7, tzinfo=UTC if case % 3 else timezone(timedelta(hours=-5))),
        "subject_prefix": "[TEST] " if case % 5 == 0 else "",
    }


@pytest.mark.parametrize("reply_to", ["", "help@running.example.com"])
@pytest.mark.parametrize("name", NAMES)
def test_compose_writes_what_the_email_package_writes(name: str, reply_to: str) -> None:
    settings = settings_with(reply_to=reply_to, from_name="Zoë’s Läufe" if reply_to else "")
    for case, body in enumerate(BODIES):
        subject = SUBJECTS[(case + len(name)) % len(SUBJECTS)]
        rendered = RenderedEmail(subject=subject, preheader="", html=body, text=body.replace("<", ""))
        fields = fields_for(name, case)
        expected = reference(settings, rendered, **fields)
        data = compose(settings, rendered, **fields)  # type: ignore[arg-type]
        assert anatomy(data) == anatomy(expected)
        lines = data.split(b"\r\n")
        assert data.count(b"\n") == data.count(b"\r\n")
        assert max(map(len, lines)) <= 998
        body_lines = [line for part in data.split(b"\r\n\r\n")[2:] for line in part.split(b"\r\n")]
        assert max(map(len, body_lines)) <= 76  # quoted-printable lines as RFC 2045 wants them


@pytest.mark.parametrize(
    "field", [{"message_id": "<a@b>\r\nBcc: victim@example.com"}, {"unsubscribe_url": "https://x/u/a\nBcc: v@x"}]
)
def test_a_line_break_in_a_header_value_is_refused_as_the_email_package_refuses_it(field: dict[str, str]) -> None:
    settings = settings_with()
    rendered = RenderedEmail(subject="Hi", preheader="", html="<p>x</p>", text="x")
    fields = {**fields_for("Reader", 1), **field}
    with pytest.raises(MessageError, match="holds a line break"):
        compose(settings, rendered, **fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        reference(settings, rendered, **fields)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://running.example.com/u/" + "t" * 857, "over 998; shorten"),
        ("https://läufe.example.com/u/abc", "must be printable ASCII"),
    ],
    ids=["one octet too long", "not ASCII"],
)
def test_a_list_unsubscribe_that_cannot_be_one_raw_line_is_refused(url: str, problem: str) -> None:
    """Where the email package would fold or encode List-Unsubscribe (which Gmail ignores), compose refuses."""
    settings = settings_with()
    rendered = RenderedEmail(subject="Hi", preheader="", html="<p>x</p>", text="x")
    fields = {**fields_for("Reader", 0), "unsubscribe_url": url, "unsubscribe_mailto": MAILTO}
    with pytest.raises(MessageError, match=problem):
        compose(settings, rendered, **fields)  # type: ignore[arg-type]
    by_the_email_package = reference(settings, rendered, **fields).split(b"\r\n\r\n")[0]
    field = by_the_email_package.split(b"List-Unsubscribe:")[1].split(b"\r\nList-Unsubscribe-Post")[0]
    assert b"\r\n " in field or b"=?utf-8?" in field


def test_list_unsubscribe_takes_its_one_line_up_to_998_octets() -> None:
    rendered = RenderedEmail(subject="Hi", preheader="", html="<p>x</p>", text="x")
    fields = {**fields_for("Reader", 0), "unsubscribe_mailto": MAILTO}
    data = compose(settings_with(), rendered, **fields)  # type: ignore[arg-type]
    [line] = [line for line in data.split(b"\r\n") if line.startswith(b"List-Unsubscribe:")]
    assert line == f"List-Unsubscribe: <{fields['unsubscribe_url']}>, <{MAILTO}>".encode()
    assert len(line) == 998


def test_text_in_pieces_encodes_to_what_the_whole_text_decodes_to() -> None:
    # Template text (even pieces) may hold any line ends; values (odd pieces) are one line, as rendering fills them.
    rng = random.Random(20261126)
    alphabet = ["a", " ", "\t", "=", "é", "\n", "\r\n", "\r", ".", "x" * 80, "€", "    \t", "\u2028", "<p>", "From "]
    for _ in range(3000):
        pieces = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(rng.choice((1, 3, 5)))
        ]
        pieces[1::2] = [value.replace("\n", "").replace("\r", "") for value in pieces[1::2]]
        text = "".join(pieces)
        whole, in_pieces = quoted_printable(text), quoted_printable(text, tuple(pieces))
        assert quopri.decodestring(in_pieces) == quopri.decodestring(whole)
        assert quopri.decodestring(whole) == CRLF.join(text.encode().splitlines()) + CRLF
        for encoded in (whole, in_pieces):
            assert encoded.endswith(CRLF) and encoded.count(b"\n") == encoded.count(CRLF)
            assert max(map(len, encoded.split(CRLF))) <= 76


def test_a_rendered_lesson_is_composed_from_its_pieces(project: Project) -> None:
    subscriber = project.sample_subscriber(name="Zoë <Runner>")
    rendered = project.render(subscriber, "muscle")
    assert rendered.html_pieces and "".join(rendered.html_pieces) == rendered.html
    whole = replace(rendered, html_pieces=(), text_pieces=())
    fields = fields_for(subscriber.name, 1)
    assert anatomy(compose(project.settings, rendered, **fields)) == anatomy(  # type: ignore[arg-type]
        compose(project.settings, whole, **fields)  # type: ignore[arg-type]
    )

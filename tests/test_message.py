"""The messages we send, checked on their serialised bytes: every bundled lesson and the confirmation email.

The checklist (items 1–11 and 15–28) runs on each message, and the items that matter most to mailbox
providers are also asserted directly here, so a fault in the checklist cannot hide a fault in a message.
"""

from __future__ import annotations

import base64
import email
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from feedback_mail import FIRST_SLOT, readers
from smtp_sink import SmtpSink

from newsletter.checklist import run_checklist
from newsletter.config import Settings
from newsletter.dispatch import send_due
from newsletter.errors import MessageError, SubscriberError
from newsletter.feedback.mailto import unsubscribe_address
from newsletter.lessons import load_series
from newsletter.message import DELIVERY_HEADER, _header_field, lesson_message_id
from newsletter.models import CONFIRMATION, Subscriber
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber
from newsletter.transports import SmtpTransport

REPO = Path(__file__).resolve().parent.parent
BUNDLED = load_series(REPO / "lessons")
WEEKS = [CONFIRMATION, *(lesson.slug for lesson in BUNDLED)]
WEEK_IDS = ["confirmation", *(lesson.slug for lesson in BUNDLED)]
NOW = datetime(2026, 3, 2, 7, 0, 12, tzinfo=UTC)


def subscriber(project: Project, name: str = "Alex Runner", subscriber_id: int = 42) -> Subscriber:
    sample = project.sample_subscriber("reader@example.com", name)
    sample.id = subscriber_id
    return sample


def wire(project: Project, week: str, who: Subscriber | None = None, now: datetime = NOW) -> bytes:
    return project.envelope(who or subscriber(project), week, now=now).data


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize("week", WEEKS, ids=WEEK_IDS)
def test_every_email_passes_the_checklist(project: Project, week: str) -> None:
    raw = wire(project, week)
    subject = project.render(subscriber(project), week, NOW).subject
    action = "Try this week" if week != CONFIRMATION else None
    results = run_checklist(raw, subject=subject, call_to_action=action)
    assert [result.number for result in results] == [*range(1, 12), *range(15, 29)]
    assert [str(result) for result in results if not result.ok] == []


@pytest.mark.parametrize("week", WEEKS, ids=WEEK_IDS)
def test_the_wire_bytes_directly(project: Project, week: str) -> None:
    who = subscriber(project)
    raw = wire(project, week, who)
    message = parse(raw)
    links = project.links(who.id, NOW)

    # Items 1, 3: each required header once; Date is the send time with its zone.
    for name in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version"):
        assert len(re.findall(rb"^" + name.encode() + rb":", header_block(raw), re.MULTILINE | re.IGNORECASE)) == 1
    assert message["Date"].datetime == NOW
    assert message["From"].addresses[0].addr_spec == project.settings.sender.from_
    # Item 4: text then HTML, both UTF-8; the HTML quoted-printable (item 5).
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert [part.get_content_charset() for part in parts] == ["utf-8", "utf-8"]
    assert parts[1]["Content-Transfer-Encoding"] == "quoted-printable"
    # Item 5: CRLF everywhere, no line over 998 octets.
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    # Items 6, 7, 8: the unsubscribe headers as raw bytes, and the List-Id.
    assert f"\r\nList-Unsubscribe: <{links.unsubscribe}>\r\n".encode() in raw
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    assert b"reader@example.com" not in links.unsubscribe.encode()
    assert message["List-Id"].endswith(f" <{BUNDLED.slug}.{project.settings.sender.list_id}>")
    assert BUNDLED.title in message["List-Id"]
    # Item 9: Feedback-ID names the lesson, the list and the kind of mail; lessons alone are bulk.
    list_identifier = f"{BUNDLED.slug}.{project.settings.sender.list_id}"
    kind = "transactional" if week == CONFIRMATION else "bulk"
    assert f"\r\nFeedback-ID: {week}:{list_identifier}:{kind}:newsletter\r\n".encode() in raw
    assert b"\r\nAuto-Submitted: auto-generated\r\n" in raw
    assert message.get_all("Precedence") == (None if week == CONFIRMATION else ["bulk"])
    # Items 15, 16, 23: the HTML document, its hidden preheader, and working links.
    html = parts[1].get_content()
    rendered = project.render(who, week, NOW)
    assert html.startswith("<!doctype html>")
    assert '<html lang="en"' in html
    assert f"<title>{rendered.subject}</title>" in html.replace("&#39;", "'").replace("&quot;", '"')
    body = html.split("<body", 1)[1].split(">", 1)[1]
    assert body.startswith('<div style="display:none;') and rendered.preheader in body[:600]
    assert f'href="{links.unsubscribe}"' in html
    assert "{{" not in html and "{%" not in html and "\\u{e000}" not in html
    # Item 28: the text part carries the unsubscribe URL (and a lesson its call to action).
    text = parts[0].get_content()
    assert links.unsubscribe in text
    assert week == CONFIRMATION or "Try this week" in text
    assert week != CONFIRMATION or links.confirm in text


def test_list_id_is_the_same_for_the_whole_series(project: Project) -> None:
    values = {parse(wire(project, week))["List-Id"] for week in WEEKS}
    assert values == {project.list_id}


def test_feedback_id_is_the_same_for_every_reader_of_a_lesson_and_differs_between_lessons(project: Project) -> None:
    readers = [subscriber(project, "Ann", 42), subscriber(project, "Bo", 43)]
    readers[1].email = "bo@example.org"
    by_lesson = {week: {parse(wire(project, week, who))["Feedback-ID"] for who in readers} for week in WEEKS}
    assert all(len(values) == 1 for values in by_lesson.values())
    assert len({values.pop() for values in by_lesson.values()}) == len(WEEKS)


def with_unsubscribe_mailbox(project: Project, tmp_path: Path) -> Project:
    """The project with [bounces] address and mailbox set: List-Unsubscribe then offers a mailto: too."""
    bounces = {"address": "bounces@mail.running.example.com", "mailbox": str(tmp_path / "bounces")}
    return Project(project.settings.replace("bounces", **bounces))


@pytest.mark.parametrize("week", [CONFIRMATION, "muscle"])
def test_list_unsubscribe_carries_the_readers_signed_mailto_on_the_same_raw_line(
    project: Project, tmp_path: Path, week: str
) -> None:
    mailing = with_unsubscribe_mailbox(project, tmp_path)
    who, other = subscriber(mailing, subscriber_id=42), subscriber(mailing, subscriber_id=43)
    raw = wire(mailing, week, who)
    address = unsubscribe_address(mailing.settings, who.id)
    assert address is not None and address.startswith("bounces+unsubscribe-42-")
    url = mailing.links(who.id, NOW).unsubscribe
    expected = f"\r\nList-Unsubscribe: <{url}>, <mailto:{address}?subject=unsubscribe>\r\n"
    assert expected.encode() in raw
    assert b"reader@example.com" not in address.encode()
    assert address not in wire(mailing, week, other).decode("ascii", "replace")  # each reader their own
    results = run_checklist(raw, call_to_action=None if week == CONFIRMATION else "Try this week")
    assert [str(result) for result in results if not result.ok] == []
    assert "one https URI and one mailto, on one line" in next(r for r in results if r.number == 6).detail


def test_without_a_mailbox_nobody_would_read_the_mailto_so_there_is_none(project: Project) -> None:
    reading_nothing = Project(project.settings.replace("bounces", address="bounces@mail.running.example.com"))
    raw = wire(reading_nothing, "muscle")
    assert b"mailto:" not in header_block(raw)
    assert unsubscribe_address(reading_nothing.settings, 42) is None


def test_confirmation_links_confirm_with_a_working_token(project: Project) -> None:
    who = subscriber(project)
    html = parse(wire(project, CONFIRMATION, who)).get_body(("html",))
    assert html is not None
    assert f'href="{project.links(who.id, NOW).confirm}"' in html.get_content()


def test_a_name_with_cr_lf_cannot_inject_a_header(project: Project) -> None:
    who = subscriber(project, name="Eve\r\nBcc: victim@example.org\r\nX-Injected: yes")
    raw = wire(project, "muscle", who)
    message = parse(raw)
    assert message["Bcc"] is None and message["X-Injected"] is None
    assert not re.search(rb"^(Bcc|X-Injected):", header_block(raw), re.MULTILINE | re.IGNORECASE)
    assert len(message["To"].addresses) == 1
    assert message["To"].addresses[0].addr_spec == "reader@example.com"
    results = run_checklist(raw, call_to_action="Try this week")
    assert next(result for result in results if result.number == 11).ok


ENCODED_INJECTION = "=?utf-8?b?" + base64.b64encode(b"Ann\r\nReply-To: x@evil.example").decode() + "?="
# 152 characters: long enough that the email package once let it replace Subject, Content-Type and body.
LONG_INJECTION = (
    "=?utf-8?b?"
    + base64.b64encode(
        b"A\r\nSubject: Win\r\nContent-Type: text/html\r\n\r\n<a href=https://evil.example>claim</a>\r\n\r\n"
    ).decode()
    + "?="
)


@pytest.mark.parametrize("name", [ENCODED_INJECTION, LONG_INJECTION, f"Ann {ENCODED_INJECTION} Lee"])
@pytest.mark.parametrize("week", [CONFIRMATION, "muscle"])
def test_an_encoded_word_in_a_name_never_becomes_a_header(project: Project, name: str, week: str) -> None:
    raw = wire(project, week, subscriber(project, name=name))
    block = header_block(raw)
    assert not re.search(rb"^(Reply-To|Content-Type: text/html)", block, re.MULTILINE | re.IGNORECASE)
    assert all(line.startswith((b" ", b"\t")) or b":" in line for line in block.split(b"\r\n"))
    message = parse(raw)
    assert message["Reply-To"] is None
    if week != CONFIRMATION:
        assert message["Subject"] == project.series.lesson(week).subject
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["To"].addresses[0].addr_spec == "reader@example.com"
    if week != CONFIRMATION:
        assert message["To"].addresses[0].display_name == " ".join(name.split())  # shown as the literal text


@pytest.mark.parametrize("subject", [ENCODED_INJECTION, "Lesson =?utf-8?q?x?= trick", LONG_INJECTION])
def test_an_encoded_word_in_any_header_value_arrives_as_the_literal_text(subject: str) -> None:
    field = _header_field("Subject", subject)
    assert field.count(b"\r\n") == field.count(b"\r\n ") + 1  # every inner line break is folding
    parsed = parse(field + b"\r\n")
    assert parsed["Subject"] == subject


@pytest.mark.parametrize("value", ["a\r\nBcc: x@evil.example", "a\nb", "a\rb"])
def test_no_header_we_write_can_hold_a_line_break(value: str) -> None:
    with pytest.raises(MessageError):
        _header_field("Subject", value)


def test_the_confirmation_email_carries_no_name(project: Project) -> None:
    raw = wire(project, CONFIRMATION, subscriber(project, name="Buy cheap pills at evil.example"))
    assert b"evil.example" not in raw
    assert parse(raw)["To"] == "reader@example.com"


def test_a_non_ascii_mailbox_gets_utf8_headers_and_an_ascii_domain_gets_idna(project: Project) -> None:
    who = subscriber(project, name="Zoë")
    who.email = "ü-user@example.com"
    envelope = project.envelope(who, "muscle", now=NOW)
    assert envelope.recipients == ("ü-user@example.com",)
    assert b"To: Zo\xc3\xab <\xc3\xbc-user@example.com>\r\n" in header_block(envelope.data)
    who.email = "runner@bücher.example"
    envelope = project.envelope(who, "muscle", now=NOW)
    assert envelope.recipients == ("runner@xn--bcher-kva.example",)
    assert b"<runner@xn--bcher-kva.example>" in header_block(envelope.data)


def test_an_address_with_a_line_break_is_refused(project: Project) -> None:
    who = subscriber(project)
    who.email = "reader@example.com\r\nBcc: victim@example.org"
    with pytest.raises(SubscriberError, match="not a single email address"):
        project.message(who, "muscle", now=NOW)


def test_a_script_in_the_name_is_escaped_in_html_and_plain_in_text(project: Project) -> None:
    name = "<script>alert(1)</script>"
    message = parse(wire(project, "knees", subscriber(project, name=name)))
    text_part, html_part = message.iter_parts()
    html = html_part.get_content()
    assert "<script" not in html.lower()
    assert "Hi &lt;script&gt;alert(1)&lt;/script&gt;," in html
    assert f"Hi {name}," in text_part.get_content()
    results = run_checklist(message.as_bytes(policy=policy.SMTP), call_to_action="Try this week")
    assert {result.number: result.ok for result in results}[27]


def test_message_id_is_deterministic_and_the_same_on_a_retry(project: Project) -> None:
    who = subscriber(project)
    first = parse(wire(project, "brain", who, now=NOW))["Message-ID"]
    retry = parse(wire(project, "brain", who, now=NOW + timedelta(hours=2)))["Message-ID"]
    assert first == retry == lesson_message_id(project.settings, BUNDLED.slug, who.id, "brain")
    assert re.fullmatch(r"<[^@<>\s]+@running\.example\.com>", first)
    assert parse(wire(project, "mood", who))["Message-ID"] != first
    assert parse(wire(project, "brain", subscriber(project, subscriber_id=43)))["Message-ID"] != first


def test_list_unsubscribe_stays_one_raw_line_with_a_long_base_url(project: Project) -> None:
    long_base = "https://" + "newsletter-subscriber-links.running.example.com/" * 3 + "a/very/long/path"
    project = Project(project.settings.replace("newsletter", base_url=long_base))
    who = subscriber(project)
    raw = wire(project, "sleep", who)
    url = project.links(who.id, NOW).unsubscribe
    assert len(url) > 180
    line = next(line for line in raw.split(b"\r\n") if line.startswith(b"List-Unsubscribe:"))
    assert line == f"List-Unsubscribe: <{url}>".encode()
    assert b"=?" not in header_block(raw)
    result = next(result for result in run_checklist(raw) if result.number == 6)
    assert result.ok, result.detail


def generate_key(folder: Path) -> tuple[Path, bytes]:
    """A fresh 2048-bit RSA key and the TXT record that publishes its public half."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to generate a DKIM test key")
    key = folder / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True, capture_output=True
    ).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def test_dkim_signature_verifies_with_dkimpy(project: Project, settings: Settings, tmp_path: Path) -> None:
    key, record = generate_key(tmp_path)
    signed = Project(settings.replace("dkim", selector="news2026", domain="running.example.com", private_key=key))
    raw = signed.envelope(subscriber(signed), "muscle", delivery_id=7, now=NOW).data  # with X-Newsletter-Delivery
    looked_up: list[bytes] = []

    def dns(name: bytes, timeout: float = 5) -> bytes:
        looked_up.append(name)
        return record

    assert raw.startswith(b"DKIM-Signature: ")
    assert dkim.verify(raw, dnsfunc=dns)
    assert looked_up == [b"news2026._domainkey.running.example.com."]
    signed_list = re.search(r"\bh=([^;]+)", re.sub(r"\s+", "", str(parse(raw)["DKIM-Signature"])))
    assert signed_list
    signed_headers = {name.lower() for name in signed_list.group(1).split(":")}
    required = {"from", "to", "subject", "date", "message-id", "list-unsubscribe", "list-unsubscribe-post", "list-id"}
    ours = {"feedback-id", "auto-submitted", "precedence", "reply-to"}  # reply-to signed absent: none may be added
    assert required | ours <= signed_headers
    assert DELIVERY_HEADER.lower() not in signed_headers  # ours alone; a relay stripping X- headers breaks nothing
    assert not dkim.verify(raw.replace(b"Subject: Lesson 1", b"Subject: Lesson 9", 1), dnsfunc=dns)
    assert not dkim.verify(raw.replace(b"Feedback-ID: muscle:", b"Feedback-ID: knees:", 1), dnsfunc=dns)
    assert not dkim.verify(raw.replace(b"\r\nPrecedence: bulk", b"\r\nPrecedence: list", 1), dnsfunc=dns)
    assert not dkim.verify(raw.replace(b"\r\n\r\n", b"\r\nReply-To: thief@example.org\r\n\r\n", 1), dnsfunc=dns)
    assert dkim.verify(raw.replace(b"\r\nX-Newsletter-Delivery", b"\r\nX-Other", 1), dnsfunc=dns)
    results = run_checklist(raw, call_to_action="Try this week", dkim_dns=dns)
    assert [str(result) for result in results if not result.ok] == []


def test_the_signature_covers_every_header_we_add_on_the_bytes_the_smtp_server_received(
    any_project: Project, tmp_path: Path
) -> None:
    """A lesson and a confirmation sent over SMTP, each verified by dkimpy as a receiving provider would."""
    key, record = generate_key(tmp_path)
    settings = any_project.settings.replace("dkim", selector="news2026", domain="running.example.com", private_key=key)
    settings = settings.replace("sender", reply_to="coach@running.example.com")
    settings = settings.replace("bounces", address="bounces@mail.running.example.com", mailbox=str(tmp_path / "in"))
    signing = Project(settings)
    readers(signing, "ann@example.com")
    with signing.db.session() as session:
        add_subscriber(session, signing, SubscriberInput("bo@example.com"), confirmed=False, now=FIRST_SLOT)
    with SmtpSink() as sink:
        transport = SmtpTransport("127.0.0.1", sink.port)
        try:
            send_due(signing, transport, now=FIRST_SLOT + timedelta(minutes=1))
        finally:
            transport.close()
        received = {message.recipients[0]: message.data for message in sink.messages}
    signing.db.dispose()
    assert set(received) == {"ann@example.com", "bo@example.com"}
    for recipient, raw in received.items():
        assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: record), recipient
        head = header_block(raw).decode("ascii")
        names = {line.split(":", 1)[0].lower() for line in head.split("\r\n") if line[:1] not in (" ", "\t")}
        tags = re.sub(r"\s+", "", str(parse(raw)["DKIM-Signature"]))
        signed_list = re.search(r"(?:^|;)h=([^;]+)", tags)
        assert signed_list, tags
        signed_headers = {name.lower() for name in signed_list.group(1).split(":")}
        assert names - {"dkim-signature", DELIVERY_HEADER.lower()} <= signed_headers, recipient
        ours = {"reply-to", "list-id", "list-unsubscribe", "list-unsubscribe-post", "feedback-id", "auto-submitted"}
        assert ours <= names  # really there, so the line above proves each is signed
        assert ("precedence" in names) == (recipient == "ann@example.com")  # lessons only
        assert "precedence" in signed_headers  # named even when absent: nobody on the way may add one
        assert ", <mailto:bounces+unsubscribe-" in str(parse(raw)["List-Unsubscribe"])

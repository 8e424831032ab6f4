"""The checklist catches broken messages: a good message passes, and each item fails on its own breakage.

The good message is composed and signed by the real `compose` and `signed` from a small hand-written
HTML email, so each case below breaks exactly one thing and must make exactly its item fail.
"""

from __future__ import annotations

import base64
import email
import html
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import pytest

from newsletter import tokens
from newsletter.checklist import CHECKS, CheckResult, run_checklist
from newsletter.checklist.dom import effective_font_px, parse_html
from newsletter.checklist.signing import dns_serving, public_key_record
from newsletter.config import Settings
from newsletter.envelope import SIGNED_HEADERS, signed
from newsletter.message import WIRE_POLICY, compose
from newsletter.render import RenderedEmail

SUBJECT = "Lesson 1: why tight hamstrings matter"
PREHEADER = "Two minutes a day loosens the back of your legs."
ACTION = "Try this week"
NOW = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
IN_CI = os.environ.get("CI", "").lower() == "true"
MAILTO = "mailto:bounces+unsubscribe-7-abcdefghijklm@running.example.com?subject=unsubscribe"
DELIVERY_ID = 31

GOOD_HTML = """<!doctype html><html lang="en"><head><title>{subject}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark"><meta name="supported-color-schemes" content="light dark">
<style type="text/css">p {{ margin: 13px 0; }} .content h2 {{ font-size: 22px; }}
@media (prefers-color-scheme: dark) {{ body {{ background-color: #111418 !important; }} }}</style>
<!--[if mso]><xml><o:OfficeDocumentSettings><o:PixelsPerInch>96</o:PixelsPerInch></o:OfficeDocumentSettings>
</xml><![endif]-->
</head><body style="margin:0;">
<div style="display:none;font-size:1px;max-height:0px;overflow:hidden;">{preheader}</div>
<div style="margin:0 auto;max-width:600px;font-size:16px;">
<table role="presentation" width="100%"><tr><td class="content" style="font-size:0px;">
<div style="font-size:16px;"><p>Hi {name},</p>
<h1 style="font-size:28px;">Hamstrings: the muscles behind your knees</h1>
<p>Tight hamstrings pull on the pelvis. See the <a href="https://example.org/more">overview</a>.</p>
<h2>Try this week</h2><p>Reach for your toes for 30 seconds a side.</p>
<img src="https://example.org/stretch.png" alt="A seated stretch" width="552">
</div></td></tr></table>
<div style="font-size:14px;"><p>1 Example Street, Springfield</p>
<p><a href="{preferences}">Change your day</a> · <a href="{unsubscribe}">Unsubscribe</a></p></div>
</div></body></html>
"""

GOOD_TEXT = """Hi {name},

HAMSTRINGS: THE MUSCLES BEHIND YOUR KNEES

Tight hamstrings pull on the pelvis. See the overview (https://example.org/more).

Try this week
-------------

Reach for your toes for 30 seconds a side.

--
1 Example Street, Springfield
Unsubscribe: {unsubscribe}
"""


@dataclass(frozen=True)
class Draft:
    """The parts of the good message a case may change before it is built."""

    html: str = GOOD_HTML
    text: str = GOOD_TEXT
    name: str = "Alex Runner"
    subject: str = SUBJECT
    preheader: str = PREHEADER
    message_id: str = "<stretching.w1.0123abcd@running.example.com>"
    unsubscribe_url: str = ""
    unsubscribe_mailto: str = MAILTO


def unsubscribe_url(settings: Settings) -> str:
    return f"{settings.newsletter.base_url}/u/{tokens.issue(settings.secret_key, 'unsubscribe', 7)}"


def build(settings: Settings, draft: Draft = Draft()) -> bytes:
    """The draft through the real message builder and serialiser."""
    url = draft.unsubscribe_url or unsubscribe_url(settings)
    values = {
        "subject": html.escape(draft.subject),
        "preheader": html.escape(draft.preheader),
        "name": html.escape(draft.name),
        "raw_name": draft.name,
        "unsubscribe": url,
        "preferences": f"{settings.newsletter.base_url}/preferences/abc",
    }
    rendered = RenderedEmail(
        subject=draft.subject,
        preheader=draft.preheader,
        html=draft.html.format(**values),
        text=draft.text.format(**{**values, "name": draft.name}),
    )
    data = compose(
        settings,
        rendered,
        to_email="reader@example.com",
        to_name=draft.name,
        message_id=draft.message_id,
        unsubscribe_url=url,
        unsubscribe_mailto=draft.unsubscribe_mailto,
        list_id_value='"Stretching, Explained" <stretching.running.example.com>',
        campaign="stretching",
        bulk=True,
        delivery_id=DELIVERY_ID,
        date=NOW,
    )
    return signed(settings, data)


def check(raw: bytes, **options: object) -> list[CheckResult]:
    return run_checklist(raw, call_to_action=ACTION, **options)  # type: ignore[arg-type]


def failed(results: list[CheckResult]) -> set[int]:
    return {result.number for result in results if not result.ok}


def edit_html(old: str, new: str) -> Callable[[Draft], Draft]:
    def apply(draft: Draft) -> Draft:
        assert old in draft.html, old
        return replace(draft, html=draft.html.replace(old, new, 1))

    return apply


def edit_text(old: str, new: str) -> Callable[[Draft], Draft]:
    def apply(draft: Draft) -> Draft:
        assert old in draft.text, old
        return replace(draft, text=draft.text.replace(old, new, 1))

    return apply


def set_header(name: str, value: str) -> Callable[[bytes], bytes]:
    """Replace a top-level header's value on the wire bytes."""

    def apply(raw: bytes) -> bytes:
        pattern = re.compile(rb"^" + name.encode() + rb":[^\r\n]*(\r\n[ \t][^\r\n]*)*\r\n", re.MULTILINE)
        assert pattern.search(raw), name
        return pattern.sub(f"{name}: {value}\r\n".encode(), raw, count=1)

    return apply


def insert_header(line: str) -> Callable[[bytes], bytes]:
    """Add a header line at the end of the top-level header block."""
    return lambda raw: raw.replace(b"\r\n\r\n", b"\r\n" + line.encode() + b"\r\n\r\n", 1)


def test_the_good_message_passes_every_item(settings: Settings) -> None:
    results = check(build(settings))
    assert [result.number for result in results] == [*range(1, 12), *range(15, 29)]
    assert [str(result) for result in results if not result.ok] == []
    assert next(result for result in results if result.number == 10).detail == "not signed"


DRAFT_CASES: list[tuple[int, str, Callable[[Draft], Draft]]] = [
    (2, "Message-ID on another domain", lambda d: replace(d, message_id="<w1.abc@elsewhere.example>")),
    (2, "Message-ID without angle brackets", lambda d: replace(d, message_id="w1.abc@running.example.com")),
    (15, "no doctype", edit_html("<!doctype html>", "")),
    (15, "lang und", edit_html('lang="en"', 'lang="und"')),
    (15, "title differs from the subject", edit_html("<title>{subject}</title>", "<title>Preview</title>")),
    (16, "preheader not first", edit_html('<div style="display:none;', '<p>Menu</p><div style="display:none;')),
    (16, "preheader visible", edit_html("display:none;font-size:1px;max-height:0px;overflow:hidden;", "")),
    (16, "preheader too long", lambda d: replace(d, preheader="Stretch. " * 20)),
    (16, "preheader repeats the first line", lambda d: replace(d, preheader="Hi Alex Runner,")),
    (17, "over 102,400 bytes", edit_html("<p>Tight", "<p>" + "Padding text. " * 7400 + "</p><p>Tight")),
    (17, "a style block of 16 KB", edit_html("p {{ margin: 13px 0; }}", "p {{ margin: 13px 0; }}" * 1300)),
    (18, "an 800 px table", edit_html('role="presentation" width="100%"', 'role="presentation" width="800"')),
    (18, "no viewport meta", edit_html('<meta name="viewport" content="width=device-width, initial-scale=1">', "")),
    (18, "no max-width", edit_html("margin:0 auto;max-width:600px;", "margin:0 auto;")),
    (19, "a layout table without role", edit_html('<table role="presentation"', "<table")),
    (20, "an image without alt", edit_html(' alt="A seated stretch"', "")),
    (20, "an image over http", edit_html("https://example.org/stretch.png", "http://example.org/stretch.png")),
    (20, "an image without width", edit_html(' width="552"', "")),
    (21, "two h1", edit_html("<h2>Try this week</h2>", "<h1>Try this week</h1>")),
    (21, "h1 then h3", edit_html("<h2>Try this week</h2>", "<h3>Try this week</h3>")),
    (22, "12 px inline text", edit_html("<p>Tight", '<p style="font-size:12px">Tight')),
    (22, "text in MJML's 0 px cell", edit_html('<div style="font-size:16px;"><p>Hi', "<p>Stray</p><div><p>Hi")),
    (22, "a 13 px style rule", edit_html(".content h2 {{ font-size: 22px; }}", ".fine {{ font-size: 13px; }}")),
    (22, "0.8em of 16 px", edit_html("<p>Tight", '<p style="font-size:0.8em">Tight')),
    (23, "an empty href", edit_html('href="https://example.org/more"', 'href=""')),
    (23, "a # href", edit_html('href="https://example.org/more"', 'href="#"')),
    (23, "a relative href", edit_html('href="https://example.org/more"', 'href="/more"')),
    (23, "an http href", edit_html('href="https://example.org/more"', 'href="http://example.org/more"')),
    (23, "Jinja left in the HTML", edit_html("<p>Tight", "<p>{{{{ subscriber.name }}}} Tight")),
    (23, "Jinja left in the text", edit_text("Tight", "{{% if x %}}Tight")),
    (23, "no unsubscribe link", edit_html('<a href="{unsubscribe}">Unsubscribe</a>', "")),
    (
        23,
        "unsubscribe link hidden",
        edit_html('<a href="{unsubscribe}">', '<a style="display:none" href="{unsubscribe}">'),
    ),
    (24, "a script", edit_html("</body>", "<script>track()</script></body>")),
    (24, "a form", edit_html("</body>", '<form action="https://example.org/f"></form></body>')),
    (24, "an svg", edit_html("</body>", "<svg></svg></body>")),
    (24, "a video", edit_html("</body>", "<video></video></body>")),
    (
        24,
        "a web-font link",
        edit_html("</head>", '<link href="https://fonts.googleapis.com/css?family=Ubuntu" rel="stylesheet"></head>'),
    ),
    (25, "no Outlook comment", edit_html("<!--[if mso]>", "<!--[if gte ie 9]>")),
    (26, "no color-scheme meta", edit_html('<meta name="color-scheme" content="light dark">', "")),
    (26, "no supported-color-schemes", edit_html('<meta name="supported-color-schemes" content="light dark">', "")),
    (26, "no dark block", edit_html("prefers-color-scheme: dark", "prefers-reduced-motion: reduce")),
    (27, "a name printed unescaped", edit_html("<p>Hi {name},</p>", "<p>Hi {raw_name},</p>")),
    (28, "an empty text part", lambda d: replace(d, text="  \n")),
    (28, "a tag in the text part", edit_text("Tight", "<p>Tight")),
    (28, "an entity in the text part", edit_text("Tight", "Tight&nbsp;")),
    (28, "an unwrapped paragraph", edit_text("Tight hamstrings pull on the pelvis.", "Tight hamstrings pull. " * 5)),
    (28, "no call to action", edit_text("Try this week", "Homework")),
    (28, "no unsubscribe URL", edit_text("Unsubscribe: {unsubscribe}", "Unsubscribe on the website.")),
]


@pytest.mark.parametrize(
    ("item", "change"), [(item, change) for item, _, change in DRAFT_CASES], ids=[name for _, name, _ in DRAFT_CASES]
)
def test_a_broken_message_fails_exactly_its_item(
    settings: Settings, item: int, change: Callable[[Draft], Draft]
) -> None:
    draft = change(Draft())
    if item == 27:
        draft = replace(draft, name="<b>Alex</b>")
    results = check(build(settings, draft))
    assert failed(results) == {item}, [str(result) for result in results if not result.ok]


# (item, other items that must fail with it, case, change): a missing unsubscribe URL also fails 23 and 28.
NO_UNSUBSCRIBE_URL = {23, 28}
WIRE_CASES: list[tuple[int, set[int], str, Callable[[bytes], bytes]]] = [
    (1, set(), "two Subject headers", insert_header("Subject: Another subject")),
    (1, {3, 11}, "no Date", lambda raw: raw.replace(b"\r\nDate:", b"\r\nX-Date:", 1)),
    (1, set(), "two addresses in From", set_header("From", "a@running.example.com, b@running.example.com")),
    (3, set(), "Date without a zone", set_header("Date", "Mon, 02 Mar 2026 07:00:00 -0000")),
    (3, set(), "Date that does not parse", set_header("Date", "next Monday")),
    (5, set(), "bare LF line ends", lambda raw: raw.replace(b"\r\n", b"\n")),
    (
        6,
        NO_UNSUBSCRIBE_URL,
        "List-Unsubscribe RFC 2047-encoded",
        set_header("List-Unsubscribe", "=?utf-8?q?=3Chttps=3A//x=2Eorg/u/a=3E?="),
    ),
    (6, NO_UNSUBSCRIBE_URL, "List-Unsubscribe over http", set_header("List-Unsubscribe", "<http://x.org/u/abc>")),
    (6, NO_UNSUBSCRIBE_URL, "List-Unsubscribe without brackets", set_header("List-Unsubscribe", "https://x.org/u/a")),
    (7, set(), "List-Unsubscribe-Post misspelt", set_header("List-Unsubscribe-Post", "List-Unsubscribe=OneClick")),
    (8, set(), "List-Id without the list domain", set_header("List-Id", "Stretching, Explained")),
    (
        6,
        set(),
        "List-Unsubscribe folded onto two lines",
        lambda raw: raw.replace(b">, <mailto:", b">,\r\n <mailto:", 1),
    ),
    (
        6,
        set(),
        "List-Unsubscribe with two mailtos",
        lambda raw: raw.replace(b", <mailto:", b", <mailto:a@x.org>, <mailto:"),
    ),
    (
        6,
        set(),
        "a mailto with the plain address",
        lambda raw: raw.replace(MAILTO.encode(), b"mailto:leave@running.example.com?body=reader@example.com"),
    ),
    (6, set(), "a mailto without an address", lambda raw: raw.replace(MAILTO.encode(), b"mailto:?subject=unsubscribe")),
    (9, set(), "Feedback-ID per recipient", set_header("Feedback-ID", "stretching:reader@example.com:newsletter")),
    (9, set(), "Feedback-ID per delivery", set_header("Feedback-ID", f"stretching:{DELIVERY_ID}:bulk:newsletter")),
    (9, set(), "Feedback-ID of five fields", set_header("Feedback-ID", "stretching:list:bulk:extra:newsletter")),
    (9, set(), "Feedback-ID with a short SenderId", set_header("Feedback-ID", "stretching:list:bulk:nl")),
    (9, set(), "two Feedback-IDs", insert_header("Feedback-ID: other:list:bulk:newsletter")),
    (9, set(), "Precedence junk", set_header("Precedence", "junk")),
    (9, set(), "Auto-Submitted wrong", set_header("Auto-Submitted", "no")),
    (11, set(), "an injected Bcc", insert_header("Bcc: everyone@example.org")),
    (11, set(), "a header name with a space", insert_header("Reply To: everyone@example.org")),
]


@pytest.mark.parametrize(
    ("item", "also", "change"),
    [(item, also, change) for item, also, _, change in WIRE_CASES],
    ids=[name for _, _, name, _ in WIRE_CASES],
)
def test_broken_wire_bytes_fail_their_item(
    settings: Settings, item: int, also: set[int], change: Callable[[bytes], bytes]
) -> None:
    results = check(change(build(settings)))
    assert failed(results) == {item} | also, [str(result) for result in results if not result.ok]


def test_a_script_in_the_name_is_caught_unescaped_and_passes_escaped(settings: Settings) -> None:
    name = "<script>alert(1)</script>"
    escaped = check(build(settings, Draft(name=name)))
    assert failed(escaped) == set()
    assert "escaped and shown as text" in next(result for result in escaped if result.number == 27).detail
    raw = build(settings, Draft(name=name, html=GOOD_HTML.replace("<p>Hi {name},</p>", "<p>Hi {raw_name},</p>")))
    assert failed(check(raw)) == {24, 27}


def test_parts_in_the_wrong_order_fail_item_4(settings: Settings) -> None:
    raw = build(settings)
    boundary = re.search(rb'boundary="([^"]+)"', raw)
    assert boundary
    head, first, second = raw.split(b"--" + boundary.group(1) + b"\r\n")
    second, closing = second.split(b"--" + boundary.group(1) + b"--")
    swapped = head + b"--" + boundary.group(1) + b"\r\n" + second + b"--" + boundary.group(1) + b"\r\n"
    swapped += first.rstrip(b"\r\n") + b"\r\n--" + boundary.group(1) + b"--" + closing
    assert failed(check(swapped)) == {4}


def test_a_single_part_latin1_message_fails_item_4(settings: Settings) -> None:
    raw = b"".join(
        [
            b"From: lessons@running.example.com\r\nTo: reader@example.com\r\nSubject: Hi\r\n",
            b"Date: Mon, 02 Mar 2026 07:00:00 +0000\r\nMessage-ID: <a@running.example.com>\r\n",
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=latin-1\r\n\r\nHi\r\n",
        ]
    )
    results = {result.number: result for result in check(raw)}
    assert not results[4].ok
    assert "multipart/alternative" in results[4].detail
    assert not results[15].ok and "no text/html part" in results[15].detail


def test_a_line_over_998_octets_fails_item_5(settings: Settings) -> None:
    raw = build(settings)
    head, body = raw.split(b"\r\n\r\n", 1)
    results = check(head + b"\r\n\r\n" + b"x" * 999 + b"\r\n" + body)
    assert not next(result for result in results if result.number == 5).ok


def test_the_stdlib_default_folding_of_a_long_url_fails_item_6(settings: Settings) -> None:
    """The real trap: policy.SMTP (78 columns) encodes a long List-Unsubscribe into RFC 2047 words."""
    long_base = "https://" + "newsletter-links.running.example.com/" * 3
    url = long_base + "u/" + tokens.issue(settings.secret_key, "unsubscribe", 7)
    good = build(settings, Draft(unsubscribe_url=url))
    assert url.encode() in good
    data = compose(
        settings,
        RenderedEmail(SUBJECT, PREHEADER, "<p>x</p>", "x"),
        to_email="reader@example.com",
        to_name="",
        message_id="<a@running.example.com>",
        unsubscribe_url=url,
        unsubscribe_mailto=MAILTO,
        list_id_value="Stretching <stretching.running.example.com>",
        campaign="stretching",
        bulk=True,
    )
    folded = email.message_from_bytes(data, policy=WIRE_POLICY).as_bytes(policy=policy.SMTP)
    results = {result.number: result for result in check(folded)}
    assert not results[6].ok
    assert "RFC 2047" in results[6].detail
    assert {result.number for result in check(good) if not result.ok} == set()


def test_a_plain_address_in_the_unsubscribe_url_fails_item_6(settings: Settings) -> None:
    raw = build(settings, Draft(unsubscribe_url="https://running.example.com/u?email=reader%40example.com"))
    assert failed(check(raw)) == {6}


def test_without_expect_unsubscribe_the_unsubscribe_items_may_be_absent(settings: Settings) -> None:
    raw = build(settings, Draft(html=GOOD_HTML.replace('<a href="{unsubscribe}">Unsubscribe</a>', "")))
    raw = re.sub(rb"List-Unsubscribe(-Post)?: [^\r]*\r\n", b"", raw)
    assert failed(check(raw)) == {6, 7, 23, 28}
    results = run_checklist(raw, expect_unsubscribe=False, call_to_action=ACTION)
    assert failed(results) == set()


def test_title_is_compared_with_the_expected_subject(settings: Settings) -> None:
    raw = build(settings)
    assert failed(check(raw, subject=SUBJECT)) == set()
    assert failed(check(raw, subject="Lesson 2: open up your hips")) == {15}


def test_a_data_table_needs_no_presentation_role(settings: Settings) -> None:
    table = "<table><tr><th>Run</th></tr><tr><td>5 km</td></tr></table><p>Tight"
    assert failed(check(build(settings, Draft(html=GOOD_HTML.replace("<p>Tight", table))))) == set()


def test_font_sizes_follow_inheritance_and_units() -> None:
    document = parse_html(
        '<body><div style="font-size:12pt"><p id="a">x</p><small>y</small>'
        '<div style="font-size:150%"><span style="font-size:0.5em">z</span></div></div></body>'
    )
    body = document.body
    assert body is not None
    sizes = {element.tag: effective_font_px(element) for element in body.iter() if element.tag != "div"}
    assert sizes["p"] == pytest.approx(16.0)
    assert sizes["small"] == pytest.approx(16.0 * 0.83)
    assert sizes["span"] == pytest.approx(12.0)


# DKIM: item 10 with real keys, signed by the real signer (newsletter.envelope.dkim_sign via signed).


def generate_key(folder: Path, bits: int) -> tuple[Path, bytes]:
    """A fresh RSA key (openssl) and its DNS TXT record with the SubjectPublicKeyInfo, as DNS publishes it."""
    if shutil.which("openssl") is None:
        if IN_CI:
            pytest.fail("openssl is needed to generate DKIM test keys")
        pytest.skip("openssl is needed to generate DKIM test keys")
    key = folder / f"dkim-{bits}.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), str(bits)], check=True, capture_output=True)
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True, capture_output=True
    ).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def signing(settings: Settings, key: Path, domain: str = "running.example.com") -> Settings:
    return settings.replace("dkim", selector="s2026", domain=domain, private_key=key)


def item_10(raw: bytes, record: bytes) -> CheckResult:
    return next(result for result in check(raw, dkim_dns=dns_serving(record)) if result.number == 10)


def test_a_dkim_signature_that_verifies_passes(settings: Settings, tmp_path: Path) -> None:
    key, record = generate_key(tmp_path, 2048)
    raw = build(signing(settings, key))
    assert raw.startswith(b"DKIM-Signature:")
    results = check(raw, dkim_dns=dns_serving(record))
    assert failed(results) == set(), [str(result) for result in results if not result.ok]
    assert "verifies for d=running.example.com s=s2026" in item_10(raw, record).detail


def test_a_dkim_signature_broken_by_a_changed_subject_fails(settings: Settings, tmp_path: Path) -> None:
    key, record = generate_key(tmp_path, 2048)
    raw = set_header("Subject", "Changed on the way")(build(signing(settings, key)))
    assert not item_10(raw, record).ok


def test_dkim_with_another_key_in_dns_fails(settings: Settings, tmp_path: Path) -> None:
    key, _ = generate_key(tmp_path, 2048)
    (tmp_path / "other").mkdir()
    _, other_record = generate_key(tmp_path / "other", 2048)
    assert not item_10(build(signing(settings, key)), other_record).ok


def test_a_1024_bit_dkim_key_fails(settings: Settings, tmp_path: Path) -> None:
    key, record = generate_key(tmp_path, 1024)
    result = item_10(build(signing(settings, key)), record)
    assert not result.ok
    assert "1024 bits" in result.detail


def test_a_dkim_domain_that_does_not_align_with_from_fails(settings: Settings, tmp_path: Path) -> None:
    key, record = generate_key(tmp_path, 2048)
    result = item_10(build(signing(settings, key, domain="mailer.example.net")), record)
    assert not result.ok
    assert "does not align" in result.detail


@pytest.mark.parametrize("header", ["feedback-id", "auto-submitted", "precedence"])
def test_a_dkim_signature_missing_a_header_we_add_fails(settings: Settings, tmp_path: Path, header: str) -> None:
    import dkim

    key, record = generate_key(tmp_path, 2048)
    unsigned = build(settings)
    covered = [name for name in SIGNED_HEADERS if name.decode() != header]
    signature = dkim.sign(unsigned, b"s2026", b"running.example.com", key.read_bytes(), include_headers=covered)
    result = item_10(signature + unsigned, record)
    assert not result.ok
    assert result.detail == f"the signature does not cover {header}"


def test_a_header_we_did_not_add_need_not_be_signed(settings: Settings, tmp_path: Path) -> None:
    import dkim

    key, record = generate_key(tmp_path, 2048)
    unsigned = re.sub(rb"\r\nPrecedence: bulk", b"", build(settings))
    covered = [name for name in SIGNED_HEADERS if name != b"precedence"]
    signature = dkim.sign(unsigned, b"s2026", b"running.example.com", key.read_bytes(), include_headers=covered)
    assert item_10(signature + unsigned, record).ok


def test_a_dkim_signature_missing_list_unsubscribe_fails(settings: Settings, tmp_path: Path) -> None:
    import dkim

    key, record = generate_key(tmp_path, 2048)
    unsigned = build(settings)
    signature = dkim.sign(
        unsigned, b"s2026", b"running.example.com", key.read_bytes(), include_headers=[b"from", b"to", b"subject"]
    )
    result = item_10(signature + unsigned, record)
    assert not result.ok
    assert "list-unsubscribe" in result.detail


def test_public_key_record_publishes_the_private_keys_public_half(settings: Settings, tmp_path: Path) -> None:
    key, _ = generate_key(tmp_path, 2048)
    raw = build(signing(settings, key))
    assert item_10(raw, public_key_record(key.read_bytes())).ok


def test_every_registered_item_has_a_negative_case() -> None:
    covered = {item for item, _, _ in DRAFT_CASES} | {item for item, _, _, _ in WIRE_CASES} | {4, 10}
    assert {number for number, _, _ in CHECKS} == covered

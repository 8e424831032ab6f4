"""The email checklist, run on the exact bytes that go on the wire.

Each item of the team's email checklist that a message's bytes can prove (1–11, 15–28; 12–14 concern the
unsubscribe endpoint and are tested against the web app) is one small function here, registered in
`CHECKS` with its number. `run_checklist` returns one `CheckResult` per item, in order.
"""

from __future__ import annotations

from collections.abc import Callable

from newsletter.checklist import headers, html_content, html_layout, signing, text_part
from newsletter.checklist.verdict import CheckResult, Verdict
from newsletter.checklist.wire import CheckImpossible, DnsTxtLookup, Expectations, WireEmail

__all__ = ["CHECKS", "CheckResult", "DnsTxtLookup", "failures", "run_checklist"]

Check = Callable[[WireEmail], Verdict]
CHECKS: list[tuple[int, str, Check]] = [
    (1, "required headers once", headers.required_headers),
    (2, "Message-ID on the sending domain", headers.message_id),
    (3, "Date with a zone", headers.date_header),
    (4, "multipart/alternative, text then HTML", headers.multipart_alternative),
    (5, "CRLF lines of at most 998 octets", headers.wire_lines),
    (6, "List-Unsubscribe", headers.list_unsubscribe),
    (7, "List-Unsubscribe-Post one-click", headers.one_click_post),
    (8, "List-Id", headers.list_id_header),
    (9, "Feedback-ID, Auto-Submitted, Precedence", headers.recommended_headers),
    (10, "DKIM signature", signing.dkim_signature),
    (11, "no injected headers", headers.no_injected_headers),
    (15, "doctype, lang and title", html_layout.document_head),
    (16, "hidden preheader first", html_layout.preheader),
    (17, "HTML and style sizes", html_layout.html_size),
    (18, "600 px content and viewport", html_layout.content_width),
    (19, "layout tables are presentation", html_layout.layout_tables),
    (20, "images with alt, width, https", html_layout.images),
    (21, "one h1, no skipped levels", html_layout.headings),
    (22, "no visible text below 14 px", html_content.font_sizes),
    (23, "links https, no template residue, footer unsubscribe", html_content.links),
    (24, "no script, form, svg, video, web fonts", html_content.forbidden_elements),
    (25, "Outlook conditional comments", html_content.outlook_comments),
    (26, "dark mode metas and styles", html_content.dark_mode),
    (27, "subscriber data escaped", html_content.escaped_subscriber_data),
    (28, "plain-text part", text_part.plain_text),
]


def run_checklist(
    raw: bytes,
    *,
    subject: str | None = None,
    expect_unsubscribe: bool = True,
    call_to_action: str | None = None,
    dkim_dns: DnsTxtLookup | None = None,
) -> list[CheckResult]:
    """Check one message's wire bytes against every checklist item they can prove.

    `subject` is what `<title>` must equal (default: the Subject header); `call_to_action` is text the
    plain-text part must contain (a lesson's "Try this week"); `dkim_dns` answers dkimpy's public-key
    lookups (default: real DNS). Without `expect_unsubscribe`, the unsubscribe headers and links may be absent.
    """
    wire = WireEmail(raw, Expectations(subject, expect_unsubscribe, call_to_action, dkim_dns))
    results = []
    for number, name, check in CHECKS:
        try:
            verdict = check(wire)
        except CheckImpossible as missing:
            verdict = Verdict(False, str(missing))
        results.append(CheckResult(number, name, verdict.ok, verdict.detail))
    return results


def failures(results: list[CheckResult]) -> list[CheckResult]:
    """The results that did not pass."""
    return [result for result in results if not result.ok]

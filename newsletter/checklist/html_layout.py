"""Checklist items 15–21: the HTML part's document, preheader, size, width, tables, images and headings."""

from __future__ import annotations

import re

from newsletter.checklist.dom import Element, px_length
from newsletter.checklist.verdict import Verdict, judge
from newsletter.checklist.wire import CheckImpossible, WireEmail

PREHEADER_MAX = 140
HTML_MAX_BYTES = 102_400
STYLE_MAX_BYTES = 16 * 1024
CONTENT_MAX_PX = 600


def _body(wire: WireEmail) -> Element:
    body = wire.document.body
    if body is None:
        raise CheckImpossible("the HTML part has no <body>")
    return body


def document_head(wire: WireEmail) -> Verdict:
    problems = []
    if not wire.html.lstrip().lower().startswith("<!doctype html>"):
        problems.append(f"the HTML does not start with <!doctype html> but {wire.html.lstrip()[:20]!r}")
    html = wire.document.root.find("html")
    lang = html.attrs.get("lang") if html else None
    if lang != "en":
        problems.append(f'<html lang="{lang}">, expected lang="en"')
    title = wire.document.root.find("title")
    title_text = title.text() if title else None
    if title_text != " ".join(wire.subject.split()):
        problems.append(f"<title> is {title_text!r}, expected the subject {wire.subject!r}")
    return judge(problems, f'doctype, lang="en", title is the subject {wire.subject!r}')


def _first_visible_text(body: Element) -> str:
    for parent, text in body.text_nodes():
        if text.strip() and not parent.is_hidden():
            return " ".join(text.split())
    return ""


def preheader(wire: WireEmail) -> Verdict:
    body = _body(wire)
    first = next((child for child in body.children if isinstance(child, Element)), None)
    if first is None or not first.is_hidden():
        shown = first.tag if first else "nothing"
        return judge([f"the first element of <body> is a visible <{shown}>, expected the hidden preheader"], "")
    text = first.text()
    problems = []
    if not text:
        problems.append("the hidden preheader is empty")
    if len(text) > PREHEADER_MAX:
        problems.append(f"the preheader has {len(text)} characters, expected at most {PREHEADER_MAX}")
    visible = _first_visible_text(body)
    if text and visible.startswith(text):
        problems.append(f"the preheader repeats the first visible text {visible[:60]!r}")
    return judge(problems, f"hidden, {len(text)} characters: {text!r}")


def html_size(wire: WireEmail) -> Verdict:
    size = len(wire.html.encode("utf-8"))
    problems = []
    if size >= HTML_MAX_BYTES:
        problems.append(f"the HTML is {size:,} bytes; Gmail clips at {HTML_MAX_BYTES:,}")
    for number, style in enumerate(wire.document.root.find_all("style"), 1):
        style_size = len(style.text().encode("utf-8"))
        if style_size >= STYLE_MAX_BYTES:
            problems.append(f"<style> block {number} is {style_size:,} bytes, expected under {STYLE_MAX_BYTES:,}")
    return judge(problems, f"{size:,} bytes")


def content_width(wire: WireEmail) -> Verdict:
    problems = []
    viewport = [meta for meta in wire.document.root.find_all("meta") if meta.attrs.get("name") == "viewport"]
    if not any("width=device-width" in meta.attrs.get("content", "").replace(" ", "") for meta in viewport):
        problems.append('no <meta name="viewport" content="width=device-width…">')
    widest = 0.0
    limited = False
    for element in _body(wire).iter():
        widths = [element.attrs.get("width", "")]
        style = element.style
        widths += [style.get("width", ""), style.get("min-width", "")]
        max_width = px_length(style.get("max-width", ""))
        if max_width is not None:
            limited = limited or max_width <= CONTENT_MAX_PX
            widths.append(style["max-width"])
        for value in widths:
            length = px_length(value.replace("!important", "")) if value else None
            if length is not None and length > CONTENT_MAX_PX:
                problems.append(f"<{element.tag}> is {value} wide, more than {CONTENT_MAX_PX} px")
            widest = max(widest, length or 0)
    if not limited:
        problems.append(f"no element limits the content with max-width ≤ {CONTENT_MAX_PX}px")
    return judge(problems[:5], f"viewport meta, content at most {widest:g} px wide")


def layout_tables(wire: WireEmail) -> Verdict:
    tables = wire.document.root.find_all("table")
    # A table with header cells holds data (a Markdown table in a lesson); only layout tables are presentation.
    layout = [table for table in tables if not table.find("th")]
    bare = [table for table in layout if table.attrs.get("role") != "presentation"]
    if bare:
        return judge([f'{len(bare)} layout table(s) lack role="presentation", first at HTML line {bare[0].line}'], "")
    return judge([], f'{len(layout)} layout tables, all role="presentation"')


def images(wire: WireEmail) -> Verdict:
    problems = []
    found = wire.document.root.find_all("img")
    for image in found:
        name = image.attrs.get("src", "")[:60] or "(no src)"
        if "alt" not in image.attrs:
            problems.append(f"<img {name}> has no alt")
        if not image.attrs.get("width"):
            problems.append(f"<img {name}> has no width")
        if not image.attrs.get("src", "").startswith("https://"):
            problems.append(f"<img {name}> src is not https")
    return judge(problems, f"{len(found)} images, each with alt, width and an https src")


def headings(wire: WireEmail) -> Verdict:
    levels = [
        (int(element.tag[1]), element.text()) for element in _body(wire).iter() if re.fullmatch(r"h[1-6]", element.tag)
    ]
    problems = []
    ones = [text for level, text in levels if level == 1]
    if len(ones) != 1:
        problems.append(f"{len(ones)} <h1> elements, expected exactly one")
    previous = 0
    for level, text in levels:
        if level > previous + 1:
            after = f"follows h{previous}" if previous else "is the first heading"
            problems.append(f"<h{level}> {text[:40]!r} {after}: heading levels skip")
        previous = level
    return judge(problems, f"one h1, then {', '.join(f'h{level}' for level, _ in levels[1:]) or 'no other headings'}")

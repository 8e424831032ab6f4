"""Checklist items 22–27: text size, links, forbidden elements, Outlook comments, dark mode, escaping."""

from __future__ import annotations

import html
import re

from newsletter.checklist.dom import Element, css_rules, effective_font_px, font_size_px
from newsletter.checklist.verdict import Verdict, judge
from newsletter.checklist.wire import CheckImpossible, WireEmail

MIN_FONT_PX = 14.0
FORBIDDEN_ELEMENTS = ("script", "form", "svg", "video", "iframe", "object", "embed")
_NOT_SHOWN = {"style", "script", "title", "head"}
_TEMPLATE_LEFTOVER = re.compile(r"\{\{|\{%|[\ue000-\uf8ff]|\\u\{e[0-9a-f]{3}\}")
_DARK_MEDIA = re.compile(r"prefers-color-scheme\s*:\s*dark", re.IGNORECASE)


def _body(wire: WireEmail) -> Element:
    body = wire.document.body
    if body is None:
        raise CheckImpossible("the HTML part has no <body>")
    return body


def font_sizes(wire: WireEmail) -> Verdict:
    problems = []
    smallest = float("inf")
    for parent, text in _body(wire).text_nodes():
        if not text.strip() or parent.tag in _NOT_SHOWN or parent.is_hidden():
            continue
        size = effective_font_px(parent)
        smallest = min(smallest, size)
        if size < MIN_FONT_PX:
            problems.append(f"{' '.join(text.split())[:40]!r} is shown at {size:g}px")
    for style in wire.document.root.find_all("style"):
        for selector, declarations in css_rules(style.text()):
            declared = declarations.get("font-size")
            rule_size = font_size_px(declared, 16.0) if declared else None
            if rule_size is not None and rule_size < MIN_FONT_PX:
                problems.append(f"the <style> rule {selector[:40]!r} sets font-size {declared}")
    shown = f"{smallest:g}px" if smallest != float("inf") else "no text"
    return judge(problems[:5], f"smallest visible text {shown}; no style rule below {MIN_FONT_PX:g}px")


def links(wire: WireEmail) -> Verdict:
    problems = []
    hrefs = [element for element in _body(wire).iter() if "href" in element.attrs]
    for element in hrefs:
        href = element.attrs["href"].strip()
        if not href or href == "#" or not href.startswith(("https://", "mailto:")):
            problems.append(f"<{element.tag}> {element.text()[:30]!r} links to {href[:60]!r}, not https or mailto")
    for name, content in (("HTML", wire.html), ("text", wire.text)):
        leftover = _TEMPLATE_LEFTOVER.search(content)
        if leftover:
            context = content[max(0, leftover.start() - 20) : leftover.end() + 20]
            problems.append(f"the {name} part holds template residue near {context!r}")
    if wire.expected.expect_unsubscribe:
        problems += _footer_unsubscribe_problems(wire)
    return judge(problems[:6], f"{len(hrefs)} links, all https or mailto; unsubscribe link in the footer")


def _footer_unsubscribe_problems(wire: WireEmail) -> list[str]:
    body = _body(wire)
    url = wire.unsubscribe_url
    elements = list(body.iter())
    anchors = [element for element in elements if element.tag == "a" and element.attrs.get("href") == url]
    visible = [anchor for anchor in anchors if not anchor.is_hidden() and anchor.text()]
    if not visible:
        return [f"no visible link to the List-Unsubscribe URL {url}"]
    last_heading = max((i for i, element in enumerate(elements) if re.fullmatch(r"h[1-6]", element.tag)), default=-1)
    if all(elements.index(anchor) < last_heading for anchor in visible):
        return ["the unsubscribe link comes before the content, not in the footer"]
    return []


def forbidden_elements(wire: WireEmail) -> Verdict:
    root = wire.document.root
    problems = [f"<{tag}> is present" for tag in FORBIDDEN_ELEMENTS if root.find(tag)]
    for link in root.find_all("link"):
        problems.append(f"<link rel={link.attrs.get('rel', '')!r} href={link.attrs.get('href', '')[:60]!r}>")
    for style in root.find_all("style"):
        if "@import" in style.text():
            problems.append("a <style> block @imports a style sheet (a web font?)")
    return judge(problems, "no script, form, svg, video, web-font link or @import")


def outlook_comments(wire: WireEmail) -> Verdict:
    count = len(re.findall(r"<!--\[if mso", wire.html, re.IGNORECASE))
    if not count:
        return judge(["no <!--[if mso conditional comment survives"], "")
    return judge([], f"{count} Outlook conditional comments")


def dark_mode(wire: WireEmail) -> Verdict:
    metas = {meta.attrs.get("name", ""): meta.attrs.get("content", "") for meta in wire.document.root.find_all("meta")}
    problems = []
    if " ".join(metas.get("color-scheme", "").split()) != "light dark":
        problems.append('no <meta name="color-scheme" content="light dark">')
    if "supported-color-schemes" not in metas:
        problems.append('no <meta name="supported-color-schemes">')
    if not any(_DARK_MEDIA.search(style.text()) for style in wire.document.root.find_all("style")):
        problems.append("no @media (prefers-color-scheme: dark) style block")
    return judge(problems, "color-scheme metas and a prefers-color-scheme: dark block")


def escaped_subscriber_data(wire: WireEmail) -> Verdict:
    name = wire.recipient_name
    if not re.search(r"[<>&]", name):
        return judge([], "the recipient's name holds no markup characters")
    if name in wire.html:
        return judge([f"the recipient's name {name[:40]!r} appears unescaped in the HTML"], "")
    shown = html.escape(name, quote=False) in wire.html or html.escape(name) in wire.html
    return judge([], f"the name {name[:40]!r} is escaped{' and shown as text' if shown else ''}")

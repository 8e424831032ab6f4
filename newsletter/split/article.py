"""Read an article and find its sections: headings, "Lead phrase:" list items and the text under them.

- Paragraphs are separated by blank lines; hard-wrapped lines are joined.
- Headings are Markdown ATX headings (`#`, `##`, …). An article without any reads a short standalone line
  (at most 12 words and 80 characters, not a list item, not ending in `.` `,` `;` `:` or `…`) as a heading.
  A heading that opens the article and outranks the headings after it (in plain text: any opening heading
  followed by others) is its title: it names the whole piece and is never a topic.
- A list item (`•`, `-`, `*`) that opens with a "Lead phrase:" (at most 60 characters, may be bold) is a
  section of its own under the heading above it, the rest of the item (first letter capitalised) its text;
  other list items stay in the text as list items. An unindented paragraph after such a list belongs to the
  heading above the list again.
- Page debris is dropped: stray punctuation lines, reading times ("8–11 minutes", "5 min read"),
  "Leave a comment", "Trending", "Share", "Advertisement".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from newsletter.errors import LessonError

_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.+?)(?:\s+#+)?\s*$")
_BULLET = re.compile(r"^\s*[•*-]\s+(\S.*)$")
_LEAD_PHRASE = re.compile(r"^(?:\*\*|__)?(?P<lead>[^:*_]{1,60})(?:(?:\*\*|__):|:(?:\*\*|__)?)\s+(?P<rest>\S.*)$")
_DEBRIS = re.compile(
    r"^(?:[\s,.;:|•·*_=~–—-]*"
    r"|\d+(?:\s*[–-]\s*\d+)?\s*(?:min|mins|minutes?)(?:\s+read)?"
    r"|leave a comment|trending|share(?: this(?: article| post| story)?)?|advertisement)$",
    re.IGNORECASE,
)


class _Element(NamedTuple):
    kind: Literal["heading", "item", "paragraph"]
    text: str
    level: int = 0
    """The Markdown level of a heading; for an item or paragraph, 1 when it is indented."""


@dataclass(eq=False)
class Section:
    """One heading or "Lead phrase:" item of the article and the text blocks under it."""

    heading: str
    depth: int
    """1 for the title, 2 for a top-level section, one more per level of nesting."""
    parent: Section | None = None
    is_title: bool = False
    is_lead_item: bool = False
    continues: Section | None = None
    """For text after a list of lead items: the section above the list, whose text this goes on with."""
    blocks: list[str] = field(default_factory=list)
    children: list[Section] = field(default_factory=list)


def read_article(path: Path) -> str:
    """Read an article file as UTF-8 text; errors name the file and the offending line."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise LessonError(path, f"cannot be read: {error.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        byte = data[error.start]
        raise LessonError(path, f"is not UTF-8 text (byte 0x{byte:02x}); save it as UTF-8", line) from None
    if "\x00" in text:
        raise LessonError(path, "looks like a binary file, not a text or Markdown article")
    return text


def parse_sections(text: str, source: str) -> list[Section]:
    """Find the article's sections in order, without page debris and without headings that hold no text."""
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if not _is_debris(line)]
    markdown = any(_ATX_HEADING.match(line) for line in lines)
    elements: list[_Element] = []
    group: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            group.append(line)
        elif group:
            elements.extend(_group_elements(group, markdown))
            group = []
    if not elements:
        state = "is empty once page debris is removed" if text.strip() else "is empty"
        raise LessonError(source, f"{state}: expected an article with headings and paragraphs")
    levels = [element.level for element in elements if element.kind == "heading"]
    # An opening heading names the whole article when sections follow that it outranks (in plain text, all
    # headings share one rank, so the opening one outranks the rest by coming first).
    has_title = elements[0].kind == "heading" and len(levels) > 1 and (not markdown or levels[0] < min(levels[1:]))
    base_level = min(levels[1:] if has_title else levels, default=2)
    sections: list[Section] = []
    open_headings: list[Section] = []
    current: Section | None = None
    for position, element in enumerate(elements):
        if element.kind == "heading":
            if position == 0 and has_title:
                current = Section(element.text, 1, is_title=True)
            else:
                depth = 2 + element.level - base_level
                while open_headings and open_headings[-1].depth >= depth:
                    open_headings.pop()
                current = Section(element.text, depth, open_headings[-1] if open_headings else None)
                open_headings.append(current)
            sections.append(current)
            continue
        lead = _LEAD_PHRASE.match(element.text) if element.kind == "item" else None
        if lead and len(lead["lead"].split()) <= 10 and ". " not in lead["lead"]:
            parent = open_headings[-1] if open_headings else None
            current = Section(" ".join(lead["lead"].split()), parent.depth + 1 if parent else 2, parent)
            current.is_lead_item = True
            current.blocks.append(lead["rest"][:1].upper() + lead["rest"][1:])
            sections.append(current)
            continue
        if current is None or (current.is_lead_item and element.level == 0):
            # Text after a list of lead items belongs to the heading above the list, not to its last item.
            origin = current.parent if current else None
            heading, depth = (origin.heading, origin.depth) if origin else ("", 2)
            current = Section(heading, depth, origin.parent if origin else None, continues=origin)
            sections.append(current)
        current.blocks.append(f"- {element.text}" if element.kind == "item" else element.text)
    return _without_empty(sections)


def _without_empty(sections: list[Section]) -> list[Section]:
    """Drop headings with no text under them (such as a bare title), keeping parents of kept sections."""
    for section in sections:
        if section.parent:
            section.parent.children.append(section)
    kept: set[Section] = set()
    for section in reversed(sections):
        if section.blocks or any(child in kept for child in section.children):
            kept.add(section)
    return [section for section in sections if section in kept]


def _group_elements(group: list[str], markdown: bool) -> list[_Element]:
    """Classify one run of non-blank lines into headings, list items and a paragraph."""
    if not markdown and len(group) == 1 and _looks_like_heading(group[0]):
        return [_Element("heading", " ".join(group[0].split()), 2)]
    elements: list[_Element] = []
    paragraph: list[str] = []

    def end_paragraph() -> None:
        if paragraph:
            elements.append(_Element("paragraph", " ".join(paragraph), int(group[0][:1].isspace())))
            paragraph.clear()

    for line in group:
        heading = _ATX_HEADING.match(line) if markdown else None
        bullet = _BULLET.match(line)
        if heading:
            end_paragraph()
            elements.append(_Element("heading", " ".join(heading[2].split()), len(heading[1])))
        elif bullet:
            end_paragraph()
            elements.append(_Element("item", bullet[1].strip(), int(line[:1].isspace())))
        elif elements and elements[-1].kind == "item" and not paragraph:
            # A lazy continuation line: the list item goes on.
            elements[-1] = elements[-1]._replace(text=f"{elements[-1].text} {line.strip()}")
        else:
            paragraph.append(line.strip())
    end_paragraph()
    return elements


def _is_debris(line: str) -> bool:
    return bool(line.strip()) and bool(_DEBRIS.match(line.strip()))


def _looks_like_heading(line: str) -> bool:
    text = line.strip()
    unquoted = text.rstrip("”’\"')]")
    return (
        len(text) <= 80
        and len(text.split()) <= 12
        and not unquoted.endswith((".", ",", ";", ":", "…"))
        and not _BULLET.match(line)
        and any(char.isalpha() for char in text)
    )

"""Read an article and find its sections: headings, "Lead phrase:" list items and the text under them.

- Paragraphs are separated by blank lines; hard-wrapped lines are joined. Non-breaking and other odd spaces
  pasted from a web page become plain spaces.
- Headings are Markdown ATX headings (`#`, `##`, …). An article without any reads a short standalone line
  (at most 12 words and 80 characters, not a list item, not ending in `.` `,` `;` `:` or `…`) as a heading.
  A heading that opens the article and outranks the headings after it (in plain text: any opening heading
  followed by others) is its title: it names the whole piece (the series title) and is never a topic.
- A heading with no text under it (followed at once by a heading of its rank or higher, or by the end) is a
  short standalone line, not a heading: it stays in the text as a paragraph, so no line is lost.
- Lists keep their shape: bullets (`•`, `-`, `*`), numbered items (`1.`, `2)`), and nesting by indentation.
  A bullet that opens with a "Lead phrase:" (at most 60 characters, may be bold) is a section of its own
  under the heading above it, the rest of the item (first letter capitalised) its text. An unindented
  paragraph after such a list belongs to the heading above the list again.
- Quotes: Markdown `>` blocks, and in plain text a standalone line wholly inside quotation marks.
- Page debris (`debris.py`) is dropped and listed in `Article.debris` with its line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from newsletter.errors import LessonError
from newsletter.split.debris import Debris, is_debris

_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.+?)(?:\s+#+)?\s*$")
_BULLET = re.compile(r"^(\s*)[•*-]\s+(\S.*)$")
_NUMBERED = re.compile(r"^(\s*)(\d{1,3})[.)]\s+(\S.*)$")
_QUOTE_LINE = re.compile(r"^\s{0,3}>\s?(.*)$")
_LEAD_PHRASE = re.compile(r"^(?:\*\*|__)?(?P<lead>[^:*_]{1,60})(?:(?:\*\*|__):|:(?:\*\*|__)?)\s+(?P<rest>\S.*)$")
_QUOTED_LINE = re.compile(r"^[“\"‘'].+[”\"’'](?:\s*[—–-]{1,2}\s*\S.*)?$")
_ODD_SPACES = str.maketrans({"\u00a0": " ", "\u2007": " ", "\u202f": " ", "\u200b": "", "\u00ad": "", "\ufeff": ""})


class _Element(NamedTuple):
    kind: Literal["heading", "item", "paragraph", "quote"]
    text: str
    level: int = 0
    """The Markdown level of a heading; for an item or paragraph, 1 when it is indented."""
    marker: str = "-"
    """An item's list marker as the draft writes it: "-", "1.", …, indented two spaces per level of nesting."""


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

    @property
    def words(self) -> int:
        return sum(len(block.split()) for block in self.blocks)


@dataclass(frozen=True)
class Article:
    """An article's sections in order, its title (if it opens with one) and the debris dropped from it."""

    sections: list[Section]
    title: str
    debris: list[Debris]


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


def parse_article(text: str, source: str) -> Article:
    """Find the article's sections in order, without page debris and without headings that hold no text."""
    lines: list[str] = []
    debris: list[Debris] = []
    for number, line in enumerate(text.translate(_ODD_SPACES).replace("\r\n", "\n").split("\n"), 1):
        if is_debris(line):
            debris.append(Debris(number, line.strip()))
            lines.append("")  # debris also ends a paragraph
        else:
            lines.append(line)
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
    elements = _standalone_lines(elements)
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
        lead = _LEAD_PHRASE.match(element.text) if element.kind == "item" and element.marker == "-" else None
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
        current.blocks.append(_block_text(element))
    title = sections[0].heading if sections and sections[0].is_title else ""
    return Article(_without_empty(sections), title, debris)


def parse_sections(text: str, source: str) -> list[Section]:
    """The article's sections in order (see `parse_article`)."""
    return parse_article(text, source).sections


def _block_text(element: _Element) -> str:
    if element.kind == "item":
        return f"{element.marker} {element.text}"
    if element.kind == "quote":
        return "\n".join(f"> {line}".rstrip() for line in element.text.split("\n"))
    return element.text


def _standalone_lines(elements: list[_Element]) -> list[_Element]:
    """Headings with no text under them (not the opening one) are short standalone lines: keep them as text."""
    kept = list(elements)
    for index in range(1, len(elements)):
        element = elements[index]
        following = elements[index + 1] if index + 1 < len(elements) else None
        if element.kind != "heading" or (
            following is not None and (following.kind != "heading" or following.level > element.level)
        ):
            continue
        kept[index] = _Element("paragraph", element.text)
    return kept


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
    """Classify one run of non-blank lines into headings, list items, quotes and a paragraph."""
    if all(_QUOTE_LINE.match(line) for line in group):
        return [_quote(group)]
    if not markdown and len(group) == 1:
        line = " ".join(group[0].split())
        if _QUOTED_LINE.match(line):
            return [_Element("quote", line)]
        if _looks_like_heading(group[0]):
            return [_Element("heading", line, 2)]
    elements: list[_Element] = []
    paragraph: list[str] = []
    # One entry per open list level: its indent in the article, its indent in the draft, its latest marker.
    levels: list[tuple[int, str, str]] = []

    def end_paragraph() -> None:
        if paragraph:
            elements.append(_Element("paragraph", " ".join(paragraph), int(group[0][:1].isspace())))
            paragraph.clear()

    for line in group:
        heading = _ATX_HEADING.match(line) if markdown else None
        item = _BULLET.match(line) or _NUMBERED.match(line)
        if heading:
            end_paragraph()
            elements.append(_Element("heading", " ".join(heading[2].split()), len(heading[1])))
        elif item and not (paragraph and item.re is _NUMBERED):
            end_paragraph()
            indent = len(item[1].expandtabs(4))
            while levels and indent < levels[-1][0]:
                levels.pop()
            if not levels or indent > levels[-1][0] + 1:
                # A nested list starts where its parent item's text starts, as CommonMark requires.
                nesting = levels[-1][1] + " " * (len(levels[-1][2]) + 1) if levels else ""
                levels.append((indent, nesting, ""))
            marker = f"{item[2]}." if item.re is _NUMBERED else "-"
            levels[-1] = (levels[-1][0], levels[-1][1], marker)
            elements.append(
                _Element("item", item[item.lastindex or 0].strip(), int(indent > 0), levels[-1][1] + marker)
            )
        elif elements and elements[-1].kind == "item" and not paragraph:
            # A lazy continuation line: the list item goes on.
            elements[-1] = elements[-1]._replace(text=f"{elements[-1].text} {line.strip()}")
        else:
            paragraph.append(line.strip())
    end_paragraph()
    return elements


def _quote(group: list[str]) -> _Element:
    """A `>` block: its paragraphs joined line by line, an empty `>` line between paragraphs."""
    paragraphs: list[list[str]] = [[]]
    for line in group:
        match = _QUOTE_LINE.match(line)
        content = match[1].strip() if match else ""
        if content:
            paragraphs[-1].append(content)
        elif paragraphs[-1]:
            paragraphs.append([])
    return _Element("quote", "\n\n".join(" ".join(lines) for lines in paragraphs if lines))


def _looks_like_heading(line: str) -> bool:
    text = line.strip()
    unquoted = text.rstrip("”’\"')]")
    return (
        len(text) <= 80
        and len(text.split()) <= 12
        and not unquoted.endswith((".", ",", ";", ":", "…"))
        and not _BULLET.match(line)
        and not _NUMBERED.match(line)
        and any(char.isalpha() for char in text)
    )

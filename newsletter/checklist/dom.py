"""A small document tree of an email's HTML, built with the standard library's `html.parser`.

Email HTML is checked for what a mail client does with it: which text is visible, at what size, under which
heading. Comments (Outlook's `<!--[if mso]>` blocks among them) are dropped from the tree, as every client
but Outlook drops them; the raw HTML keeps them for the checks that look for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID_ELEMENTS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)
ROOT_FONT_PX = 16.0
# What browsers make of the font-size keywords, in px at the default 16 px.
FONT_KEYWORDS_PX = {
    "xx-small": 9.0,
    "x-small": 10.0,
    "small": 13.0,
    "medium": 16.0,
    "large": 18.0,
    "x-large": 24.0,
    "xx-large": 32.0,
}
# Elements whose default style shrinks their text (user-agent style sheets: 0.83em).
SHRINKING_ELEMENTS = {"small": 0.83, "sub": 0.83, "sup": 0.83}
_LENGTH = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(px|pt|em|rem|%)?\s*(?:!important)?\s*$", re.IGNORECASE)


@dataclass(eq=False)
class Element:
    tag: str
    attrs: dict[str, str]
    parent: Element | None = None
    children: list[Element | str] = field(default_factory=list)
    line: int = 0

    @property
    def style(self) -> dict[str, str]:
        """The inline `style` declarations, property names in lower case."""
        return parse_declarations(self.attrs.get("style", ""))

    def ancestors(self) -> Iterator[Element]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def iter(self) -> Iterator[Element]:
        """This element and every element below it, in document order."""
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def find_all(self, tag: str) -> list[Element]:
        return [element for element in self.iter() if element.tag == tag]

    def find(self, tag: str) -> Element | None:
        return next((element for element in self.iter() if element.tag == tag), None)

    def text(self) -> str:
        """All text below this element, whitespace collapsed."""
        return " ".join("".join(text for _, text in self.text_nodes()).split())

    def text_nodes(self) -> Iterator[tuple[Element, str]]:
        """(parent element, text) for every text node below this element, in document order."""
        for child in self.children:
            if isinstance(child, Element):
                yield from child.text_nodes()
            else:
                yield self, child

    def is_hidden(self) -> bool:
        """Whether this element or an ancestor is hidden from the reader."""
        return any(_hides(node) for node in (self, *self.ancestors()))


def _hides(element: Element) -> bool:
    style = element.style
    if "hidden" in element.attrs or style.get("display", "").startswith("none"):
        return True
    if style.get("visibility", "").startswith("hidden") or style.get("mso-hide") == "all":
        return True
    opacity = style.get("opacity", "1").replace("!important", "").strip()
    return opacity in {"0", "0.0"} or (style.get("max-height", "").startswith("0") and "overflow" in style)


def parse_declarations(text: str) -> dict[str, str]:
    """Parse `a: b; c: d` into {"a": "b", "c": "d"}."""
    declarations: dict[str, str] = {}
    for part in text.split(";"):
        name, colon, value = part.partition(":")
        if colon and name.strip():
            declarations[name.strip().lower()] = value.strip()
    return declarations


def font_size_px(value: str, parent_px: float) -> float | None:
    """A CSS font-size in px given the parent's size; None for what cannot be worked out (calc(), vw…)."""
    value = value.strip().lower().replace("!important", "").strip()
    if value in FONT_KEYWORDS_PX:
        return FONT_KEYWORDS_PX[value]
    if value == "smaller":
        return parent_px * 0.83
    if value in {"larger", "inherit"}:
        return parent_px * (1.2 if value == "larger" else 1.0)
    match = _LENGTH.match(value)
    if not match:
        return None
    number, unit = float(match.group(1)), (match.group(2) or "px").lower()
    factors = {"px": 1.0, "pt": 4 / 3, "em": parent_px, "rem": ROOT_FONT_PX, "%": parent_px / 100}
    return number * factors[unit]


def effective_font_px(element: Element) -> float:
    """The font size a text node directly inside `element` is shown at, from inline styles and element defaults."""
    chain = [*reversed(list(element.ancestors())), element]
    size = ROOT_FONT_PX
    for node in chain:
        size *= SHRINKING_ELEMENTS.get(node.tag, 1.0)
        declared = node.style.get("font-size")
        computed = font_size_px(declared, size) if declared is not None else None
        if computed is not None:
            size = computed
    return size


def px_length(value: str) -> float | None:
    """A length in px (`600px`, `600`), or None for other units."""
    match = _LENGTH.match(value)
    if not match or (match.group(2) or "px").lower() != "px":
        return None
    return float(match.group(1))


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        if not self.doctype:
            self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs}, self.stack[-1], line=self.getpos()[0])
        self.stack[-1].children.append(element)
        if tag not in VOID_ELEMENTS:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs}, self.stack[-1], line=self.getpos()[0])
        self.stack[-1].children.append(element)

    def handle_endtag(self, tag: str) -> None:
        # Close up to the matching open element; a stray end tag closes nothing.
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


@dataclass
class Document:
    doctype: str
    root: Element

    @property
    def body(self) -> Element | None:
        return self.root.find("body")

    @property
    def head(self) -> Element | None:
        return self.root.find("head")


def parse_html(source: str) -> Document:
    """Build the tree of an HTML document."""
    builder = _TreeBuilder()
    builder.feed(source)
    builder.close()
    return Document(doctype=builder.doctype, root=builder.root)


def css_rules(stylesheet: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(selector, declarations) of each rule in a style sheet, including rules nested in @media blocks."""
    stylesheet = re.sub(r"/\*.*?\*/", "", stylesheet, flags=re.DOTALL)
    for match in re.finditer(r"([^{}]*)\{([^{}]*)\}", stylesheet):
        yield match.group(1).strip(), parse_declarations(match.group(2))

"""The lesson dialect: the parser, and the checks a body must pass before it may be rendered or sent."""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath

from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.attrs import attrs_plugin

from newsletter.errors import LessonError

MEDIA_PATH = "/media/"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
CONTENT_WIDTH_PX = 552  # the 600 px card less its 24 px padding on each side
IMAGE_ATTRS = frozenset({"src", "alt", "width", "height"})
BUTTON_CLASS = "button"
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
LineOf = Callable[[str], int]
"""Where in the body a piece of Markdown source stands: the line to name in an error."""


@cache
def markdown_parser() -> MarkdownIt:
    """The one Markdown dialect of lessons: CommonMark, tables, {attrs}; no raw HTML; XHTML for MJML's XML parser."""
    options = {"html": False, "xhtmlOut": True, "typographer": False}
    return MarkdownIt("commonmark", options).enable("table").use(attrs_plugin)


@dataclass(frozen=True)
class MediaFile:
    """A local image of the lessons folder, as the email links it."""

    path: Path
    name: str
    """The path below the lessons folder, with `/` separators: what follows MEDIA_PATH in the URL."""

    @property
    def version(self) -> str:
        """A digest of the content: a changed image gets a new URL, past image proxies' caches."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:10]


def local_image(folder: Path, src: str) -> MediaFile | None:
    """The file a relative image `src` names inside `folder`; None for a URL. ValueError says what is wrong."""
    if _SCHEME.match(src) or src.startswith("//"):
        return None
    relative = PurePosixPath(src.split("?", 1)[0].split("#", 1)[0])
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ValueError(f"image {src!r} must be a path inside the lessons folder, like images/photo.jpg")
    if relative.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"image {src!r} must be a {', '.join(IMAGE_SUFFIXES)} file (what every mail client shows)")
    path = folder / relative
    if not path.is_file():
        raise ValueError(f"image {src!r} not found: expected the file {path}")
    return MediaFile(path, str(relative))


def quote_depths(tokens: Sequence[Token]) -> list[int]:
    """How many blockquotes each token stands in."""
    depths, depth = [], 0
    for token in tokens:
        depth += (token.type == "blockquote_open") - (token.type == "blockquote_close")
        depths.append(depth)
    return depths


def is_button(inline: Token) -> bool:
    """Whether a paragraph's inline content is one link marked `{.button}` and nothing else."""
    children = [child for child in inline.children or [] if not (child.type == "text" and not child.content.strip())]
    return (
        len(children) >= 3
        and children[0].type == "link_open"
        and children[-1].type == "link_close"
        and children[0].attrs.get("class") == BUTTON_CLASS
        and not any(child.type == "link_open" for child in children[1:])
    )


def check_body(path: Path, body: str, body_line: int) -> None:
    """Enforce what the email needs of a body: headings below the title, https links, complete images and buttons."""
    level = 1
    lines = body.splitlines()
    tokens = markdown_parser().parse(body)
    for index, token in enumerate(tokens):
        line = body_line + token.map[0] if token.map else None
        if token.type == "heading_open":
            depth = int(token.tag[1])
            if depth == 1:
                raise LessonError(
                    path, "use `##` headings in the body; the title is the email's only `#` heading", line
                )
            if depth > level + 1:
                raise LessonError(path, f"heading level skips from h{level} to h{depth}; use h{level + 1}", line)
            level = depth
        if token.type != "inline" or not token.map:
            continue
        paragraph = lines[token.map[0] : token.map[1]]

        def line_of(text: str, start: int = token.map[0], block: list[str] = paragraph) -> int:
            found = next((number for number, source in enumerate(block) if text in source), 0)
            return body_line + start + found

        in_paragraph = tokens[index - 1].type == "paragraph_open"
        for child in token.children or ():
            if child.type == "link_open":
                _check_link(path, child, line_of, alone=in_paragraph and is_button(token))
            elif child.type == "image":
                _check_image(path, child, line_of)


def _check_link(path: Path, link: Token, line_of: LineOf, *, alone: bool) -> None:
    href = str(link.attrs.get("href", ""))
    line = line_of(f"({href})")
    if not href.startswith(("https://", "mailto:")):
        raise LessonError(path, f"link {href!r} must be an absolute https:// URL", line)
    extra = sorted(set(link.attrs) - {"href", "class"})
    css_class = link.attrs.get("class")
    if extra or (css_class is not None and css_class != BUTTON_CLASS):
        shown = ", ".join([*extra, *([f"class {css_class!r}"] if css_class not in (None, BUTTON_CLASS) else [])])
        raise LessonError(path, f"link {href!r} has attributes {shown}; a link takes only {{.button}}", line)
    if css_class == BUTTON_CLASS and not alone:
        raise LessonError(
            path, f"button {href!r} must stand alone in its paragraph: [Label]({href}){{.button}} on its own line", line
        )


def _check_image(path: Path, image: Token, line_of: LineOf) -> None:
    src = str(image.attrs.get("src", ""))
    line = line_of(f"({src})")
    alt = image.content.strip() or "What the image shows"
    example = f"![{alt}]({src or 'images/photo.jpg'}){{width={CONTENT_WIDTH_PX} height=368}}"
    extra = sorted(set(image.attrs) - IMAGE_ATTRS)
    if extra:
        raise LessonError(
            path, f"image {src!r} has unknown attributes {', '.join(extra)}; allowed: width, height", line
        )
    if not image.content.strip():
        raise LessonError(
            path, f"image {src!r} needs alt text (what it shows, for readers without images): {example}", line
        )
    missing = [name for name in ("width", "height") if name not in image.attrs]
    if missing:
        raise LessonError(path, f"image {src!r} needs {' and '.join(missing)} in pixels: {example}", line)
    sizes: dict[str, int] = {}
    for name in ("width", "height"):
        value = str(image.attrs[name]).removesuffix("px")
        if not value.isdigit() or int(value) < 1:
            raise LessonError(path, f"image {src!r}: {name} must be a whole number of pixels, got {value!r}", line)
        sizes[name] = int(value)
    if sizes["width"] > CONTENT_WIDTH_PX:
        raise LessonError(
            path,
            f"image {src!r} is {sizes['width']} px wide; the content column is {CONTENT_WIDTH_PX} px: give the width "
            f"it is shown at (a file twice as wide stays sharp on high-density screens)",
            line,
        )
    if src.startswith("http://"):
        raise LessonError(path, f"image {src!r} must be an https:// URL (or a file in the lessons folder)", line)
    try:
        media = local_image(path.parent, src)
    except ValueError as error:
        raise LessonError(path, str(error), line) from None
    actual = image_size(media.path) if media else None
    if actual and abs(sizes["width"] * actual[1] - sizes["height"] * actual[0]) > 0.02 * actual[0] * sizes["height"]:
        # Outlook draws the width and height given; other clients keep the file's shape: the two must agree.
        height = round(sizes["width"] * actual[1] / actual[0])
        raise LessonError(
            path,
            f"image {src!r} is {actual[0]}×{actual[1]} px, a different shape from width={sizes['width']} "
            f"height={sizes['height']}; for that width use height={height}",
            line,
        )


def image_size(path: Path) -> tuple[int, int] | None:
    """The pixel size recorded in a PNG, GIF or JPEG file's header; None when it cannot be read."""
    data = path.read_bytes()
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    position = 2 if data[:2] == b"\xff\xd8" else len(data)
    while position + 9 <= len(data) and data[position] == 0xFF:
        marker, length = data[position + 1], int.from_bytes(data[position + 2 : position + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return int(width), int(height)
        position += 2 + length
    return None

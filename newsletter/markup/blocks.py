"""A lesson body as the blocks an email template lays out: runs of HTML, and the buttons between them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from markdown_it.token import Token
from markupsafe import Markup

from newsletter.markup.dialect import MEDIA_PATH, is_button, local_image, markdown_parser, quote_depths

ATTRIBUTION_MARKS = ("—", "--")
# Images scale down with narrow screens; width and height attributes keep their box while they load.
IMAGE_STYLE = "display:block;max-width:100%;height:auto;border:0;outline:none;text-decoration:none"
INLINE_IMAGE_STYLE = "max-width:100%;height:auto;border:0;vertical-align:middle"


@dataclass(frozen=True)
class Block:
    """`html`: a run of the body's HTML (paragraphs, lists, images, quotes); `button`: a call to action."""

    kind: Literal["html", "button"]
    html: Markup = field(default_factory=Markup)
    href: str = ""
    label: str = ""


def body_blocks(body: str, folder: Path, base_url: str) -> list[Block]:
    """Render a checked body: images under `folder` linked at `base_url`, top-level buttons as blocks of their own."""
    parser = markdown_parser()
    tokens = parser.parse(body)
    buttons = {i for i, token in enumerate(tokens) if token.type == "paragraph_open" and token.level == 0}
    buttons = {i for i in buttons if is_button(tokens[i + 1])}
    _prepare(tokens, folder, base_url.rstrip("/"))
    blocks: list[Block] = []
    run: list[Token] = []
    index = 0
    while index < len(tokens):
        if index in buttons:
            if run:
                blocks.append(Block("html", Markup(parser.renderer.render(run, parser.options, {}))))
                run = []
            children = tokens[index + 1].children or []
            label = "".join(child.content for child in children if child.type in ("text", "code_inline"))
            blocks.append(Block("button", href=str(children[0].attrs["href"]), label=" ".join(label.split())))
            index += 3
            continue
        run.append(tokens[index])
        index += 1
    if run:
        blocks.append(Block("html", Markup(parser.renderer.render(run, parser.options, {}))))
    return blocks


def _prepare(tokens: Sequence[Token], folder: Path, base_url: str) -> None:
    """Point images at their https URLs, size them for narrow screens, and mark quote attributions."""
    depths = quote_depths(tokens)
    for index, token in enumerate(tokens):
        if token.type == "paragraph_open" and depths[index] and _opens_with_attribution(tokens[index + 1]):
            token.attrSet("class", "quote-source")
        elif token.type == "inline":
            children = token.children or []
            alone = len([child for child in children if child.type != "softbreak"]) == 1
            for child in children:
                if child.type == "image":
                    _prepare_image(child, folder, base_url, alone)
                elif child.type == "link_open":
                    child.attrs.pop("class", None)


def _prepare_image(image: Token, folder: Path, base_url: str, alone: bool) -> None:
    src = str(image.attrs["src"])
    media = local_image(folder, src)
    if media is not None:
        src = f"{base_url}{MEDIA_PATH}{quote(media.name)}?v={media.version}"
    image.attrs = {
        "src": src,
        "alt": "",  # the renderer fills it from the Markdown alt text
        "width": str(image.attrs["width"]).removesuffix("px"),
        "height": str(image.attrs["height"]).removesuffix("px"),
        "style": IMAGE_STYLE if alone else INLINE_IMAGE_STYLE,
    }


def _opens_with_attribution(inline: Token) -> bool:
    return inline.type == "inline" and inline.content.lstrip().startswith(ATTRIBUTION_MARKS)

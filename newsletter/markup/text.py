"""A lesson body as plain text: wrapped paragraphs, bullets and numbers, links as `text (url)`, quotes as `> `."""

from __future__ import annotations

import textwrap

from markdown_it.token import Token

from newsletter.markup.dialect import markdown_parser, quote_depths

TEXT_WIDTH = 78
QUOTE_MARK = "> "


def markdown_to_text(source: str, width: int = TEXT_WIDTH) -> str:
    """Render lesson Markdown as readable plain text: wrapped paragraphs, bullets, links as `text (url)`."""
    # Each block remembers which list it belongs to (None outside lists): items of one list stay together,
    # everything else is separated by a blank line.
    blocks: list[tuple[str, int | None]] = []
    tokens = markdown_parser().parse(source)
    open_lists: list[tuple[int, int | None]] = []  # (list id, next number or None for bullets)
    depths = quote_depths(tokens)
    for index, token in enumerate(tokens):
        if token.type in ("bullet_list_open", "ordered_list_open"):
            start = int(str(token.attrs.get("start", 1))) if token.type == "ordered_list_open" else None
            open_lists.append((index, start))
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            open_lists.pop()
        elif token.type == "inline":
            opener = tokens[index - 1]
            content = _inline_text(token.children or [])
            if opener.type == "heading_open":
                underline = "-" if opener.tag == "h2" else "·"
                blocks.append((f"{content}\n{underline * min(len(content), width)}", None))
            elif open_lists and _in_list_item(tokens, index):
                list_id, counter = open_lists[-1]
                marker = f"{counter}." if counter is not None else "•"
                if counter is not None:
                    open_lists[-1] = (list_id, counter + 1)
                indent = "  " * (len(open_lists) - 1)
                text = textwrap.fill(
                    content,
                    width,
                    initial_indent=f"{indent}{marker} ",
                    subsequent_indent=indent + " " * (len(marker) + 1),
                    break_long_words=False,
                    break_on_hyphens=False,
                )
                blocks.append((text, open_lists[0][0]))
            else:
                mark = QUOTE_MARK * depths[index]
                wrapped = textwrap.fill(
                    content,
                    width,
                    initial_indent=mark,
                    subsequent_indent=mark,
                    break_long_words=False,
                    break_on_hyphens=False,
                )
                blocks.append((wrapped, None))
        elif token.type in {"fence", "code_block"}:
            blocks.append((textwrap.indent(token.content.rstrip("\n"), "    "), None))
        elif token.type == "hr":
            blocks.append(("* * *", None))
    out: list[str] = []
    for position, (block, owner) in enumerate(blocks):
        if position:
            same_list = owner is not None and owner == blocks[position - 1][1]
            out.append("\n" if same_list else "\n\n")
        out.append(block)
    return "".join(out) + "\n"


def _in_list_item(tokens: list[Token], index: int) -> bool:
    depth = 0
    for token in reversed(tokens[:index]):
        if token.type == "list_item_close":
            depth += 1
        elif token.type == "list_item_open":
            if depth == 0:
                return True
            depth -= 1
        elif token.type in ("bullet_list_open", "ordered_list_open") and depth == 0:
            return False
    return False


def _inline_text(children: list[Token]) -> str:
    parts: list[str] = []
    links: list[str] = []
    for child in children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "link_open":
            links.append(str(child.attrs.get("href", "")))
        elif child.type == "link_close" and links:
            parts.append(f" ({links.pop()})")
        elif child.type == "image":
            parts.append(f"[{child.content}]")
    return " ".join("".join(parts).split())

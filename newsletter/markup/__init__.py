"""A lesson body's Markdown: one dialect, checked once on load, rendered as email blocks and as plain text.

The dialect is CommonMark with tables and three rich elements, each written in plain Markdown plus an
attribute list in braces (the syntax of markdown-it-py's attrs plugin):

    ![A fern on a north-facing sill](images/fern.jpg){width=552 height=368}    an image
    [Book your first session](https://example.com/book){.button}              a call-to-action button
    > Watch your plants more than you water them.                             a pull quote
    >
    > — Monty Don                                                             its attribution

- Images need alt text, `width` (at most 552, the content column) and `height`, in pixels. `src` is an
  https URL or a file under the lessons folder (png, jpg, gif), linked at `[newsletter] base_url` +
  `/media/<path>`, where `newsletter serve` / `run` serve it (`dialect.MEDIA_PATH`).
- A button is a link alone in its paragraph; the template draws it (MJML's bulletproof `mj-button`).
- Every blockquote is a pull quote; a last paragraph opening with "—" (or "--") is its attribution.
- Raw HTML is not part of the dialect: `<b>` is shown as the text "<b>", never as markup.
"""

from __future__ import annotations

from newsletter.markup.blocks import Block, body_blocks
from newsletter.markup.dialect import MEDIA_PATH, MediaFile, check_body, markdown_parser
from newsletter.markup.text import markdown_to_text

__all__ = ["MEDIA_PATH", "Block", "MediaFile", "body_blocks", "check_body", "markdown_parser", "markdown_to_text"]

"""Lessons and the confirmation email into HTML (Jinja2, then MJML) and a plain-text part.

Rendering is split by what it depends on. Everything that depends only on the lesson (Jinja2, MJML, the
Markdown) is rendered once and cached with placeholders; per subscriber only the placeholders are filled in,
HTML-escaped in the HTML part. That keeps MJML's cost off the per-message path. Templates therefore see
subscriber values (`subscriber.*`, `links.*`) as opaque text to print; they cannot branch on them, which is
why the greeting arrives ready-made as `subscriber.greeting`.
"""

from __future__ import annotations

import html
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import mjml
from markdown_it.token import Token
from markupsafe import Markup

from newsletter.config import Settings
from newsletter.errors import TemplateError
from newsletter.lessons import Lesson, Series, markdown_parser

TEXT_WIDTH = 78
# Plain ASCII markers: Jinja's escaping and MJML leave them alone in text and in attributes alike (MJML
# rewrites non-ASCII code points inside attributes, so private-use characters would not survive an href).
_OPEN, _CLOSE = "@@nl:", "@@"
_PLACEHOLDER = re.compile(r"@@nl:([a-z_.]+)@@")
RECIPIENT_FIELDS = ("subscriber.greeting", "subscriber.name", "subscriber.email", "subscriber.schedule")
LINK_FIELDS = ("links.unsubscribe", "links.preferences", "links.confirm")


@dataclass(frozen=True)
class Recipient:
    """What a template may know about the person it is rendered for."""

    email: str
    name: str
    schedule: str
    unsubscribe_url: str
    preferences_url: str
    confirm_url: str = ""

    def values(self) -> dict[str, str]:
        name = " ".join(self.name.split())  # no control characters or line breaks reach any part
        return {
            "subscriber.greeting": f"Hi {name}," if name else "Hi there,",
            "subscriber.name": name,
            "subscriber.email": self.email,
            "subscriber.schedule": self.schedule,
            "links.unsubscribe": self.unsubscribe_url,
            "links.preferences": self.preferences_url,
            "links.confirm": self.confirm_url,
        }


@dataclass(frozen=True)
class RenderedEmail:
    """One email's content. `html_pieces` and `text_pieces`, when set, are the same parts split into the
    template's text (even positions, the same objects for every subscriber of a lesson) and the values
    filled in (odd positions), so the wire format can encode the template's text once per lesson."""

    subject: str
    preheader: str
    html: str
    text: str
    html_pieces: tuple[str, ...] = ()
    text_pieces: tuple[str, ...] = ()


@dataclass
class _Compiled:
    subject: str
    preheader: str
    html: str
    text: str
    fields: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        # Split once at the placeholders, so filling is a join rather than a scan of the whole email.
        self._html_pieces = _PLACEHOLDER.split(self.html)
        self._text_pieces = _PLACEHOLDER.split(self.text)

    def fill(self, values: Mapping[str, str]) -> RenderedEmail:
        escaped = {key: html.escape(value, quote=True) for key, value in values.items()}
        html_pieces = _filled(self._html_pieces, escaped)
        text_pieces = _filled(self._text_pieces, values)
        return RenderedEmail(
            subject=self.subject,
            preheader=self.preheader,
            html="".join(html_pieces),
            text="".join(text_pieces),
            html_pieces=html_pieces,
            text_pieces=text_pieces,
        )


def _filled(pieces: list[str], values: Mapping[str, str]) -> tuple[str, ...]:
    """Text and placeholder names alternate in `pieces` (as `re.split` with one group leaves them)."""
    filled = pieces.copy()
    filled[1::2] = [values[name] for name in pieces[1::2]]
    return tuple(filled)


def _placeholders(names: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Template variables whose values are markers filled in per subscriber: {"links": {"unsubscribe": …}}."""
    grouped: dict[str, dict[str, str]] = {}
    for name in names:
        group, key = name.split(".")
        grouped.setdefault(group, {})[key] = f"{_OPEN}{name}{_CLOSE}"
    return grouped


class Renderer:
    """Render the series' emails with the project's templates; cheap to call once per subscriber."""

    def __init__(self, settings: Settings, series: Series) -> None:
        self.settings = settings
        self.series = series
        self.environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(settings.newsletter.templates),
            autoescape=jinja2.select_autoescape(enabled_extensions=("mjml.j2",), default_for_string=True),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        self._cache: dict[tuple[str, str], _Compiled] = {}

    def lesson(self, lesson: Lesson, recipient: Recipient) -> RenderedEmail:
        """Render one lesson for one subscriber."""
        compiled = self._cache.get(("lesson", lesson.slug))
        if compiled is None:
            compiled = self._compile_lesson(lesson)
            self._cache["lesson", lesson.slug] = compiled
        return compiled.fill(recipient.values())

    def confirmation(self, recipient: Recipient) -> RenderedEmail:
        """Render the double opt-in email."""
        compiled = self._cache.get(("confirmation", ""))
        if compiled is None:
            subject = f"Confirm your subscription to {self.series.title}"
            preheader = f"One click and lesson 1 of {self.series.weeks} is on its way."
            compiled = self._compile("confirmation", subject, preheader, {})
            self._cache["confirmation", ""] = compiled
        return compiled.fill(recipient.values())

    def _compile_lesson(self, lesson: Lesson) -> _Compiled:
        upcoming = self.series.next_after(lesson)
        context = {
            "lesson": {
                "week": lesson.week,
                "slug": lesson.slug,
                "title": lesson.title,
                "subject": lesson.subject,
                "preheader": lesson.preheader,
                "summary": lesson.summary,
                "body_html": Markup(markdown_parser().render(lesson.body)),
                "body_text": markdown_to_text(lesson.body),
            },
            "next_lesson": upcoming and {"week": upcoming.week, "title": upcoming.title, "summary": upcoming.summary},
        }
        return self._compile("lesson", lesson.subject, lesson.preheader, context, source=str(lesson.path))

    def _compile(self, kind: str, subject: str, preheader: str, extra: dict[str, Any], source: str = "") -> _Compiled:
        context: dict[str, Any] = {
            "subject": subject,
            "preheader": preheader,
            "newsletter": {
                "name": self.settings.newsletter.name,
                "address": self.settings.sender.address,
                "base_url": self.settings.newsletter.base_url,
            },
            "series": {
                "title": self.series.title,
                "slug": self.series.slug,
                "description": self.series.description,
                "weeks": self.series.weeks,
            },
            **_placeholders(RECIPIENT_FIELDS + LINK_FIELDS),
            **extra,
        }
        mjml_source = self._render_template(f"{kind}.mjml.j2", context)
        text = self._render_template(f"{kind}.txt.j2", context)
        try:
            html_part = mjml.mjml2html(mjml_source, fonts={}, disable_comments=True)
        except ValueError as error:
            where = f" (rendering {source})" if source else ""
            raise TemplateError(
                f"{self.settings.newsletter.templates / f'{kind}.mjml.j2'}{where}: the template produced invalid "
                f"MJML: {error}"
            ) from None
        return _Compiled(subject=subject, preheader=preheader, html=html_part, text=_tidy_text(text))

    def _render_template(self, name: str, context: dict[str, Any]) -> str:
        try:
            return self.environment.get_template(name).render(context)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(f"{error.filename or name} line {error.lineno}: {error.message}") from None
        except jinja2.TemplateNotFound as error:
            raise TemplateError(f"{self.settings.newsletter.templates / str(error.name)}: template not found") from None
        except jinja2.UndefinedError as error:
            raise TemplateError(f"{self.settings.newsletter.templates / name}: {error.message}") from None


def _tidy_text(text: str) -> str:
    """Collapse runs of blank lines left by template tags; end with one newline."""
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


def markdown_to_text(source: str, width: int = TEXT_WIDTH) -> str:
    """Render lesson Markdown as readable plain text: wrapped paragraphs, bullets, links as `text (url)`."""
    # Each block remembers which list it belongs to (None outside lists): items of one list stay together,
    # everything else is separated by a blank line.
    blocks: list[tuple[str, int | None]] = []
    tokens = markdown_parser().parse(source)
    open_lists: list[tuple[int, int | None]] = []  # (list id, next number or None for bullets)
    for index, token in enumerate(tokens):
        if token.type in ("bullet_list_open", "ordered_list_open"):
            open_lists.append((index, 1 if token.type == "ordered_list_open" else None))
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
                blocks.append((textwrap.fill(content, width, break_long_words=False, break_on_hyphens=False), None))
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

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
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import mjml

from newsletter.config import Settings
from newsletter.errors import TemplateError
from newsletter.lessons import Lesson, Series
from newsletter.markup import body_blocks, markdown_to_text

# Plain ASCII markers: Jinja's escaping and MJML leave them alone in text and in attributes alike (MJML
# rewrites non-ASCII code points inside attributes, so private-use characters would not survive an href).
_OPEN, _CLOSE = "@@nl:", "@@"
_PLACEHOLDER = re.compile(r"@@nl:([a-z_.]+)@@")
# mjml-python writes the hidden preheader in white, which SpamAssassin (HTML_FONT_LOW_CONTRAST) takes for text
# hidden against the light page. It is hidden by display:none and opacity:0 already, so the colour goes.
_WHITE_PREHEADER = '<div style="display:none;font-size:1px;color:#ffffff;line-height:1px;'
_PREHEADER = '<div style="display:none;font-size:1px;line-height:1px;'
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
                "blocks": body_blocks(lesson.body, lesson.path.parent, self.settings.newsletter.base_url),
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
        html_part = html_part.replace(_WHITE_PREHEADER, _PREHEADER, 1)
        return _Compiled(subject=subject, preheader=preheader, html=html_part, text=_tidy_text(text))

    def _render_template(self, name: str, context: dict[str, Any]) -> str:
        try:
            return self.environment.get_template(name).render(context)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(f"{error.filename or name} line {error.lineno}: {error.message}") from None
        except jinja2.TemplateNotFound as error:
            missing = self.settings.newsletter.templates / str(error.name)
            if name == error.name:
                raise TemplateError(f"{missing}: template not found") from None
            raise TemplateError(f"{self._where(error, name)}: {missing} is named here but not found") from None
        except jinja2.UndefinedError as error:
            raise TemplateError(f"{self._where(error, name)}: {error.message}") from None
        except Exception as error:  # a runtime error inside the template: `{{ "%d" % text }}`, a division by 0
            raise TemplateError(f"{self._where(error, name)}: {type(error).__name__}: {error}") from None

    def _where(self, error: BaseException, name: str) -> str:
        """The template file and line a render-time error happened at (Jinja2 puts them in the traceback)."""
        folder = self.settings.newsletter.templates.resolve()
        for frame in reversed(traceback.extract_tb(error.__traceback__)):
            path = Path(frame.filename)
            if path.is_relative_to(folder) and path.is_file():
                return f"{path} line {frame.lineno}"
        return str(self.settings.newsletter.templates / name)


def _tidy_text(text: str) -> str:
    """Collapse runs of blank lines left by template tags; end with one newline."""
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"

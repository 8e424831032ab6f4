"""The course: `series.toml` plus one Markdown file per lesson with TOML front matter between `+++` lines."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from newsletter.errors import LessonError
from newsletter.markup import check_body, markdown_parser

FRONT_MATTER_FENCE = "+++"
SLUG_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
SUBJECT_MAX = 78
PREHEADER_MAX = 140
LESSON_KEYS = {"week": int, "slug": str, "title": str, "subject": str, "preheader": str, "summary": str}
REQUIRED_LESSON_KEYS = ("week", "slug", "title", "subject", "preheader")
SERIES_KEYS = {"title": str, "slug": str, "description": str, "cadence": str, "source": str}
# The sections every lesson ends with, which only its author can write: `check` fails them while empty.
EDITOR_SECTIONS = ("Key takeaways", "Try this week")


@dataclass(frozen=True)
class Lesson:
    week: int
    slug: str
    title: str
    subject: str
    preheader: str
    summary: str
    body: str
    path: Path
    body_line: int = 1

    @property
    def label(self) -> str:
        return f"{self.path.name} (week {self.week})"


@dataclass(frozen=True)
class Series:
    title: str
    slug: str
    description: str
    cadence: str
    lessons: tuple[Lesson, ...]
    folder: Path
    source: Path | None = None
    _by_slug: dict[str, Lesson] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_slug.update({lesson.slug: lesson for lesson in self.lessons})

    def __iter__(self) -> Iterator[Lesson]:
        return iter(self.lessons)

    def __len__(self) -> int:
        return len(self.lessons)

    def lesson(self, slug: str) -> Lesson:
        """The lesson with this slug; a LessonError lists the slugs that exist."""
        try:
            return self._by_slug[slug]
        except KeyError:
            known = ", ".join(lesson.slug for lesson in self.lessons)
            raise LessonError(self.folder, f"no lesson with slug {slug!r}; lessons: {known}") from None

    def week(self, number: int) -> Lesson | None:
        """The lesson of that week, or None beyond the end of the course."""
        return self.lessons[number - 1] if 1 <= number <= len(self.lessons) else None

    def next_after(self, lesson: Lesson) -> Lesson | None:
        return self.week(lesson.week + 1)

    @cached_property
    def weeks(self) -> int:
        return len(self.lessons)


def _toml_error_line(error: tomllib.TOMLDecodeError) -> int | None:
    match = re.search(r"line (\d+)", str(error))
    return int(match.group(1)) if match else None


def toml_string(value: str) -> str:
    """A TOML basic string holding `value` exactly: quotes, backslashes and control characters escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda match: f"\\u{ord(match[0]):04x}", escaped) + '"'


def key_line(text: str, key: str, default: int = 1) -> int:
    """The 1-based line where `key = …` is set in a TOML text, for error messages."""
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return default


def _check_types(path: Path, data: dict[str, Any], schema: Mapping[str, type], what: str, text: str) -> None:
    for key, value in data.items():
        if key not in schema:
            raise LessonError(path, f"unknown {what} key {key!r}; allowed: {', '.join(schema)}", key_line(text, key))
        expected = schema[key]
        if not isinstance(value, expected) or isinstance(value, bool):
            kind = "an integer" if expected is int else "a string"
            raise LessonError(path, f"`{key}` must be {kind}, got {value!r}", key_line(text, key))


def split_front_matter(path: Path, text: str) -> tuple[dict[str, Any], str, int]:
    """Return (front matter, Markdown body, line number where the body starts)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != FRONT_MATTER_FENCE:
        raise LessonError(path, f"must start with a `{FRONT_MATTER_FENCE}` line opening the TOML front matter", 1)
    try:
        closing = next(i for i, line in enumerate(lines[1:], start=1) if line.strip() == FRONT_MATTER_FENCE)
    except StopIteration:
        raise LessonError(path, f"front matter is never closed by a `{FRONT_MATTER_FENCE}` line", 1) from None
    try:
        data = tomllib.loads("\n".join(lines[1:closing]))
    except tomllib.TOMLDecodeError as error:
        line = _toml_error_line(error)
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(error))
        raise LessonError(path, f"front matter is not valid TOML: {reason}", line + 1 if line else None) from None
    return data, "\n".join(lines[closing + 1 :]).strip("\n") + "\n", closing + 2


def load_lesson(path: Path) -> Lesson:
    """Parse and validate one lesson file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise LessonError(path, f"is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise LessonError(path, f"cannot be read: {error.strerror}") from None
    data, body, body_line = split_front_matter(path, text)
    _check_types(path, data, LESSON_KEYS, "front matter", text)
    missing = [key for key in REQUIRED_LESSON_KEYS if not str(data.get(key, "")).strip()]
    if missing:
        raise LessonError(path, f"front matter is missing required key(s): {', '.join(missing)}", 1)
    if data["week"] < 1:
        raise LessonError(path, f"`week` must be 1 or more, got {data['week']}", key_line(text, "week"))
    if not SLUG_PATTERN.match(data["slug"]):
        raise LessonError(
            path, f"`slug` must be lowercase letters, digits and dashes, got {data['slug']!r}", key_line(text, "slug")
        )
    for key in ("title", "subject", "preheader", "summary"):
        if any(char in str(data.get(key, "")) for char in "\r\n"):
            raise LessonError(path, f"`{key}` must be one line", key_line(text, key))
    if len(data["subject"]) > SUBJECT_MAX:
        raise LessonError(
            path,
            f"`subject` must be at most {SUBJECT_MAX} characters, has {len(data['subject'])}",
            key_line(text, "subject"),
        )
    if len(data["preheader"]) > PREHEADER_MAX:
        raise LessonError(path, f"`preheader` must be at most {PREHEADER_MAX} characters", key_line(text, "preheader"))
    if not body.strip():
        raise LessonError(path, "has no Markdown body after the front matter", body_line)
    check_body(path, body, body_line)
    return Lesson(
        week=data["week"],
        slug=data["slug"],
        title=data["title"].strip(),
        subject=data["subject"].strip(),
        preheader=data["preheader"].strip(),
        summary=str(data.get("summary", "")).strip(),
        body=body,
        path=path,
        body_line=body_line,
    )


def empty_editor_sections(lesson: Lesson) -> list[tuple[str, int]]:
    """(heading, file line) of each "Key takeaways" / "Try this week" section with nothing written under it."""
    tokens = markdown_parser().parse(lesson.body)
    empty: list[tuple[str, int]] = []
    for index, token in enumerate(tokens):
        if token.type != "heading_open" or not token.map:
            continue
        heading = tokens[index + 1].content.strip()
        if heading not in EDITOR_SECTIONS:
            continue
        following = tokens[index + 3 :]
        # Only what stands under the heading itself counts: a sub-heading with text is not the section written.
        ends = next((i for i, later in enumerate(following) if later.type == "heading_open"), None)
        content = following[:ends]
        if not any(later.type == "inline" and later.content.strip() for later in content):
            empty.append((heading, lesson.body_line + token.map[0]))
    return empty


def _line_in(lesson: Lesson, key: str) -> int:
    return key_line(lesson.path.read_text(encoding="utf-8-sig"), key)


def load_series(folder: Path) -> Series:
    """Load series.toml and every `*.md` lesson in the folder, ordered by week; weeks run 1..N without gaps."""
    folder = Path(folder)
    series_file = folder / "series.toml"
    if not series_file.is_file():
        raise LessonError(series_file, "not found: a lessons folder needs a series.toml (title, slug, description)")
    try:
        meta = tomllib.loads(series_file.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as error:
        raise LessonError(series_file, f"not valid TOML: {error}", _toml_error_line(error)) from None
    _check_types(series_file, meta, SERIES_KEYS, "series", series_file.read_text(encoding="utf-8-sig"))
    for key in ("title", "slug"):
        if not str(meta.get(key, "")).strip():
            raise LessonError(series_file, f"missing required key `{key}`")
    if not SLUG_PATTERN.match(meta["slug"]):
        raise LessonError(series_file, f"`slug` must be lowercase letters, digits and dashes, got {meta['slug']!r}")
    lessons = sorted((load_lesson(path) for path in sorted(folder.glob("*.md"))), key=lambda lesson: lesson.week)
    if not lessons:
        raise LessonError(
            folder, "has no lesson files (*.md): `newsletter split ARTICLE --out` this folder, or write 01-<slug>.md"
        )
    seen_slugs: dict[str, Lesson] = {}
    for index, lesson in enumerate(lessons, start=1):
        if lesson.slug in seen_slugs:
            other = seen_slugs[lesson.slug].path.name
            raise LessonError(lesson.path, f"slug {lesson.slug!r} is already used by {other}", _line_in(lesson, "slug"))
        seen_slugs[lesson.slug] = lesson
        if lesson.week != index:
            previous = lessons[index - 2]
            if index > 1 and previous.week == lesson.week:
                raise LessonError(
                    lesson.path, f"week {lesson.week} is already used by {previous.path.name}", _line_in(lesson, "week")
                )
            raise LessonError(
                lesson.path, f"weeks must run 1..N without gaps; expected week {index} here", _line_in(lesson, "week")
            )
    source = folder / meta["source"] if meta.get("source") else None
    return Series(
        title=meta["title"],
        slug=meta["slug"],
        description=meta.get("description", ""),
        cadence=meta.get("cadence", "weekly"),
        lessons=tuple(lessons),
        folder=folder,
        source=source,
    )

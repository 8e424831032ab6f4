"""The course: `series.toml` plus one Markdown file per lesson with TOML front matter between `+++` lines.

A lesson's identity is its slug: the ledger, a reader's progress and the Message-ID are keyed by it, and the
order comes from the lessons' `week` numbers. So lessons can be inserted, removed, reordered and renamed
while readers are in the middle of the course (`planning.next_lesson` says who gets what next):

    draft = true          keep it out of every send; readers wait before it (their delivery is held)
    replaces = "old"      a rename: what readers had as "old" counts as this lesson (a list for several)
    catch_up = "send"     readers already past it who never had it get it next (default: series.toml
                          `catch_up`, else "skip": a lesson inserted behind a reader is not sent to them)

`load_series(folder, lenient=True)` (the daemon) keeps going when a lesson file is broken: the file becomes
a placeholder in its place in the order, never sent, and `Series.broken` says why.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

from newsletter.errors import LessonError
from newsletter.markup import check_body, markdown_parser

FRONT_MATTER_FENCE = "+++"
SLUG_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
SUBJECT_MAX = 78
PREHEADER_MAX = 140
CatchUp = Literal["skip", "send"]
CATCH_UP_POLICIES: tuple[str, ...] = get_args(CatchUp)
# The double opt-in email travels the ledger under this name, so no lesson may take it.
RESERVED_SLUGS = frozenset({"confirmation"})
LESSON_KEYS: dict[str, type | tuple[type, ...]] = {
    "week": int,
    "slug": str,
    "title": str,
    "subject": str,
    "preheader": str,
    "summary": str,
    "draft": bool,
    "replaces": (str, list),
    "catch_up": str,
}
REQUIRED_LESSON_KEYS = ("week", "slug", "title", "subject", "preheader")
SERIES_KEYS: dict[str, type | tuple[type, ...]] = {
    "title": str,
    "slug": str,
    "description": str,
    "cadence": str,
    "source": str,
    "catch_up": str,
}
_FILE_NAME = re.compile(r"^(?:(\d+)[-_ ])?(.+?)$")
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
    draft: bool = False
    replaces: tuple[str, ...] = ()
    catch_up: CatchUp = "skip"
    problem: str = ""  # a broken file kept in its place by a lenient load: never sent

    @property
    def label(self) -> str:
        return f"{self.path.name} (week {self.week})"

    @property
    def sendable(self) -> bool:
        """Whether this lesson may go out at all (not a draft, not a broken file)."""
        return not self.draft and not self.problem


@dataclass(frozen=True)
class Series:
    title: str
    slug: str
    description: str
    cadence: str
    lessons: tuple[Lesson, ...]
    folder: Path
    source: Path | None = None
    broken: tuple[LessonError, ...] = ()  # files a lenient load kept as placeholders
    _by_slug: dict[str, Lesson] = field(default_factory=dict, compare=False, repr=False)
    _identity: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_slug.update({lesson.slug: lesson for lesson in self.lessons})
        self._index.update({lesson.slug: index for index, lesson in enumerate(self.lessons)})
        self._identity.update({old: lesson.slug for lesson in self.lessons for old in lesson.replaces})
        self._identity.update({lesson.slug: lesson.slug for lesson in self.lessons})

    def identity(self, slug: str) -> str | None:
        """The current lesson a slug in the ledger stands for (itself, or the lesson that replaces it)."""
        return self._identity.get(slug)

    def index(self, slug: str) -> int | None:
        """Where the lesson a ledger slug stands for sits in the order (0-based), or None if it is gone."""
        current = self._identity.get(slug)
        return None if current is None else self._index[current]

    def fingerprint(self) -> str:
        """What the ledger must be re-planned for when it changes: order, identities, drafts, catch-up."""
        parts = [
            f"{lesson.slug}|{','.join(lesson.replaces)}|{int(not lesson.sendable)}|{lesson.catch_up}"
            for lesson in self.lessons
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]

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
        """The next lesson in the order that may go out (the "next week" teaser)."""
        return next((later for later in self.lessons[lesson.week :] if later.sendable), None)

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


def _check_types(
    path: Path, data: dict[str, Any], schema: Mapping[str, type | tuple[type, ...]], what: str, text: str
) -> None:
    names = {int: "an integer", str: "a string", bool: "true or false", list: "a list of strings"}
    for key, value in data.items():
        if key not in schema:
            raise LessonError(path, f"unknown {what} key {key!r}; allowed: {', '.join(schema)}", key_line(text, key))
        spec = schema[key]
        kinds: tuple[type, ...] = spec if isinstance(spec, tuple) else (spec,)
        wrong_bool = isinstance(value, bool) and bool not in kinds
        wrong_list = isinstance(value, list) and not all(isinstance(item, str) for item in value)
        if not isinstance(value, kinds) or wrong_bool or wrong_list:
            kind = " or ".join(names[kind] for kind in kinds)
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


def load_lesson(path: Path, default_catch_up: CatchUp = "skip") -> Lesson:
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
    if data["slug"] in RESERVED_SLUGS:
        raise LessonError(
            path, f"`slug` {data['slug']!r} is reserved for the double opt-in email", key_line(text, "slug")
        )
    replaces = _replaces(path, data, text)
    catch_up = _catch_up(path, data.get("catch_up", default_catch_up), key_line(text, "catch_up"))
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
        draft=bool(data.get("draft", False)),
        replaces=replaces,
        catch_up=catch_up,
    )


def _replaces(path: Path, data: dict[str, Any], text: str) -> tuple[str, ...]:
    given = data.get("replaces", [])
    names = (given,) if isinstance(given, str) else tuple(given)
    for name in names:
        if not SLUG_PATTERN.match(name) or name == data["slug"]:
            raise LessonError(
                path, f"`replaces` must name earlier slugs of this lesson, got {name!r}", key_line(text, "replaces")
            )
    return names


def _catch_up(path: Path, value: object, line: int | None) -> CatchUp:
    if value not in CATCH_UP_POLICIES:
        raise LessonError(path, f"`catch_up` must be one of {', '.join(CATCH_UP_POLICIES)}, got {value!r}", line)
    return value  # type: ignore[return-value]


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


def load_series(folder: Path, *, lenient: bool = False) -> Series:
    """Load series.toml and every `*.md` lesson in the folder, ordered by week; weeks run 1..N without gaps.

    `lenient` keeps a broken lesson file in its place as a placeholder that is never sent (the daemon must
    keep serving and sending the rest); a broken series.toml, or two files claiming one week, always fail.
    """
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
    default_catch_up = _catch_up(series_file, meta.get("catch_up", "skip"), None)
    loaded: list[Lesson] = []
    broken: list[LessonError] = []
    for path in sorted(folder.glob("*.md")):
        try:
            loaded.append(load_lesson(path, default_catch_up))
        except LessonError as error:
            if not lenient:
                raise
            broken.append(error)
            loaded.append(_placeholder(path, error))
    lessons = sorted(loaded, key=lambda lesson: lesson.week)
    if not lessons:
        raise LessonError(
            folder, "has no lesson files (*.md): `newsletter split ARTICLE --out` this folder, or write 01-<slug>.md"
        )
    _check_order(lessons)
    source = folder / meta["source"] if meta.get("source") else None
    return Series(
        title=meta["title"],
        slug=meta["slug"],
        description=meta.get("description", ""),
        cadence=meta.get("cadence", "weekly"),
        lessons=tuple(lessons),
        folder=folder,
        source=source,
        broken=tuple(broken),
    )


def _check_order(lessons: list[Lesson]) -> None:
    seen_slugs: dict[str, Lesson] = {}
    replaced: dict[str, Lesson] = {}
    for index, lesson in enumerate(lessons, start=1):
        if lesson.slug in seen_slugs:
            other = seen_slugs[lesson.slug].path.name
            raise LessonError(lesson.path, f"slug {lesson.slug!r} is already used by {other}", _line_in(lesson, "slug"))
        seen_slugs[lesson.slug] = lesson
        for old in lesson.replaces:
            if old in replaced:
                other = replaced[old].path.name
                raise LessonError(
                    lesson.path,
                    f"`replaces` names {old!r}, which {other} replaces already",
                    _line_in(lesson, "replaces"),
                )
            replaced[old] = lesson
        if lesson.week != index:
            previous = lessons[index - 2]
            if index > 1 and previous.week == lesson.week:
                raise LessonError(
                    lesson.path, f"week {lesson.week} is already used by {previous.path.name}", _line_in(lesson, "week")
                )
            raise LessonError(
                lesson.path, f"weeks must run 1..N without gaps; expected week {index} here", _line_in(lesson, "week")
            )
    for old, lesson in replaced.items():
        if old in seen_slugs:
            raise LessonError(
                lesson.path,
                f"`replaces` names {old!r}, but {seen_slugs[old].path.name} still has that slug",
                _line_in(lesson, "replaces"),
            )


def _placeholder(path: Path, error: LessonError) -> Lesson:
    """A broken file's place in the order, from what can still be read of it (front matter, else the name)."""
    text = path.read_text(encoding="utf-8-sig", errors="replace") if path.is_file() else ""
    week = re.search(r"(?m)^\s*week\s*=\s*(\d+)", text)
    slug = re.search(r"(?m)^\s*slug\s*=\s*[\"']([a-z0-9-]+)[\"']", text)
    named = _FILE_NAME.match(path.stem)
    number = int(week.group(1)) if week else int(named.group(1)) if named and named.group(1) else 0
    name = slug.group(1) if slug else re.sub(r"[^a-z0-9]+", "-", (named.group(2) if named else path.stem).lower())
    return Lesson(
        week=number,
        slug=name.strip("-") or "broken",
        title=path.name,
        subject=path.name,
        preheader="",
        summary="",
        body="",
        path=path,
        problem=str(error),
    )

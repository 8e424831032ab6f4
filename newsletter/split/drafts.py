"""Lesson drafts: front matter filled in from the article, a body laid out from its sections, files written."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from newsletter.errors import LessonError
from newsletter.lessons import PREHEADER_MAX, SUBJECT_MAX
from newsletter.split.article import Section

SUMMARY_MAX = 200
EDITOR_SECTIONS = ("Key takeaways", "Try this week")
_SENTENCE_END = re.compile(r"[.!?][”’\"')\]]*(?=\s+[“‘\"'(\[]?[A-Z0-9])")


@dataclass(frozen=True)
class LessonDraft:
    """One lesson file to be: front matter filled in as far as the article allows, body from its sections."""

    week: int
    slug: str
    title: str
    subject: str
    preheader: str
    summary: str
    body: str
    sources: tuple[str, ...]
    """The article headings (or lead phrases) whose text this draft holds, in article order."""

    @property
    def filename(self) -> str:
        return f"{self.week:02d}-{self.slug}.md"

    def to_markdown(self) -> str:
        """Render the lesson file: TOML front matter between `+++` lines, then the Markdown body."""
        fields = {"slug": self.slug, "title": self.title, "subject": self.subject}
        fields |= {"preheader": self.preheader, "summary": self.summary}
        front = [f"week = {self.week}", *(f"{key} = {_toml_string(value)}" for key, value in fields.items())]
        return "+++\n" + "\n".join(front) + "\n+++\n" + self.body


def build_draft(week: int, slug: str, main: Section, members: list[Section]) -> LessonDraft:
    """Build one draft from its sections in article order; `main` gives the title, preheader and summary."""
    title = _plain(main.heading)
    blocks = [block for section in members for block in section.blocks]
    opening = _sentences(_plain(blocks[0]))[0] if blocks else ""
    main_sentences = [s for block in (main.blocks or blocks) for s in _sentences(_plain(block))] or [title]
    # The preheader sits next to the opening line in the inbox, so it starts after it when they coincide.
    start = next((index for index, sentence in enumerate(main_sentences) if sentence != opening), 0)
    preheader = main_sentences[start]
    for sentence in main_sentences[start + 1 :]:
        if len(preheader) + 1 + len(sentence) > PREHEADER_MAX:
            break
        preheader = f"{preheader} {sentence}"
    return LessonDraft(
        week=week,
        slug=slug,
        title=title,
        subject=_truncate(f"Lesson {week}: {title}", SUBJECT_MAX),
        preheader=_truncate(preheader, PREHEADER_MAX),
        summary=_truncate(main_sentences[0], SUMMARY_MAX),
        body=_render_body(members, main),
        sources=tuple(section.heading or "(opening text)" for section in members),
    )


def write_drafts(drafts: Sequence[LessonDraft], out_dir: Path, force: bool = False) -> list[Path]:
    """Write each draft as `out_dir/NN-slug.md`; refuse, writing nothing, if any exists and `force` is off."""
    targets = [out_dir / draft.filename for draft in drafts]
    existing = [target for target in targets if target.exists()]
    if existing and not force:
        names = ", ".join(target.name for target in existing)
        raise LessonError(existing[0], f"already exists; nothing written. Use --force to overwrite: {names}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LessonError(out_dir, f"cannot be created as the drafts folder: {error.strerror}") from None
    for draft, target in zip(drafts, targets, strict=True):
        try:
            target.write_text(draft.to_markdown(), encoding="utf-8", newline="\n")
        except OSError as error:
            raise LessonError(target, f"cannot be written: {error.strerror}") from None
    return targets


def _render_body(members: list[Section], main: Section) -> str:
    """Lay out the sections under `##` headings; a heading nests only under one printed in the same draft."""
    # The email prints the title as its one h1, so a draft opening with its main section skips that heading.
    shown: set[Section] = {main} if members[0] is main else set()
    printed: set[Section] = set()
    parts: list[str] = []
    for section in members:
        if section.heading and section not in shown and section.continues not in shown:
            ancestors, parent = 0, section.parent
            while parent is not None:
                ancestors += parent in printed
                parent = parent.parent
            parts.append(f"{'#' * (2 + ancestors)} {section.heading}")
            shown.add(section)
            printed.add(section)
        for block in section.blocks:
            if block.startswith("- ") and parts and parts[-1].startswith("- "):
                parts[-1] += f"\n{block}"
            else:
                parts.append(block)
    parts.extend(f"## {heading}" for heading in EDITOR_SECTIONS)
    return "\n\n".join(parts) + "\n"


def _plain(markdown: str) -> str:
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", markdown)
    text = re.sub(r"^\s*[-*•]\s+", "", text).replace("**", "").replace("__", "").replace("`", "")
    return " ".join(text.split())


def _sentences(text: str) -> list[str]:
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [sentence for sentence in sentences if sentence] or [text]


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:–—-")
    return f"{cut}…"


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda match: f"\\u{ord(match[0]):04x}", escaped) + '"'

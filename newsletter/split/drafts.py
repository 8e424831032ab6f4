"""Lesson drafts: front matter filled in from the article, a body laid out from its sections, files written.

The inbox shows the subject, then the preheader, then the first line of the email; the "Next week" teaser
shows the summary. So the preheader is never the opening sentence, and the summary never repeats either:
the summary is a sentence that sums up ("In short, …", "The bottom line: …") when there is one, else the
main section's closing sentence; the preheader is the first informative statement after the opening.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from newsletter.errors import LessonError
from newsletter.lessons import EDITOR_SECTIONS, PREHEADER_MAX, SUBJECT_MAX, toml_string
from newsletter.split.article import Section

SUMMARY_MAX = 200
TITLE_MAX = 60
SENTENCE_MIN = 30
_SENTENCE_END = re.compile(r"[.!?][”’\"')\]]*(?=\s+[“‘\"'(\[]?[A-Z0-9])")
_LIST_ITEM = re.compile(r"^\s*(?:-|\d+\.) ")
_SUMMING_UP = re.compile(
    r"^(?:(?:in short|in summary|in sum|overall|all in all|the bottom line|in other words|essentially"
    r"|put simply|the upshot|the takeaway)\b[:,]?|so,)\s*",
    re.IGNORECASE,
)


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
    words: int = 0

    @property
    def filename(self) -> str:
        return f"{self.week:02d}-{self.slug}.md"

    def to_markdown(self) -> str:
        """Render the lesson file: TOML front matter between `+++` lines, then the Markdown body."""
        fields = {"slug": self.slug, "title": self.title, "subject": self.subject}
        fields |= {"preheader": self.preheader, "summary": self.summary}
        front = [f"week = {self.week}", *(f"{key} = {toml_string(value)}" for key, value in fields.items())]
        return "+++\n" + "\n".join(front) + "\n+++\n" + self.body


def build_draft(week: int, slug: str, main: Section, members: list[Section]) -> LessonDraft:
    """Build one draft from its sections in article order; `main` gives the title, preheader and summary."""
    blocks = [block for section in members for block in section.blocks]
    opening = _sentences(_plain(blocks[0]))[0] if blocks else ""
    # A lesson cut from text without headings is named by its opening words until its editor names it.
    prose = next((block for block in blocks if not block.startswith(">")), "")
    title = _plain(main.heading) or truncate(_sentences(_plain(prose))[0].rstrip(".!?:;,"), TITLE_MAX)
    main_blocks = [block for block in (main.blocks or blocks) if not block.startswith(">")] or blocks
    candidates = [s for block in main_blocks for s in _sentences(_plain(block))]
    others = [s for block in blocks for s in _sentences(_plain(block)) if s not in candidates]
    summary = _summary(candidates, opening) or _summary(others, opening) or opening or title
    preheader = _preheader(candidates + others, {opening, summary}) or summary
    return LessonDraft(
        week=week,
        slug=slug,
        title=title,
        subject=truncate(f"Lesson {week}: {title}", SUBJECT_MAX),
        preheader=truncate(preheader, PREHEADER_MAX),
        summary=truncate(summary, SUMMARY_MAX),
        body=_render_body(members, main),
        sources=tuple(dict.fromkeys(section.heading or "(opening text)" for section in members)),
        words=sum(section.words for section in members),
    )


def _summary(sentences: list[str], opening: str) -> str:
    """A sentence that sums up, else the closing statement; never the opening sentence ("" if there is none)."""
    for sentence in sentences:
        cue = _SUMMING_UP.match(sentence)
        rest = sentence[cue.end() :] if cue else ""
        if cue and len(rest) >= SENTENCE_MIN and sentence != opening:
            return rest[:1].upper() + rest[1:]
    statements = [s for s in sentences if s != opening and not s.endswith("?") and len(s) >= SENTENCE_MIN]
    return statements[-1] if statements else ""


def _preheader(sentences: list[str], taken: set[str]) -> str:
    """The first statement after the opening that fits the inbox, with what follows it while it fits."""
    start = next(
        (i for i, s in enumerate(sentences) if s not in taken and not s.endswith("?") and len(s) >= SENTENCE_MIN),
        None,
    )
    if start is None:
        return next((s for s in sentences if s not in taken), "")
    preheader = sentences[start]
    for sentence in sentences[start + 1 :]:
        if sentence in taken or len(preheader) + 1 + len(sentence) > PREHEADER_MAX:
            break
        preheader = f"{preheader} {sentence}"
    return preheader


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
    # The email prints the title as its one h1, so a draft opening with its main section skips that heading,
    # as does one whose main section follows only text without a heading of its own (the article's opening).
    before = members[: members.index(main)] if main in members else members
    shown: set[Section] = {main} if all(s.is_title or not s.heading for s in before) else set()
    printed: set[Section] = set()
    parts: list[str] = []
    for section in members:
        if section.heading and not section.is_title and section not in shown and section.continues not in shown:
            ancestors, parent = 0, section.parent
            while parent is not None:
                ancestors += parent in printed
                parent = parent.parent
            parts.append(f"{'#' * (2 + ancestors)} {section.heading}")
            shown.add(section)
            printed.add(section)
        for block in section.blocks:
            if _LIST_ITEM.match(block) and parts and _LIST_ITEM.match(parts[-1].rsplit("\n", 1)[-1]):
                parts[-1] += f"\n{block}"
            else:
                parts.append(block)
    parts.extend(f"## {heading}" for heading in EDITOR_SECTIONS)
    return "\n\n".join(parts) + "\n"


def _plain(markdown: str) -> str:
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", re.sub(r"(?m)^\s*>\s?", "", markdown))
    text = re.sub(r"^\s*(?:[-*•>]|\d+\.)\s+", "", text).replace("**", "").replace("__", "").replace("`", "")
    return " ".join(text.split())


def plain_sentences(markdown: str) -> list[str]:
    """The sentences of a block of Markdown, as plain text."""
    return _sentences(_plain(markdown))


def _sentences(text: str) -> list[str]:
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [sentence for sentence in sentences if sentence] or [text]


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:–—-")
    return f"{cut}…"

"""Turn an article into weekly lesson drafts: find its sections, give each to a topic, write `NN-slug.md`.

Reading the article
- Paragraphs are separated by blank lines; hard-wrapped lines are joined.
- Headings are Markdown ATX headings (`#`, `##`, …). An article without any reads a short standalone line
  (at most 12 words and 80 characters, not a list item, not ending in `.` `,` `;` `:` or `…`) as a heading.
  A heading that opens the article and outranks the headings after it (in plain text: any opening heading
  followed by others) is its title: it names the whole piece and is never a topic.
- A list item (`•`, `-`, `*`) that opens with a "Lead phrase:" (at most 60 characters, may be bold) is a
  section of its own under the heading above it, the rest of the item (first letter capitalised) its text;
  other list items stay in the text as list items. An unindented paragraph after such a list belongs to the
  heading above the list again.
- Page debris is dropped: stray punctuation lines, reading times ("8–11 minutes", "5 min read"),
  "Leave a comment", "Trending", "Share", "Advertisement".

Giving sections to topics
- Named topics: the words of a section's heading (lower case, plural and -ing endings dropped) are counted
  against the topic's words plus a small synonym table (`knees` also hears "joint", "cartilage"). The topic
  with most hits wins; a tie goes to the earlier topic. A section whose heading matches no topic follows its
  parent heading. Every topic must win at least one section.
- No topics: every "Lead phrase:" item and every top-level section is a topic (slug from its heading), except
  summary/introduction/conclusion-like sections and a heading that only introduces a list of lead items;
  sub-headings follow their parent.
- What is still without a topic joins a neighbour: text closing a list of lead items joins the list before
  it; a summary, an introduction or the lead-in of a list joins the next section, which it introduces; a
  conclusion after the last topic joins that topic. No paragraph is dropped or repeated.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from newsletter.errors import LessonError

SUBJECT_MAX = 78
PREHEADER_MAX = 140
SUMMARY_MAX = 200
EDITOR_SECTIONS = ("Key takeaways", "Try this week")

_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.+?)(?:\s+#+)?\s*$")
_BULLET = re.compile(r"^\s*[•*-]\s+(\S.*)$")
_LEAD_PHRASE = re.compile(r"^(?:\*\*|__)?(?P<lead>[^:*_]{1,60})(?:(?:\*\*|__):|:(?:\*\*|__)?)\s+(?P<rest>\S.*)$")
_DEBRIS = re.compile(
    r"^(?:[\s,.;:|•·*_=~–—-]*"
    r"|\d+(?:\s*[–-]\s*\d+)?\s*(?:min|mins|minutes?)(?:\s+read)?"
    r"|leave a comment|trending|share(?: this(?: article| post| story)?)?|advertisement)$",
    re.IGNORECASE,
)
_FRONT_OR_BACK_MATTER = re.compile(
    r"^(?:summary|in summary|intro|introduction|overview|tl;?dr|conclusions?|in conclusion|final thoughts"
    r"|(?:the )?bottom line|wrapping up|key takeaways)\W*$",
    re.IGNORECASE,
)
TOPIC_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_SENTENCE_END = re.compile(r"[.!?][”’\"')\]]*(?=\s+[“‘\"'(\[]?[A-Z0-9])")
_STOP_WORDS = frozenset({"a", "an", "and", "or", "the", "of", "to", "for", "in", "on", "vs", "how", "why", "what"})
_SYNONYMS = (
    "muscle muscular strength gains",
    "knee joint cartilage arthritis",
    "brain mind memory cognition cognitive",
    "mood mental depression anxiety happiness",
    "sleep insomnia bedtime",
    "immunity immune illness infection",
    "longevity lifespan mortality disease",
    "heart cardio cardiovascular",
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

    @property
    def filename(self) -> str:
        return f"{self.week:02d}-{self.slug}.md"

    def to_markdown(self) -> str:
        """Render the lesson file: TOML front matter between `+++` lines, then the Markdown body."""
        fields = {"slug": self.slug, "title": self.title, "subject": self.subject}
        fields |= {"preheader": self.preheader, "summary": self.summary}
        front = [f"week = {self.week}", *(f"{key} = {_toml_string(value)}" for key, value in fields.items())]
        return "+++\n" + "\n".join(front) + "\n+++\n" + self.body


class _Element(NamedTuple):
    kind: Literal["heading", "item", "paragraph"]
    text: str
    level: int = 0
    """The Markdown level of a heading; for an item or paragraph, 1 when it is indented."""


@dataclass(eq=False)
class _Section:
    heading: str
    depth: int
    parent: _Section | None = None
    is_title: bool = False
    is_lead_item: bool = False
    continues: _Section | None = None
    blocks: list[str] = field(default_factory=list)
    children: list[_Section] = field(default_factory=list)


def read_article(path: Path) -> str:
    """Read an article file as UTF-8 text; errors name the file and the offending line."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise LessonError(path, f"cannot be read: {error.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        byte = data[error.start]
        raise LessonError(path, f"is not UTF-8 text (byte 0x{byte:02x}); save it as UTF-8", line) from None
    if "\x00" in text:
        raise LessonError(path, "looks like a binary file, not a text or Markdown article")
    return text


def split_article(text: str, topics: Sequence[str] | None = None, *, source: str = "article") -> list[LessonDraft]:
    """Split an article into one draft per topic, in topic order; without topics, propose them from headings."""
    sections = _parse_sections(text, source)
    if topics:
        slugs = _checked_topics(topics, source)
        owners = _match_topics(sections, slugs, source)
        titles: dict[int, _Section] = {}
        for section, owner in zip(sections, owners, strict=True):
            if owner is not None:
                titles.setdefault(owner, section)
    else:
        majors = [s for s in sections if _is_major(s)]
        if not majors:
            raise LessonError(source, "has no section headings or 'Lead phrase:' list items to split on")
        slugs = _unique_slugs([_slug_from_heading(s.heading) for s in majors])
        owners = [majors.index(s) if s in majors else None for s in sections]
        titles = dict(enumerate(majors))
    owners = _follow_parents(sections, owners)
    assigned = _fill_gaps(sections, owners)
    drafts = []
    for index, slug in enumerate(slugs):
        members = [s for s, owner in zip(sections, assigned, strict=True) if owner == index]
        drafts.append(_draft(index + 1, slug, titles[index], members))
    return drafts


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


def _parse_sections(text: str, source: str) -> list[_Section]:
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if not _is_debris(line)]
    markdown = any(_ATX_HEADING.match(line) for line in lines)
    elements: list[_Element] = []
    group: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            group.append(line)
        elif group:
            elements.extend(_group_elements(group, markdown))
            group = []
    if not elements:
        state = "is empty once page debris is removed" if text.strip() else "is empty"
        raise LessonError(source, f"{state}: expected an article with headings and paragraphs")
    levels = [element.level for element in elements if element.kind == "heading"]
    # An opening heading names the whole article when sections follow that it outranks (in plain text, all
    # headings share one rank, so the opening one outranks the rest by coming first).
    has_title = elements[0].kind == "heading" and len(levels) > 1 and (not markdown or levels[0] < min(levels[1:]))
    base_level = min(levels[1:] if has_title else levels, default=2)
    sections: list[_Section] = []
    open_headings: list[_Section] = []
    current: _Section | None = None
    for position, element in enumerate(elements):
        if element.kind == "heading":
            if position == 0 and has_title:
                current = _Section(element.text, 1, is_title=True)
            else:
                depth = 2 + element.level - base_level
                while open_headings and open_headings[-1].depth >= depth:
                    open_headings.pop()
                current = _Section(element.text, depth, open_headings[-1] if open_headings else None)
                open_headings.append(current)
            sections.append(current)
            continue
        lead = _LEAD_PHRASE.match(element.text) if element.kind == "item" else None
        if lead and len(lead["lead"].split()) <= 10 and ". " not in lead["lead"]:
            parent = open_headings[-1] if open_headings else None
            current = _Section(" ".join(lead["lead"].split()), parent.depth + 1 if parent else 2, parent)
            current.is_lead_item = True
            current.blocks.append(lead["rest"][:1].upper() + lead["rest"][1:])
            sections.append(current)
            continue
        if current is None or (current.is_lead_item and element.level == 0):
            # Text after a list of lead items belongs to the heading above the list, not to its last item.
            origin = current.parent if current else None
            heading, depth = (origin.heading, origin.depth) if origin else ("", 2)
            current = _Section(heading, depth, origin.parent if origin else None, continues=origin)
            sections.append(current)
        current.blocks.append(f"- {element.text}" if element.kind == "item" else element.text)
    return _without_empty(sections)


def _without_empty(sections: list[_Section]) -> list[_Section]:
    """Drop headings with no text under them (such as a bare title), keeping parents of kept sections."""
    for section in sections:
        if section.parent:
            section.parent.children.append(section)
    kept: set[_Section] = set()
    for section in reversed(sections):
        if section.blocks or any(child in kept for child in section.children):
            kept.add(section)
    return [section for section in sections if section in kept]


def _group_elements(group: list[str], markdown: bool) -> list[_Element]:
    """Classify one run of non-blank lines into headings, list items and a paragraph."""
    if not markdown and len(group) == 1 and _looks_like_heading(group[0]):
        return [_Element("heading", " ".join(group[0].split()), 2)]
    elements: list[_Element] = []
    paragraph: list[str] = []

    def end_paragraph() -> None:
        if paragraph:
            elements.append(_Element("paragraph", " ".join(paragraph), int(group[0][:1].isspace())))
            paragraph.clear()

    for line in group:
        heading = _ATX_HEADING.match(line) if markdown else None
        bullet = _BULLET.match(line)
        if heading:
            end_paragraph()
            elements.append(_Element("heading", " ".join(heading[2].split()), len(heading[1])))
        elif bullet:
            end_paragraph()
            elements.append(_Element("item", bullet[1].strip(), int(line[:1].isspace())))
        elif elements and elements[-1].kind == "item" and not paragraph:
            # A lazy continuation line: the list item goes on.
            elements[-1] = elements[-1]._replace(text=f"{elements[-1].text} {line.strip()}")
        else:
            paragraph.append(line.strip())
    end_paragraph()
    return elements


def _is_debris(line: str) -> bool:
    return bool(line.strip()) and bool(_DEBRIS.match(line.strip()))


def _looks_like_heading(line: str) -> bool:
    text = line.strip()
    unquoted = text.rstrip("”’\"')]")
    return (
        len(text) <= 80
        and len(text.split()) <= 12
        and not unquoted.endswith((".", ",", ";", ":", "…"))
        and not _BULLET.match(line)
        and any(char.isalpha() for char in text)
    )


def _checked_topics(topics: Sequence[str], source: str) -> list[str]:
    slugs = [topic.strip().lower() for topic in topics]
    for slug in slugs:
        if not TOPIC_PATTERN.match(slug):
            raise LessonError(source, f"topic {slug!r} must be a slug: lowercase letters, digits and dashes")
    duplicates = sorted({slug for slug in slugs if slugs.count(slug) > 1})
    if duplicates:
        raise LessonError(source, f"topics must differ; repeated: {', '.join(duplicates)}")
    return slugs


def _match_topics(sections: list[_Section], slugs: list[str], source: str) -> list[int | None]:
    """Give each section the topic its own heading matches best; None where it matches none."""
    keyword_sets = [_topic_keywords(slug) for slug in slugs]
    owners: list[int | None] = []
    rivals: dict[int, list[str]] = {}
    for section in sections:
        stems = set() if section.is_title else {_stem(word) for word in _words(section.heading)}
        scores = [len(stems & keywords) for keywords in keyword_sets]
        best = max(range(len(slugs)), key=lambda index: (scores[index], -index))
        owners.append(best if scores[best] else None)
        for index, score in enumerate(scores):
            if score and index != best:
                rivals.setdefault(index, []).append(f"{section.heading!r} (went to {slugs[best]!r})")
    problems = []
    for index, slug in enumerate(slugs):
        if index in owners:
            continue
        if index in rivals:
            problems.append(
                f"topic {slug!r} only matches headings that match another topic better: " + "; ".join(rivals[index])
            )
        else:
            problems.append(f"topic {slug!r} matches no heading or lead phrase")
    if problems:
        headings = "; ".join(repr(section.heading) for section in sections if section.heading)
        raise LessonError(source, f"{'. '.join(problems)}. Headings are: {headings}")
    return owners


def _follow_parents(sections: list[_Section], owners: list[int | None]) -> list[int | None]:
    position = {section: index for index, section in enumerate(sections)}
    followed = list(owners)
    for index, section in enumerate(sections):
        origin = section.continues or section.parent
        while followed[index] is None and origin is not None:
            followed[index] = followed[position[origin]]
            origin = origin.parent
    return followed


def _fill_gaps(sections: list[_Section], owners: list[int | None]) -> list[int]:
    """Give each section without a topic the topic of a neighbour.

    Text closing a list of lead items takes the topic of the list before it; anything else (a summary, an
    introduction) takes the topic of the next section, which it introduces; what is left after the last
    topic (a conclusion) takes the topic before it.
    """
    filled = list(owners)
    latest: int | None = None
    for index, section in enumerate(sections):
        if filled[index] is None and section.continues is not None:
            filled[index] = latest
        latest = filled[index] if filled[index] is not None else latest
    upcoming: int | None = None
    for index in reversed(range(len(filled))):
        upcoming = filled[index] if filled[index] is not None else upcoming
        filled[index] = upcoming
    latest = None
    for index, owner in enumerate(filled):
        latest = owner if owner is not None else latest
        filled[index] = latest
    return [owner if owner is not None else 0 for owner in filled]


def _is_major(section: _Section) -> bool:
    return (
        bool(section.heading)
        and not section.is_title
        and section.continues is None
        and not _FRONT_OR_BACK_MATTER.match(section.heading)
        and (section.is_lead_item or section.parent is None)
        and not any(child.is_lead_item for child in section.children)
    )


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]+(?:['’][^\W\d_]+)?", text.lower())


def _stem(word: str) -> str:
    """Reduce a word to a rough stem so "knees" meets "knee" and "watering" meets "water"."""
    word = word.lower().removesuffix("’s").removesuffix("'s")
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("ing") and len(word) > 5:
        word = word[:-3]
        return word[:-1] if word[-1] == word[-2] and word[-1] not in "lsz" else word
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def _topic_keywords(slug: str) -> set[str]:
    stems = {_stem(word) for word in slug.split("-")}
    for group in _SYNONYMS:
        synonyms = {_stem(word) for word in group.split()}
        if stems & synonyms:
            stems |= synonyms
    return stems


def _slug_from_heading(heading: str) -> str:
    main = re.split(r"\s[–—-]\s|:\s", heading, maxsplit=1)[0]
    main = re.sub(r"\([^)]*\)", " ", main)
    ascii_text = unicodedata.normalize("NFKD", main).encode("ascii", "ignore").decode().lower()
    words = [word for word in re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", ascii_text) if word not in _STOP_WORDS]
    return "-".join(words[:4]) or "section"


def _unique_slugs(slugs: list[str]) -> list[str]:
    unique: list[str] = []
    for slug in slugs:
        candidate, counter = slug, 2
        while candidate in unique:
            candidate, counter = f"{slug}-{counter}", counter + 1
        unique.append(candidate)
    return unique


def _draft(week: int, slug: str, main: _Section, members: list[_Section]) -> LessonDraft:
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


def _render_body(members: list[_Section], main: _Section) -> str:
    """Lay out the sections under `##` headings; a heading nests only under one printed in the same draft."""
    # The email prints the title as its one h1, so a draft opening with its main section skips that heading.
    shown: set[_Section] = {main} if members[0] is main else set()
    printed: set[_Section] = set()
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

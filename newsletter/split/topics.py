"""Give each section of an article to a topic, proposing topics when none are named, and build the drafts.

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

import dataclasses
import re
import unicodedata
from collections.abc import Sequence

from newsletter.errors import LessonError
from newsletter.split.article import Article, Section, parse_article
from newsletter.split.drafts import LessonDraft, build_draft
from newsletter.split.weeks import balance, merge_tiny

_FRONT_OR_BACK_MATTER = re.compile(
    r"^(?:summary|in summary|intro|introduction|overview|tl;?dr|conclusions?|in conclusion|final thoughts"
    r"|(?:the )?bottom line|wrapping up|key takeaways)\W*$",
    re.IGNORECASE,
)
TOPIC_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
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


def split_article(
    text: str, topics: Sequence[str] | None = None, *, weeks: int | None = None, source: str = "article"
) -> list[LessonDraft]:
    """Split an article into one draft per topic, in topic order; without topics, propose them from headings."""
    return lesson_drafts(parse_article(text, source), topics, weeks=weeks, source=source)


def lesson_drafts(
    article: Article, topics: Sequence[str] | None = None, *, weeks: int | None = None, source: str = "article"
) -> list[LessonDraft]:
    """Draft the lessons of a parsed article: by named topics, in `weeks` lessons of similar length, or by section."""
    sections = article.sections
    if topics:
        if weeks is not None:
            raise LessonError(source, "name topics or a number of weeks, not both: the topics decide the weeks")
        slugs = _checked_topics(topics, source)
        owners = _match_topics(sections, slugs, source)
        titles: dict[int, Section] = {}
        for section, owner in zip(sections, owners, strict=True):
            if owner is not None:
                titles.setdefault(owner, section)
        assigned = _fill_gaps(sections, _follow_parents(sections, owners))
        members = [[s for s, owner in zip(sections, assigned, strict=True) if owner == i] for i in range(len(slugs))]
        return [
            build_draft(i + 1, slug, titles[i], group)
            for i, (slug, group) in enumerate(zip(slugs, members, strict=True))
        ]
    majors = [s for s in sections if _is_major(s)]
    if not majors and weeks is None:
        raise LessonError(
            source,
            "has no section headings or 'Lead phrase:' list items to split on; "
            "use --weeks N to cut it into N lessons of similar length",
        )
    owners = [majors.index(s) if s in majors else None for s in sections]
    assigned = _fill_gaps(sections, _follow_parents(sections, owners)) if majors else [0] * len(sections)
    units = [[s for s, owner in zip(sections, assigned, strict=True) if owner == i] for i in range(len(majors) or 1)]
    if weeks is not None and weeks > len(units):
        units = [[section] for section in sections]  # finer cuts: any section may start a lesson
    if weeks is not None and weeks > len(units):
        units = [[piece] for section in sections for piece in _pieces(section)]  # finest: any paragraph
        if weeks > len(units):
            raise LessonError(source, f"has {len(units)} paragraph(s), so it makes at most {len(units)} lessons")
    sizes = [sum(section.words for section in unit) for unit in units]
    grouping = balance(sizes, weeks) if weeks is not None else merge_tiny(sizes)
    groups = [[section for index in group for section in units[index]] for group in grouping]
    drafts = [build_draft(week, "", _main_section(group, majors), group) for week, group in enumerate(groups, 1)]
    slugs = _unique_slugs([slug_from_heading(draft.title) for draft in drafts])
    return [dataclasses.replace(draft, slug=slug) for draft, slug in zip(drafts, slugs, strict=True)]


def _checked_topics(topics: Sequence[str], source: str) -> list[str]:
    slugs = [topic.strip().lower() for topic in topics]
    for slug in slugs:
        if not TOPIC_PATTERN.match(slug):
            raise LessonError(source, f"topic {slug!r} must be a slug: lowercase letters, digits and dashes")
    duplicates = sorted({slug for slug in slugs if slugs.count(slug) > 1})
    if duplicates:
        raise LessonError(source, f"topics must differ; repeated: {', '.join(duplicates)}")
    return slugs


def _match_topics(sections: list[Section], slugs: list[str], source: str) -> list[int | None]:
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


def _follow_parents(sections: list[Section], owners: list[int | None]) -> list[int | None]:
    position = {section: index for index, section in enumerate(sections)}
    followed = list(owners)
    for index, section in enumerate(sections):
        origin = section.continues or section.parent
        while followed[index] is None and origin is not None:
            followed[index] = followed[position[origin]]
            origin = origin.parent
    return followed


def _fill_gaps(sections: list[Section], owners: list[int | None]) -> list[int]:
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


def _pieces(section: Section) -> list[Section]:
    """Cut a section at its paragraphs: the section keeps its first, each other goes on under its heading."""
    rest = section.blocks[1:]
    del section.blocks[1:]
    return [section] + [
        Section(section.heading, section.depth, section.parent, continues=section, blocks=[block]) for block in rest
    ]


def _main_section(group: list[Section], majors: list[Section]) -> Section:
    """The section that names a lesson: its first topic, or the heading of a list of topics it holds whole."""
    for section in group:
        items = [child for child in section.children if child.is_lead_item]
        if section in majors or (items and section.continues is None and all(item in group for item in items)):
            return section
    return next((s for s in group if s.heading and not s.is_title), group[0])


def _is_major(section: Section) -> bool:
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


def slug_from_heading(heading: str) -> str:
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

"""The series.toml of a lessons folder that `split` fills: written when missing, its `source` kept current."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from newsletter.errors import LessonError
from newsletter.lessons import toml_string
from newsletter.split.article import Article
from newsletter.split.drafts import SENTENCE_MIN, SUMMARY_MAX, plain_sentences, truncate
from newsletter.split.topics import slug_from_heading

SeriesAction = Literal["written", "updated", "unchanged"]
_SOURCE_LINE = re.compile(r"^source\s*=.*$", re.MULTILINE)


def series_toml(title: str, slug: str, description: str, source: str | None) -> str:
    """A new series.toml, commented key by key; without a source article, without `source`."""
    text = (
        "# The course as readers see it: its title (the subscribe page, the confirmation email, every footer).\n"
        f"title = {toml_string(title)}\n"
        "# Its short name in List-Id and Message-IDs: lowercase letters, digits and dashes. Keep it once readers\n"
        "# have mail from you, or their mail programs see a new list.\n"
        f"slug = {toml_string(slug)}\n"
        "# One or two sentences on what the course gives; the confirmation email and the subscribe page show it.\n"
        f"description = {toml_string(description)}\n"
        "# One lesson a week, on each reader's own weekday and time.\n"
        'cadence = "weekly"\n'
    )
    if source is None:
        return text
    return (
        text + "# The article the lessons were split from, relative to this folder (`newsletter split` keeps it "
        f"current).\nsource = {toml_string(source)}\n"
    )


def describe(article: Article) -> str:
    """A first description: the article's opening statement (its first paragraph that is not a list or quote)."""
    blocks = [block for section in article.sections for block in section.blocks]
    paragraphs = [block for block in blocks if not re.match(r"^\s*(?:-|\d+\.|>)", block)] or blocks
    for paragraph in paragraphs:
        for sentence in plain_sentences(paragraph):
            if len(sentence) >= SENTENCE_MIN and not sentence.endswith("?"):
                return truncate(sentence, SUMMARY_MAX)
    return article.title


def write_series(folder: Path, article: Article, article_path: Path, fallback_title: str) -> tuple[Path, SeriesAction]:
    """Write `folder/series.toml` for this article, or point an existing one's `source` at it."""
    target = folder / "series.toml"
    source = Path(_relative(article_path, folder)).as_posix()
    try:
        if not target.exists():
            title = article.title or fallback_title
            slug = slug_from_heading(title) if title else "course"
            target.write_text(series_toml(title, slug, describe(article), source), encoding="utf-8", newline="\n")
            return target, "written"
        text = target.read_text(encoding="utf-8-sig")
        line = f"source = {toml_string(source)}"
        match = _SOURCE_LINE.search(text)
        if match and match[0].strip() == line:
            return target, "unchanged"
        updated = _SOURCE_LINE.sub(line, text, count=1) if match else text.rstrip("\n") + f"\n{line}\n"
        target.write_text(updated, encoding="utf-8", newline="\n")
        return target, "updated"
    except OSError as error:
        raise LessonError(target, f"cannot be written: {error.strerror}") from None


def _relative(path: Path, folder: Path) -> str:
    return os.path.relpath(path.resolve(), folder.resolve())

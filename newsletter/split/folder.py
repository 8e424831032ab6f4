"""`newsletter split` as one operation: an article file into lesson drafts and a series.toml in a folder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from newsletter.split.article import parse_article, read_article
from newsletter.split.debris import Debris
from newsletter.split.drafts import LessonDraft, write_drafts
from newsletter.split.series import SeriesAction, write_series
from newsletter.split.topics import lesson_drafts


@dataclass(frozen=True)
class SplitReport:
    """What a split did: the drafts and their files, the series file, and every line it dropped."""

    article: Path
    title: str
    drafts: list[LessonDraft]
    written: list[Path]
    series_file: Path
    series_action: SeriesAction
    debris: list[Debris]
    others: list[Path]
    """Lesson files already in the folder that no draft replaced: they still count as lessons."""


def split_into_folder(
    article: Path,
    out_dir: Path,
    topics: Sequence[str] | None = None,
    *,
    weeks: int | None = None,
    force: bool = False,
    fallback_title: str = "",
) -> SplitReport:
    """Split `article` into drafts in `out_dir` and write or update its series.toml; a bad article writes nothing."""
    parsed = parse_article(read_article(article), str(article))
    drafts = lesson_drafts(parsed, topics, weeks=weeks, source=str(article))
    written = write_drafts(drafts, out_dir, force=force)
    series_file, action = write_series(out_dir, parsed, article, fallback_title or article.stem.replace("-", " "))
    others = sorted(path for path in out_dir.glob("*.md") if path not in written)
    return SplitReport(article, parsed.title, drafts, written, series_file, action, parsed.debris, others)

"""Turn an article into weekly lesson drafts: find its sections, group them into weeks, write `NN-slug.md`.

article  read the text, find sections by headings and "Lead phrase:" list items, keep lists and quotes
debris   the page furniture dropped on the way (reading times, share and comment prompts, cookie banners)
topics   give each section to a named topic, or propose one topic per major section
weeks    merge tiny lessons into a neighbour, or cut the article into N lessons of similar length
drafts   `LessonDraft`: front matter and body from a topic's sections, written as lesson files
series   the folder's series.toml: written when missing, its `source` kept current
folder   the whole `newsletter split`: article file in, drafts and series.toml out, a report of what went where
"""

from __future__ import annotations

from newsletter.split.article import parse_article, read_article
from newsletter.split.drafts import LessonDraft, write_drafts
from newsletter.split.folder import SplitReport, split_into_folder
from newsletter.split.topics import TOPIC_PATTERN, lesson_drafts, split_article

__all__ = [
    "TOPIC_PATTERN",
    "LessonDraft",
    "SplitReport",
    "lesson_drafts",
    "parse_article",
    "read_article",
    "split_article",
    "split_into_folder",
    "write_drafts",
]

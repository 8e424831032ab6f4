"""Turn an article into weekly lesson drafts: find its sections, give each to a topic, write `NN-slug.md`.

article  read the text, drop page debris, find sections by headings and "Lead phrase:" list items
topics   give each section to a named topic, or propose one topic per major section
drafts   `LessonDraft`: front matter and body from a topic's sections, written as lesson files
"""

from __future__ import annotations

from newsletter.split.article import read_article
from newsletter.split.drafts import LessonDraft, write_drafts
from newsletter.split.topics import TOPIC_PATTERN, split_article

__all__ = ["TOPIC_PATTERN", "LessonDraft", "read_article", "split_article", "write_drafts"]

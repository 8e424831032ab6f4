"""The bundled course: seven lessons that carry the whole article, add no facts of their own, and fit the email."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from newsletter.lessons import load_series

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
SOURCE = LESSONS / "source" / "running-and-muscle.txt"
SLUGS = ["muscle", "knees", "brain", "mood", "sleep", "immunity", "longevity"]
DEBRIS = {",", "8–11 minutes", "Leave a comment", "Trending"}
NUMBER = re.compile(r"\d+(?:[.,]\d+)*(?:%|[A-Za-z]+)?")


@dataclass(frozen=True)
class ParsedLesson:
    path: Path
    meta: dict[str, Any]
    body: str

    def section(self, heading: str) -> str:
        """The text under `## heading`, up to the next `##` heading."""
        match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", self.body, re.MULTILINE | re.DOTALL)
        assert match, f"{self.path.name} has no '## {heading}' section"
        return match[1].strip()


def normalise(text: str) -> str:
    return " ".join(text.split())


def article_paragraphs() -> list[str]:
    """The article's body paragraphs: long blocks, each list item on its own, lead phrases cut off."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", SOURCE.read_text(encoding="utf-8")):
        lines = [line.strip() for line in block.strip().splitlines()]
        if not lines or lines[0] in DEBRIS or (len(lines) == 1 and len(lines[0]) <= 80):
            continue  # debris or a heading
        for line in lines:
            text = normalise(line.removeprefix("•"))
            lead = re.match(r"^[^:]{1,60}:\s", text) if line.startswith("•") else None
            paragraphs.append(text[lead.end() :] if lead else text)
    return paragraphs


def numbers(text: str) -> set[str]:
    return set(NUMBER.findall(text))


@pytest.fixture(scope="module")
def bundled_lessons() -> list[ParsedLesson]:
    """The lessons as the engine loads them (its validation included)."""
    keys = ("week", "slug", "title", "subject", "preheader", "summary")
    return [
        ParsedLesson(lesson.path, {key: getattr(lesson, key) for key in keys}, lesson.body)
        for lesson in load_series(LESSONS)
    ]


def bodies(lessons: list[ParsedLesson]) -> Iterator[tuple[str, str]]:
    for lesson in lessons:
        yield lesson.path.name, lesson.body


def test_the_series_describes_the_course_and_points_at_its_source() -> None:
    series = tomllib.loads((LESSONS / "series.toml").read_text(encoding="utf-8"))
    assert series["slug"] == "running"
    assert series["cadence"] == "weekly"
    assert series["title"]
    assert series["description"]
    assert (LESSONS / series["source"]).resolve() == SOURCE


def test_seven_lessons_run_week_by_week_in_topic_order(bundled_lessons: list[ParsedLesson]) -> None:
    assert [lesson.meta["week"] for lesson in bundled_lessons] == list(range(1, 8))
    assert [lesson.meta["slug"] for lesson in bundled_lessons] == SLUGS
    assert [lesson.path.name for lesson in bundled_lessons] == [
        f"{week:02d}-{slug}.md" for week, slug in enumerate(SLUGS, start=1)
    ]


def test_every_article_paragraph_is_in_exactly_one_lesson(bundled_lessons: list[ParsedLesson]) -> None:
    paragraphs = article_paragraphs()
    assert len(paragraphs) == 17  # 3 summary bullets, 5 on muscle, the benefits intro, 6 benefits, 2 conclusion
    texts = {name: normalise(body) for name, body in bodies(bundled_lessons)}
    for paragraph in paragraphs:
        homes = {name: text.count(paragraph) for name, text in texts.items() if paragraph in text}
        assert list(homes.values()) == [1], f"{paragraph[:60]!r} appears in {homes or 'no lesson'}"


def test_the_first_two_summary_points_open_the_muscle_lesson(bundled_lessons: list[ParsedLesson]) -> None:
    muscle = normalise(bundled_lessons[0].body)
    assert muscle.index("Can running build muscle? Yes") < muscle.index("Will running make me lose muscle?")
    assert "Stronger Knees" not in muscle
    longevity = normalise(bundled_lessons[6].body)
    assert longevity.index("it pays off long-term") < longevity.index("Lace up, hit the road")


def test_every_number_in_a_lesson_comes_from_the_article(bundled_lessons: list[ParsedLesson]) -> None:
    known = numbers(SOURCE.read_text(encoding="utf-8"))
    assert {"1.44", "30%", "10K", "2,700", "100m"} <= known
    for lesson in bundled_lessons:
        texts = [lesson.body, lesson.meta["preheader"], lesson.meta["summary"], lesson.meta["title"]]
        invented = set().union(*(numbers(text) for text in texts)) - known
        assert not invented, f"{lesson.path.name} has numbers the article does not: {sorted(invented)}"
        subject_numbers = numbers(lesson.meta["subject"]) - known
        assert subject_numbers <= {str(lesson.meta["week"])}, lesson.path.name


def test_each_lesson_ends_with_takeaways_and_one_action(bundled_lessons: list[ParsedLesson]) -> None:
    for lesson in bundled_lessons:
        second_level = re.findall(r"^## (.+)$", lesson.body, re.MULTILINE)
        assert second_level[-2:] == ["Key takeaways", "Try this week"], lesson.path.name
        takeaways = lesson.section("Key takeaways").splitlines()
        assert 3 <= len(takeaways) <= 4, lesson.path.name
        assert all(line.startswith("- ") and len(line) > 20 for line in takeaways), lesson.path.name
        action = lesson.section("Try this week")
        assert "\n" not in action, f"{lesson.path.name}: the action is one short paragraph"
        assert 80 <= len(action) <= 500, lesson.path.name


def test_bodies_fit_the_email_template(bundled_lessons: list[ParsedLesson]) -> None:
    for name, body in bodies(bundled_lessons):
        levels = [len(hashes) for hashes in re.findall(r"^(#+) ", body, re.MULTILINE)]
        assert 1 not in levels, f"{name}: the title is the email's only h1"
        assert all(level <= previous + 1 for previous, level in zip([1, *levels], levels, strict=False)), name
        assert not re.search(r"<[A-Za-z/!]", body), f"{name}: no raw HTML"
        for url in re.findall(r"\]\(([^)]*)\)", body):
            assert url.startswith("https://"), f"{name}: link {url!r}"
        assert not re.search(r"\{\{|\{%|\+\+\+", body), name


def test_front_matter_fits_the_inbox(bundled_lessons: list[ParsedLesson]) -> None:
    for lesson in bundled_lessons:
        meta, name = lesson.meta, lesson.path.name
        assert set(meta) == {"week", "slug", "title", "subject", "preheader", "summary"}, name
        assert meta["subject"].startswith(f"Lesson {meta['week']}: "), name
        assert len(meta["subject"]) <= 78, name
        assert 0 < len(meta["preheader"]) <= 140, name
        opening = normalise(lesson.body.lstrip().splitlines()[0])
        first_sentence = re.split(r"(?<=[.?!])\s", opening)[0]
        assert not first_sentence.startswith(meta["preheader"][:40]), f"{name}: preheader repeats the opening"
        assert meta["summary"].endswith((".", "?", "!")), name
        assert len({meta["title"], meta["subject"], meta["preheader"], meta["summary"]}) == 4, name


def test_no_non_breaking_space_of_the_web_page_is_left(bundled_lessons: list[ParsedLesson]) -> None:
    assert "\u00a0" in SOURCE.read_text(encoding="utf-8")
    for lesson in bundled_lessons:
        assert "\u00a0" not in lesson.path.read_text(encoding="utf-8"), lesson.path.name


def test_typography_stays_the_articles(bundled_lessons: list[ParsedLesson]) -> None:
    article = SOURCE.read_text(encoding="utf-8")
    assert "'" not in article
    assert '"' not in article
    for lesson in bundled_lessons:
        texts = [lesson.body, *(str(value) for value in lesson.meta.values())]
        for text in texts:
            assert "'" not in text, f"{lesson.path.name}: use ’ as the article does"
            assert '"' not in text, f"{lesson.path.name}: use “ ” as the article does"

"""The lesson loader: the bundled course loads; each kind of broken lesson gets one message naming file and line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from newsletter.errors import LessonError
from newsletter.lessons import empty_editor_sections, load_lesson, load_series

REPO = Path(__file__).resolve().parent.parent
FIXTURE_COURSE = Path(__file__).resolve().parent / "fixtures" / "course"


@pytest.fixture
def course(tmp_path: Path) -> Path:
    """A writable copy of the three-lesson fixture course."""
    folder = tmp_path / "lessons"
    shutil.copytree(FIXTURE_COURSE, folder)
    return folder


def line_of(path: Path, start: str) -> int:
    """The 1-based number of the first line of `path` that starts with `start`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if line.startswith(start))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def load_error(folder: Path) -> LessonError:
    with pytest.raises(LessonError) as caught:
        load_series(folder)
    return caught.value


def test_the_bundled_course_loads_in_week_order() -> None:
    series = load_series(REPO / "lessons")
    assert [lesson.slug for lesson in series] == ["muscle", "knees", "brain", "mood", "sleep", "immunity", "longevity"]
    assert [lesson.week for lesson in series] == list(range(1, 8))
    assert series.slug == "running" and series.title
    assert series.source == REPO / "lessons" / "source" / "running-and-muscle.txt"
    assert series.source.is_file()


def test_the_fixture_course_loads(course: Path) -> None:
    series = load_series(course)
    assert [lesson.slug for lesson in series] == ["hamstrings", "hips", "shoulders"]
    first = series.lesson("hamstrings")
    assert first.body_line == line_of(course / "01-hamstrings.md", "Tight hamstrings")
    assert series.next_after(first) == series.lesson("hips")
    assert series.week(4) is None


def test_broken_front_matter_names_the_line(course: Path) -> None:
    path = course / "02-hips.md"
    edit(path, 'title = "Hips: where stiffness hides"', 'title = "Hips: where stiffness hides')
    error = load_error(course)
    assert error.path == str(path)
    assert error.line == line_of(path, 'title = "Hips')
    assert str(error).startswith(f"{path} line {error.line}: front matter is not valid TOML")


def test_a_missing_required_key_is_named(course: Path) -> None:
    path = course / "03-shoulders.md"
    edit(path, 'subject = "Lesson 3: shoulders back"\n', "")
    error = load_error(course)
    assert str(error) == f"{path} line 1: front matter is missing required key(s): subject"


def test_an_unknown_key_is_named_with_the_allowed_ones(course: Path) -> None:
    path = course / "01-hamstrings.md"
    edit(path, "week = 1\n", 'week = 1\nauthor = "Sam"\n')
    error = load_error(course)
    assert error.path == str(path) and error.line is not None
    assert "unknown front matter key 'author'" in str(error)
    assert "allowed: week, slug, title, subject, preheader, summary" in str(error)


def test_a_wrong_type_says_what_is_expected(course: Path) -> None:
    path = course / "02-hips.md"
    edit(path, "week = 2", 'week = "two"')
    error = load_error(course)
    assert str(error) == f"{path} line 2: `week` must be an integer, got 'two'"


def test_a_duplicate_week_names_both_files(course: Path) -> None:
    path = course / "03-shoulders.md"
    edit(path, "week = 3", "week = 2")
    error = load_error(course)
    assert error.path == str(path) and error.line == 2
    assert "week 2 is already used by 02-hips.md" in str(error)


def test_a_duplicate_slug_names_both_files(course: Path) -> None:
    path = course / "03-shoulders.md"
    edit(path, 'slug = "shoulders"', 'slug = "hips"')
    error = load_error(course)
    assert error.path == str(path) and error.line == 3
    assert "slug 'hips' is already used by 02-hips.md" in str(error)


def test_a_gap_in_the_weeks_is_refused(course: Path) -> None:
    edit(course / "03-shoulders.md", "week = 3", "week = 4")
    assert "expected week 3 here" in str(load_error(course))


def test_an_h1_in_the_body_names_its_line(course: Path) -> None:
    path = course / "02-hips.md"
    edit(path, "## Key takeaways", "# Key takeaways")
    error = load_error(course)
    assert error.line == line_of(path, "# Key takeaways")
    assert "the title is the email's only `#` heading" in str(error)


def test_a_skipped_heading_level_names_its_line(course: Path) -> None:
    path = course / "02-hips.md"
    edit(path, "## Key takeaways", "#### Key takeaways")
    error = load_error(course)
    assert error.line == line_of(path, "#### Key takeaways")
    assert "skips from h1 to h4" in str(error)


def test_a_link_that_is_not_https_names_its_line(course: Path) -> None:
    path = course / "01-hamstrings.md"
    edit(path, "(https://example.org/hamstrings)", "(http://example.org/hamstrings)")
    error = load_error(course)
    # The line of the link, or of the start of its paragraph (the loader reports Markdown blocks).
    assert error.line is not None
    assert line_of(path, "Long hours") <= error.line <= line_of(path, "[overview]")
    assert "link 'http://example.org/hamstrings' must be an absolute https:// URL" in str(error)


def test_a_relative_link_is_refused(course: Path) -> None:
    edit(course / "01-hamstrings.md", "(https://example.org/hamstrings)", "(/hamstrings)")
    assert "'/hamstrings' must be an absolute https:// URL" in str(load_error(course))


def test_a_file_that_is_not_utf8_is_named(course: Path) -> None:
    path = course / "02-hips.md"
    path.write_bytes(path.read_bytes().replace(b"Hips: where", "Hüfte: wo".encode("latin-1")))
    error = load_error(course)
    assert error.path == str(path)
    assert "is not UTF-8 text" in str(error)


def test_front_matter_must_open_and_close(course: Path) -> None:
    path = course / "01-hamstrings.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.removeprefix("+++\n"), encoding="utf-8")
    assert str(load_error(course)).startswith(f"{path} line 1: must start with a `+++` line")
    path.write_text("+++\n" + text.split("+++", 2)[1], encoding="utf-8")
    assert "front matter is never closed" in str(load_error(course))


def test_a_body_is_required(course: Path) -> None:
    path = course / "03-shoulders.md"
    path.write_text(path.read_text(encoding="utf-8").split("+++\n", 2)[1].join(["+++\n", "+++\n"]), encoding="utf-8")
    error = load_error(course)
    assert error.path == str(path) and "has no Markdown body" in str(error)


def test_a_subject_over_78_characters_is_refused(course: Path) -> None:
    edit(course / "02-hips.md", 'subject = "Lesson 2: open up your hips"', f'subject = "{"x" * 79}"')
    assert "`subject` must be at most 78 characters, has 79" in str(load_error(course))


def test_series_toml_is_required_and_validated(course: Path) -> None:
    series_file = course / "series.toml"
    edit(series_file, 'cadence = "weekly"', 'cadence = "weekly"\nauthor = "Sam"')
    error = load_error(course)
    assert error.path == str(series_file) and "unknown series key 'author'" in str(error)
    series_file.unlink()
    assert "needs a series.toml" in str(load_error(course))


def test_load_lesson_reads_one_file(course: Path) -> None:
    lesson = load_lesson(course / "02-hips.md")
    assert (lesson.week, lesson.slug, lesson.title) == (2, "hips", "Hips: where stiffness hides")
    assert lesson.summary.startswith("The hip flexors")
    assert lesson.body.startswith("The hip flexors shorten")


def test_empty_editor_sections_are_found_with_their_lines(course: Path) -> None:
    path = course / "02-hips.md"
    text = path.read_text(encoding="utf-8")
    head, _, _ = text.partition("## Key takeaways")
    path.write_text(
        head + "## Key takeaways\n\n## Try this week\n\n### Notes\n\nA sub-heading is not an action.\n",
        encoding="utf-8",
    )
    lesson = load_lesson(path)
    assert empty_editor_sections(lesson) == [
        ("Key takeaways", line_of(path, "## Key takeaways")),
        ("Try this week", line_of(path, "## Try this week")),
    ]
    assert empty_editor_sections(load_lesson(course / "01-hamstrings.md")) == []

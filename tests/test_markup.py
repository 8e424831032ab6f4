"""The lesson dialect: images, buttons and pull quotes render for email, pass the checklist, and refuse mistakes."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.checklist import failures, run_checklist
from newsletter.errors import LessonError
from newsletter.lessons import load_lesson
from newsletter.markup import body_blocks, markdown_to_text
from newsletter.markup.dialect import image_size
from newsletter.project import Project

NOW = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
FRONT = '+++\nweek = 1\nslug = "x"\ntitle = "X"\nsubject = "Lesson 1: X"\npreheader = "A preheader."\n+++\n'


def rich_week(project: Project) -> str:
    return "trails"


def test_a_local_image_is_linked_at_base_url_with_its_size_and_alt(rich_project: Project) -> None:
    html = rich_project.render(rich_project.sample_subscriber(), rich_week(rich_project), NOW).html
    image = re.search(r'<img src="https://running\.example\.com/media/images/trail\.png\?v=([0-9a-f]{10})"[^>]*>', html)
    assert image, "the local image is linked at base_url/media/"
    assert 'alt="A trail winding between green hills under a pale sky"' in image[0]
    assert 'width="552"' in image[0] and 'height="368"' in image[0]
    assert "max-width:100%;height:auto" in image[0]
    assert '<img src="https://running.example.com/maps/loops.png" alt="Map of the club’s three trail loops"' in html


def test_a_changed_image_gets_a_new_url(rich_project: Project) -> None:
    lesson = rich_project.series.lesson("trails")
    folder = lesson.path.parent
    before = str(body_blocks(lesson.body, folder, "https://x.example")[0].html)
    (folder / "images" / "trail.png").write_bytes(b"\x89PNG other bytes")
    after = str(body_blocks(lesson.body, folder, "https://x.example")[0].html)
    version = re.compile(r"trail\.png\?v=([0-9a-f]+)")
    assert version.findall(before) != version.findall(after)


def test_a_button_is_an_mjml_button_and_a_quote_a_pull_quote(rich_project: Project) -> None:
    rendered = rich_project.render(rich_project.sample_subscriber(), rich_week(rich_project), NOW)
    button = re.search(
        r'<table[^>]*role="presentation"[^>]*>.{0,600}?href="https://running\.example\.com/trails"', rendered.html, re.S
    )
    assert button, "the button is MJML's table-based button"
    assert re.search(r">\s*Find a trail near you\s*</a>", rendered.html)
    assert "<blockquote>" in rendered.html
    assert '<p class="quote-source">— A club coach</p>' in rendered.html
    assert 'class="button"' not in rendered.html


def test_the_text_part_shows_the_image_alt_the_button_link_and_the_quote(rich_project: Project) -> None:
    text = rich_project.render(rich_project.sample_subscriber(), rich_week(rich_project), NOW).text
    assert "[A trail winding between green hills under a pale sky]" in text
    assert "Find a trail near you (https://running.example.com/trails)" in text
    assert "> The trail does not care how fast you are. It only asks you to keep going.\n\n> — A club coach" in text


def test_the_rich_lesson_passes_the_email_checklist(rich_project: Project) -> None:
    raw = rich_project.envelope(rich_project.sample_subscriber(), rich_week(rich_project), now=NOW).data
    assert failures(run_checklist(raw, call_to_action="Try this week")) == []


def test_raw_html_is_shown_as_text_never_as_markup(tmp_path: Path) -> None:
    blocks = body_blocks('<b>bold</b> and <img src="https://x.example/a.png">\n', tmp_path, "https://x.example")
    assert (
        str(blocks[0].html)
        == "<p>&lt;b&gt;bold&lt;/b&gt; and &lt;img src=&quot;https://x.example/a.png&quot;&gt;</p>\n"
    )
    assert markdown_to_text("<b>bold</b>\n") == "<b>bold</b>\n"


def lesson_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "01-x.md"
    path.write_text(FRONT + "Opening line.\n\n" + body, encoding="utf-8")
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "images" / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "images" / "a.svg").write_text("<svg/>", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("![A](images/a.png)\n", "image 'images/a.png' needs width and height in pixels: ![A](images/a.png){width=552"),
        ("![A](images/a.png){width=300}\n", "needs height in pixels"),
        ("![](images/a.png){width=300 height=200}\n", "needs alt text"),
        ("![A](images/a.png){width=800 height=200}\n", "is 800 px wide; the content column is 552 px"),
        ("![A](images/a.png){width=wide height=200}\n", "width must be a whole number of pixels, got 'wide'"),
        ("![A](images/a.png){width=300 height=200 style=float:left}\n", "unknown attributes style"),
        ("![A](http://x.example/a.png){width=300 height=200}\n", "must be an https:// URL"),
        ("![A](../a.png){width=300 height=200}\n", "must be a path inside the lessons folder"),
        ("![A](/etc/a.png){width=300 height=200}\n", "must be a path inside the lessons folder"),
        ("![A](images/b.png){width=300 height=200}\n", "image 'images/b.png' not found"),
        ("![A](images/a.svg){width=300 height=200}\n", "must be a .png, .jpg, .jpeg, .gif file"),
        ("Go [now](https://x.example){.button} please.\n", "must stand alone in its paragraph"),
        ("[now](https://x.example){.big}\n", "a link takes only {.button}"),
        ("[now](https://x.example){target=_blank}\n", "attributes target"),
    ],
)
def test_a_mistake_in_rich_content_names_file_line_and_fix(tmp_path: Path, body: str, message: str) -> None:
    path = lesson_file(tmp_path, "Some text.\n\n" + body)
    with pytest.raises(LessonError) as caught:
        load_lesson(path)
    assert caught.value.path == str(path)
    assert caught.value.line == len(FRONT.splitlines()) + 5
    assert message in caught.value.reason


def test_an_image_of_another_shape_than_its_width_and_height_is_refused(tmp_path: Path) -> None:
    png = (Path(__file__).resolve().parent / "fixtures" / "rich" / "images" / "trail.png").read_bytes()
    path = lesson_file(tmp_path, "![A trail](images/trail.png){width=300 height=300}\n")
    (tmp_path / "images" / "trail.png").write_bytes(png)
    with pytest.raises(LessonError, match=r"is 552×368 px, a different shape .* use height=200"):
        load_lesson(path)
    path.write_text(path.read_text(encoding="utf-8").replace("height=300", "height=200"), encoding="utf-8")
    assert load_lesson(path).slug == "x"


@pytest.mark.parametrize(
    ("header", "size"),
    [
        (b"GIF89a" + (600).to_bytes(2, "little") + (400).to_bytes(2, "little") + b"\x00" * 8, (600, 400)),
        (b"\xff\xd8\xff\xe0\x00\x04\x00\x00\xff\xc0\x00\x11\x08\x01\x90\x02\x58\x03" + b"\x00" * 12, (600, 400)),
        (b"not an image", None),
    ],
)
def test_image_sizes_are_read_from_gif_and_jpeg_headers(tmp_path: Path, header: bytes, size: object) -> None:
    image = tmp_path / "image"
    image.write_bytes(header)
    assert image_size(image) == size


def test_an_image_line_is_named_inside_a_long_paragraph(tmp_path: Path) -> None:
    path = lesson_file(tmp_path, "First line of a paragraph\nsecond line ![A](images/a.png)\nthird line.\n")
    with pytest.raises(LessonError) as caught:
        load_lesson(path)
    assert caught.value.line == len(FRONT.splitlines()) + 4

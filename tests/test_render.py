"""Rendering: lessons and the confirmation email through the real templates, Jinja2 and mjml-python."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import mjml
import pytest

from newsletter.config import Settings
from newsletter.errors import TemplateError
from newsletter.lessons import load_series
from newsletter.markup import markdown_to_text
from newsletter.models import CONFIRMATION, Subscriber
from newsletter.project import Project
from newsletter.render import Recipient, Renderer

REPO = Path(__file__).resolve().parent.parent
BUNDLED = load_series(REPO / "lessons")
TEXT_COLUMNS = 78


def reader(project: Project, name: str = "Alex Runner", subscriber_id: int = 5) -> Subscriber:
    sample = project.sample_subscriber("reader@example.com", name)
    sample.id = subscriber_id
    return sample


NOW = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)  # one instant for rendering and links: tokens carry their expiry


def hrefs(html: str) -> list[str]:
    return re.findall(r'href="([^"]*)"', html)


@pytest.mark.parametrize("slug", [lesson.slug for lesson in BUNDLED])
def test_each_lesson_renders_its_front_matter_body_and_footer(project: Project, slug: str) -> None:
    lesson = project.series.lesson(slug)
    who = reader(project)
    rendered = project.render(who, lesson.slug, NOW)
    links = project.links(who.id, NOW)
    assert rendered.subject == lesson.subject
    assert rendered.preheader == lesson.preheader
    assert f"<title>{lesson.subject}</title>" in rendered.html.replace("&#39;", "'")
    assert re.search(r"<h1[^>]*>" + re.escape(lesson.title.replace("'", "&#39;")) + "</h1>", rendered.html)
    assert f"Lesson {lesson.week} of {len(project.series)}" in rendered.html
    assert project.settings.sender.address in rendered.html
    assert "Try this week" in rendered.html and "Try this week" in rendered.text
    assert links.unsubscribe in hrefs(rendered.html)
    assert links.preferences in hrefs(rendered.html)
    assert all(href.startswith(("https://", "mailto:")) for href in hrefs(rendered.html)), hrefs(rendered.html)
    assert links.unsubscribe in rendered.text and links.preferences in rendered.text
    assert "fonts.googleapis" not in rendered.html
    assert len(rendered.html.encode()) < 90 * 1024


@pytest.mark.parametrize("slug", [lesson.slug for lesson in BUNDLED])
def test_the_text_part_is_wrapped_plain_text(project: Project, slug: str) -> None:
    text = project.render(reader(project), slug).text
    assert not re.search(r"</?[a-z][a-z0-9]*(\s[^<>]*)?/?>", text)
    assert "&amp;" not in text and "&#" not in text
    for line in text.splitlines():
        assert len(line) <= TEXT_COLUMNS or "https://" in line, line
    assert text.endswith("\n") and "\n\n\n" not in text


def test_each_lesson_teases_the_next_from_its_front_matter(project: Project) -> None:
    for lesson in project.series:
        rendered = project.render(reader(project), lesson.slug)
        upcoming = project.series.next_after(lesson)
        if upcoming is None:
            assert "last lesson" in rendered.text
            continue
        teaser = f"Next week, lesson {upcoming.week}: {upcoming.title}"
        assert teaser in rendered.text
        assert teaser.replace("'", "&#39;") in rendered.html
        assert " ".join(upcoming.summary.split()) in " ".join(rendered.text.split())


def test_the_confirmation_email_carries_the_confirm_link(project: Project) -> None:
    who = reader(project)
    rendered = project.render(who, CONFIRMATION, NOW)
    links = project.links(who.id, NOW)
    assert rendered.subject == f"Confirm your subscription to {project.series.title}"
    assert links.confirm in hrefs(rendered.html)
    assert links.unsubscribe in hrefs(rendered.html)
    assert links.confirm in rendered.text
    assert "seven days" in rendered.text


def test_subscriber_values_are_escaped_in_html_and_plain_in_text(project: Project) -> None:
    rendered = project.render(reader(project, name='<script>alert("x")</script> & Co'), "muscle")
    assert "<script" not in rendered.html
    assert "Hi &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co," in rendered.html
    assert 'Hi <script>alert("x")</script> & Co,' in rendered.text


def test_line_breaks_in_a_name_are_collapsed(project: Project) -> None:
    rendered = project.render(reader(project, name="Alex\r\nBcc: x@example.org"), "muscle")
    assert "Hi Alex Bcc: x@example.org," in rendered.text
    assert "\r" not in rendered.text


def test_no_name_greets_generically(project: Project) -> None:
    assert "Hi there," in project.render(reader(project, name=""), "muscle").text


def test_mjml_runs_once_per_lesson_not_once_per_subscriber(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = mjml.mjml2html

    def counting(source: str, **options: object) -> str:
        calls.append(len(source))
        assert options.get("fonts") == {}
        return str(real(source, **options))

    monkeypatch.setattr(mjml, "mjml2html", counting)
    first = project.render(reader(project, subscriber_id=1), "knees")
    second = project.render(reader(project, "Sam", subscriber_id=2), "knees")
    assert len(calls) == 1
    assert project.links(1).unsubscribe in first.html and project.links(2).unsubscribe in second.html
    assert project.links(1).unsubscribe not in second.html


def test_a_template_syntax_error_names_file_and_line(settings: Settings) -> None:
    template = settings.newsletter.templates / "lesson.mjml.j2"
    lines = template.read_text(encoding="utf-8").splitlines()
    lines[3] = "{% if lesson.title %}<mj-text>unclosed</mj-text>"
    template.write_text("\n".join(lines) + "\n", encoding="utf-8")
    renderer = Renderer(settings, load_series(settings.newsletter.lessons))
    with pytest.raises(TemplateError, match=r"lesson\.mjml\.j2 line \d+: .*endif"):
        renderer.lesson(
            renderer.series.lessons[0], Recipient("a@example.com", "A", "Monday", "https://x/u", "https://x/p")
        )


def test_a_render_time_error_in_the_layout_names_the_layout_and_its_line(settings: Settings) -> None:
    layout = settings.newsletter.templates / "layout.mjml.j2"
    lines = layout.read_text(encoding="utf-8").splitlines()
    number = lines.index('<mjml lang="en">') + 2
    lines.insert(number - 1, "{{ 1 // 0 }}")
    layout.write_text("\n".join(lines) + "\n", encoding="utf-8")
    renderer = Renderer(settings, load_series(settings.newsletter.lessons))
    recipient = Recipient("a@example.com", "A", "Monday", "https://x/u", "https://x/p")
    with pytest.raises(TemplateError) as caught:
        renderer.confirmation(recipient)
    said = "ZeroDivisionError: integer division or modulo by zero"
    assert str(caught.value) == f"{layout.resolve()} line {number}: {said}"


def test_a_template_that_makes_invalid_mjml_names_the_template_and_lesson(settings: Settings) -> None:
    template = settings.newsletter.templates / "lesson.mjml.j2"
    source = template.read_text(encoding="utf-8")
    template.write_text(source.replace("{{ block.html }}", "{{ block.html }}<p>unclosed"), encoding="utf-8")
    series = load_series(settings.newsletter.lessons)
    renderer = Renderer(settings, series)
    with pytest.raises(
        TemplateError, match=r"lesson\.mjml\.j2 \(rendering .*01-muscle\.md\): the template produced invalid MJML"
    ):
        renderer.lesson(series.lessons[0], Recipient("a@example.com", "A", "Monday", "https://x/u", "https://x/p"))


def test_markdown_to_text_wraps_lists_links_and_headings() -> None:
    source = (
        "A paragraph with a [link](https://example.org/a) that goes on long enough to need wrapping at "
        "seventy-eight columns.\n\n## Key takeaways\n\n- First point\n- Second point, long enough that it "
        "also wraps onto a second line under its own bullet marker.\n\n1. one\n2. two\n"
    )
    text = markdown_to_text(source)
    assert "link (https://example.org/a)" in " ".join(text.split())
    assert "Key takeaways\n-------------" in text
    assert "• First point\n• Second point" in text
    assert re.search(r"\n• Second point[^\n]*\n  \S", text), "a wrapped item continues under its text"
    # Two separate lists are two blocks: a blank line between them.
    assert "marker.\n\n1. one\n2. two" in text
    assert all(len(line) <= TEXT_COLUMNS for line in text.splitlines())


def test_the_next_week_teaser_puts_title_and_summary_in_separate_paragraphs(project: Project) -> None:
    html = project.render(reader(project), "muscle", NOW).html
    upcoming = project.series.lesson("knees")
    title = re.escape(f"Next week, lesson 2: {upcoming.title}".replace("'", "&#39;"))
    summary = re.escape(upcoming.summary.replace("'", "&#39;"))
    assert re.search(rf"<p[^>]*><strong>{title}</strong></p>\s*<p[^>]*>{summary}</p>", html)


def test_the_footer_names_the_series_without_a_second_colon(project: Project) -> None:
    rendered = project.render(reader(project), "brain", NOW)
    for part in (rendered.html, " ".join(rendered.text.split())):
        assert "Beyond: one lesson" not in part
        assert "subscribed to Running: Muscle and Beyond. One lesson reaches you every Monday at 07:00 (UTC)." in part
    confirmation = project.render(reader(project), CONFIRMATION, NOW)
    assert "Beyond</strong>: " not in confirmation.html and "Beyond: 7" not in confirmation.text


def test_the_confirmation_shows_its_link_as_text_under_the_button(project: Project) -> None:
    html = project.render(reader(project), CONFIRMATION, NOW).html
    confirm = project.links(5, NOW).confirm
    assert hrefs(html).count(confirm) == 2
    button, plain = [match.start() for match in re.finditer(re.escape(f'href="{confirm}"'), html)]
    assert button < plain
    assert f">{confirm}</a>" in html  # the address itself, readable and copyable


def test_the_hidden_preheader_is_not_white_text(project: Project) -> None:
    for week in (CONFIRMATION, "muscle"):
        html = project.render(reader(project), week, NOW).html
        preheader = re.search(r"<body[^>]*>(<div[^>]*>)", html)
        assert preheader and "display:none" in preheader[1]
        assert "color" not in preheader[1]

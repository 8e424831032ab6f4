"""`newsletter lessons`, `render` and `check` as an editor runs them, on a copy of the bundled project."""

from __future__ import annotations

import email
import json
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from newsletter import tokens
from newsletter.checklist import run_checklist
from newsletter.cli import main
from newsletter.models import Subscriber
from newsletter.project import Project

Invoke = Callable[..., Result]
SLUGS = ["muscle", "knees", "brain", "mood", "sleep", "immunity", "longevity"]


@pytest.fixture
def run(project_dir: Path, env: dict[str, str]) -> Invoke:
    """Run `newsletter --config <copied project> ARGS…` and return the click Result."""

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(
            main, ["--config", str(project_dir / "config.toml"), *args], env={"COLUMNS": "200"}, catch_exceptions=False
        )

    return invoke


def as_message(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_lessons_lists_the_course_as_a_table(run: Invoke) -> None:
    result = run("lessons")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for week, slug in enumerate(SLUGS, 1):
        row = next(line for line in lines if f" {slug} " in line)
        assert row.split("│")[1].strip() == str(week)
        assert row.rstrip("│ ").endswith("KB")
    assert "Running: Muscle and Beyond (7 lessons)" in result.stdout


def test_lessons_prints_a_subject_with_brackets_as_written(run: Invoke, project_dir: Path) -> None:
    knees = next((project_dir / "lessons").glob("02-*.md"))
    text = knees.read_text(encoding="utf-8")
    subject = next(line for line in text.splitlines() if line.startswith("subject = "))
    knees.write_text(text.replace(subject, 'subject = "Knees [/not a tag] and [bold]stairs"'), encoding="utf-8")
    result = run("lessons")
    assert result.exit_code == 0, result.output
    assert "Knees [/not a tag] and [bold]stairs" in result.stdout


def test_lessons_json_gives_every_field_and_the_real_html_size(run: Invoke, project: Project) -> None:
    result = run("lessons", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["slug"] for row in rows] == SLUGS
    assert [row["week"] for row in rows] == list(range(1, 8))
    first = project.series.lesson("muscle")
    assert rows[0]["subject"] == first.subject and rows[0]["preheader"] == first.preheader
    assert rows[0]["file"] == "lessons/01-muscle.md"
    expected = len(project.render(project.sample_subscriber(), "muscle").html.encode())
    assert rows[0]["html_bytes"] == expected > 5000


def test_render_prints_html_by_default(run: Invoke) -> None:
    result = run("render", "knees")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<!doctype html>")
    assert "Lesson 2 of 7" in result.stdout and "Hi Alex Runner," in result.stdout


def test_render_text_for_a_named_sample(run: Invoke) -> None:
    result = run("render", "sleep", "--format", "text", "--name", "Sam <Sleeper>")
    assert result.exit_code == 0, result.output
    assert "Hi Sam <Sleeper>," in result.stdout
    assert "Try this week" in result.stdout and "<p>" not in result.stdout


def test_render_eml_is_the_wire_bytes(run: Invoke, project_dir: Path) -> None:
    result = run("render", "mood", "--format", "eml", "--email", "new@example.org")
    assert result.exit_code == 0, result.output
    data = result.stdout_bytes
    assert b"\n" not in data.replace(b"\r\n", b"")
    message = as_message(data)
    assert message["To"].addresses[0].addr_spec == "new@example.org"
    assert message["Subject"].startswith("Lesson 4:")
    assert abs((message["Date"].datetime - datetime.now(UTC)).total_seconds()) < 120
    failures = [str(r) for r in run_checklist(data, call_to_action="Try this week") if not r.ok]
    assert failures == []
    assert not (project_dir / "newsletter.db").exists(), "previewing must not create a database"


def test_render_eml_at_a_given_instant(run: Invoke) -> None:
    first = as_message(run("render", "muscle", "--format", "eml", "--now", "2026-03-02T07:00Z").stdout_bytes)
    again = as_message(run("render", "muscle", "--format", "eml", "--now", "2026-03-09T07:00Z").stdout_bytes)
    assert first["Date"].datetime == datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
    assert first["Message-ID"] == again["Message-ID"]
    assert run("render", "muscle", "--now", "next week").exit_code == 2


def test_render_confirmation_to_a_file(run: Invoke, tmp_path: Path) -> None:
    target = tmp_path / "confirm.eml"
    result = run("render", "confirmation", "--format", "eml", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"Wrote {target}" in result.stderr
    message = as_message(target.read_bytes())
    assert message["Subject"] == "Confirm your subscription to Running: Muscle and Beyond"


def test_render_for_a_stored_subscriber_uses_their_working_links(run: Invoke, project: Project) -> None:
    with project.db.session() as session:
        stored = Subscriber(
            email="ann@example.org",
            name="Ann Stored",
            timezone="Europe/Berlin",
            weekday=2,
            send_time=datetime(2026, 1, 1, 6, 30).time(),
            status="active",
        )
        session.add(stored)
        session.flush()
        stored_id = stored.id
    project.db.dispose()
    result = run("render", "brain", "--format", "text", "--email", "Ann@Example.org")
    assert result.exit_code == 0, result.output
    assert "Hi Ann Stored," in result.stdout
    assert "Wednesday at 06:30 (Europe/Berlin)" in result.stdout
    token = result.stdout.split(f"{project.settings.newsletter.base_url}/u/", 1)[1].split()[0]
    claims = tokens.verify(project.settings.secret_key, token, "unsubscribe")
    assert claims.subscriber_id == stored_id


def test_render_an_unknown_slug_is_a_usage_error_listing_the_slugs(run: Invoke) -> None:
    result = run("render", "hamstrings")
    assert result.exit_code == 2
    assert "no lesson 'hamstrings'" in result.output
    assert "confirmation, muscle, knees" in result.output


def test_check_passes_on_the_bundled_course(run: Invoke) -> None:
    result = run("check")
    assert result.exit_code == 0, result.output
    assert "OK: 8 emails pass the email checklist" in result.stdout
    assert "FAIL" not in result.output


ADDRESS_WARNING = "warning: [sender] address is still the example one ("
DKIM_WARNING = "warning: [delivery] transport is smtp but [dkim] selector is empty: every email goes out unsigned"


def test_check_warns_of_the_example_postal_address_and_smtp_without_dkim_but_passes(
    run: Invoke, project_dir: Path
) -> None:
    config = project_dir / "config.toml"
    bundled = run("check")
    assert bundled.exit_code == 0
    assert [line for line in bundled.stderr.splitlines() if line.startswith("warning: ")] == [
        ADDRESS_WARNING + "'Running: Muscle and Beyond · 1 Example Street · Springfield'): every footer prints it, "
        "and CAN-SPAM and the mailbox providers want your real postal address there"
    ]
    text = config.read_text(encoding="utf-8").replace('transport = "outbox"', 'transport = "smtp"', 1)
    config.write_text(text.replace("1 Example Street · Springfield", "12 Harbour Road · Bristol BS1 4DJ"))
    on_smtp = run("check")
    assert on_smtp.exit_code == 0 and "OK: 8 emails pass" in on_smtp.stdout
    notes = [line for line in on_smtp.stderr.splitlines() if line.startswith("warning: ")]
    assert len(notes) == 1 and notes[0].startswith(DKIM_WARNING)
    line = 'address = "Running: Muscle and Beyond · 1 Example Street · Springfield"'
    config.write_text(text.replace(line, ""))
    assert ADDRESS_WARNING + "'Example Publishing, 1 Main Street, Springfield')" in run("check").stderr  # the default
    config.write_text(text.replace(line, 'address = ""'))
    assert "warning: [sender] address is empty: every footer prints it" in run("check").stderr


def test_check_names_the_file_and_line_of_a_broken_lesson(run: Invoke, project_dir: Path) -> None:
    lesson = project_dir / "lessons" / "03-brain.md"
    lines = lesson.read_text(encoding="utf-8").splitlines()
    number = next(i for i, line in enumerate(lines, 1) if line.startswith("title ="))
    lines[number - 1] = 'title = "an unclosed string'
    lesson.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run("check")
    assert result.exit_code == 1
    assert f"FAIL lessons/03-brain.md line {number}: front matter is not valid TOML" in result.stdout


def test_check_names_a_lesson_with_a_duplicate_week(run: Invoke, project_dir: Path) -> None:
    lesson = project_dir / "lessons" / "05-sleep.md"
    lesson.write_text(lesson.read_text(encoding="utf-8").replace("week = 5", "week = 4", 1), encoding="utf-8")
    result = run("check")
    assert result.exit_code == 1
    assert "week 4 is already used by 04-mood.md" in result.stdout
    assert "lessons/05-sleep.md line 2" in result.stdout


def test_check_names_the_template_and_line_of_a_syntax_error(run: Invoke, project_dir: Path) -> None:
    template = project_dir / "templates" / "lesson.mjml.j2"
    lines = template.read_text(encoding="utf-8").splitlines()
    number = next(i for i, line in enumerate(lines, 1) if "block.html" in line)
    lines[number - 1] = "          {{ block.html }"
    template.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run("check")
    assert result.exit_code == 1
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL") and "lesson.mjml.j2" in line]
    assert len(failures) == 1, failures  # once for the template, not once per lesson
    assert failures[0].startswith(f"FAIL templates/lesson.mjml.j2 line {number}: ")


# Mistakes that only show while a template renders: Jinja2 compiles them fine.
RENDER_TIME_MISTAKES = [
    ("{{ lesson.title.nope.deeper }}", "'str object' has no attribute 'nope'"),
    ("{{ no_such_name.x }}", "'no_such_name' is undefined"),
    ('{{ "%d" % lesson.title }}', "TypeError: %d format: a real number is required, not str"),
    ('{% include "footer.mjml.j2" %}', "is named here but not found"),
]


@pytest.mark.parametrize(("mistake", "said"), RENDER_TIME_MISTAKES, ids=[row[1][:24] for row in RENDER_TIME_MISTAKES])
def test_render_and_check_name_the_template_and_line_of_a_render_time_mistake(
    run: Invoke, project_dir: Path, mistake: str, said: str
) -> None:
    template = project_dir / "templates" / "lesson.mjml.j2"
    lines = template.read_text(encoding="utf-8").splitlines()
    number = next(i for i, line in enumerate(lines, 1) if "lesson.title" in line)
    lines[number - 1] = f"<mj-text>{mistake}</mj-text>"
    template.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rendered = run("render", "muscle")  # catch_exceptions=False: a traceback fails the test here
    assert rendered.exit_code == 1
    assert rendered.stderr.startswith(f"Error: {template} line {number}: "), rendered.stderr
    assert said in rendered.stderr
    checked = run("check")
    assert checked.exit_code == 1
    assert f"FAIL templates/lesson.mjml.j2 line {number}: " in checked.stdout
    assert said in checked.stdout


def test_check_fails_a_broken_email_with_the_item_and_reason(run: Invoke, project_dir: Path) -> None:
    layout = project_dir / "templates" / "layout.mjml.j2"
    layout.write_text(layout.read_text(encoding="utf-8").replace('<mjml lang="en">', "<mjml>"), encoding="utf-8")
    result = run("check")
    assert result.exit_code == 1
    assert "FAIL templates/confirmation.mjml.j2: item 15 (doctype, lang and title)" in result.stdout
    assert "FAIL lessons/07-longevity.md: item 15" in result.stdout


def test_check_fails_an_http_base_url(run: Invoke, project_dir: Path) -> None:
    config = project_dir / "config.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('base_url = "https://', 'base_url = "http://', 1), encoding="utf-8")
    result = run("check")
    assert result.exit_code == 1
    assert "FAIL config.toml [newsletter] base_url: must be an https URL" in result.stdout


def test_check_reports_a_config_error(run: Invoke, project_dir: Path) -> None:
    config = project_dir / "config.toml"
    config.write_text(config.read_text(encoding="utf-8") + '\ncolour = "blue"\n', encoding="utf-8")
    result = run("check")
    assert result.exit_code == 1
    assert "FAIL " in result.stdout and "config.toml: unknown key [daemon] colour" in result.stdout


def test_check_fails_an_empty_key_takeaways_or_try_this_week(run: Invoke, project_dir: Path) -> None:
    lesson = project_dir / "lessons" / "05-sleep.md"
    text = lesson.read_text(encoding="utf-8")
    lesson.write_text(text.split("## Key takeaways")[0] + "## Key takeaways\n\n## Try this week\n", encoding="utf-8")
    lines = lesson.read_text(encoding="utf-8").splitlines()
    takeaways, action = lines.index("## Key takeaways") + 1, lines.index("## Try this week") + 1
    result = run("check")
    assert result.exit_code == 1
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failures[:2] == [
        f"FAIL lessons/05-sleep.md line {takeaways}: “Key takeaways” is empty: write the three or four points a "
        "reader should remember (content only you can write)",
        f"FAIL lessons/05-sleep.md line {action}: “Try this week” is empty: write the one thing the reader should "
        "do this week (content only you can write)",
    ]

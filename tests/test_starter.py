"""`newsletter init` and the starter files: a new course from nothing or from an article, end to end."""

from __future__ import annotations

import dataclasses
import filecmp
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from click.testing import CliRunner

from newsletter.cli import main
from newsletter.config import SECTIONS, load_settings
from newsletter.starter import CONFIG, PROJECT_KEYS, TEMPLATES, fill_config

REPO = Path(__file__).resolve().parent.parent
ARTICLES = Path(__file__).resolve().parent / "fixtures" / "articles"
GARDEN = ARTICLES / "vegetable-garden.md"
EMPTY_SECTION = re.compile(r"^FAIL lessons/\d\d-[a-z0-9-]+\.md line \d+: “(Key takeaways|Try this week)” is empty: ")


def newsletter(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the real command line in `cwd`, as an author would, with no NEWSLETTER_* settings of ours."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("NEWSLETTER_")}
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_editor_sections(lessons: Path) -> None:
    """Do the author's part: a takeaway list and one action under the empty sections of every lesson."""
    for lesson in sorted(lessons.glob("*.md")):
        text = lesson.read_text(encoding="utf-8")
        text = text.replace(
            "## Key takeaways\n",
            "## Key takeaways\n\n- Plan before you plant.\n- Feed the soil, not the plant.\n- Sow little and often.\n",
        )
        text = text.replace("## Try this week", "## Try this week\n\nSketch your plot and mark where the sun falls.")
        lesson.write_text(text, encoding="utf-8")


def test_the_bundled_config_is_the_starter_config_with_its_own_values() -> None:
    bundled_text = (REPO / "config.toml").read_text(encoding="utf-8")
    bundled = tomllib.loads(bundled_text)
    values = {(section, key): bundled[section][key] for section, key in PROJECT_KEYS}
    assert fill_config(CONFIG.read_text(encoding="utf-8"), values) == bundled_text, (
        "config.toml and newsletter/starter/config.toml differ beyond the project's own values: change both"
    )


def test_the_starter_config_documents_every_setting_the_code_reads() -> None:
    starter = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    for name, section in SECTIONS.items():
        keys = {f.name.rstrip("_") for f in dataclasses.fields(section) if not f.metadata.get("secret")}
        assert set(starter[name]) == keys, f"[{name}] in newsletter/starter/config.toml"
    lines = CONFIG.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[a-z_]+ = ", line):
            assert lines[number - 1].startswith("#") or re.match(r"^[a-z_]+ = ", lines[number - 1]), line


def test_the_bundled_course_uses_the_default_templates_in_place() -> None:
    assert load_settings(REPO / "config.toml", env={}).newsletter.templates == TEMPLATES
    assert not (REPO / "templates").exists(), "one copy of the default design: newsletter/starter/templates"


def test_init_without_an_article_makes_a_project_whose_only_gap_is_the_lessons(tmp_path: Path) -> None:
    result = newsletter("init", "my-course", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "my-course"
    assert "Created my-course/ for “My Course”" in result.stdout
    assert "newsletter split ARTICLE --out lessons" in result.stdout
    assert not filecmp.dircmp(TEMPLATES, folder / "templates").diff_files
    assert sorted(path.name for path in (folder / "templates").iterdir()) == sorted(p.name for p in TEMPLATES.iterdir())
    config = tomllib.loads((folder / "config.toml").read_text(encoding="utf-8"))
    assert config["newsletter"]["name"] == "My Course" and config["newsletter"]["templates"] == "templates"
    assert tomllib.loads((folder / "lessons" / "series.toml").read_text(encoding="utf-8"))["slug"] == "my-course"
    assert ".secret-key" in (folder / ".gitignore").read_text(encoding="utf-8")
    check = newsletter("check", cwd=folder)
    assert check.returncode == 1
    assert [line for line in check.stdout.splitlines() if line.startswith("FAIL")] == [
        "FAIL lessons: has no lesson files (*.md): `newsletter split ARTICLE --out` this folder, or write 01-<slug>.md"
    ]


def test_init_split_check_demo_end_to_end(tmp_path: Path) -> None:
    assert newsletter("init", "garden", cwd=tmp_path).returncode == 0
    folder = tmp_path / "garden"
    split = newsletter("split", str(GARDEN), "--out", "lessons", "--weeks", "3", cwd=folder)
    assert split.returncode == 0, split.stderr
    assert "Wrote 3 lesson drafts" in split.stdout and "Dropped 8 line(s) of page debris" in split.stdout
    series = tomllib.loads((folder / "lessons" / "series.toml").read_text(encoding="utf-8"))
    assert (folder / "lessons" / series["source"]).resolve() == GARDEN

    check = newsletter("check", cwd=folder)
    assert check.returncode == 1
    failures = [line for line in check.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 6, check.stdout  # two sections to write in each of three lessons, nothing else
    assert all(EMPTY_SECTION.match(line) for line in failures), failures
    assert "(content only you can write)" in failures[0]

    write_editor_sections(folder / "lessons")
    check = newsletter("check", cwd=folder)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "OK: 4 emails pass the email checklist" in check.stdout
    assert "warning: [sender] address is still the example one ('Garden · 1 Example Street" in check.stderr  # no FAIL

    demo = newsletter("demo", "--weeks", "4", cwd=folder)
    assert demo.returncode == 0, demo.stderr
    assert "ada" in demo.stdout
    # Six readers get the three lessons; the one who confirms late also gets the confirmation email.
    assert len(list((folder / "demo" / "outbox" / "new").iterdir())) == 6 * 3 + 1


def test_init_from_an_article_splits_it_and_says_what_to_write(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["init", str(tmp_path / "garden"), "--from", str(GARDEN), "--weeks", "2"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "garden"
    assert "for “A Year in the Vegetable Garden”" in result.output
    assert "Wrote 2 lesson drafts" in result.output
    assert "“Key takeaways” and “Try this week” of each of the 2 lessons" in result.output
    assert (folder / "lessons" / "source" / GARDEN.name).read_bytes() == GARDEN.read_bytes()
    series = tomllib.loads((folder / "lessons" / "series.toml").read_text(encoding="utf-8"))
    assert series["source"] == f"source/{GARDEN.name}"
    assert series["title"] == "A Year in the Vegetable Garden"
    config = tomllib.loads((folder / "config.toml").read_text(encoding="utf-8"))
    assert config["newsletter"]["name"] == "A Year in the Vegetable Garden"


def test_init_refuses_a_folder_in_use_and_a_bad_article_leaves_nothing(tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine", encoding="utf-8")
    refused = CliRunner().invoke(main, ["init", str(used)])
    assert refused.exit_code == 1
    assert "is not an empty folder" in refused.output
    assert sorted(path.name for path in used.iterdir()) == ["notes.txt"]

    empty_article = tmp_path / "empty.md"
    empty_article.write_text("Leave a comment\n", encoding="utf-8")
    bad = CliRunner().invoke(main, ["init", str(tmp_path / "new"), "--from", str(empty_article)])
    assert bad.exit_code == 1
    assert "empty.md: is empty once page debris is removed" in bad.output
    assert not (tmp_path / "new").exists()

    usage = CliRunner().invoke(main, ["init", str(tmp_path / "x"), "--weeks", "3"])
    assert usage.exit_code == 2 and "--weeks needs --from" in usage.output

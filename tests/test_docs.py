"""Meta-tests: every command explains itself, and the README only mentions commands and options that exist."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from newsletter.cli import COMMAND_MODULES, main
from newsletter.project import Project

README = Path(__file__).resolve().parent.parent / "README.md"
_COMMAND_SPAN = re.compile(r"(?:^|\s)(?:\.venv/bin/)?newsletter\s+([a-z][a-z-]*)(.*)$")
_OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z-]*)")


def all_commands(
    group: click.Group = main, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """(name path, command) for every command and subcommand below `group`."""
    commands = main.every_command() if group is main else group.commands
    for name, command in sorted(commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*path, name))


COMMANDS = dict(all_commands())


def command_at(path: tuple[str, ...]) -> click.Command | None:
    command: click.Command = main
    for name in path:
        found = command.get_command(click.Context(command), name) if isinstance(command, click.Group) else None
        if found is None:
            return None
        command = found
    return command


@pytest.mark.parametrize("path", list(COMMANDS), ids=[" ".join(path) for path in COMMANDS])
def test_every_command_and_option_has_help(path: tuple[str, ...]) -> None:
    command = COMMANDS[path]
    assert (command.help or command.short_help or "").strip(), f"`newsletter {' '.join(path)}` has no help text"
    for parameter in command.params:
        if isinstance(parameter, click.Option):
            assert (parameter.help or "").strip(), f"`newsletter {' '.join(path)}` option {parameter.opts} has no help"
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="newsletter")
    assert result.exit_code == 0, result.output
    assert "Usage: newsletter" in result.output


def test_the_group_itself_has_help() -> None:
    result = CliRunner().invoke(main, ["--help"], prog_name="newsletter")
    assert result.exit_code == 0
    assert (main.help or "").strip()
    for name in main.every_command():
        assert name in result.output


def test_each_command_is_mapped_to_the_module_that_defines_it() -> None:
    folder = Path(__file__).resolve().parent.parent / "newsletter" / "cli"
    families = {path.stem for path in folder.glob("*.py") if "\ncommands: list[click.Command]" in path.read_text()}
    assert families == set(COMMAND_MODULES.values()), "a module of commands is missing from COMMAND_MODULES"
    for family in families:
        defined = {command.name for command in importlib.import_module(f"newsletter.cli.{family}").commands}
        mapped = {name for name, module in COMMAND_MODULES.items() if module == family}
        assert defined == mapped, f"newsletter/cli/{family}.py defines {sorted(defined)}, mapped: {sorted(mapped)}"


def test_a_command_that_reads_the_ledger_loads_no_renderer_or_checklist() -> None:
    probe = (
        "import sys, click\n"
        "from newsletter.cli import main\n"
        "main.get_command(click.Context(main), 'status')\n"
        "heavy = ('newsletter.render', 'newsletter.checklist', 'newsletter.cli.lessons', 'jinja2', 'mjml', 'dkim')\n"
        "print(sorted(name for name in sys.modules if name.startswith(heavy)))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def readme_mentions() -> list[tuple[tuple[str, ...], list[str], str]]:
    """(command path, options, the README text) for each `newsletter …` the README shows."""
    text = README.read_text(encoding="utf-8").replace("\\|", "|")  # pipes escaped inside table cells
    spans = re.findall(r"`([^`\n]+)`", text)
    spans += [line for line in re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL) for line in line.splitlines()]
    mentions = []
    for span in spans:
        match = _COMMAND_SPAN.search(span.strip())
        if not match:
            continue
        name, rest = match.group(1), match.group(2)
        words = rest.split()
        if isinstance(command_at((name,)), click.Group) and words and re.fullmatch(r"[a-z][a-z|-]*", words[0]):
            for sub in words[0].split("|"):
                mentions.append(((name, sub), [], span))
        else:
            mentions.append(((name,), _OPTION.findall(rest), span))
    # Table rows such as "`newsletter status`, `deliveries`, `retry`" name sibling commands bare.
    for row in re.findall(r"^\| (`newsletter [^|]*)\|", text, re.MULTILINE):
        for bare in re.findall(r"`([a-z][a-z-]*)`", row):
            mentions.append(((bare,), [], row.strip()))
    return mentions


@pytest.mark.skipif(not README.is_file(), reason="the README is not written yet")
def test_every_command_the_readme_mentions_exists() -> None:
    mentions = readme_mentions()
    assert len(mentions) >= 10, "the README's command table was not found"
    missing = []
    for path, options, span in mentions:
        command = command_at(path)
        if command is None:
            missing.append(f"`newsletter {' '.join(path)}` (README: {span!r})")
            continue
        known = {opt for parameter in command.params for opt in parameter.opts}
        missing += [
            f"`newsletter {' '.join(path)} {option}` (README: {span!r})" for option in options if option not in known
        ]
    assert missing == []


ENGINE = README.parent / "newsletter"
# Folders whose files are not modules of ours to describe: Alembic's environment and its migration scripts.
NOT_DESCRIBED = {"migrations"}


def where_things_live() -> dict[str, str]:
    """Each name in the first column of README's "Where things live" table → the row's second column."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Where things live") :]
    section = section[: section.index("\n## ", 1)]
    rows: dict[str, str] = {}
    for first, second in re.findall(r"^\| (`[^|]+`) \| (.+) \|$", section, re.MULTILINE):
        for name in re.findall(r"`([^`]+)`", first):
            rows[name] = second
    return rows


def test_where_things_live_lists_every_module_and_every_module_of_each_package() -> None:
    rows = where_things_live()
    modules = sorted(path.name for path in ENGINE.glob("*.py") if path.stem not in ("__init__", "__main__"))
    packages = sorted(f"{path.name}/" for path in ENGINE.iterdir() if (path / "__init__.py").is_file())
    missing = [name for name in [*modules, *packages] if name not in rows]
    assert not missing, f'README "Where things live" does not list {missing}'
    gone = sorted(set(rows) - set(modules) - set(packages))
    assert not gone, f'README "Where things live" lists what is not in newsletter/: {gone}'
    for package in packages:
        if package.rstrip("/") in NOT_DESCRIBED:
            continue
        folder = ENGINE / package
        inside = [path.stem for path in folder.glob("*.py") if path.stem != "__init__"]
        inside += [f"{path.name}/" for path in folder.iterdir() if (path / "__init__.py").is_file()]
        named = set(re.findall(r"`([^`]+)`", rows[package]))
        unnamed = sorted(set(inside) - named)
        assert not unnamed, f'README "Where things live": the {package} row does not name {unnamed}'


def readme_paragraph(opening: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(opening)
    return " ".join(text[start : text.index("\n\n", start)].split())


def test_the_readme_says_what_healthz_answers(project: Project) -> None:
    from datetime import UTC, datetime, timedelta

    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from newsletter.metrics import STALE_GRACE, STALE_TICKS, ProcessMetrics
    from newsletter.web.health import _FAULT_CLASSES, health_routes

    said = readme_paragraph("`/healthz` answers JSON")
    named = set(re.findall(r"`([^`]+)`", said))
    moments = [datetime(2026, 3, 2, 7, 0, tzinfo=UTC)]
    metrics = ProcessMetrics(tick_seconds=30, clock=lambda: moments[-1])
    moments.append(moments[0] + timedelta(hours=1))  # an hour without a tick
    with TestClient(Starlette(routes=health_routes(project, metrics))) as client:
        degraded = client.get("/healthz")
        metrics.record_tick(0.1, "the relay refused the login")
        failed = client.get("/healthz").json()
        metrics.record_tick(0.1)
        ok = client.get("/healthz")
    assert (ok.status_code, ok.json()["status"], degraded.status_code) == (200, "ok", 503)
    assert '200 with `"status": "ok"`, or 503 with `"status": "degraded"` and `problems`' in said
    assert set(ok.json()) - {"status", "problems"} <= named, "a key of /healthz the README does not name"
    assert {reason for _, reason in _FAULT_CLASSES} <= named, "a database fault the README does not name"
    (stale,) = degraded.json()["problems"]
    assert stale.startswith("no tick has finished for ") and "no tick has finished" in said
    assert (
        failed["problems"] == ["the last tick failed: the relay refused the login"] and "the last tick failed" in said
    )
    words = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
    assert f"for {words[STALE_TICKS]} tick intervals plus {STALE_GRACE.total_seconds():g} s" in said

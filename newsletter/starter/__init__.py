"""A new newsletter project (`newsletter init`), made from the starter files that ship inside the engine.

    starter/config.toml   a new project's settings, commented line by line; the bundled project's config.toml
                          is this file with its own values (PROJECT_KEYS), and a test holds the two equal
    starter/templates/    the default email design: `init` copies it into the new project's templates/; the
                          bundled course uses these very files in place, so there is one copy to keep

Everything is checked before anything is written: a bad article leaves no half-made folder behind.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from newsletter.errors import ConfigError
from newsletter.lessons import toml_string
from newsletter.split import SplitReport, lesson_drafts, parse_article, read_article, split_into_folder
from newsletter.split.series import series_toml
from newsletter.split.topics import slug_from_heading

STARTER = Path(__file__).resolve().parent
TEMPLATES = STARTER / "templates"
CONFIG = STARTER / "config.toml"
# The keys whose values make a project its own; the rest of config.toml is the starter's, comments and all.
PROJECT_KEYS = (
    ("newsletter", "name"),
    ("newsletter", "base_url"),
    ("newsletter", "templates"),
    ("sender", "from"),
    ("sender", "list_id"),
    ("sender", "address"),
)
GITIGNORE = "# Made by newsletter as it runs: the database, the generated signing key, local mail.\n" + "".join(
    f"{name}\n" for name in ("newsletter.db", "newsletter.db-*", ".secret-key", ".smtp-rate", "outbox/", "demo/")
)
_SECTION = re.compile(r"^\[([a-z_]+)\]\s*$")
_KEY = re.compile(r"^([a-z_]+)\s*=")


@dataclass(frozen=True)
class NewProject:
    """What `create_project` made."""

    folder: Path
    name: str
    split: SplitReport | None


def fill_config(text: str, values: Mapping[tuple[str, str], str]) -> str:
    """The config text with the given (section, key) values set, every comment and other line kept."""
    section, seen, lines = "", set(), []
    for line in text.splitlines(keepends=True):
        header, key = _SECTION.match(line), _KEY.match(line)
        if header:
            section = header[1]
        elif key and (section, key[1]) in values:
            seen.add((section, key[1]))
            lines.append(f"{key[1]} = {toml_string(values[section, key[1]])}\n")
            continue
        lines.append(line)
    missing = sorted(set(values) - seen)
    if missing:
        raise ValueError(f"the starter config.toml has no {', '.join(f'[{s}] {k}' for s, k in missing)}")
    return "".join(lines)


def copy_templates(target: Path) -> None:
    """Copy the default email design into `target` (created)."""
    shutil.copytree(TEMPLATES, target, ignore=shutil.ignore_patterns("__pycache__"))


def copy_project(config_path: Path, target: Path) -> Path:
    """Copy a project (config.toml, its lessons and templates) into `target`, pointed at its own copies."""
    text = config_path.read_text(encoding="utf-8")
    paths = tomllib.loads(text).get("newsletter", {})
    root = config_path.parent
    shutil.copytree(root / paths.get("lessons", "lessons"), target / "lessons")
    shutil.copytree(root / paths.get("templates", "templates"), target / "templates")
    own = {("newsletter", "lessons"): "lessons", ("newsletter", "templates"): "templates"}
    (target / "config.toml").write_text(fill_config(text, own), encoding="utf-8")
    return target / "config.toml"


def create_project(folder: Path, article: Path | None = None, *, weeks: int | None = None) -> NewProject:
    """Make a project in `folder` (new or empty): config.toml, templates/, lessons/ with series.toml and drafts."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder}: is not an empty folder; `newsletter init` starts a project in a new one")
    fallback = " ".join(folder.resolve().name.replace("-", " ").replace("_", " ").split()).title() or "My Course"
    name = fallback
    if article is not None:
        parsed = parse_article(read_article(article), str(article))
        lesson_drafts(parsed, weeks=weeks, source=str(article))  # refuse a bad article before writing anything
        name = parsed.title or fallback
    lessons = folder / "lessons"
    try:
        lessons.mkdir(parents=True, exist_ok=True)
        config = fill_config(CONFIG.read_text(encoding="utf-8"), _own_values(name))
        (folder / "config.toml").write_text(config, encoding="utf-8")
        (folder / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
        copy_templates(folder / "templates")
        if article is None:
            series = series_toml(name, slug_from_heading(name) or "course", "", None)
            (lessons / "series.toml").write_text(series, encoding="utf-8", newline="\n")
            return NewProject(folder, name, None)
        copy = lessons / "source" / article.name
        copy.parent.mkdir()
        shutil.copyfile(article, copy)
    except OSError as error:
        raise ConfigError(f"{folder}: cannot create the project: {error.strerror} ({error.filename})") from None
    return NewProject(folder, name, split_into_folder(copy, lessons, weeks=weeks, fallback_title=name))


def _own_values(name: str) -> dict[tuple[str, str], str]:
    """A new project's values: its name; an example domain and address until the author sets theirs."""
    return {("newsletter", "name"): name, ("sender", "address"): f"{name} · 1 Example Street · Springfield"}

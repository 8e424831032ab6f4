"""`newsletter init`: a new project folder, optionally with the lessons split from an article."""

from __future__ import annotations

from pathlib import Path

import click

from newsletter.cli.split import print_split_report, weeks_option
from newsletter.starter import create_project


@click.command("init")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--from",
    "article",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    metavar="ARTICLE",
    help="Split this article (plain text or Markdown) into the first lesson drafts; it is copied to lessons/source/.",
)
@weeks_option("With --from: make N lessons of similar length (default: one per major section).")
def init_command(folder: Path, article: Path | None, weeks: int | None) -> None:
    """Start a new course in FOLDER (new or empty): config.toml, templates/, lessons/series.toml.

    config.toml is commented line by line; templates/ is a copy of the default email design, yours to
    change; lessons/ holds series.toml and, with --from, the lesson drafts split from ARTICLE. The new
    project passes `newsletter check` except for what only its author can write, which check lists.
    """
    if weeks is not None and article is None:
        raise click.UsageError("--weeks needs --from ARTICLE: it says how many lessons to split the article into")
    project = create_project(folder, article, weeks=weeks)
    click.echo(f"Created {folder}/ for “{project.name}”: config.toml, templates/, lessons/series.toml.")
    if project.split is not None:
        print_split_report(project.split)
    drafts = len(project.split.drafts) if project.split else 0
    click.echo("\nNext:")
    click.echo(f"  cd {folder}")
    if drafts:
        click.echo(
            f"  1. Write what only you can write: the “Key takeaways” and “Try this week” of each of the {drafts} "
            "lessons, and the description in lessons/series.toml. Until then `newsletter check` fails on exactly "
            "those sections, and passes everything else."
        )
    else:
        click.echo(
            "  1. Write your lessons: `newsletter split ARTICLE --out lessons` makes drafts from an article, or "
            "write lessons/01-<slug>.md by hand (see the README). Until then `newsletter check` says the "
            "lessons folder is empty."
        )
    click.echo("  2. Set [newsletter] base_url and the [sender] address lines in config.toml to your own.")
    click.echo("  3. newsletter check     every email against the checklist")
    click.echo("  4. newsletter preview   the emails as readers see them, reloaded as you edit")
    click.echo("  5. newsletter demo      the whole course for sample readers, on a scratch database")
    click.echo("  6. newsletter send      (or `newsletter run`) once subscribers confirm")


commands: list[click.Command] = [init_command]

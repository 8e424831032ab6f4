"""`newsletter split`: turn an article into lesson drafts for an editor to finish."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from newsletter.split import TOPIC_PATTERN, SplitReport, split_into_folder

F = TypeVar("F", bound=Callable[..., Any])


def _parse_topics(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """Turn "muscle, knees" into ["muscle", "knees"]; each topic must be a slug."""
    if value is None:
        return None
    topics = [topic.strip() for topic in value.split(",") if topic.strip()]
    if not topics:
        raise click.BadParameter("name at least one topic, e.g. --topics muscle,knees", ctx, param)
    for topic in topics:
        if not TOPIC_PATTERN.match(topic):
            raise click.BadParameter(
                f"{topic!r} is not a slug: use lowercase letters, digits and dashes (e.g. long-distance)",
                ctx,
                param,
            )
    return topics


def weeks_option(help_text: str) -> Callable[[F], F]:
    """Add `--weeks N`: how many lessons of similar length to cut the article into."""
    return click.option("--weeks", type=click.IntRange(min=1), default=None, metavar="N", help=help_text)


@click.command("split")
@click.argument("article", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the drafts (created if missing), e.g. lessons/.",
)
@click.option(
    "--topics",
    callback=_parse_topics,
    metavar="SLUG,SLUG,...",
    help="Topics in lesson order, e.g. muscle,knees,brain. Default: one topic per major section.",
)
@weeks_option("Make N lessons of similar length from consecutive sections (default: one per major section).")
@click.option("--force", is_flag=True, help="Overwrite drafts that already exist.")
def split_command(article: Path, out_dir: Path, topics: list[str] | None, weeks: int | None, force: bool) -> None:
    """Split ARTICLE (plain text or Markdown) into weekly lesson drafts NN-slug.md in --out.

    Sections are found by Markdown headings or, in plain text, by short standalone lines without final
    punctuation; list items opening with a "Lead phrase:" become sections of their own. Every paragraph,
    list item, quote and short line lands in exactly one draft; page debris (reading times, "Leave a
    comment", "Share this", "Subscribe", cookie banners) is dropped and listed.

    With --topics, each section goes to the topic whose name (or a simple synonym) its heading matches
    best; a summary, introduction or conclusion joins the nearest topic. With --weeks N, consecutive
    sections are grouped into N lessons of similar length. Otherwise one lesson is proposed per major
    section or lead item, and a lesson under 120 words joins its shorter neighbour.

    Each draft gets front matter (week, slug, title, subject, preheader, summary), the article's text
    under ## headings, and empty "Key takeaways" and "Try this week" sections to write. The folder's
    series.toml is written if missing (else its `source` is pointed at ARTICLE). Existing drafts are
    never overwritten unless --force is given.
    """
    if topics and weeks:
        raise click.UsageError("use --topics or --weeks, not both: the topics decide the number of weeks")
    print_split_report(split_into_folder(article, out_dir, topics, weeks=weeks, force=force))
    click.echo(
        "Next: write the “Key takeaways” and “Try this week” of each draft; `newsletter check` lists what is "
        "still empty."
    )


def print_split_report(report: SplitReport) -> None:
    """Say what went where: each draft with its sections and length, the series file, and the debris dropped."""
    click.echo(f"Wrote {len(report.written)} lesson drafts from {report.article}:")
    for draft, path in zip(report.drafts, report.written, strict=True):
        click.echo(f"  {path}  {draft.title}  ({draft.words} words)")
        click.echo(f"      from: {'; '.join(draft.sources)}")
    if report.title:
        click.echo(f"The article's title, “{report.title}”, names the series, not a lesson.")
    actions = {"written": "Wrote", "updated": "Pointed `source` at the article in", "unchanged": "Kept"}
    click.echo(f"{actions[report.series_action]} {report.series_file}")
    if report.debris:
        click.echo(f"Dropped {len(report.debris)} line(s) of page debris:")
        for line in report.debris:
            click.echo(f"  line {line.line}: {line.text}")
    if report.others:
        names = ", ".join(path.name for path in report.others)
        click.echo(f"Note: {report.written[0].parent} also holds {names}; remove what the drafts replace.")


commands: list[click.Command] = [split_command]

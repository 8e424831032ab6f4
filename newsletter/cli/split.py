"""`newsletter split`: turn an article into lesson drafts for an editor to finish."""

from __future__ import annotations

from pathlib import Path

import click

from newsletter.split import TOPIC_PATTERN, read_article, split_article, write_drafts


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
@click.option("--force", is_flag=True, help="Overwrite drafts that already exist.")
def split_command(article: Path, out_dir: Path, topics: list[str] | None, force: bool) -> None:
    """Split ARTICLE (plain text or Markdown) into weekly lesson drafts NN-slug.md in --out.

    Sections are found by Markdown headings or, in plain text, by short standalone lines without final
    punctuation; list items opening with a "Lead phrase:" become sections of their own. Page debris
    (reading times, "Leave a comment", "Trending", "Share") is dropped.

    With --topics, each section goes to the topic whose name (or a simple synonym) its heading matches
    best; a summary, introduction or conclusion joins the nearest topic, so no paragraph is lost.
    Without --topics, one topic is proposed per major section or lead item.

    Each draft gets front matter (week, slug, title, subject, preheader, summary), the article's text
    under ## headings, and empty "Key takeaways" and "Try this week" sections to write. Existing files
    are never overwritten unless --force is given.
    """
    drafts = split_article(read_article(article), topics, source=str(article))
    written = write_drafts(drafts, out_dir, force=force)
    click.echo(f"Wrote {len(written)} lesson drafts from {article}:")
    for draft, path in zip(drafts, written, strict=True):
        click.echo(f"  {path}  {draft.title}")
        click.echo(f"      from: {'; '.join(draft.sources)}")
    click.echo("Next: write the key takeaways and the try-this-week action of each draft, then check them.")


commands: list[click.Command] = [split_command]

"""Commands for editors: `lessons` (the course at a glance), `render` (one email) and `check` (all of them)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from newsletter.checklist.course import check_course
from newsletter.cli.options import now_option, open_project, resolve_now
from newsletter.config import database_url
from newsletter.models import CONFIRMATION, Subscriber
from newsletter.project import SAMPLE_EMAIL, SAMPLE_NAME, Project
from newsletter.subscribers import find_subscriber

FORMATS = ("html", "text", "eml")


@click.command("lessons")
@click.option("--json", "as_json", is_flag=True, help="Print the lessons as a JSON list instead of a table.")
@click.option(
    "--impact",
    is_flag=True,
    help="Compare the course on disk with the one the ledger was planned for, and say per change how many "
    "readers it affects and how. Changes nothing: the next send or tick does exactly this.",
)
@click.pass_context
def lessons_command(ctx: click.Context, as_json: bool, impact: bool) -> None:
    """List the course: week, slug, subject, preheader and the size of each lesson's HTML."""
    project = open_project(ctx)
    if impact:
        from newsletter.ledger.course import preview

        lines = preview(project, datetime.now(UTC))
        click.echo(json.dumps(lines, indent=2) if as_json else "\n".join(lines))
        return
    sample = project.sample_subscriber()
    sizes = {lesson.slug: len(project.render(sample, lesson.slug).html.encode("utf-8")) for lesson in project.series}
    if as_json:
        rows = [
            {
                "week": lesson.week,
                "slug": lesson.slug,
                "title": lesson.title,
                "subject": lesson.subject,
                "preheader": lesson.preheader,
                "draft": lesson.draft,
                "html_bytes": sizes[lesson.slug],
                "file": _shown_path(lesson.path, project.settings.root),
            }
            for lesson in project.series
        ]
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{project.series.title} ({len(project.series)} lessons)")
    table.add_column("Week", justify="right")
    table.add_column("Slug")
    table.add_column("Subject")
    table.add_column("Preheader")
    table.add_column("HTML", justify="right", no_wrap=True)
    for lesson in project.series:
        size = f"{sizes[lesson.slug] / 1024:.1f} KB"
        slug = f"{lesson.slug} (draft)" if lesson.draft else lesson.slug
        table.add_row(str(lesson.week), slug, escape(lesson.subject), escape(lesson.preheader), size)
    Console().print(table)


def _shown_path(path: Path, root: Path) -> str:
    """A lesson's path as the editor knows it: relative to the project when inside it."""
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


@click.command("render")
@click.argument("slug")
@click.option(
    "--email",
    default=None,
    metavar="ADDR",
    help=f"Render for this address: a stored subscriber gets their own working links; "
    f"any other address a sample subscriber (default {SAMPLE_EMAIL}).",
)
@click.option("--name", default=None, help=f"The sample subscriber's name (default {SAMPLE_NAME!r}).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default="html",
    show_default=True,
    help="html or text: that part of the email; eml: the exact bytes that would go on the wire.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to FILE instead of standard output.",
)
@now_option
@click.pass_context
def render_command(
    ctx: click.Context,
    slug: str,
    email: str | None,
    name: str | None,
    output_format: str,
    output: Path | None,
    now: datetime | None,
) -> None:
    """Render the lesson SLUG (or `confirmation`, the double opt-in email) for one subscriber."""
    project = open_project(ctx)
    lesson = _lesson_of(project, slug)
    subscriber = _subscriber_for(project, email, name)
    moment = resolve_now(now)
    if output_format == "eml":
        data = project.envelope(subscriber, lesson, now=moment).data
    else:
        rendered = project.render(subscriber, lesson, moment)
        data = (rendered.html if output_format == "html" else rendered.text).encode("utf-8")
    if output is None:
        click.echo(data, nl=False)
        return
    output.write_bytes(data)
    click.echo(f"Wrote {output} ({len(data):,} bytes, {output_format}) for {subscriber.email}", err=True)


def _lesson_of(project: Project, slug: str) -> str:
    if slug == CONFIRMATION or slug in {lesson.slug for lesson in project.series}:
        return slug
    known = ", ".join([CONFIRMATION, *(lesson.slug for lesson in project.series)])
    raise click.BadParameter(f"no lesson {slug!r}; choose one of: {known}", param_hint="SLUG")


def _subscriber_for(project: Project, email: str | None, name: str | None) -> Subscriber:
    """The stored subscriber with this address, else an unsaved sample one."""
    if email and _database_exists(project):
        with project.db.session() as session:
            stored = find_subscriber(session, email)
        if stored is not None:
            return stored
    return project.sample_subscriber(email or SAMPLE_EMAIL, SAMPLE_NAME if name is None else name)


def _database_exists(project: Project) -> bool:
    """Whether there is a database to look in; previewing must not create an empty SQLite file."""
    url = database_url(project.settings)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url.removeprefix("sqlite:///")).is_file()
    return True


@click.command("check")
@click.pass_context
def check_command(ctx: click.Context) -> None:
    """Validate config, lessons and templates; render every email and run the email checklist on its bytes.

    Each lesson and the confirmation email is built exactly as it would be sent and checked against the
    email checklist (headers, one-click unsubscribe, HTML and text parts). Every failure is printed with
    its file and reason; the exit code is 1 if there is any. Settings that will cost real sending (SMTP
    without DKIM, the example postal address) are printed as warnings and fail nothing.
    """
    report = check_course(ctx.obj["config_path"])
    for notice in report.notices:
        click.echo(f"note: {notice}", err=True)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    for finding in report.findings:
        click.echo(f"FAIL {finding}")
    if report.ok:
        click.echo(f"OK: {report.emails_checked} emails pass the email checklist (items 1–11 and 15–28).")
        return
    click.echo(f"{len(report.findings)} problem(s) in {report.emails_checked} email(s) checked.", err=True)
    ctx.exit(1)


commands: list[click.Command] = [lessons_command, render_command, check_command]

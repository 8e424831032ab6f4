"""Commands that send: `send` (one run over everything due), `test-send`, and `demo`."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from types import FrameType

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from newsletter.cli.options import now_option, open_project, resolve_now
from newsletter.dispatch import count_due, dry_run, send_due, send_test
from newsletter.dispatch.processes import send_in_processes
from newsletter.ledger.course import CourseNote
from newsletter.transports import transport_from_settings


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM and Ctrl-C set an event: the message on the wire finishes and is recorded, then the run stops."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        click.echo(f"{signal.Signals(signum).name}: finishing the message on the wire, then stopping", err=True)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command("send")
@now_option
@click.option(
    "--dry-run",
    "rehearse",
    is_flag=True,
    help="Show exactly what a run would do (course changes, what it sends, what stays held); change nothing.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Send at most this many messages, then stop.")
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Sender processes side by side, each with [smtp] connections connections: use the machine's cores.",
)
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"sent", "retry", "failed", "skipped", "held", …} as JSON.'
)
@click.pass_context
def send_command(
    ctx: click.Context, now: datetime | None, rehearse: bool, limit: int | None, processes: int, as_json: bool
) -> None:
    """Send every lesson and confirmation that is due, then exit.

    Safe to run from cron and from several processes or machines at once: each due email is claimed by
    exactly one sender. Exits 0 when the run completed, even if some deliveries failed (see `newsletter
    status`); non-zero only when the run could not proceed (bad config, database or SMTP unreachable).
    """
    project = open_project(ctx)
    if rehearse:
        planned = dry_run(project, resolve_now(now), limit)
        held = planned.course.held_line()
        if as_json:
            due = [{"email": d.email, "slug": d.lesson, "due_at": d.due_at.isoformat()} for d in planned.due]
            changes = planned.course.changes
            click.echo(json.dumps({"due": due, "held": held, "course_changes": changes}))
            return
        for change in planned.course.changes:
            click.echo(f"course: {change}")
        for item in planned.due:
            click.echo(f"{item.due_at:%Y-%m-%d %H:%M} UTC  {item.lesson:<14} {item.email}")
        if held:
            click.echo(held)
        click.echo(f"{len(planned.due)} due; nothing sent (dry run)")
        return
    transport = transport_from_settings(project.settings, project.db)
    transport.check()
    console = Console(stderr=True)
    try:
        with stop_on_signals() as stop:
            if processes > 1:
                summary = send_in_processes(project.settings.config_path, processes, now=now, limit=limit, stop=stop)
            elif console.is_terminal and not as_json:
                waiting = count_due(project, resolve_now(now))
                total = min(waiting, limit) if limit else waiting
                columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
                with Progress(*columns, console=console, transient=True) as progress:
                    task = progress.add_task("send", total=total or None)
                    summary = send_due(
                        project,
                        transport,
                        now=now,
                        limit=limit,
                        stop=stop,
                        on_outcome=lambda *_outcome: progress.advance(task),
                    )
            else:
                summary = send_due(project, transport, now=now, limit=limit, stop=stop)
    finally:
        transport.close()
    note = summary.course or CourseNote()
    held = note.held_line()
    if as_json:
        by_lesson = [[lesson, reason, count] for (lesson, reason), count in sorted(note.held.items())]
        report = {**summary.as_dict(), "held": held, "held_by_lesson": by_lesson, "course_changes": note.changes}
        click.echo(json.dumps(report))
    else:
        for change in note.changes:
            click.echo(f"course: {change}", err=True)
        counts = ", ".join(f"{value} {key}" for key, value in summary.as_dict().items())
        click.echo(f"{counts}{' (stopped early)' if stop.is_set() else ''}")
        if held:
            click.echo(held)


@click.command("test-send")
@click.argument("slug")
@click.option("--to", "to", required=True, metavar="ADDR", help="Address to send the test to.")
@click.option("--name", default="", help="Name to greet in the test email.")
@click.pass_context
def test_send_command(ctx: click.Context, slug: str, to: str, name: str) -> None:
    """Send one lesson (or `confirmation`) to one address, outside the ledger, subject prefixed [TEST]."""
    from newsletter.subscribers import clean_name, normalise_email

    project = open_project(ctx)
    transport = transport_from_settings(project.settings, project.db)
    transport.check()
    try:
        reply = send_test(project, transport, slug, normalise_email(to), name=clean_name(name))
    finally:
        transport.close()
    click.echo(f"sent {slug} to {to}: {reply}")


@click.command("demo")
@click.option("--weeks", type=click.IntRange(1, 52), default=9, show_default=True, help="Weeks to simulate.")
@click.option("--folder", type=click.Path(file_okay=False), help="Scratch folder (default: demo/ beside config.toml).")
@click.pass_context
def demo_command(ctx: click.Context, weeks: int, folder: str | None) -> None:
    """Run the course for sample subscribers on a scratch database, delivering into a local outbox.

    Creates a fresh demo/ folder (its own SQLite database and outbox), adds subscribers in different time
    zones and weekdays, then runs `send` ticks simulated across the weeks, and prints who got which lesson
    when. Your own database is not touched.
    """
    from newsletter.demo import print_report, run_demo

    project = open_project(ctx)
    report = run_demo(project.settings, weeks=weeks, folder=folder)
    print_report(report, Console())


commands: list[click.Command] = [send_command, test_send_command, demo_command]

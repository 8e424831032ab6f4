"""Commands for running and watching: `run` (the daemon), `status`, `deliveries` and `retry`."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

import click

from newsletter.cli.options import now_option, open_project, resolve_now
from newsletter.operations import (
    DELIVERY_FILTERS,
    DeliveryRow,
    StatusReport,
    list_deliveries,
    retry_deliveries,
    status_report,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

WATCH_SECONDS = 5.0
PIPE_WIDTH = 200  # rich assumes 80 columns without a terminal; a pipe or a file should keep whole rows


def _console() -> Console:
    from rich.console import Console  # imported when printing for people: `--json` has no need of it

    return Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH)


def _duration(seconds: float) -> str:
    """45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours < 1:
        return f"{minutes} min"
    if days < 1:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "-"


def _plain(text: str) -> str:
    """Text from outside (a relay's reply, an address, a lesson's name) as rich prints it, brackets and all: an
    unescaped "[/…]" in a reply would be taken for a closing tag and end the command with a MarkupError."""
    from rich.markup import escape

    return escape(text)


def _problem(row: DeliveryRow) -> str:
    return _plain(" / ".join(part for part in (row.smtp_reply, row.error) if part) or "-")


def _print_status(report: StatusReport, console: Console) -> None:
    people = " · ".join(f"{count} {status}" for status, count in report.subscribers.items())
    console.print(f"[bold]Subscribers[/]  {people}")
    ledger = " · ".join(f"{count} {status}" for status, count in report.deliveries.items())
    console.print(f"[bold]Deliveries[/]   {ledger}")
    from rich.table import Table

    table = Table(title="The course, lesson by lesson", title_justify="left")
    headings = ("#", "Lesson", "Sent", "Sending", "Due now", "Later", "Failed", "Held", "Unsubscribed after")
    for heading in headings:
        table.add_column(heading, justify="left" if heading == "Lesson" else "right")
    for line in report.lessons:
        counts = (line.sent, line.sending, line.due, line.later, line.failed, line.held, line.unsubscribed_after)
        where = "-" if line.position is None else str(line.position)  # "-": no longer in the course
        name = f"{line.lesson} ({line.held_because})" if line.held_because else line.lesson
        table.add_row(where, _plain(name), *(str(count) for count in counts))
    console.print(table)
    waiting = [line for line in report.lessons if line.held_because and line.held]
    for line in waiting:
        console.print(
            f"[bold]Held[/]         {line.held} readers wait before {_plain(repr(line.lesson))} ({line.held_because})"
        )
    for pause in report.paused_domains:
        console.print(
            f"[bold]Paused[/]       {_plain(pause.domain)} until {_when(pause.until)}, "
            f"pause {pause.strikes} in a row: {_plain(pause.reply)}"
        )
    oldest = report.oldest_overdue
    if oldest is None:
        console.print("[bold]Overdue[/]      nothing: every due email has gone out")
    else:
        console.print(
            f"[bold]Oldest overdue[/] {_plain(oldest.email)}, {_plain(oldest.lesson)}, due {_when(oldest.due_at)}, "
            f"{_duration(report.overdue_seconds)} late, {oldest.attempts} attempts"
        )
    upcoming = report.next_due
    if upcoming is not None:
        wait = (upcoming.due_at - report.generated_at).total_seconds()
        console.print(
            f"[bold]Next due[/]     {_plain(upcoming.email)}, {_plain(upcoming.lesson)}, "
            f"{_when(upcoming.due_at)} (in {_duration(wait)})"
        )
    if report.recent_errors:
        errors = Table(title="Latest errors", title_justify="left")
        for heading in ("When", "Address", "Lesson", "Status", "Attempts", "SMTP reply / error"):
            errors.add_column(heading)
        for row in report.recent_errors:
            errors.add_row(
                _when(row.updated_at),
                _plain(row.email),
                _plain(row.lesson),
                row.status,
                str(row.attempts),
                _problem(row),
            )
        console.print(errors)
    else:
        console.print("[bold]Errors[/]       none")


@click.command("status")
@now_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object (one per refresh).")
@click.option(
    "--watch",
    type=click.FloatRange(min=0.5),
    is_flag=False,
    flag_value=WATCH_SECONDS,
    default=None,
    metavar="[SECONDS]",
    help=f"Refresh every SECONDS (default {WATCH_SECONDS:g}) until Ctrl-C.",
)
@click.pass_context
def status_command(ctx: click.Context, now: datetime | None, as_json: bool, watch: float | None) -> None:
    """Show where the course stands: subscribers by status, each lesson's funnel, what is late, what failed,
    and which recipient domains are paused because their servers asked us to slow down.

    Per lesson: sent, being sent, due now, due later, failed (5xx, or 4xx too often), held (a draft, a
    broken file, failing the email checklist, or one message that could not be made), and how many readers
    unsubscribed right after it.
    """
    project = open_project(ctx)
    console = None if as_json else _console()

    def show() -> None:
        report = status_report(project, now or resolve_now(None))
        if console is None:
            click.echo(json.dumps(report.as_json()))
        else:
            if watch is not None and console.is_terminal:
                console.clear()
            _print_status(report, console)

    if watch is None:
        show()
        return
    with _until_interrupted() as interrupted:
        while not interrupted.is_set():
            show()
            interrupted.wait(watch)


@contextmanager
def _until_interrupted() -> Iterator[threading.Event]:
    """An event that Ctrl-C (SIGINT) sets, for a loop that ends cleanly between two rounds.

    Not a KeyboardInterrupt: raised wherever the signal lands, one that lands in a finaliser or a callback
    is printed and dropped (a loaded test run once saw `status --watch` still running 10 s after Ctrl-C).
    Off the main thread, where signals cannot be caught, a KeyboardInterrupt still ends the loop.
    """
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        with contextlib.suppress(KeyboardInterrupt):
            yield interrupted
        return
    previous = signal.signal(signal.SIGINT, lambda _signal, _frame: interrupted.set())
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _deliveries_table(rows: list[DeliveryRow]) -> Table:
    from rich.table import Table

    table = Table()
    for heading in ("ID", "Address", "Lesson", "Status", "Due", "Attempts", "Sent", "SMTP reply / error"):
        table.add_column(heading, justify="right" if heading in ("ID", "Attempts") else "left")
    for row in rows:
        table.add_row(
            str(row.id),
            _plain(row.email),
            _plain(row.lesson),
            row.status,
            _when(row.due_at),
            str(row.attempts),
            _when(row.sent_at),
            _problem(row),
        )
    return table


@click.command("deliveries")
@click.option(
    "--status",
    type=click.Choice(DELIVERY_FILTERS),
    help="Only rows in this state; 'retry' means pending again after a failed attempt.",
)
@click.option("--email", metavar="ADDR", help="Only this subscriber's rows.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Show at most N rows.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list.")
@click.pass_context
def deliveries_command(ctx: click.Context, status: str | None, email: str | None, limit: int, as_json: bool) -> None:
    """List delivery ledger rows: pending ones soonest first, the others newest first."""
    project = open_project(ctx)
    rows = list_deliveries(project, status=status, email=email, limit=limit)
    if as_json:
        click.echo(json.dumps([row.as_json() for row in rows]))
        return
    if not rows:
        click.echo("no deliveries match")
        return
    _console().print(_deliveries_table(rows))


@click.command("retry")
@now_option
@click.option("--email", metavar="ADDR", help="Retry this subscriber's failed and held deliveries.")
@click.option("--all-failed", is_flag=True, help="Retry every failed and held delivery.")
@click.pass_context
def retry_command(ctx: click.Context, now: datetime | None, email: str | None, all_failed: bool) -> None:
    """Put failed (and held) deliveries back to pending, due now; the next send or tick takes them.

    Give exactly one of --email ADDR or --all-failed. Attempts start again from zero and each message keeps
    its Message-ID. Rows of readers who unsubscribed, bounced, paused or finished are left as they are.
    """
    if (email is None) == (not all_failed):
        raise click.UsageError("give exactly one of --email ADDR or --all-failed")
    project = open_project(ctx)
    result = retry_deliveries(project, now=resolve_now(now), email=email, all_failed=all_failed)
    if not result.retried and not result.left:
        click.echo("nothing to retry: no failed or held deliveries" + (f" for {email}" if email else ""))
        return
    if result.retried:
        click.echo(f"{len(result.retried)} back to pending, due now:")
        for row in result.retried:
            click.echo(_retry_line(row))
    if result.left:
        click.echo(f"{len(result.left)} left as they are:")
        for row, reason in result.left:
            click.echo(f"{_retry_line(row)} ({reason})")


def _retry_line(row: DeliveryRow) -> str:
    return f"  {row.email}  {row.lesson}  last error: {_problem(row)}"


@click.command("run")
@click.option("--host", help="Address to listen on (default: [web] host of config.toml).")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Port to listen on (default: [web] port; 0: any free port)."
)
@click.option(
    "--log-format",
    type=click.Choice(("text", "json")),
    default="text",
    show_default=True,
    help="One line per record: text for people, json for log shippers.",
)
@click.option(
    "--tick",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Seconds between dispatch ticks (default: [daemon] tick_seconds).",
)
@click.pass_context
def run_command(ctx: click.Context, host: str | None, port: int | None, log_format: str, tick: float | None) -> None:
    """Run the daemon: send what is due every tick and serve the subscriber pages, /healthz and /metrics.

    Runs until SIGTERM or Ctrl-C, then finishes the message on the wire, records it and exits 0. Several
    daemons (or cron `send` runs) may share one database; each due email is claimed by exactly one of them.
    """
    from newsletter.daemon import Daemon
    from newsletter.logs import configure_logging

    configure_logging(log_format)
    project = open_project(ctx)
    web = project.settings.web
    daemon = Daemon(
        project,
        host=host or web.host,
        port=web.port if port is None else port,
        tick_seconds=tick,
    )
    daemon.run()


commands: list[click.Command] = [run_command, status_command, deliveries_command, retry_command]

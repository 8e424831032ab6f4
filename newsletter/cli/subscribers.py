"""Commands for subscribers and their schedule: `subscribers …`, `plan`, and `db upgrade`."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from itertools import groupby, islice
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from newsletter import subscribers as domain
from newsletter.cli.options import now_option, open_project, parse_now, resolve_now
from newsletter.csvio import check_start_week, export_subscribers, import_subscribers
from newsletter.db import connect, current_revision, upgrade
from newsletter.errors import DatabaseError, SubscriberError
from newsletter.models import SUBSCRIBER_STATUSES, Subscriber
from newsletter.plan import upcoming_sends
from newsletter.project import Project
from newsletter.schedule import WEEKDAY_NAMES
from newsletter.zones import caveat

PROGRESS_MIN_BYTES = 1 << 20  # below this an import finishes before a bar would be worth drawing
WEEKDAY_HELP = "Weekday for lessons: Monday…Sunday or Mon…Sun (default: [schedule] weekday)."
TIME_HELP = "Local send time, 24-hour HH:MM (default: [schedule] time)."
ZONE_HELP = "IANA time zone such as Europe/London (default: [schedule] timezone)."
# Long listings stream: their columns line up within blocks of this many rows rather than over the whole.
ALIGN_BLOCK = 500


def _console(err: bool = False) -> Console:
    return Console(stderr=err, soft_wrap=True, highlight=False)


@contextmanager
def _session(ctx: click.Context) -> Iterator[tuple[Project, Session]]:
    """Open the project and one transaction; the database is closed when the command ends."""
    project = open_project(ctx)
    with project.db.session() as session:
        yield project, session


@contextmanager
def _reading(ctx: click.Context) -> Iterator[tuple[Project, Session]]:
    """The same for a command that only reads: on SQLite it never takes the write lock, so no sender waits."""
    project = open_project(ctx)
    with project.db.reading() as session:
        yield project, session


def _next_lesson_text(project: Project, session: Session, subscriber: Subscriber) -> str:
    delivery = domain.next_lesson_due(session, subscriber)
    if delivery is None:
        return ""
    lesson = f"lesson {(project.series.index(delivery.lesson) or 0) + 1} ({delivery.lesson})"
    if delivery.status == "held":
        return f"; waiting before {lesson}: held ({delivery.hold})"
    local = delivery.due_at.astimezone(ZoneInfo(subscriber.timezone))
    return f"; {lesson} due {local:%a %d %b %Y %H:%M} local, {delivery.due_at:%Y-%m-%d %H:%M} UTC"


def _state(project: Project, session: Session, subscriber: Subscriber) -> str:
    cadence = domain.describe(subscriber.weekday, subscriber.send_time, subscriber.timezone)
    return f"{subscriber.email} ({subscriber.status}, {cadence}){_next_lesson_text(project, session, subscriber)}"


@click.group("subscribers")
def subscribers_group() -> None:
    """Add, import, list, export and manage subscribers."""


def _note_zone(zone: str | None) -> None:
    """Say what a zone that is not a place means (EST has no summer time), as config.toml's is said."""
    said = caveat(zone) if zone else None
    if said:
        click.echo(f"note: --timezone: {said}", err=True)


@subscribers_group.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name, used in the greeting and the To header.")
@click.option("--timezone", help=ZONE_HELP)
@click.option("--weekday", help=WEEKDAY_HELP)
@click.option("--time", "send_time", metavar="HH:MM", help=TIME_HELP)
@click.option(
    "--confirmed", is_flag=True, help="They already agreed elsewhere: no confirmation email, lesson 1 is planned."
)
@now_option
@click.pass_context
def add_command(
    ctx: click.Context,
    email: str,
    name: str,
    timezone: str | None,
    weekday: str | None,
    send_time: str | None,
    confirmed: bool,
    now: datetime | None,
) -> None:
    """Add one subscriber: pending with a confirmation email queued, or active with --confirmed.

    An address that already exists is reported and left unchanged (exit 1).
    """
    data = domain.SubscriberInput(email=email, name=name, timezone=timezone, weekday=weekday, send_time=send_time)
    with _session(ctx) as (project, session):
        subscriber = domain.add_subscriber(session, project, data, confirmed=confirmed, now=resolve_now(now))
        what = "" if confirmed else "; confirmation email queued"
        _console().print(f"added {escape(_state(project, session, subscriber))}{what}")
    _note_zone(subscriber.timezone if timezone else None)


@subscribers_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--confirmed", is_flag=True, help="Everyone in the file already agreed elsewhere: no confirmation email.")
@click.option("--encoding", help="The file's encoding, if the guess is wrong (default: BOM, else UTF-8, else cp1252).")
@click.option(
    "--start-week",
    type=int,
    metavar="N",
    help="Readers moved from another tool get the lesson of week N next, as if weeks 1 to N-1 were sent "
    "(weeks + 1: they finished). For rows without a position of their own.",
)
@now_option
@click.pass_context
def import_command(
    ctx: click.Context,
    file: Path,
    confirmed: bool,
    encoding: str | None,
    start_week: int | None,
    now: datetime | None,
) -> None:
    """Import subscribers from a CSV file with a header row, or another tool's export.

    Columns (any order and case): email (required), name (or first name and last name), timezone,
    weekday, time, and status and position as `subscribers export` writes them. An export of Mailchimp,
    Kit, Substack, listmonk or Buttondown is recognised by its header: names, time zones, sign-up dates
    and states are read the tool's way, and unsubscribed, cleaned, bounced or complained readers are
    stored suppressed. Empty cells take the [schedule] defaults. Addresses already known are left
    unchanged, so importing the same file twice changes nothing. Every good row is imported; each bad row
    is listed with its line number and reason, and the exit status is then 1.
    """
    project = open_project(ctx)
    if start_week is not None:
        try:
            check_start_week(project.series, start_week)
        except SubscriberError as error:
            raise click.BadParameter(str(error), param_hint="--start-week") from None
    err = _console(err=True)
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=True,
    ) as bar:
        task = bar.add_task("import", total=None)

        def advance(done: int, total: int) -> None:
            if total >= PROGRESS_MIN_BYTES:
                bar.update(task, completed=done, total=total)

        report = import_subscribers(
            project,
            file,
            confirmed=confirmed,
            now=resolve_now(now),
            encoding=encoding,
            start_week=start_week,
            progress=advance,
        )
    for note in report.notes():
        err.print(escape(note))
    for rejected in report.rejected:
        err.print(f"{escape(str(file))} {escape(str(rejected))}")
    if report.rejected_unlisted:
        err.print(f"… and {report.rejected_unlisted} more rejected rows, not listed")
    _console().print(escape(report.summary(file.name)))
    if report.rejected_count:
        ctx.exit(1)


@subscribers_group.command("list")
@click.option("--status", type=click.Choice(SUBSCRIBER_STATUSES), help="Only subscribers in this status.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects instead of a table.")
@click.pass_context
def list_command(ctx: click.Context, status: str | None, as_json: bool) -> None:
    """List subscribers in the order they were added."""
    with _reading(ctx) as (_project, session):
        found = domain.list_subscribers(session, status)
        if as_json:
            _echo_json_list(_as_json(subscriber) for subscriber in found)
            return
        rows = (
            (
                subscriber.email,
                subscriber.name,
                subscriber.status,
                domain.describe(subscriber.weekday, subscriber.send_time, subscriber.timezone),
                str(subscriber.position),
            )
            for subscriber in found
        )
        lines = _aligned(("email", "name", "status", "schedule", "position"), rows)
        click.echo(next(lines))  # the heading
        listed = 0
        for line in lines:
            click.echo(line)
            listed += 1
    click.echo(f"{listed} subscriber{'s' if listed != 1 else ''}")


def _as_json(subscriber: Subscriber) -> dict[str, Any]:
    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "status": subscriber.status,
        "timezone": subscriber.timezone,
        "weekday": WEEKDAY_NAMES[subscriber.weekday],
        "time": f"{subscriber.send_time:%H:%M}",
        "position": subscriber.position,
        "last_lesson": subscriber.last_lesson,
        "created_at": subscriber.created_at.isoformat(),
        "confirmed_at": subscriber.confirmed_at.isoformat() if subscriber.confirmed_at else None,
    }


@subscribers_group.command("export")
@click.argument("file", required=False, type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option("--status", type=click.Choice(SUBSCRIBER_STATUSES), help="Only subscribers in this status.")
@click.pass_context
def export_command(ctx: click.Context, file: Path | None, status: str | None) -> None:
    """Write subscribers as UTF-8 CSV to FILE (default: standard output); `subscribers import` reads it back."""
    with _reading(ctx) as (_project, session):
        if file is None:
            export_subscribers(session, sys.stdout, status=status)
            return
        with file.open("w", encoding="utf-8", newline="") as stream:
            count = export_subscribers(session, stream, status=status)
    _console(err=True).print(f"exported {count} subscriber{'s' if count != 1 else ''} to {escape(str(file))}")


@subscribers_group.command("pause")
@click.argument("email")
@click.option("--weeks", type=click.IntRange(min=1), help="Resume automatically after this many weeks.")
@now_option
@click.pass_context
def pause_command(ctx: click.Context, email: str, weeks: int | None, now: datetime | None) -> None:
    """Pause a subscriber: nothing is sent until they resume (or --weeks pass)."""
    moment = resolve_now(now)
    until = moment + timedelta(weeks=weeks) if weeks else None
    with _session(ctx) as (project, session):
        subscriber = domain.get_subscriber(session, email)
        domain.pause(session, project, subscriber, now=moment, until=until)
        when = f" until {until:%Y-%m-%d %H:%M} UTC" if until else ""
        _console().print(f"paused {escape(subscriber.email)}{when}")


@subscribers_group.command("resume")
@click.argument("email")
@now_option
@click.pass_context
def resume_command(ctx: click.Context, email: str, now: datetime | None) -> None:
    """Resume a paused subscriber at their next slot (keeping the minimum gap since their last lesson)."""
    with _session(ctx) as (project, session):
        subscriber = domain.get_subscriber(session, email)
        domain.resume(session, project, subscriber, now=resolve_now(now))
        _console().print(f"resumed {escape(_state(project, session, subscriber))}")


@subscribers_group.command("set")
@click.argument("email")
@click.option("--weekday", help="New weekday: Monday…Sunday or Mon…Sun.")
@click.option("--time", "send_time", metavar="HH:MM", help="New local send time, 24-hour HH:MM.")
@click.option("--timezone", help="New IANA time zone such as America/Santiago.")
@click.option("--name", help="New display name.")
@now_option
@click.pass_context
def set_command(
    ctx: click.Context,
    email: str,
    weekday: str | None,
    send_time: str | None,
    timezone: str | None,
    name: str | None,
    now: datetime | None,
) -> None:
    """Change a subscriber's weekday, time, zone or name; their next lesson moves at once."""
    if weekday is None and send_time is None and timezone is None and name is None:
        raise click.UsageError("nothing to change: give --weekday, --time, --timezone or --name")
    moment = resolve_now(now)
    with _session(ctx) as (project, session):
        subscriber = domain.get_subscriber(session, email)
        if name is not None:
            domain.rename(session, subscriber, name, now=moment)
        domain.change_schedule(
            session, project, subscriber, now=moment, weekday=weekday, send_time=send_time, timezone=timezone
        )
        _console().print(f"updated {escape(_state(project, session, subscriber))}")
    _note_zone(subscriber.timezone if timezone else None)


@subscribers_group.command("unsubscribe")
@click.argument("email")
@now_option
@click.pass_context
def unsubscribe_command(ctx: click.Context, email: str, now: datetime | None) -> None:
    """Unsubscribe an address: nothing more is sent; the record stays so they are not re-added by mistake."""
    with _session(ctx) as (project, session):
        subscriber = domain.get_subscriber(session, email)
        domain.unsubscribe(session, project, subscriber, now=resolve_now(now))
        _console().print(f"unsubscribed {escape(subscriber.email)}")


@subscribers_group.command("unbounce")
@click.argument("emails", nargs=-1, metavar="[EMAIL]...")
@click.option("--all", "all_bounced", is_flag=True, help="Every subscriber suppressed as bounced.")
@click.option(
    "--since",
    "since",
    callback=parse_now,
    metavar="ISO8601",
    help="With --all: only those who bounced at or after this instant (the start of a relay fault).",
)
@now_option
@click.pass_context
def unbounce_command(
    ctx: click.Context, emails: tuple[str, ...], all_bounced: bool, since: datetime | None, now: datetime | None
) -> None:
    """Take back subscribers suppressed as bounced: their lessons are planned again.

    For a relay that refused everyone, or a mailbox that works again. Lessons recorded as failed stay
    failed; `newsletter retry --all-failed` resends them.
    """
    if bool(emails) == all_bounced:
        raise click.UsageError("name the addresses to unbounce, or pass --all (optionally with --since)")
    if since is not None and not all_bounced:
        raise click.UsageError("--since goes with --all")
    with _session(ctx) as (project, session):
        chosen = (
            domain.bounced_since(session, since) if all_bounced else [domain.get_subscriber(session, e) for e in emails]
        )
        for subscriber in chosen:
            domain.unbounce(session, project, subscriber, now=resolve_now(now))
            _console().print(f"unbounced {escape(_state(project, session, subscriber))}")
        if not chosen:
            _console().print("nobody is bounced" + (f" since {since.isoformat()}" if since else ""))


@subscribers_group.command("erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@now_option
@click.pass_context
def erase_command(ctx: click.Context, email: str, yes: bool, now: datetime | None) -> None:
    """Erase a subscriber's personal data and deliveries for good; an anonymous "erased" event remains."""
    with _session(ctx) as (project, session):
        subscriber = domain.get_subscriber(session, email)
        if not yes:
            click.confirm(f"Erase {subscriber.email} and all their data? This cannot be undone", abort=True)
        domain.erase(session, project, subscriber, now=resolve_now(now))
    _console().print(f"erased {escape(email.strip())}")


@click.command("plan")
@click.option("--email", help="Only this subscriber.")
@click.option("--days", type=click.FloatRange(min=0), default=7, show_default=True, help="How far ahead to look.")
@now_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {email, week, slug, due_at, local, …}.")
@click.pass_context
def plan_command(ctx: click.Context, email: str | None, days: float, now: datetime | None, as_json: bool) -> None:
    """Show the upcoming sends, soonest first, grouped by day (UTC).

    Each subscriber's next email comes from the delivery ledger (overdue ones included); the lessons after
    it are projected by the schedule's rules and marked "projected": they assume each lesson goes out on
    time, and move if it does not, or if the subscriber pauses or changes their day.
    """
    with _reading(ctx) as (project, session):
        sends = upcoming_sends(session, project, now=resolve_now(now), days=days, email=email)
        if as_json:
            _echo_json_list(send.as_json() for send in sends)
            return
        printed = False
        for day, group in groupby(sends, key=lambda send: send.due_at.date()):
            click.echo(("\n" if printed else "") + f"{day:%A %d %B %Y}")
            printed = True
            rows = (
                (
                    f"{send.due_at:%H:%M}",
                    send.email,
                    str(send.week),
                    send.slug,
                    f"{send.local:%a %H:%M} {send.timezone}",
                    f"held ({send.held})" if send.held else "projected" if send.projected else "",
                )
                for send in group
            )
            for line in _aligned(("UTC", "email", "#", "lesson", "subscriber's time", ""), rows):
                click.echo(line)
    if not printed:
        click.echo(f"nothing due in the next {days:g} days")


_ENCODE = json.JSONEncoder().encode  # one value or key, by the C encoder `json.dumps` uses without indent
ECHO_ITEMS = 500  # items printed per write: flat memory, and not one write per item


def _list_item(item: dict[str, Any]) -> str:
    """`json.dumps(item, indent=2)` as an element of an indented list.

    With `indent`, json.dumps runs its pure-Python encoder: a fifth of `plan --json` at a million readers.
    A flat object (the plan's entries, the subscribers) is written here into a template made once for its
    keys, from its values encoded one by one, which gives the same text; anything nested goes to json.dumps.
    """
    values = tuple(item.values())
    template = _item_template(tuple(item))
    if template is None or any(isinstance(value, dict | list | tuple) for value in values):
        return json.dumps(item, indent=2).replace("\n", "\n  ")
    return template % tuple(map(_encode_scalar, values))


@functools.lru_cache(maxsize=64)
def _item_template(keys: tuple[Any, ...]) -> str | None:
    """The indented object for these keys with a `%s` per value (None: no keys, or one is not a string)."""
    if not keys or not all(isinstance(key, str) for key in keys):
        return None
    return "{\n" + ",\n".join(f"    {_ENCODE(key).replace('%', '%%')}: %s" for key in keys) + "\n  }"


def _encode_scalar(value: Any) -> str:
    """One value as json.dumps writes it: the common types directly, anything else by the encoder itself."""
    kind = value.__class__
    if kind is str:
        return encode_basestring_ascii(value)  # json.dumps' own, for its default ensure_ascii=True
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)
    return _ENCODE(value)


def _echo_json_list(items: Iterable[dict[str, Any]]) -> None:
    """Print a JSON list item by item, exactly as `json.dumps(list, indent=2)` would print it whole."""
    opening, chunk = "[", []
    for item in items:
        chunk.append(opening + "\n  " + _list_item(item))
        opening = ","
        if len(chunk) == ECHO_ITEMS:
            click.echo("".join(chunk), nl=False)
            chunk.clear()
    click.echo("".join(chunk) + ("[]" if opening == "[" else "\n]"))


def _aligned(heading: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> Iterator[str]:
    """The heading and the rows as lines of columns, aligned within each block of ALIGN_BLOCK rows as they come."""
    rows = iter(rows)
    first = True
    while block := list(islice(rows, ALIGN_BLOCK)):
        table = [heading, *block] if first else block
        widths = [max(cell_len(row[column]) for row in table) for column in range(len(heading))]
        for row in table:
            cells = (cell + " " * (width - cell_len(cell)) for cell, width in zip(row, widths, strict=True))
            yield "  ".join(cells).rstrip()
        first = False
    if first:
        yield "  ".join(heading).rstrip()


@click.group("db")
def db_group() -> None:
    """The database: migrations."""


@db_group.command("upgrade")
@click.pass_context
def upgrade_command(ctx: click.Context) -> None:
    """Apply database migrations (also done on first use) and print the revision; running it again is harmless."""
    project = open_project(ctx)
    database = connect(project.settings, migrate=False)
    try:
        before = current_revision(database.engine)
        upgrade(database.engine, course_slugs=project.course_slugs)
        after = current_revision(database.engine)
    except SQLAlchemyError as error:
        raise DatabaseError(f"cannot migrate the database: {error}") from None
    finally:
        database.dispose()
    if before == after:
        click.echo(f"database at revision {after} (up to date)")
    else:
        click.echo(f"database upgraded from revision {before or 'none'} to {after}")


commands: list[click.Command] = [subscribers_group, plan_command, db_group]

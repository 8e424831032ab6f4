"""Options shared by several commands: `--now ISO8601` for rehearsals, simulations and tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from newsletter.config import database_url
from newsletter.project import Project

F = TypeVar("F", bound=Callable[..., Any])

NOW_HELP = (
    "Act as if the time were this instant, ISO 8601: 2026-03-01T09:00:00+00:00 or 2026-03-01T09:00Z "
    "(no offset means UTC). Default: the current time."
)


def parse_instant(text: str) -> datetime:
    """Return the aware UTC instant written as ISO 8601 (no offset means UTC); ValueError says what is expected."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 instant; write it like 2026-03-01T09:00:00+00:00 or 2026-03-01T09:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_now(
    ctx: click.Context | None, param: click.Parameter | None, value: str | datetime | None
) -> datetime | None:
    """Click callback for `--now`: None when absent, else the instant; a bad value exits 2 (click.BadParameter)."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return parse_instant(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from None


def now_option(command: F) -> F:
    """Add `--now ISO8601`; the command receives `now` as an aware UTC datetime, or None when absent."""
    return click.option("--now", "now", callback=parse_now, metavar="ISO8601", help=NOW_HELP)(command)


def resolve_now(now: datetime | None) -> datetime:
    """Return the instant given with `--now`, or the current time."""
    return now if now is not None else datetime.now(UTC)


def open_project(ctx: click.Context) -> Project:
    """Open the project named by `--config` (or ./config.toml), telling the operator what was set up for them."""
    project = Project.open(ctx.obj["config_path"])
    ctx.call_on_close(project.close)
    ctx.find_root().ensure_object(dict)["database_url"] = database_url(project.settings)
    for notice in project.settings.notices:
        click.echo(f"note: {notice}", err=True)
    return project

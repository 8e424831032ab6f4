"""`newsletter suppressions list|add|remove`: the addresses never to be mailed again."""

from __future__ import annotations

import json
from datetime import datetime

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from newsletter.cli.options import now_option, open_project, resolve_now
from newsletter.feedback.suppression import add_suppression, list_suppressions, remove_suppression


@click.group("suppressions")
def suppressions_group() -> None:
    """The suppression list: kept as keyed hashes, it survives erase and re-signup."""


@suppressions_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects instead of a table.")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """List suppressions, oldest first; the address shows while a subscriber row still holds it."""
    project = open_project(ctx)
    ctx.call_on_close(project.db.dispose)
    with project.db.reading() as session:
        entries = list_suppressions(session, project.settings)
    if as_json:
        rows = [
            {
                "address": entry.address or None,
                "hash": entry.address_hash,
                "reason": entry.reason,
                "source": entry.source,
                "created_at": entry.created_at.isoformat(),
                "matches_current_key": entry.matches_current_key,
            }
            for entry in entries
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    console = Console(soft_wrap=True, highlight=False)
    table = Table("address", "reason", "source", "since (UTC)", box=None)
    for entry in entries:
        address = entry.address or f"(erased, hash {entry.address_hash[:12]}…)"
        table.add_row(escape(address), entry.reason, entry.source, f"{entry.created_at:%Y-%m-%d %H:%M}")
    console.print(table)
    stale = sum(not entry.matches_current_key for entry in entries)
    console.print(f"{len(entries)} suppression{'s' if len(entries) != 1 else ''}")
    if stale:
        console.print(
            f"{stale} were made with another secret key and no longer match any address; "
            "`suppressions add` each address again to keep it suppressed"
        )


@suppressions_group.command("add")
@click.argument("address")
@now_option
@click.pass_context
def add_command(ctx: click.Context, address: str, now: datetime | None) -> None:
    """Suppress ADDRESS: nothing is ever sent to it again; a subscriber with it is unsubscribed at once."""
    project = open_project(ctx)
    ctx.call_on_close(project.db.dispose)
    with project.db.session() as session:
        added = add_suppression(session, project, address, now=resolve_now(now))
    click.echo(f"suppressed {address.strip()}" if added else f"{address.strip()} was already suppressed")


@suppressions_group.command("remove")
@click.argument("address")
@click.pass_context
def remove_command(ctx: click.Context, address: str) -> None:
    """Take ADDRESS off the list, so it may subscribe again (nobody is re-subscribed by this)."""
    project = open_project(ctx)
    ctx.call_on_close(project.db.dispose)
    with project.db.session() as session:
        remove_suppression(session, project.settings, address)
    click.echo(f"removed {address.strip()} from the suppression list")


commands: list[click.Command] = [suppressions_group]

"""The `newsletter` command line: a click group whose commands live one family per module.

Each module exposes `commands`, a list of click commands; `COMMAND_MODULES` says which module holds which
command, and a module is imported only when one of its commands is run or asked for help. So `newsletter
status` loads neither the renderer nor the email checklist nor the CSV reader: importing every family at
start cost 0.7–1.0 s of every command, most of what a `status` takes. `tests/test_docs.py` holds the map to
the modules' own lists. A command parses its arguments, calls one domain function and prints; our own errors
become one clear line and exit code 1.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from newsletter.errors import NewsletterError

COMMAND_MODULES = {
    "init": "init",
    "lessons": "lessons",
    "render": "lessons",
    "check": "lessons",
    "split": "split",
    "subscribers": "subscribers",
    "plan": "subscribers",
    "db": "subscribers",
    "send": "send",
    "test-send": "send",
    "demo": "send",
    "serve": "web",
    "preview": "web",
    "run": "operations",
    "status": "operations",
    "deliveries": "operations",
    "retry": "operations",
    "bounces": "bounces",
    "suppressions": "suppressions",
}


class NewsletterGroup(click.Group):
    """The top-level group: commands loaded from their modules on first use (`COMMAND_MODULES`), and
    `NewsletterError` and database faults turned into a one-line message and exit code 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            module = importlib.import_module(f"newsletter.cli.{COMMAND_MODULES[cmd_name]}")
            for command in module.commands:
                self.add_command(command)
        return self.commands.get(cmd_name)

    def every_command(self) -> dict[str, click.Command]:
        """Each command by name, every module loaded (for tests and documentation)."""
        context = click.Context(self)
        found = {name: self.get_command(context, name) for name in self.list_commands(context)}
        return {name: command for name, command in found.items() if command is not None}

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as error:
            raise click.ClickException(str(error)) from error
        except Exception as error:
            # A database that is read-only, full, locked or restarting is an operator's matter, not a bug. Such a
            # fault comes from SQLAlchemy, loaded by then; commands that never use it are spared importing it.
            faults = sys.modules.get("sqlalchemy.exc")
            if faults is None or not isinstance(error, faults.DBAPIError):
                raise
            from newsletter.db import describe_failure

            url = ctx.obj.get("database_url", "") if isinstance(ctx.obj, dict) else ""
            raise click.ClickException(describe_failure(error, url or "(configured)")) from error


@click.group(cls=NewsletterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="NEWSLETTER_CONFIG",
    help="Path to config.toml (default: ./config.toml; env NEWSLETTER_CONFIG).",
)
@click.version_option(package_name="newsletter")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Turn one article into a weekly lesson series, delivered on each subscriber's own clock."""
    ctx.ensure_object(dict)
    # From the environment, the path is left to load_settings, which then names NEWSLETTER_CONFIG in its errors.
    from_env = ctx.get_parameter_source("config_path") is click.core.ParameterSource.ENVIRONMENT
    ctx.obj["config_path"] = None if from_env else config_path

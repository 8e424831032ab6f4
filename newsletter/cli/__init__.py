"""The `newsletter` command line: a click group whose commands live one family per module.

Each module exposes `commands`, a list of click commands registered here. A command parses its arguments,
calls one domain function and prints; our own errors become one clear line and exit code 1.
"""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy.exc import DBAPIError

from newsletter.errors import NewsletterError


class NewsletterGroup(click.Group):
    """A group that turns `NewsletterError` and database faults into a one-line message and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as error:
            raise click.ClickException(str(error)) from error
        except DBAPIError as error:
            # A database that is read-only, full, locked or restarting is an operator's matter, not a bug.
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


def _register() -> None:
    from newsletter.cli import bounces, init, lessons, operations, send, split, subscribers, suppressions, web

    for module in (init, lessons, split, subscribers, send, web, operations, bounces, suppressions):
        for command in module.commands:
            main.add_command(command)


_register()

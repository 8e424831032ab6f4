"""`newsletter serve` and `newsletter preview`: the web app under uvicorn.

`serve` sends each sign-up's confirmation within seconds (`newsletter.confirmations`) and no lesson: those
go out with `newsletter send` or `newsletter run`. `preview` sends nothing, and says so: it is the editor's
studio, and a form filled in there to try it must not mail anyone.
"""

from __future__ import annotations

import threading
import time
import webbrowser
from collections.abc import Callable

import click

from newsletter.cli.options import open_project
from newsletter.config import Settings
from newsletter.confirmations import ConfirmationSender
from newsletter.errors import ConfigError
from newsletter.logs import delivery_line
from newsletter.project import Project
from newsletter.transports import transport_from_settings

# Open server-sent-event streams would otherwise hold a Ctrl-C shutdown until the browser tab closes.
GRACEFUL_SHUTDOWN_SECONDS = 2
NO_SENDER = (
    "the preview sends no email: confirmations and lessons go out with `newsletter serve`, `newsletter send` "
    "(from cron) or `newsletter run`"
)
CONFIRMATIONS_ONLY = (
    "this process sends each sign-up's confirmation at once, and no lesson: lessons go out with "
    "`newsletter send` (from cron) or `newsletter run`"
)


def check_exposure(settings: Settings, host: str, *, studio: bool) -> None:
    """Refuse to put the studio on a public address without the admin token."""
    from newsletter.web.security import is_loopback

    if studio and not is_loopback(host) and not settings.web.admin_token:
        raise ConfigError(
            f"refusing to serve the preview studio on {host}, which is reachable from other machines, without "
            "NEWSLETTER_WEB_ADMIN_TOKEN: set that variable to a long random value, pass --no-studio to serve "
            "only the subscriber pages, or use --host 127.0.0.1"
        )


def _run(project: Project, host: str, port: int, *, studio: bool, open_browser: bool, confirm: bool) -> None:
    import uvicorn

    from newsletter.web import create_app
    from newsletter.web.serving import server_config

    # The course the pages show (reloaded as its files change) renders the confirmations too.
    sender = _confirmation_sender(project, lambda: app.state.web.project) if confirm else None
    app = create_app(project, host=host, studio=studio, on_signup=sender.nudge if sender else None)
    server = uvicorn.Server(
        server_config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    )
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/"
    what = "the preview studio and the subscriber pages" if studio else "the subscriber pages"
    click.echo(f"Serving {what} at {url if studio else url + 'subscribe'}")
    click.echo(f"note: {CONFIRMATIONS_ONLY if sender else NO_SENDER}", err=True)
    if open_browser:
        threading.Thread(target=_open_when_started, args=(server, url), daemon=True).start()
    if sender is not None:
        sender.start()
    try:
        server.run()
    except KeyboardInterrupt:
        # uvicorn shuts down cleanly on Ctrl-C, then raises it again: stopping the server is not a failure.
        click.echo("Stopped.")
    finally:
        if sender is not None:
            sender.close()


def _confirmation_sender(project: Project, current: Callable[[], Project]) -> ConfirmationSender:
    def said(outcome: str, lesson: str, address: str) -> None:
        click.echo(delivery_line(outcome, lesson, address)[1], err=True)

    def failed(reason: str) -> None:
        click.echo(f"could not send confirmations now ({reason}); they wait for the next sender", err=True)

    return ConfirmationSender(current, transport_from_settings(project.settings), on_outcome=said, on_failure=failed)


def _open_when_started(server: object, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if getattr(server, "started", False):
            webbrowser.open(url)
            return
        time.sleep(0.1)


@click.command("serve")
@click.option("--host", help="Address to listen on (default: [web] host of config.toml).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on (default: [web] port).")
@click.option("--no-studio", is_flag=True, help="Serve only the subscriber pages, without the preview studio.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, no_studio: bool) -> None:
    """Serve the subscriber pages (subscribe, confirm, unsubscribe, preferences) and the preview studio."""
    project = open_project(ctx)
    web = project.settings.web
    host = host or web.host
    check_exposure(project.settings, host, studio=not no_studio)
    _run(project, host, port or web.port, studio=not no_studio, open_browser=False, confirm=True)


@click.command("preview")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on (default: [web] port).")
@click.option("--no-open", is_flag=True, help="Do not open the studio in a browser.")
@click.pass_context
def preview(ctx: click.Context, host: str, port: int | None, no_open: bool) -> None:
    """Open the preview studio: every lesson as a reader sees it, re-rendered whenever a file changes."""
    project = open_project(ctx)
    check_exposure(project.settings, host, studio=True)
    _run(project, host, port or project.settings.web.port, studio=True, open_browser=not no_open, confirm=False)


commands: list[click.Command] = [serve, preview]

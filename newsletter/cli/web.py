"""`newsletter serve` and `newsletter preview`: the web app under uvicorn.

Neither sends email: a sign-up's confirmation goes out with the next `newsletter send` (cron) or tick of
`newsletter run`, and both commands say so, at start and at each sign-up. A sender inside the web server
would need the relay's password and reach on the web machine, and would double the senders an operator
has to know about and stop cleanly; `newsletter run` is the one process that serves and sends, and it
sends a confirmation within seconds of the sign-up.
"""

from __future__ import annotations

import threading
import time
import webbrowser

import click

from newsletter.cli.options import open_project
from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.project import Project

# Open server-sent-event streams would otherwise hold a Ctrl-C shutdown until the browser tab closes.
GRACEFUL_SHUTDOWN_SECONDS = 2
NO_SENDER = (
    "this process sends no email: confirmations and lessons go out with `newsletter send` (from cron) or "
    "`newsletter run`"
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


def _run(project: Project, host: str, port: int, *, studio: bool, open_browser: bool) -> None:
    import uvicorn

    from newsletter.web import create_app
    from newsletter.web.serving import server_config

    app = create_app(project, host=host, studio=studio, on_signup=_say_who_sends)
    server = uvicorn.Server(
        server_config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    )
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/"
    what = "the preview studio and the subscriber pages" if studio else "the subscriber pages"
    click.echo(f"Serving {what} at {url if studio else url + 'subscribe'}")
    click.echo(f"note: {NO_SENDER}", err=True)
    if open_browser:
        threading.Thread(target=_open_when_started, args=(server, url), daemon=True).start()
    try:
        server.run()
    except KeyboardInterrupt:
        # uvicorn shuts down cleanly on Ctrl-C, then raises it again: stopping the server is not a failure.
        click.echo("Stopped.")


def _say_who_sends() -> None:
    click.echo("a sign-up came in: its confirmation email goes out with the next `newsletter send`", err=True)


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
    _run(project, host, port or web.port, studio=not no_studio, open_browser=False)


@click.command("preview")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on (default: [web] port).")
@click.option("--no-open", is_flag=True, help="Do not open the studio in a browser.")
@click.pass_context
def preview(ctx: click.Context, host: str, port: int | None, no_open: bool) -> None:
    """Open the preview studio: every lesson as a reader sees it, re-rendered whenever a file changes."""
    project = open_project(ctx)
    check_exposure(project.settings, host, studio=True)
    _run(project, host, port or project.settings.web.port, studio=True, open_browser=not no_open)


commands: list[click.Command] = [serve, preview]

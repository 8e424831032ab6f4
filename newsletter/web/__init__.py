"""The web app: the preview studio for editors and the pages subscribers use, as one Starlette application.

    studio (preview.py, changes.py, outbox.py, ...)   public (signup.py, unsubscribe.py, preferences.py)
    /                  the course at a glance          /subscribe              the sign-up form
    /preview/<slug>    one email, as a reader sees it  /confirm/<token>        double opt-in: GET shows, POST confirms
    /changes           the course on disk vs. the plan
    /outbox            the outbox folder as an inbox   /u/<token>              RFC 8058 one-click unsubscribe
    /_studio/events    live reload (server-sent)       /u/<token>/resubscribe  coming back after unsubscribing
                                                       /preferences/<token>    pause, resume, day and time
                                                       /media/<path>           lesson images (media.py)

The studio is guarded (security.py): a person at this machine (loopback peer, nothing forwarded, a loopback
Host, the server bound to loopback) gets in; everyone else needs NEWSLETTER_WEB_ADMIN_TOKEN. Public pages never
need the token. Behind a reverse proxy, `[web] trusted_proxies` says whose X-Forwarded-* headers to believe
(proxies.py), so that limits count clients rather than the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from newsletter.config import Settings, load_settings
from newsletter.project import Project
from newsletter.web import changes, media, outbox, preferences, preview, signup, unsubscribe, webhooks
from newsletter.web.livereload import OutboxChanges, ProjectHolder, events_endpoint, watch_outbox, watch_project
from newsletter.web.pages import ENVIRONMENT, HERE, WebContext, page, studio_only_async, web_context
from newsletter.web.proxies import ForwardedClient, TrustedProxies
from newsletter.web.ratelimit import RateLimiter
from newsletter.web.security import BODY_LIMITS, MAX_BODY_BYTES, BodyLimit, SecurityHeaders, StudioGuard

__all__ = ["create_app"]
LOGIN_ATTEMPTS_PER_HOUR = 20


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def _not_found(request: Request, exc: Exception) -> Response:
    return page(request, "not_found.html", {"path": request.url.path}, status=404)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return page(request, "http_error.html", {"status": status}, status=status)


def _too_large_page(limit: int) -> str:
    return ENVIRONMENT.get_template("too_large.html").render(limit_kb=limit // 1024)


def create_app(
    project_or_settings: Project | Settings | ProjectHolder,
    *,
    host: str | None = None,
    studio: bool = True,
    live_reload: bool = True,
    clock: Callable[[], datetime] | None = None,
    reload_settings: Callable[[], Settings] | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    on_signup: Callable[[], None] | None = None,
) -> Starlette:
    """Build the app for a project.

    `host` is the address the server binds (default: [web] host); anything but loopback puts the whole studio
    behind NEWSLETTER_WEB_ADMIN_TOKEN, even for this machine. `studio=False` serves only the public pages.
    `live_reload` watches lessons, templates and config.toml; `reload_settings` says how to read the settings
    again (default: the same config file). `clock` gives "now" (tests and `--now` pin it). `extra_routes` come
    first (the daemon's /healthz and /metrics). `on_signup` is called after each sign-up is stored (the daemon
    ticks at once, so the confirmation goes out within seconds; `newsletter serve` says who will send it).
    """
    if isinstance(project_or_settings, ProjectHolder):
        holder = project_or_settings  # the daemon's: it reloads the course itself
        project = holder.project
    else:
        project = project_or_settings if isinstance(project_or_settings, Project) else Project(project_or_settings)
        if reload_settings is None and project.settings.config_path is not None:
            config_path = project.settings.config_path
            reload_settings = lambda: load_settings(config_path)  # noqa: E731
        holder = ProjectHolder(project, reload_settings)
    settings = project.settings
    context = WebContext(
        holder=holder,
        clock=clock or _utc_now,
        guard=StudioGuard(host or settings.web.host, settings.web.admin_token, settings.secret_key),
        subscribe_limiter=RateLimiter(settings.web.subscribe_rate_per_hour),
        login_limiter=RateLimiter(LOGIN_ATTEMPTS_PER_HOUR),
        studio=studio,
        outbox_changes=OutboxChanges(),
        on_signup=on_signup or (lambda: None),
    )

    routes: list[BaseRoute] = [
        *extra_routes,
        *signup.routes,
        *unsubscribe.routes,
        *preferences.routes,
        *media.routes,
        *webhooks.routes,
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    if studio:
        events = studio_only_async(
            events_endpoint(
                lambda request: web_context(request).holder, lambda request: web_context(request).outbox_changes
            )
        )
        routes += [*preview.routes, *changes.routes, *outbox.routes, Route("/_studio/events", events, name="events")]
    else:
        routes.append(Route("/", lambda request: RedirectResponse("/subscribe", status_code=307)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        watchers = []
        if live_reload:
            watchers.append(asyncio.create_task(watch_project(holder, stop)))
            if studio:
                watchers.append(asyncio.create_task(watch_outbox(holder, context.outbox_changes, stop)))
        try:
            yield
        finally:
            stop.set()
            for watcher in watchers:
                await watcher
            holder.close()

    app = Starlette(
        routes=routes,
        middleware=[
            # First, so that every limit, log line and guard below sees the client rather than our proxy.
            Middleware(ForwardedClient, proxies=TrustedProxies.parse(settings.web.trusted_proxies)),
            Middleware(SecurityHeaders),
            Middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, larger=BODY_LIMITS, page=_too_large_page),
        ],
        exception_handlers={404: _not_found, 405: _http_error},
        lifespan=lifespan,
    )
    app.state.web = context
    return app

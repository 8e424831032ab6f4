"""What every route shares: the app's context, the page templates, and how an error becomes a page."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from newsletter.errors import LessonError, NewsletterError
from newsletter.project import Project
from newsletter.web.livereload import OutboxChanges, ProjectHolder
from newsletter.web.ratelimit import RateLimiter, client_key
from newsletter.web.security import CsrfCheck, StudioGuard, set_csrf_cookie, url_origin

HERE = Path(__file__).parent
_WHERE = re.compile(r"^(?P<path>[^\s:][^:]*?) line (?P<line>\d+): ")


@dataclass
class WebContext:
    """The app-wide state routes reach through `request.app.state.web`."""

    holder: ProjectHolder
    clock: Callable[[], datetime]
    guard: StudioGuard
    subscribe_limiter: RateLimiter
    login_limiter: RateLimiter
    studio: bool
    outbox_changes: OutboxChanges
    on_signup: Callable[[], None]  # after a sign-up is stored: the daemon ticks at once, `serve` says who sends

    @property
    def project(self) -> Project:
        return self.holder.project

    @property
    def csrf(self) -> CsrfCheck:
        settings = self.project.settings
        return CsrfCheck(settings.secret_key, url_origin(settings.newsletter.base_url))


def form_text(form: FormData, name: str) -> str:
    """A text field of a submitted form; a file or a missing field counts as empty."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def client_address(request: Request) -> str:
    """The client's address: the socket's peer, or whom a trusted proxy forwarded for (`proxies.py`)."""
    return request.client.host if request.client else "unknown"


def client_limit_key(request: Request) -> str:
    """What the per-client limits count a request against: its client's address, or an IPv6 client's /64."""
    return client_key(client_address(request))


def web_context(request: Request) -> WebContext:
    context = request.app.state.web
    assert isinstance(context, WebContext)
    return context


def _local_time(moment: datetime, zone: str) -> str:
    local = moment.astimezone(ZoneInfo(zone))
    return f"{local:%A} {local.day} {local:%B %Y at %H:%M} ({zone})"


def _local_date(moment: datetime, zone: str) -> str:
    local = moment.astimezone(ZoneInfo(zone))
    return f"{local:%A} {local.day} {local:%B %Y}"


def _kilobytes(size: int) -> str:
    return f"{size / 1024:.1f} KB"


ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENVIRONMENT.filters["local_time"] = _local_time
ENVIRONMENT.filters["local_date"] = _local_date
ENVIRONMENT.filters["kilobytes"] = _kilobytes


def page(
    request: Request,
    template: str,
    values: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """Render one of our page templates."""
    context = web_context(request)
    project = context.project
    series_title = project.series.title if context.holder.error is None else project.settings.newsletter.name
    body = ENVIRONMENT.get_template(template).render(
        request=request,
        newsletter_name=project.settings.newsletter.name,
        series_title=series_title,
        live_version=context.holder.version,
        **(values or {}),
    )
    return HTMLResponse(body, status_code=status, headers=dict(headers or {}))


@dataclass(frozen=True)
class ErrorReport:
    """An error an editor can act on: the message, and the lines of the file around where it happened."""

    message: str
    path: str = ""
    line: int | None = None
    excerpt: tuple[tuple[int, str], ...] = ()

    @property
    def reason(self) -> str:
        """The message without the "file line N: " it starts with, for pages that show the place apart."""
        where = f"{self.path} line {self.line}: " if self.line else f"{self.path}: "
        return self.message.removeprefix(where) if self.path else self.message


def error_report(error: BaseException, root: Path) -> ErrorReport:
    """Describe an error with the file and line it names, and a few lines of that file when it is readable."""
    message = str(error)
    path, line = "", None
    if isinstance(error, LessonError):
        path, line = error.path, error.line
    elif isinstance(error, NewsletterError) and (match := _WHERE.match(message)):
        path, line = match.group("path"), int(match.group("line"))
    else:
        path, line = _template_frame(error)
        if not isinstance(error, NewsletterError):
            where = f"{path} line {line}: " if path else ""
            message = f"{where}{type(error).__name__}: {error}"
        elif path and path not in message:
            message = f"{path} line {line}: {message}"
        elif path:
            message = message.replace(f"{path}:", f"{path} line {line}:", 1)
    excerpt: tuple[tuple[int, str], ...] = ()
    if path and line:
        excerpt = _excerpt(Path(path), line)
    shown = path
    if path:
        with contextlib.suppress(ValueError):
            shown = str(Path(path).resolve().relative_to(root))
        message = message.replace(path, shown)
    return ErrorReport(message=message, path=shown, line=line, excerpt=excerpt)


def _template_frame(error: BaseException) -> tuple[str, int | None]:
    """The innermost template frame of the error or of what it was raised from.

    Jinja2 rewrites traceback frames to point into the templates, and our own `TemplateError` is raised
    `from None` over the Jinja2 error, which stays reachable as its context.
    """
    found: tuple[str, int | None] = ("", None)
    cause: BaseException | None = error
    while cause is not None and found[0] == "":
        trace = cause.__traceback__
        while trace is not None:
            filename = trace.tb_frame.f_code.co_filename
            if filename.endswith(".j2"):
                found = (filename, trace.tb_lineno)
            trace = trace.tb_next
        cause = cause.__context__
    return found


def _excerpt(path: Path, line: int, around: int = 3) -> tuple[tuple[int, str], ...]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ()
    first = max(1, line - around)
    return tuple((number, lines[number - 1]) for number in range(first, min(len(lines), line + around) + 1))


Endpoint = Callable[[Request], Response]
AsyncEndpoint = Callable[[Request], Awaitable[Response]]


def refusal(request: Request) -> Response:
    """The answer to a request the studio guard does not allow."""
    reason = web_context(request).guard.refusal_reason(request)
    if reason:
        return page(request, "studio_refused.html", {"reason": reason}, status=403)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return login_page(request, target, status=401)


def login_page(request: Request, target: str, *, message: str = "", status: int = 200) -> Response:
    context = web_context(request)
    secret, fresh = CsrfCheck.browser_secret(request)
    response = page(
        request,
        "studio_login.html",
        {"next": target, "message": message, "csrf": context.csrf.field_value(secret, "login")},
        status=status,
        headers={"Cache-Control": "no-store"},
    )
    if fresh:
        set_csrf_cookie(response, request, secret)
    return response


def studio_only(endpoint: Endpoint) -> Endpoint:
    """Let the request through to a studio page only if the guard allows it."""

    @functools.wraps(endpoint)
    def guarded(request: Request) -> Response:
        if not web_context(request).guard.allows(request):
            return refusal(request)
        return endpoint(request)

    return guarded


def studio_only_async(endpoint: AsyncEndpoint) -> AsyncEndpoint:
    """`studio_only` for endpoints that must run on the event loop (streams, form bodies)."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        if not web_context(request).guard.allows(request):
            return refusal(request)
        return await endpoint(request)

    return guarded

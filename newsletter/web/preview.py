"""The preview studio: the course at a glance, each email as a reader sees it, and the files to download."""

from __future__ import annotations

import email
import re
import weakref
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from dkim.crypto import UnparsableKeyError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from newsletter.checklist import CheckResult, DnsTxtLookup, run_checklist
from newsletter.checklist.course import CALL_TO_ACTION
from newsletter.checklist.signing import dns_serving, public_key_record
from newsletter.message import WIRE_POLICY
from newsletter.models import CONFIRMATION
from newsletter.project import SAMPLE_NAME, Project
from newsletter.render import RenderedEmail
from newsletter.subscribers import NAME_MAX
from newsletter.web.chart import CHART_DAYS, upcoming_chart
from newsletter.web.pages import (
    client_limit_key,
    error_report,
    form_text,
    login_page,
    page,
    refusal,
    studio_only,
    web_context,
)
from newsletter.web.security import ADMIN_COOKIE, CSRF_FIELD

GMAIL_CLIP_BYTES = 102_400  # Gmail shows "[Message clipped]" above this many bytes of HTML
COMFORT_BYTES = 90 * 1024
VIEWS = ("desktop", "mobile")
SCHEMES = ("light", "dark")
DOWNLOADS = {
    "html": "text/html; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
    "eml": "message/rfc822",
}
# The email's own dark-mode rules, switched on or off regardless of the editor's system setting.
_DARK_MEDIA = re.compile(r"@media\s*\(\s*prefers-color-scheme\s*:\s*dark\s*\)", re.IGNORECASE)
FRAME_POLICY = (
    "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; font-src https: data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True)
class Preview:
    """One email rendered for the sample subscriber, with its wire bytes and checklist results."""

    slug: str
    week: int
    title: str
    rendered: RenderedEmail
    message: EmailMessage
    raw: bytes
    checks: list[CheckResult]

    @property
    def html_bytes(self) -> int:
        return len(self.rendered.html.encode("utf-8"))

    @property
    def failures(self) -> list[CheckResult]:
        return [check for check in self.checks if not check.ok]


def sample_name(request: Request) -> str:
    """The sample subscriber's name from the query string: one line, at most NAME_MAX characters."""
    raw = request.query_params.get("name", SAMPLE_NAME)
    return " ".join(raw.split())[:NAME_MAX]


def email_entries(project: Project) -> list[tuple[str, int, str]]:
    """(slug, week, title) of every email the studio shows: the confirmation first, then the lessons."""
    entries = [(CONFIRMATION, 0, "Confirm your subscription")]
    entries += [(lesson.slug, lesson.week, lesson.title) for lesson in project.series]
    return entries


def find_entry(project: Project, slug: str) -> tuple[str, int, str] | None:
    return next((entry for entry in email_entries(project) if entry[0] == slug), None)


def build_preview(project: Project, slug: str, week: int, title: str, name: str, now: datetime) -> Preview:
    """Render, assemble and check one email for the sample subscriber."""
    subscriber = project.sample_subscriber(name=name)
    rendered = project.render(subscriber, slug, now)
    raw = project.envelope(subscriber, slug, now=now).data  # the bytes a send would put on the wire
    message = email.message_from_bytes(raw, policy=WIRE_POLICY)
    assert isinstance(message, EmailMessage)
    checks = run_checklist(
        raw,
        subject=rendered.subject,
        call_to_action=CALL_TO_ACTION if slug != CONFIRMATION else None,
        dkim_dns=_dkim_dns(project),
    )
    return Preview(slug, week, title, rendered, message, raw, checks)


def _dkim_dns(project: Project) -> DnsTxtLookup | None:
    """Answer DKIM key lookups with the configured key's public half, as `newsletter check` does: no DNS wait."""
    key = project.settings.dkim.private_key
    if not project.settings.dkim.selector or key is None or not key.is_file():
        return None
    try:
        return dns_serving(public_key_record(key.read_bytes()))
    except (UnparsableKeyError, ValueError):
        return None  # an unparsable key cannot sign either: rendering reports it


def force_scheme(html: str, scheme: str) -> str:
    """Make the email's dark-mode rules apply always (dark) or never (light)."""
    return _DARK_MEDIA.sub("@media all" if scheme == "dark" else "@media not all", html)


# The index's rows, made once per version of the course: a changed file makes a new Project (watching.py).
_index_rows: weakref.WeakKeyDictionary[Project, list[dict[str, Any]]] = weakref.WeakKeyDictionary()


def index_rows(project: Project, now: datetime) -> list[dict[str, Any]]:
    """Every email of the course rendered and checked for the sample subscriber, with its error if it fails."""
    if (rows := _index_rows.get(project)) is not None:
        return rows
    rows = []
    for slug, week, title in email_entries(project):
        try:
            preview = build_preview(project, slug, week, title, SAMPLE_NAME, now)
        except Exception as error:  # an editor's template may raise anything: show it in its row
            rows.append(
                {"slug": slug, "week": week, "title": title, "error": error_report(error, project.settings.root)}
            )
            continue
        rows.append({"slug": slug, "week": week, "title": title, "error": None, "preview": preview})
    _index_rows[project] = rows
    return rows


def studio_index(request: Request) -> Response:
    context = web_context(request)
    project, now = context.project, context.clock()
    if context.holder.error is not None:
        return page(request, "studio_error.html", {"report": error_report(context.holder.error, project.settings.root)})
    chart = upcoming_chart(project, now)
    sends = chart.sends if chart is not None else None
    return page(
        request,
        "studio_index.html",
        {
            "rows": index_rows(project, now),
            "chart": chart,
            "sends": sends,
            "peak": max([day.count for day in sends.days] + [1]) if sends else 1,
            "chart_days": CHART_DAYS,
            "clip": GMAIL_CLIP_BYTES,
            "comfort": COMFORT_BYTES,
            "zone": project.settings.schedule.timezone,
        },
    )


def _not_found(request: Request, project: Project, slug: str) -> HTMLResponse:
    return page(request, "studio_not_found.html", {"slug": slug, "entries": email_entries(project)}, status=404)


def _options(request: Request) -> tuple[str, str, str]:
    view = request.query_params.get("view", "desktop")
    scheme = request.query_params.get("scheme", "light")
    return sample_name(request), view if view in VIEWS else "desktop", scheme if scheme in SCHEMES else "light"


def preview_page(request: Request) -> Response:
    context = web_context(request)
    project, slug = context.project, request.path_params["slug"]
    name, view, scheme = _options(request)
    if context.holder.error is not None:
        report = error_report(context.holder.error, project.settings.root)
        return page(
            request,
            "studio_preview.html",
            {
                "slug": slug,
                "report": report,
                "name": name,
                "view": view,
                "scheme": scheme,
                "entries": [],
                "preview": None,
            },
        )
    entry = find_entry(project, slug)
    if entry is None:
        return _not_found(request, project, slug)
    values = {
        "slug": slug,
        "name": name,
        "view": view,
        "scheme": scheme,
        "entries": email_entries(project),
        "title": entry[2],
        "preview": None,
        "report": None,
    }
    try:
        values["preview"] = build_preview(project, *entry, name, context.clock())
    except Exception as error:  # a broken template is shown to its editor, never a 500
        values["report"] = error_report(error, project.settings.root)
    return page(request, "studio_preview.html", values)


def _rendered(request: Request) -> Preview | Response:
    context = web_context(request)
    project, slug = context.project, request.path_params["slug"]
    if context.holder.error is not None:
        report = error_report(context.holder.error, project.settings.root)
        return page(request, "studio_error.html", {"report": report}, status=422)
    entry = find_entry(project, slug)
    if entry is None:
        return _not_found(request, project, slug)
    try:
        return build_preview(project, *entry, sample_name(request), context.clock())
    except Exception as error:  # as in preview_page
        return page(request, "studio_error.html", {"report": error_report(error, project.settings.root)}, status=422)


def preview_frame(request: Request) -> Response:
    """The email's HTML alone, for the sandboxed frame of the preview page."""
    preview = _rendered(request)
    if isinstance(preview, Response):
        return preview
    html = force_scheme(preview.rendered.html, _options(request)[2])
    return HTMLResponse(html, headers={"Content-Security-Policy": FRAME_POLICY, "Cache-Control": "no-store"})


def preview_download(request: Request) -> Response:
    """The email as a file: its HTML part, its text part, or the whole message as it goes on the wire."""
    fmt = request.path_params["fmt"]
    if fmt not in DOWNLOADS:
        return _not_found(request, web_context(request).project, f"{request.path_params['slug']}.{fmt}")
    preview = _rendered(request)
    if isinstance(preview, Response):
        return preview
    body = {"html": preview.rendered.html.encode(), "txt": preview.rendered.text.encode(), "eml": preview.raw}[fmt]
    headers = {"Content-Disposition": f'attachment; filename="{preview.slug}.{fmt}"'}
    if fmt == "html":
        headers["Content-Security-Policy"] = FRAME_POLICY
    return Response(body, media_type=DOWNLOADS[fmt], headers=headers)


def preview_redirect(request: Request) -> Response:
    return RedirectResponse("/", status_code=307)


def login_form(request: Request) -> Response:
    guard = web_context(request).guard
    if guard.from_this_machine(request):
        return RedirectResponse("/", status_code=303)
    if guard.refusal_reason(request):
        return refusal(request)
    return login_page(request, safe_target(request.query_params.get("next", "/")))


async def login_submit(request: Request) -> Response:
    """Check the admin token once and remember the proof in a cookie."""
    context = web_context(request)
    guard = context.guard
    if guard.from_this_machine(request):
        return RedirectResponse("/", status_code=303)
    if guard.refusal_reason(request):
        return refusal(request)
    form = await request.form()
    target = safe_target(form_text(form, "next") or "/")
    if not context.login_limiter.allow(client_limit_key(request)):
        return login_page(
            request, target, message="Too many attempts from your address; wait and try again.", status=429
        )
    problem = context.csrf.problem(request, form_text(form, CSRF_FIELD), "login")
    if problem:
        return login_page(request, target, message=f"Not signed in: {problem}.", status=403)
    if not guard.token_matches(form_text(form, "token")):
        return login_page(request, target, message="That is not the studio token.", status=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        ADMIN_COOKIE,
        guard.cookie_value(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


def safe_target(target: str) -> str:
    """Only a path on this site is a place to go back to after signing in."""
    if not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


routes = [
    Route("/login", login_form, methods=["GET"], name="login"),
    Route("/login", login_submit, methods=["POST"]),
    Route("/", studio_only(studio_index), name="studio"),
    Route("/preview", studio_only(preview_redirect)),
    Route("/preview/{slug}.{fmt}", studio_only(preview_download), name="download"),
    Route("/preview/{slug}/frame", studio_only(preview_frame), name="frame"),
    Route("/preview/{slug}", studio_only(preview_page), name="preview"),
]

"""The outbox as an inbox: the Maildir the outbox transport writes, listed and opened in the studio.

The list updates itself: it reloads when the studio's event stream says a message landed (`livereload`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import EmailMessage

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from newsletter.project import CONFIRM_PATH, PREFERENCES_PATH, UNSUBSCRIBE_PATH
from newsletter.transports import OutboxMessage, read_outbox
from newsletter.web.pages import page, studio_only, web_context
from newsletter.web.preview import FRAME_POLICY

_URL = re.compile(r"https?://[^\s<>()\"']+")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._@=+-]")
# The demo's links point at the configured public URL; these open the same page on the server in use.
_OUR_PAGES = {
    CONFIRM_PATH: "Confirm",
    PREFERENCES_PATH: "Preferences",
    UNSUBSCRIBE_PATH: "Unsubscribe page",
}


@dataclass(frozen=True)
class OpenedMessage:
    """One stored message taken apart for reading."""

    stored: OutboxMessage
    headers: list[tuple[str, str]]
    text: str
    html: str
    links: list[tuple[str, str, str]]  # (URL as sent, the same path on this server or "", what the link does)


def _part(message: EmailMessage, subtype: str) -> str:
    body = message.get_body(preferencelist=(subtype,))
    if body is None:
        return ""
    content = body.get_content()
    return content if isinstance(content, str) else ""


def open_message(stored: OutboxMessage, base_url: str) -> OpenedMessage:
    message = stored.parse()
    text = _part(message, "plain")
    base = base_url.rstrip("/")
    links = []
    for url in dict.fromkeys(_URL.findall(text)):
        local = url[len(base) :] if url.startswith(base + "/") else ""
        purpose = next((label for prefix, label in _OUR_PAGES.items() if local.startswith(prefix)), "Open")
        links.append((url, local, purpose))
    return OpenedMessage(
        stored=stored,
        headers=[(name, str(value)) for name, value in message.items()],
        text=text,
        html=_part(message, "html"),
        links=links,
    )


def _find(request: Request) -> OutboxMessage | None:
    name = request.path_params["name"]
    folder = web_context(request).project.settings.delivery.outbox
    return next((stored for stored in read_outbox(folder) if stored.path.name == name), None)


def _missing(request: Request) -> HTMLResponse:
    return page(request, "outbox_missing.html", {"name": request.path_params["name"]}, status=404)


def outbox_list(request: Request) -> Response:
    context = web_context(request)
    folder = context.project.settings.delivery.outbox
    version = context.outbox_changes.version  # read first: a message landing while we list reloads the page
    messages = list(reversed(read_outbox(folder)))
    return page(request, "outbox_list.html", {"messages": messages, "folder": folder, "outbox_version": version})


def outbox_message(request: Request) -> Response:
    stored = _find(request)
    if stored is None:
        return _missing(request)
    opened = open_message(stored, web_context(request).project.settings.newsletter.base_url)
    return page(request, "outbox_message.html", {"message": opened})


def outbox_html(request: Request) -> Response:
    stored = _find(request)
    if stored is None:
        return _missing(request)
    html = _part(stored.parse(), "html")
    return HTMLResponse(html, headers={"Content-Security-Policy": FRAME_POLICY, "Cache-Control": "no-store"})


def outbox_raw(request: Request) -> Response:
    stored = _find(request)
    if stored is None:
        return _missing(request)
    return Response(
        stored.raw,
        media_type="message/rfc822",
        headers={"Content-Disposition": f'attachment; filename="{_SAFE_NAME.sub("_", stored.path.name)}.eml"'},
    )


routes = [
    Route("/outbox", studio_only(outbox_list), name="outbox"),
    Route("/outbox/{name}/html", studio_only(outbox_html), name="outbox_html"),
    Route("/outbox/{name}/raw", studio_only(outbox_raw), name="outbox_raw"),
    Route("/outbox/{name}", studio_only(outbox_message), name="outbox_message"),
]

"""What keeps the web app safe to expose: the studio guard, CSRF tokens, body limits (size and time), headers.

- The studio lets in, without a token, only a person at this machine: bound to a loopback address, the
  socket's peer a loopback address, nothing forwarded by a proxy (`proxies.py`), and a loopback Host name (a
  page elsewhere cannot reach it by DNS rebinding). The Host header alone decides nothing: a reverse proxy on
  this machine sends whatever Host it likes. Everyone else needs `NEWSLETTER_WEB_ADMIN_TOKEN`, as a bearer
  header or as a cookie set by the login form; without a configured token they are refused outright.
- State-changing public forms carry a double-submit token: a random cookie plus a form field that is an HMAC
  of that cookie and the form's name. A cross-site page can neither read the cookie nor compute the field.
  A form's Origin must be the origin of `[newsletter] base_url` (the public URL behind a proxy) or, for a
  request that reached us directly, the Host it was sent to.
- RFC 8058 one-click unsubscribe is deliberately exempt: providers post without cookies, and the signed
  unsubscribe token in the URL is itself the proof.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter.web.proxies import request_origin

ADMIN_COOKIE = "newsletter_studio"
ADMIN_HEADER = "authorization"
CSRF_COOKIE = "newsletter_csrf"
CSRF_FIELD = "csrf_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_BODY_BYTES = 64 * 1024  # the largest form we take is a handful of short fields
# A provider's webhook posts events in batches: SendGrid's Event Webhook up to 768 KB (it posts every 30 s or
# at 768 KB), an SNS notification up to 256 KB. Refused, a batch is retried and then dropped, so its bounces
# and complaints would be lost: the /webhooks/ paths take up to 1 MB, every other path MAX_BODY_BYTES.
MAX_WEBHOOK_BYTES = 1024 * 1024
BODY_LIMITS = (("/webhooks/", MAX_WEBHOOK_BYTES),)  # path prefixes that take more than MAX_BODY_BYTES
BODY_SECONDS = 30.0  # such a form arrives in well under a second; a client that takes longer is stalling
TOO_SLOW_PAGE = "<!doctype html><title>Too slow</title><h1>That request took too long to arrive</h1>"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' https: data:; style-src 'self'; script-src 'self'; "
    "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


def is_loopback(host: str) -> bool:
    """Whether a bind address or Host name stays on this machine."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(request: Request) -> str:
    """The Host header without its port."""
    return urlsplit(f"//{request.headers.get('host', '')}").hostname or ""


def _digest(key: bytes, purpose: str, value: str) -> str:
    mac = hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class StudioGuard:
    """Decide whether a request may see the studio: by the socket's peer and the admin token, never by Host alone."""

    bound_host: str
    admin_token: str
    secret_key: bytes

    @property
    def exposed(self) -> bool:
        """Bound beyond this machine: everyone, local or not, needs the token."""
        return not is_loopback(self.bound_host)

    def cookie_value(self) -> str:
        """What the login cookie holds: proof of the token, not the token itself."""
        return _digest(self.secret_key, "studio-admin", self.admin_token)

    def token_matches(self, candidate: str) -> bool:
        return bool(self.admin_token) and hmac.compare_digest(candidate.encode(), self.admin_token.encode())

    def from_this_machine(self, request: Request) -> bool:
        """A person at this machine: loopback peer, nothing forwarded, and a loopback Host (no DNS rebinding)."""
        return not self.exposed and request_origin(request).local and is_loopback(host_name(request))

    def refusal_reason(self, request: Request) -> str | None:
        """Why nobody can get in from where this request came, or None when the token would let them."""
        if self.admin_token:
            return None
        if self.exposed:
            return "no-token"
        return "host" if request_origin(request).local else "proxied"

    def allows(self, request: Request) -> bool:
        if self.from_this_machine(request):
            return True
        scheme, _, credential = request.headers.get(ADMIN_HEADER, "").partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(credential.strip()):
            return True
        cookie = request.cookies.get(ADMIN_COOKIE, "")
        return bool(self.admin_token and cookie) and hmac.compare_digest(cookie.encode(), self.cookie_value().encode())


def url_origin(url: str) -> str:
    """`scheme://host[:port]` of a URL, lower-cased, with the scheme's default port left out."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return ""
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


@dataclass(frozen=True)
class CsrfCheck:
    """Issue and verify double-submit tokens for one named form."""

    secret_key: bytes
    public_origin: str  # the origin of [newsletter] base_url, where a reverse proxy serves us

    @staticmethod
    def browser_secret(request: Request) -> tuple[str, bool]:
        """The browser's CSRF cookie value, and whether it must be set because it is new."""
        existing = request.cookies.get(CSRF_COOKIE, "")
        if len(existing) >= 32:
            return existing, False
        return secrets.token_urlsafe(32), True

    def field_value(self, browser_secret: str, form: str) -> str:
        return _digest(self.secret_key, f"csrf-{form}", browser_secret)

    def same_site(self, request: Request, origin: str) -> bool:
        """Whether a form's Origin is ours: the public URL, or (reached directly, not through a proxy) its Host."""
        if url_origin(origin) == self.public_origin:
            return True
        direct = not request_origin(request).via_proxy
        return direct and urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()

    def problem(self, request: Request, submitted: str, form: str) -> str | None:
        """Why this submission is not trusted, or None when it is."""
        origin = request.headers.get("origin")
        if origin and origin != "null" and not self.same_site(request, origin):
            return "the form was sent from another site"
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie:
            return "your browser did not send back our form cookie; allow cookies for this site and try again"
        if not submitted or not hmac.compare_digest(submitted.encode(), self.field_value(cookie, form).encode()):
            return "the form has expired; it has been reloaded, please send it again"
        return None


def set_csrf_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        CSRF_COOKIE, value, httponly=True, samesite="lax", secure=request.url.scheme == "https", path="/"
    )


class BodyRefused(Exception):
    """A request body went past a limit while it was being read: 413 for its size, 408 for its slowness."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class BodyLimit:
    """Answer 413 to a body over its path's limit (declared or streamed), 408 to one not in within `max_seconds`.

    The limit is `max_bytes`, or that of the first of `larger` (path prefix, bytes) whose prefix the path has.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_BODY_BYTES,
        max_seconds: float = BODY_SECONDS,
        *,
        larger: Sequence[tuple[str, int]] = (),
        page: Callable[[int], str] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.larger = tuple(larger)
        self.page = page or (lambda _limit: "<!doctype html><title>Too large</title><h1>That request is too large</h1>")

    def limit(self, path: str) -> int:
        """The most bytes a request body to `path` may have."""
        return next((limit for prefix, limit in self.larger if path.startswith(prefix)), self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limit(scope["path"])
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            await self._refuse(413, max_bytes, scope, receive, send)
            return
        received = 0
        body_done = False
        started = False
        deadline = anyio.current_time() + self.max_seconds

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # later receives only wait for the client to go away: no deadline
                return await receive()
            with anyio.move_on_after(deadline - anyio.current_time()) as waited:
                message = await receive()
            if waited.cancelled_caught:
                raise BodyRefused(408)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyRefused(413)
                body_done = not message.get("more_body", False)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watching_send)
        except BodyRefused as refused:
            if started:
                raise
            await self._refuse(refused.status, max_bytes, scope, receive, send)

    async def _refuse(self, status: int, max_bytes: int, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.page(max_bytes) if status == 413 else TOO_SLOW_PAGE
        response = HTMLResponse(body, status_code=status, headers={"Connection": "close"})
        await response(scope, receive, send)


class SecurityHeaders:
    """Add conservative headers to every response that did not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                # Token links must never leak to another site through the Referer header.
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("X-Frame-Options", "SAMEORIGIN")
            await send(message)

        await self.app(scope, receive, send_with_headers)

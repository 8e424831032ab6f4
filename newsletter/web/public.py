"""What the pages behind our emails share: signed links, database work with a deadline, and answers to failures.

The pages themselves: `signup.py` (subscribe, confirm), `unsubscribe.py` (one-click unsubscribe, resubscribe),
`preferences.py` (pause, resume, day and time). They never need the studio's admin token. The signed token in a
link is the subscriber's whole credential, scoped to one purpose (`newsletter.tokens`): a confirm link cannot
unsubscribe and vice versa.

When the database does not answer (refused, restarting, locked by another process, or silent), a page says
"try again in a few minutes" with 503 within DATABASE_WAIT_SECONDS instead of hanging or failing with a bare
500; the work it gave up on rolls back if it ever gets its turn, so "nothing was changed" stays true.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from newsletter import tokens
from newsletter.errors import NewsletterError, SubscriberError, TokenError
from newsletter.models import Subscriber
from newsletter.planning import describe_cadence
from newsletter.project import PREFERENCES_PATH, UNSUBSCRIBE_PATH, Project
from newsletter.schedule import WEEKDAY_NAMES, parse_send_time, parse_timezone, parse_weekday
from newsletter.subscribers import next_lesson_due
from newsletter.web.health import fault_class
from newsletter.web.pages import page, web_context
from newsletter.web.security import CsrfCheck, set_csrf_cookie
from newsletter.zones import form_zones

log = logging.getLogger(__name__)
T = TypeVar("T")
NO_STORE = {"Cache-Control": "no-store"}
DATABASE_WAIT_SECONDS = 5.0
RETRY_AFTER_SECONDS = 60


def zone_names() -> tuple[str, ...]:
    """The zones the forms offer: UTC and the places, no aliases or deprecated links (`newsletter.zones`)."""
    return form_zones()


class DatabaseTimeout(Exception):
    """The database did not give us a transaction within DATABASE_WAIT_SECONDS."""


async def in_session(project: Project, work: Callable[[Session], T]) -> T:
    """Run database work in one transaction on a worker thread; give up after DATABASE_WAIT_SECONDS."""
    abandoned = threading.Event()

    def run() -> T:
        with project.db.session() as session:
            session.connection()  # the waiting happens here: a pooled connection, and on SQLite the write lock
            if abandoned.is_set():
                raise DatabaseTimeout  # the page already said nothing changed: roll back
            result = work(session)
            if abandoned.is_set():
                raise DatabaseTimeout
            return result

    try:
        with anyio.fail_after(DATABASE_WAIT_SECONDS):
            return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
    except TimeoutError:
        abandoned.set()
        raise DatabaseTimeout from None


def form_page(request: Request, template: str, values: dict[str, Any], form: str, status: int = 200) -> Response:
    """A page holding a state-changing form: with its CSRF field, and the cookie that field is bound to."""
    context = web_context(request)
    secret, fresh = CsrfCheck.browser_secret(request)
    values = {**values, "csrf": context.csrf.field_value(secret, form)}
    response = page(request, template, values, status=status, headers=NO_STORE)
    if fresh:
        set_csrf_cookie(response, request, secret)
    return response


SCHEDULE_CHECKS: dict[str, Callable[[str], object]] = {
    "weekday": parse_weekday,
    "time": parse_send_time,
    "timezone": parse_timezone,
}


def field_errors(fields: dict[str, str], checks: dict[str, Callable[[str], object]]) -> dict[str, str]:
    """One message per bad field, saying what is expected."""
    errors = {}
    for name, check in checks.items():
        try:
            check(fields[name])
        except SubscriberError as error:
            errors[name] = str(error)
    return errors


class SubscriberGone(Exception):
    """A valid link for a subscriber who has since been erased."""


def subscriber_or_gone(session: Session, subscriber_id: int) -> Subscriber:
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise SubscriberGone
    return subscriber


def page_name(request: Request) -> str:
    """The path for a log line, without the token that follows the page's name (tokens are credentials)."""
    first, _, rest = request.url.path.lstrip("/").partition("/")
    return f"/{first}" + ("/…" if rest else "")


def _unavailable(request: Request) -> Response:
    headers = {**NO_STORE, "Retry-After": str(RETRY_AFTER_SECONDS)}
    return page(request, "public_message.html", {"kind": "unavailable"}, status=503, headers=headers)


def public_page(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Answer a bad link or refused input with a page that says so, and an outage with a polite 503."""

    @functools.wraps(endpoint)
    async def answered(request: Request) -> Response:
        try:
            return await endpoint(request)
        except TokenError as error:
            values = {"kind": "bad-link", "detail": str(error)}
            return page(request, "public_message.html", values, status=403, headers=NO_STORE)
        except SubscriberGone:
            return page(request, "public_message.html", {"kind": "gone"}, status=404, headers=NO_STORE)
        except SubscriberError as error:
            values = {"kind": "refused", "detail": str(error)}
            return page(request, "public_message.html", values, status=400, headers=NO_STORE)
        except NewsletterError as error:
            log.error("public page %s failed: %s", page_name(request), error)
            return _unavailable(request)
        except DatabaseTimeout:
            log.error("public page %s: no answer from the database in %g s", page_name(request), DATABASE_WAIT_SECONDS)
            return _unavailable(request)
        except (DBAPIError, PoolTimeout) as error:
            log.error("public page %s: the database does not answer (%s)", page_name(request), fault_class(error))
            return _unavailable(request)

    return answered


def verify_link(request: Request, scope: tokens.Scope) -> int:
    context = web_context(request)
    claims = tokens.verify(context.project.settings.secret_key, request.path_params["token"], scope, context.clock())
    return claims.subscriber_id


def subscriber_state(session: Session, project: Project, subscriber: Subscriber, now: datetime) -> dict[str, Any]:
    """What the confirm and preferences pages say about a subscriber: status, schedule, next lesson, links."""
    key = project.settings.secret_key
    due = next_lesson_due(session, subscriber)
    series = project.series
    identity = series.identity(due.lesson) if due is not None else None
    lesson = series.lesson(identity) if identity is not None else None
    if due is not None and due.status == "held":
        due = None  # its lesson is not ready to go out: no date to promise
    return {
        "status": subscriber.status,
        "name": subscriber.name,
        "schedule": describe_cadence(subscriber),
        "zone": subscriber.timezone,
        "weekday": WEEKDAY_NAMES[subscriber.weekday],
        "time": f"{subscriber.send_time:%H:%M}",
        "position": subscriber.position,
        "weeks": project.series.weeks,
        "next_due": due.due_at if due is not None else None,
        "next_week": lesson.week if lesson is not None and due is not None else None,
        "next_title": lesson.title if lesson is not None and due is not None else "",
        "pause_until": subscriber.pause_until,
        "preferences_path": PREFERENCES_PATH + tokens.issue(key, "preferences", subscriber.id, now),
        "unsubscribe_path": UNSUBSCRIBE_PATH + tokens.issue(key, "unsubscribe", subscriber.id, now),
    }

"""The pages behind every link in our emails: subscribe, confirm, one-click unsubscribe (preferences.py: the rest).

They never need the studio's admin token. The signed token in a link is the subscriber's whole credential,
scoped to one purpose (`newsletter.tokens`): a confirm link cannot unsubscribe and vice versa.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import available_timezones

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter import tokens
from newsletter.errors import NewsletterError, SubscriberError, TokenError
from newsletter.models import Subscriber
from newsletter.planning import describe_cadence
from newsletter.project import PREFERENCES_PATH, UNSUBSCRIBE_PATH, Project
from newsletter.schedule import WEEKDAY_NAMES, parse_send_time, parse_timezone, parse_weekday
from newsletter.subscribers import (
    SubscriberInput,
    clean_name,
    confirm,
    next_lesson_due,
    normalise_email,
    request_subscription,
    unsubscribe,
)
from newsletter.web.pages import client_address, form_text, page, web_context
from newsletter.web.security import CSRF_FIELD, CsrfCheck, set_csrf_cookie

log = logging.getLogger(__name__)
T = TypeVar("T")
NO_STORE = {"Cache-Control": "no-store"}
ONE_CLICK = "One-Click"


@functools.cache
def zone_names() -> tuple[str, ...]:
    return tuple(sorted(available_timezones() - {"localtime", "posixrules", "Factory"}))


def in_session(project: Project, work: Callable[[Session], T]) -> Awaitable[T]:
    """Run database work in one transaction on a worker thread, off the event loop."""

    def run() -> T:
        with project.db.session() as session:
            return work(session)

    return run_in_threadpool(run)


def form_page(request: Request, template: str, values: dict[str, Any], form: str, status: int = 200) -> Response:
    """A page holding a state-changing form: with its CSRF field, and the cookie that field is bound to."""
    context = web_context(request)
    secret, fresh = CsrfCheck.browser_secret(request)
    values = {**values, "csrf": context.csrf.field_value(secret, form)}
    response = page(request, template, values, status=status, headers=NO_STORE)
    if fresh:
        set_csrf_cookie(response, request, secret)
    return response


def _token_refused(request: Request, error: TokenError) -> Response:
    return page(
        request, "public_message.html", {"kind": "bad-link", "detail": str(error)}, status=403, headers=NO_STORE
    )


class SubscriberGone(Exception):
    """A valid link for a subscriber who has since been erased."""


def subscriber_or_gone(session: Session, subscriber_id: int) -> Subscriber:
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise SubscriberGone
    return subscriber


def public_page(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Answer a bad link or refused input with a page that says so, and an outage with a polite 503."""

    @functools.wraps(endpoint)
    async def answered(request: Request) -> Response:
        try:
            return await endpoint(request)
        except TokenError as error:
            return _token_refused(request, error)
        except SubscriberGone:
            return page(request, "public_message.html", {"kind": "gone"}, status=404, headers=NO_STORE)
        except SubscriberError as error:
            values = {"kind": "refused", "detail": str(error)}
            return page(request, "public_message.html", values, status=400, headers=NO_STORE)
        except NewsletterError as error:
            log.error("public page %s failed: %s", request.url.path, error)
            return page(request, "public_message.html", {"kind": "unavailable"}, status=503, headers=NO_STORE)

    return answered


def verify_link(request: Request, scope: tokens.Scope) -> int:
    context = web_context(request)
    claims = tokens.verify(context.project.settings.secret_key, request.path_params["token"], scope, context.clock())
    return claims.subscriber_id


# --- subscribe ---------------------------------------------------------------------------------------------------


def _subscribe_defaults(project: Project) -> dict[str, str]:
    schedule = project.settings.schedule
    weekday = WEEKDAY_NAMES[parse_weekday(schedule.weekday)]
    return {
        "email": "",
        "name": "",
        "weekday": weekday,
        "time": f"{schedule.time_:%H:%M}",
        "timezone": schedule.timezone,
    }


def _subscribe_form(request: Request, fields: dict[str, str], errors: dict[str, str], status: int = 200) -> Response:
    values = {"fields": fields, "errors": errors, "weekdays": WEEKDAY_NAMES, "zones": zone_names()}
    return form_page(request, "public_subscribe.html", values, "subscribe", status)


SCHEDULE_CHECKS: dict[str, Callable[[str], object]] = {
    "weekday": parse_weekday,
    "time": parse_send_time,
    "timezone": parse_timezone,
}
SUBSCRIPTION_CHECKS: dict[str, Callable[[str], object]] = {
    "email": normalise_email,
    "name": clean_name,
    **SCHEDULE_CHECKS,
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


async def subscribe_form(request: Request) -> Response:
    return _subscribe_form(request, _subscribe_defaults(web_context(request).project), {})


@public_page
async def subscribe_submit(request: Request) -> Response:
    context = web_context(request)
    form = await request.form()
    fields = {name: form_text(form, name).strip() for name in ("email", "name", "weekday", "time", "timezone")}
    client = client_address(request)
    if not context.subscribe_limiter.allow(client):
        retry = context.subscribe_limiter.retry_after(client)
        response = _subscribe_form(
            request, fields, {"form": "Too many sign-ups from your address; try again later."}, 429
        )
        response.headers["Retry-After"] = str(retry)
        return response
    problem = context.csrf.problem(request, form_text(form, CSRF_FIELD), "subscribe")
    if problem:
        return _subscribe_form(request, fields, {"form": f"Not sent: {problem}."}, 403)
    errors = field_errors(fields, SUBSCRIPTION_CHECKS)
    if errors:
        return _subscribe_form(request, fields, errors, 400)
    data = SubscriberInput(fields["email"], fields["name"], fields["timezone"], fields["weekday"], fields["time"])
    project, now = context.project, context.clock()
    evidence = {"ip": client, "user_agent": request.headers.get("user-agent", "")}  # consent records
    await in_session(project, lambda session: request_subscription(session, project, data, now=now, **evidence))
    # The same page whatever the address's state, so the form never tells who is subscribed.
    return page(
        request,
        "public_message.html",
        {"kind": "check-inbox", "email": normalise_email(fields["email"])},
        headers=NO_STORE,
    )


# --- confirm -----------------------------------------------------------------------------------------------------


def subscriber_state(session: Session, project: Project, subscriber: Subscriber, now: datetime) -> dict[str, Any]:
    """What the confirm and preferences pages say about a subscriber: status, schedule, next lesson, links."""
    key = project.settings.secret_key
    due = next_lesson_due(session, subscriber)
    lesson = project.series.week(due.week) if due is not None else None
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
        "next_week": due.week if due is not None else None,
        "next_title": lesson.title if lesson is not None else "",
        "pause_until": subscriber.pause_until,
        "preferences_path": PREFERENCES_PATH + tokens.issue(key, "preferences", subscriber.id, now),
        "unsubscribe_path": UNSUBSCRIBE_PATH + tokens.issue(key, "unsubscribe", subscriber.id, now),
    }


@public_page
async def confirm_page(request: Request) -> Response:
    subscriber_id = verify_link(request, "confirm")
    context = web_context(request)
    project, now = context.project, context.clock()
    client, agent = client_address(request), request.headers.get("user-agent", "")

    def work(session: Session) -> dict[str, Any]:
        subscriber_or_gone(session, subscriber_id)
        confirmed = confirm(session, project, subscriber_id, now=now, ip=client, user_agent=agent)
        return subscriber_state(session, project, confirmed, now)

    return page(request, "public_confirmed.html", {"state": await in_session(project, work)}, headers=NO_STORE)


# --- unsubscribe (RFC 8058) --------------------------------------------------------------------------------------


@public_page
async def unsubscribe_page(request: Request) -> Response:
    """Show one button; a GET never changes anything, because link scanners follow links."""
    subscriber_id = verify_link(request, "unsubscribe")
    project = web_context(request).project
    status = await in_session(project, lambda session: subscriber_or_gone(session, subscriber_id).status)
    return page(request, "public_unsubscribe.html", {"status": status, "done": False}, headers=NO_STORE)


@public_page
async def unsubscribe_submit(request: Request) -> Response:
    """One-click unsubscribe: the token is the proof; no cookie, no CSRF field, no redirect."""
    subscriber_id = verify_link(request, "unsubscribe")
    form = await request.form()
    if form_text(form, "List-Unsubscribe") != ONE_CLICK:
        return page(
            request,
            "public_unsubscribe.html",
            {"status": "", "done": False, "malformed": True},
            status=400,
            headers=NO_STORE,
        )
    context = web_context(request)
    project, now = context.project, context.clock()
    source = "web" if form_text(form, "via") == "page" else "one-click"

    def work(session: Session) -> None:
        subscriber = session.get(Subscriber, subscriber_id)
        # Erased already: nobody is left to mail, which is what was asked, so that is a success too.
        if subscriber is not None:
            unsubscribe(session, project, subscriber, now=now, source=source)

    await in_session(project, work)
    return page(request, "public_unsubscribe.html", {"status": "unsubscribed", "done": True}, headers=NO_STORE)


routes = [
    Route("/subscribe", subscribe_form, methods=["GET"], name="subscribe"),
    Route("/subscribe", subscribe_submit, methods=["POST"]),
    Route("/confirm/{token}", confirm_page, methods=["GET"], name="confirm"),
    Route("/u/{token}", unsubscribe_page, methods=["GET"], name="unsubscribe"),
    Route("/u/{token}", unsubscribe_submit, methods=["POST"]),
]

"""The pages behind every link in our emails: subscribe, confirm, one-click unsubscribe, preferences.

They never need the studio's admin token. The signed token in a link is the subscriber's whole credential,
scoped to one purpose (`newsletter.tokens`): a confirm link cannot unsubscribe and vice versa.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import available_timezones

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter import tokens
from newsletter.errors import NewsletterError, SubscriberError, TokenError
from newsletter.models import Subscriber
from newsletter.planning import describe_cadence
from newsletter.project import PREFERENCES_PATH, UNSUBSCRIBE_PATH, Project
from newsletter.schedule import WEEKDAY_NAMES, Cadence, next_slot_after, parse_send_time, parse_timezone, parse_weekday
from newsletter.subscribers import (
    SubscriberInput,
    change_schedule,
    clean_name,
    confirm,
    next_lesson_due,
    normalise_email,
    pause,
    request_subscription,
    resume,
    unsubscribe,
)
from newsletter.web.pages import client_address, form_text, page, web_context
from newsletter.web.security import CSRF_FIELD, CsrfCheck, set_csrf_cookie

log = logging.getLogger(__name__)
T = TypeVar("T")
NO_STORE = {"Cache-Control": "no-store"}
PAUSE_WEEKS = (1, 2, 3, 4, 6, 8, 12)
ONE_CLICK = "One-Click"


@functools.cache
def zone_names() -> tuple[str, ...]:
    return tuple(sorted(available_timezones() - {"localtime", "posixrules", "Factory"}))


def _in_session(project: Project, work: Callable[[Session], T]) -> Awaitable[T]:
    """Run database work in one transaction on a worker thread, off the event loop."""

    def run() -> T:
        with project.db.session() as session:
            return work(session)

    return run_in_threadpool(run)


def _form_page(request: Request, template: str, values: dict[str, Any], form: str, status: int = 200) -> Response:
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


def _subscriber(session: Session, subscriber_id: int) -> Subscriber:
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


def _verify(request: Request, scope: tokens.Scope) -> int:
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
    return _form_page(request, "public_subscribe.html", values, "subscribe", status)


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
    await _in_session(project, lambda session: request_subscription(session, project, data, now=now, source="web"))
    # The same page whatever the address's state, so the form never tells who is subscribed.
    return page(
        request,
        "public_message.html",
        {"kind": "check-inbox", "email": normalise_email(fields["email"])},
        headers=NO_STORE,
    )


# --- confirm -----------------------------------------------------------------------------------------------------


def _state(session: Session, project: Project, subscriber: Subscriber, now: datetime) -> dict[str, Any]:
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
    subscriber_id = _verify(request, "confirm")
    context = web_context(request)
    project, now = context.project, context.clock()

    def work(session: Session) -> dict[str, Any]:
        _subscriber(session, subscriber_id)
        return _state(session, project, confirm(session, project, subscriber_id, now=now), now)

    return page(request, "public_confirmed.html", {"state": await _in_session(project, work)}, headers=NO_STORE)


# --- unsubscribe (RFC 8058) --------------------------------------------------------------------------------------


@public_page
async def unsubscribe_page(request: Request) -> Response:
    """Show one button; a GET never changes anything, because link scanners follow links."""
    subscriber_id = _verify(request, "unsubscribe")
    project = web_context(request).project
    status = await _in_session(project, lambda session: _subscriber(session, subscriber_id).status)
    return page(request, "public_unsubscribe.html", {"status": status, "done": False}, headers=NO_STORE)


@public_page
async def unsubscribe_submit(request: Request) -> Response:
    """One-click unsubscribe: the token is the proof; no cookie, no CSRF field, no redirect."""
    subscriber_id = _verify(request, "unsubscribe")
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

    await _in_session(project, work)
    return page(request, "public_unsubscribe.html", {"status": "unsubscribed", "done": True}, headers=NO_STORE)


# --- preferences -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """What a preferences action did: paused, resumed or changed; a timed pause says when lessons come back."""

    action: str
    until: datetime | None = None
    back_at: datetime | None = None


def _preferences(
    request: Request,
    state: dict[str, Any],
    notice: Notice | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    values = {
        "state": state,
        "notice": notice,
        "errors": errors or {},
        "weekdays": WEEKDAY_NAMES,
        "zones": zone_names(),
        "pause_weeks": PAUSE_WEEKS,
    }
    return _form_page(request, "public_preferences.html", values, "preferences", status)


@public_page
async def preferences_page(request: Request) -> Response:
    subscriber_id = _verify(request, "preferences")
    context = web_context(request)
    project, now = context.project, context.clock()

    def work(session: Session) -> dict[str, Any]:
        return _state(session, project, _subscriber(session, subscriber_id), now)

    return _preferences(request, await _in_session(project, work))


def _pause_until(form: FormData, now: datetime) -> datetime | None:
    choice = form_text(form, "weeks")
    if choice in ("", "until-resumed"):
        return None
    if not choice.isdigit() or int(choice) not in PAUSE_WEEKS:
        raise SubscriberError(f"pause length {choice!r}: choose one of {', '.join(map(str, PAUSE_WEEKS))} weeks")
    return now + timedelta(weeks=int(choice))


@public_page
async def preferences_submit(request: Request) -> Response:
    subscriber_id = _verify(request, "preferences")
    context = web_context(request)
    project, now = context.project, context.clock()
    form = await request.form()
    action = form_text(form, "action")
    problem = context.csrf.problem(request, form_text(form, CSRF_FIELD), "preferences")
    fields = {name: form_text(form, name).strip() for name in ("weekday", "time", "timezone")}
    errors = {"form": f"Nothing changed: {problem}."} if problem else {}
    if not problem and action == "schedule":
        errors = field_errors(fields, SCHEDULE_CHECKS)
    elif not problem and action not in ("pause", "resume"):
        errors = {"form": f"unknown action {action!r}: expected pause, resume or schedule"}

    def work(session: Session) -> tuple[dict[str, Any], Notice | None, dict[str, str]]:
        subscriber = _subscriber(session, subscriber_id)
        notice, problems = None, dict(errors)
        if not problems:
            try:
                notice = _apply(session, project, subscriber, action, form, fields, now)
            except SubscriberError as error:
                problems = {"form": str(error)}
        return _state(session, project, subscriber, now), notice, problems

    state, notice, problems = await _in_session(project, work)
    status = 403 if problem else 400 if problems else 200
    return _preferences(request, state, notice, problems, status)


def _apply(
    session: Session,
    project: Project,
    subscriber: Subscriber,
    action: str,
    form: FormData,
    fields: dict[str, str],
    now: datetime,
) -> Notice:
    """Carry out one preferences action and say what it did."""
    if action == "pause":
        until = _pause_until(form, now)
        with session.begin_nested():
            pause(session, project, subscriber, now=now, until=until, source="web")
        if until is None:
            return Notice("paused")
        # The first slot after the pause ends; min_gap never matters after a pause of a week or more.
        back_at = next_slot_after(Cadence(subscriber.timezone, subscriber.weekday, subscriber.send_time), until)
        return Notice("paused", until, back_at)
    if action == "resume":
        with session.begin_nested():
            resume(session, project, subscriber, now=now, source="web")
        return Notice("resumed")
    with session.begin_nested():
        change_schedule(
            session,
            project,
            subscriber,
            now=now,
            weekday=fields["weekday"],
            send_time=fields["time"],
            timezone=fields["timezone"],
            source="web",
        )
    return Notice("changed")


routes = [
    Route("/subscribe", subscribe_form, methods=["GET"], name="subscribe"),
    Route("/subscribe", subscribe_submit, methods=["POST"]),
    Route("/confirm/{token}", confirm_page, methods=["GET"], name="confirm"),
    Route("/u/{token}", unsubscribe_page, methods=["GET"], name="unsubscribe"),
    Route("/u/{token}", unsubscribe_submit, methods=["POST"]),
    Route("/preferences/{token}", preferences_page, methods=["GET"], name="preferences"),
    Route("/preferences/{token}", preferences_submit, methods=["POST"]),
]

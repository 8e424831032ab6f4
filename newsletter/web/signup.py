"""Signing up: the subscribe form, and the double opt-in confirmation behind the link in the email.

`GET /confirm/<token>` only shows the subscription with one button; `POST` to the same URL confirms. Link
scanners (mail filters, chat previews) fetch every link in an email with GET or HEAD, and must not sign
anyone up. The POST needs no cookie and no CSRF field: as for RFC 8058 one-click unsubscribe, the signed
token in the URL is the proof, and it reached only the mailbox being confirmed. A cross-site page cannot
forge it, and a cookie would only fail the person who opens the link in another browser than the form's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter.project import Project
from newsletter.schedule import WEEKDAY_NAMES, parse_weekday
from newsletter.subscribers import SubscriberInput, clean_name, confirm, normalise_email, request_subscription
from newsletter.web.pages import client_address, client_limit_key, form_text, page, web_context
from newsletter.web.public import (
    NO_STORE,
    SCHEDULE_CHECKS,
    field_errors,
    form_page,
    in_session,
    public_page,
    subscriber_or_gone,
    subscriber_state,
    verify_link,
    zone_names,
)
from newsletter.web.security import CSRF_FIELD
from newsletter.zones import aliases


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
    # The browser may report an old spelling (Chromium says Asia/Calcutta): the script maps it to the one offered.
    values = {
        "fields": fields,
        "errors": errors,
        "weekdays": WEEKDAY_NAMES,
        "zones": zone_names(),
        "zone_aliases": aliases(),
    }
    return form_page(request, "public_subscribe.html", values, "subscribe", status)


SUBSCRIPTION_CHECKS: dict[str, Callable[[str], object]] = {
    "email": normalise_email,
    "name": clean_name,
    **SCHEDULE_CHECKS,
}


async def subscribe_form(request: Request) -> Response:
    return _subscribe_form(request, _subscribe_defaults(web_context(request).project), {})


@public_page
async def subscribe_submit(request: Request) -> Response:
    context = web_context(request)
    form = await request.form()
    fields = {name: form_text(form, name).strip() for name in ("email", "name", "weekday", "time", "timezone")}
    client, limited_as = client_address(request), client_limit_key(request)
    if not context.subscribe_limiter.allow(limited_as):
        retry = context.subscribe_limiter.retry_after(limited_as)
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
    context.on_signup()
    # The same page whatever the address's state, and whether or not an email goes out (the per-address
    # limit, a suppressed address), so the form never tells who is subscribed.
    return page(
        request,
        "public_message.html",
        {"kind": "check-inbox", "email": normalise_email(fields["email"])},
        headers=NO_STORE,
    )


@public_page
async def confirm_page(request: Request) -> Response:
    """Show the subscription and, while it waits for confirmation, one button; a GET never changes anything."""
    subscriber_id = verify_link(request, "confirm")
    context = web_context(request)
    project, now = context.project, context.clock()

    def work(session: Session) -> dict[str, Any]:
        return subscriber_state(session, project, subscriber_or_gone(session, subscriber_id), now)

    return page(request, "public_confirmed.html", {"state": await in_session(project, work)}, headers=NO_STORE)


@public_page
async def confirm_submit(request: Request) -> Response:
    """Confirm: the token is the proof; answered in place, confirming twice is harmless."""
    subscriber_id = verify_link(request, "confirm")
    context = web_context(request)
    project, now = context.project, context.clock()
    client, agent = client_address(request), request.headers.get("user-agent", "")

    def work(session: Session) -> dict[str, Any]:
        subscriber_or_gone(session, subscriber_id)
        confirmed = confirm(session, project, subscriber_id, now=now, ip=client, user_agent=agent)
        return subscriber_state(session, project, confirmed, now)

    return page(request, "public_confirmed.html", {"state": await in_session(project, work)}, headers=NO_STORE)


routes = [
    Route("/subscribe", subscribe_form, methods=["GET"], name="subscribe"),
    Route("/subscribe", subscribe_submit, methods=["POST"]),
    Route("/confirm/{token}", confirm_page, methods=["GET"], name="confirm"),
    Route("/confirm/{token}", confirm_submit, methods=["POST"]),
]

"""The preferences page: pause for some weeks or until resumed, resume, and change day, time or zone.

Every change shows the new date of the next lesson. Forms carry the double-submit CSRF field of `security.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter.errors import SubscriberError
from newsletter.ledger import load_readers
from newsletter.models import Subscriber
from newsletter.planning import next_send
from newsletter.project import Project
from newsletter.schedule import WEEKDAY_NAMES
from newsletter.subscribers import change_schedule, pause, resume
from newsletter.web.pages import form_text, web_context
from newsletter.web.public import (
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

PAUSE_WEEKS = (1, 2, 3, 4, 6, 8, 12)


@dataclass(frozen=True)
class Notice:
    """What a preferences action did: paused, resumed or changed; a timed pause says when lessons come back."""

    action: str
    until: datetime | None = None
    back_at: datetime | None = None


def _preferences_page(
    request: Request,
    state: dict[str, Any],
    notice: Notice | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    """The page with the subscriber's state, what the last action did, and the forms for the next one."""
    values = {
        "state": state,
        "notice": notice,
        "errors": errors or {},
        "weekdays": WEEKDAY_NAMES,
        "zones": zone_names(),
        "pause_weeks": PAUSE_WEEKS,
    }
    return form_page(request, "public_preferences.html", values, "preferences", status)


@public_page
async def preferences_page(request: Request) -> Response:
    subscriber_id = verify_link(request, "preferences")
    context = web_context(request)
    project, now = context.project, context.clock()

    def work(session: Session) -> dict[str, Any]:
        return subscriber_state(session, project, subscriber_or_gone(session, subscriber_id), now)

    return _preferences_page(request, await in_session(project, work))


def _pause_until(form: FormData, now: datetime) -> datetime | None:
    choice = form_text(form, "weeks")
    if choice in ("", "until-resumed"):
        return None
    if not choice.isdigit() or int(choice) not in PAUSE_WEEKS:
        raise SubscriberError(f"pause length {choice!r}: choose one of {', '.join(map(str, PAUSE_WEEKS))} weeks")
    return now + timedelta(weeks=int(choice))


@public_page
async def preferences_submit(request: Request) -> Response:
    subscriber_id = verify_link(request, "preferences")
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
        subscriber = subscriber_or_gone(session, subscriber_id)
        notice, problems = None, dict(errors)
        if not problems:
            try:
                notice = _apply(session, project, subscriber, action, form, fields, now)
            except SubscriberError as error:
                problems = {"form": str(error)}
        return subscriber_state(session, project, subscriber, now), notice, problems

    state, notice, problems = await in_session(project, work)
    status = 403 if problem else 400 if problems else 200
    return _preferences_page(request, state, notice, problems, status)


def _back_after_pause(session: Session, project: Project, subscriber: Subscriber, until: datetime) -> datetime | None:
    """When the next lesson comes once the pause ends, by the one rule (`planning.next_send`)."""
    reader = load_readers(session.connection(), [subscriber.id])[subscriber.id]
    planned = next_send(
        project.settings,
        project.series,
        progress=reader.progress,
        cadence=reader.cadence,
        now=until,
        after=until,
        last_sent_at=reader.last_sent_at,
    )
    return planned.due_at if planned else None


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
        return Notice("paused", until, _back_after_pause(session, project, subscriber, until))
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
    Route("/preferences/{token}", preferences_page, methods=["GET"], name="preferences"),
    Route("/preferences/{token}", preferences_submit, methods=["POST"]),
]

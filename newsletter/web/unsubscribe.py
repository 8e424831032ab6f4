"""Leaving and coming back: RFC 8058 one-click unsubscribe, and the Resubscribe button on the same page.

`POST /u/<token>` with `List-Unsubscribe=One-Click` unsubscribes: providers post it without cookies, and the
signed token in the URL is the proof. `GET` only shows a button, because link scanners follow links.

The way back is `POST /u/<token>/resubscribe`, the button the unsubscribe page shows to someone who left. The
subscribe form never mails an unsubscribed or bounced address again (anyone can type an address into it), so
the person proves the mailbox with the unsubscribe link of an email they received, and needs no confirmation
email: they continue with the lesson after the last one they had.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter.models import Subscriber
from newsletter.project import UNSUBSCRIBE_PATH
from newsletter.subscribers import resubscribe, unsubscribe
from newsletter.web.pages import form_text, page, web_context
from newsletter.web.public import NO_STORE, in_session, public_page, subscriber_or_gone, subscriber_state, verify_link

ONE_CLICK = "One-Click"


def _unsubscribe_page(request: Request, values: dict[str, Any], status: int = 200) -> Response:
    resubscribe_path = f"{UNSUBSCRIBE_PATH}{request.path_params['token']}/resubscribe"
    values = {"done": False, "malformed": False, "resubscribe_path": resubscribe_path, **values}
    return page(request, "public_unsubscribe.html", values, status=status, headers=NO_STORE)


@public_page
async def unsubscribe_page(request: Request) -> Response:
    """Show one button; a GET never changes anything, because link scanners follow links."""
    subscriber_id = verify_link(request, "unsubscribe")
    project = web_context(request).project
    status = await in_session(project, lambda session: subscriber_or_gone(session, subscriber_id).status)
    return _unsubscribe_page(request, {"status": status})


@public_page
async def unsubscribe_submit(request: Request) -> Response:
    """One-click unsubscribe: the token is the proof; no cookie, no CSRF field, no redirect."""
    subscriber_id = verify_link(request, "unsubscribe")
    form = await request.form()
    if form_text(form, "List-Unsubscribe") != ONE_CLICK:
        return _unsubscribe_page(request, {"status": "", "malformed": True}, status=400)
    context = web_context(request)
    project, now = context.project, context.clock()
    source = "web" if form_text(form, "via") == "page" else "one-click"

    def work(session: Session) -> None:
        subscriber = session.get(Subscriber, subscriber_id)
        # Erased already: nobody is left to mail, which is what was asked, so that is a success too.
        if subscriber is not None:
            unsubscribe(session, project, subscriber, now=now, source=source)

    await in_session(project, work)
    return _unsubscribe_page(request, {"status": "unsubscribed", "done": True})


@public_page
async def resubscribe_submit(request: Request) -> Response:
    """Come back by the unsubscribe link's own token; someone still subscribed is left as they are."""
    subscriber_id = verify_link(request, "unsubscribe")
    context = web_context(request)
    project, now = context.project, context.clock()

    def work(session: Session) -> dict[str, Any]:
        subscriber = resubscribe(session, project, subscriber_or_gone(session, subscriber_id), now=now, source="web")
        return subscriber_state(session, project, subscriber, now)

    state = await in_session(project, work)
    return page(request, "public_confirmed.html", {"state": state, "welcome_back": True}, headers=NO_STORE)


routes = [
    Route("/u/{token}", unsubscribe_page, methods=["GET"], name="unsubscribe"),
    Route("/u/{token}", unsubscribe_submit, methods=["POST"]),
    Route("/u/{token}/resubscribe", resubscribe_submit, methods=["POST"], name="resubscribe"),
]

"""The providers' webhooks: `POST /webhooks/ses|postmark|sendgrid|mailgun` (domain code: newsletter/feedback/webhooks/).

Each endpoint reads the raw body (signatures are over the bytes as sent), hands it with the headers to
its provider's handler on a worker thread, and answers 200 with JSON counts. A refused call answers the
status the handler chose (401, 403, 404, 406 for a replay, which Mailgun takes as "do not retry") with a
one-line reason; a database outage answers 503, so the provider retries later.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from newsletter.errors import NewsletterError, WebhookError
from newsletter.feedback.webhooks import WebhookResult
from newsletter.feedback.webhooks.mailgun import handle_mailgun
from newsletter.feedback.webhooks.postmark import handle_postmark
from newsletter.feedback.webhooks.sendgrid import handle_sendgrid
from newsletter.feedback.webhooks.ses import handle_ses
from newsletter.project import Project
from newsletter.web.pages import web_context

log = logging.getLogger(__name__)
Handler = Callable[[Project, bytes, Mapping[str, str], datetime], WebhookResult]
NO_STORE = {"Cache-Control": "no-store"}


def endpoint(provider: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def receive(request: Request) -> Response:
        context = web_context(request)
        body = await request.body()
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            result = await run_in_threadpool(handler, context.project, body, headers, context.clock())
        except WebhookError as error:
            log.warning("%s webhook refused (%d): %s", provider, error.status, error)
            extra = {"WWW-Authenticate": f'Basic realm="{provider}"'} if error.status == 401 else {}
            return JSONResponse({"error": str(error)}, status_code=error.status, headers={**NO_STORE, **extra})
        except NewsletterError as error:
            log.error("%s webhook failed: %s", provider, error)
            return JSONResponse({"error": "unavailable, try again later"}, status_code=503, headers=NO_STORE)
        return JSONResponse(result.as_dict(), headers=NO_STORE)

    return receive


routes = [
    Route(f"/webhooks/{provider}", endpoint(provider, handler), methods=["POST"], name=f"webhook-{provider}")
    for provider, handler in (
        ("ses", handle_ses),
        ("postmark", handle_postmark),
        ("sendgrid", handle_sendgrid),
        ("mailgun", handle_mailgun),
    )
]

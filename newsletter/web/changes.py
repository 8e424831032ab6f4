"""The studio's "Changes" page: what the next run will do to readers with the course on disk.

The same lines as `newsletter lessons --impact` (`ledger.course.preview`), computed on request only: the
preview re-plans every waiting reader in a transaction it rolls back, so it stays off the studio index.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter.errors import NewsletterError
from newsletter.ledger.course import preview
from newsletter.web.pages import page, studio_only, web_context


def changes_page(request: Request) -> Response:
    context = web_context(request)
    if context.holder.error is not None:
        return page(request, "studio_changes.html", {"lines": [], "error": str(context.holder.error)})
    try:
        lines = preview(context.project, context.clock())
    except NewsletterError as error:
        return page(request, "studio_changes.html", {"lines": [], "error": str(error)})
    return page(request, "studio_changes.html", {"lines": lines, "error": ""})


routes = [Route("/changes", studio_only(changes_page), name="changes")]

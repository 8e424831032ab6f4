"""`/media/<path>`: the lesson images that emails link to, served from the lessons folder.

A lesson's local image `images/fern.jpg` is linked as `<base_url>/media/images/fern.jpg?v=<digest>`
(`newsletter.markup`), so the app at `base_url` serves it. Only image files inside the lessons folder are
served, never a lesson or anything outside; the digest in the link changes with the file, so a year-long cache
is safe. A reverse proxy may serve the folder at the same path instead.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from newsletter.markup import MEDIA_PATH
from newsletter.markup.dialect import local_image
from newsletter.web.pages import web_context

CACHE = {"Cache-Control": "public, max-age=31536000, immutable"}


async def media(request: Request) -> Response:
    folder = web_context(request).project.settings.newsletter.lessons
    try:
        found = local_image(folder, request.path_params["name"])
    except ValueError:
        raise HTTPException(404) from None
    if found is None or not found.path.resolve().is_relative_to(folder.resolve()):
        raise HTTPException(404)
    return FileResponse(found.path, headers=CACHE)


routes = [Route(MEDIA_PATH + "{name:path}", media, methods=["GET", "HEAD"], name="media")]

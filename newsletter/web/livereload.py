"""Live reload for the studio: watch the project's files on the event loop, and tell open pages.

The app serves one `ProjectHolder` (`newsletter.watching`: rebuilt when a lesson, a template or config.toml
changes, the last good project kept when the new one fails). Every change bumps a version number, and each
open studio page listens on a server-sent-events stream and reloads itself when the version differs from
the one it was drawn with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from watchfiles import awatch

from newsletter.watching import DEBOUNCE_MS, ProjectHolder, WatchedFiles

__all__ = ["ProjectHolder", "events_endpoint", "watch_project"]

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 15.0


async def watch_project(holder: ProjectHolder, stop: asyncio.Event) -> None:
    """Reload the holder whenever a watched file changes, until `stop` is set."""
    while not stop.is_set():
        watched = WatchedFiles.of(holder.project.settings)
        if not watched.folders:
            await asyncio.sleep(1)
            continue
        async for _changes in awatch(
            *watched.folders,
            watch_filter=watched.matters,
            recursive=False,
            stop_event=stop,
            debounce=DEBOUNCE_MS,
            step=50,
        ):
            await run_in_threadpool(holder.reload)
            holder.announce()
            if holder.error is not None:
                log.warning("reloading the project failed: %s", holder.error)
            if WatchedFiles.of(holder.project.settings) != watched:
                break  # the config moved the lessons or templates: watch the new folders


def events_endpoint(holder_of: Callable[[Request], ProjectHolder]) -> Callable[[Request], Awaitable[Response]]:
    """The server-sent-events route: one `version` event now and one after every change."""

    async def events(request: Request) -> Response:
        holder = holder_of(request)

        async def stream() -> AsyncIterator[str]:
            seen = holder.version
            yield f"retry: 1000\nevent: version\ndata: {seen}\n\n"
            while True:
                current = await holder.wait_for_change(seen, HEARTBEAT_SECONDS)
                if current == seen:
                    yield ": still here\n\n"
                    continue
                seen = current
                yield f"event: version\ndata: {seen}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return events

"""Live reload for the studio: watch the project's files and the outbox on the event loop, and tell open pages.

The app serves one `ProjectHolder` (`newsletter.watching`: rebuilt when a lesson, a template or config.toml
changes, the last good project kept when the new one fails). Every change bumps a version number, and each
open studio page listens on a server-sent-events stream and reloads itself when the version differs from
the one it was drawn with. The outbox has a version of its own, bumped when a message lands in the Maildir
(`new/` or `cur/`): the same stream sends it as an `outbox` event, and only the outbox page reloads for it,
so a send run does not reload the lesson an editor is looking at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from watchfiles import awatch

from newsletter.watching import DEBOUNCE_MS, ProjectHolder, WatchedFiles

__all__ = ["OutboxChanges", "ProjectHolder", "events_endpoint", "watch_outbox", "watch_project"]

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 15.0
OUTBOX_POLL_SECONDS = 0.5  # while the outbox folder does not exist yet (nothing sent so far)
MAILDIR_FOLDERS = ("new", "cur")


class OutboxChanges:
    """A version number bumped whenever a message lands in the outbox; waiters wake on the event loop."""

    def __init__(self) -> None:
        self.version = 0
        self._changed = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self, seen: int, timeout: float) -> int:
        """Return the version once it differs from `seen`, or after `timeout` seconds whatever it is."""
        if self.version != seen:
            return self.version
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        return self.version


async def watch_outbox(holder: ProjectHolder, changes: OutboxChanges, stop: asyncio.Event) -> None:
    """Bump `changes` whenever a message lands in the configured outbox folder, until `stop` is set."""
    missing = False
    while not stop.is_set():
        folder = holder.project.settings.delivery.outbox
        if not folder.is_dir():
            missing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), OUTBOX_POLL_SECONDS)
            continue
        if missing:
            missing = False
            changes.bump()  # the first send made the folder: its messages landed before the watch began
        async for _changes in awatch(
            folder,
            watch_filter=lambda _change, path: Path(path).parent.name in MAILDIR_FOLDERS,
            stop_event=stop,
            debounce=DEBOUNCE_MS,
            step=50,
        ):
            changes.bump()
            if holder.project.settings.delivery.outbox != folder:
                break  # the config moved the outbox: watch the new folder


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


def events_endpoint(
    holder_of: Callable[[Request], ProjectHolder], outbox_of: Callable[[Request], OutboxChanges]
) -> Callable[[Request], Awaitable[Response]]:
    """The server-sent-events route: `version` and `outbox` events now, and one after every change of each."""

    async def events(request: Request) -> Response:
        holder, outbox = holder_of(request), outbox_of(request)

        async def stream() -> AsyncIterator[str]:
            seen, mail = holder.version, outbox.version
            yield f"retry: 1000\nevent: version\ndata: {seen}\n\nevent: outbox\ndata: {mail}\n\n"
            while True:
                current, arrived = await _first_change(holder, seen, outbox, mail)
                if (current, arrived) == (seen, mail):
                    yield ": still here\n\n"
                    continue
                if current != seen:
                    seen = current
                    yield f"event: version\ndata: {seen}\n\n"
                if arrived != mail:
                    mail = arrived
                    yield f"event: outbox\ndata: {mail}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return events


async def _first_change(holder: ProjectHolder, seen: int, outbox: OutboxChanges, mail: int) -> tuple[int, int]:
    """Wait until the project or the outbox changes (or the heartbeat is due); return both versions."""
    waits = [
        asyncio.ensure_future(holder.wait_for_change(seen, HEARTBEAT_SECONDS)),
        asyncio.ensure_future(outbox.wait_for_change(mail, HEARTBEAT_SECONDS)),
    ]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return holder.version, outbox.version

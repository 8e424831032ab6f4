"""Live reload: rebuild the project when a lesson, a template or config.toml changes, and tell open pages.

The app serves one `ProjectHolder`. When a watched file changes, a new `Project` is built from the config;
if it loads, it replaces the old one, otherwise the error is kept for the studio to show and the last good
project keeps serving subscribers. Every change bumps a version number, and each open studio page listens
on a server-sent-events stream and reloads itself when the version differs from the one it was drawn with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from watchfiles import Change, awatch

from newsletter.config import Settings, database_url
from newsletter.errors import NewsletterError
from newsletter.project import Project

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 15.0
DEBOUNCE_MS = 150


class ProjectHolder:
    """The project the app serves, replaced by a fresh one when its files change."""

    def __init__(self, project: Project, reload_settings: Callable[[], Settings] | None = None) -> None:
        self.project = project
        self.error: NewsletterError | None = None
        self.version = 0
        self._reload_settings = reload_settings or (lambda: project.settings)
        self._changed = asyncio.Event()
        self._check(project)

    def _check(self, project: Project) -> bool:
        """Load what editors break (lessons, templates) now, so errors surface here and not mid-request."""
        try:
            project.renderer  # noqa: B018  (loads the series and the template environment)
        except NewsletterError as error:
            self.error = error
            return False
        self.error = None
        return True

    def reload(self) -> None:
        """Build a new project from the config; keep the old one serving if the new one does not load."""
        try:
            self._replace_project()
        finally:
            # Bumped last, so whoever sees the new version also sees the new project (or its error).
            self.version += 1

    def _replace_project(self) -> None:
        try:
            settings = self._reload_settings()
        except NewsletterError as error:
            self.error = error
            return
        fresh = Project(settings)
        old = self.project
        if "db" in old.__dict__ and database_url(old.settings) == database_url(settings):
            # Share the open connection pool: a reload must not drop connections requests are using.
            fresh.__dict__["db"] = old.db
        if self._check(fresh):
            self.project = fresh
            if "db" in old.__dict__ and fresh.__dict__.get("db") is not old.db:
                old.db.dispose()

    def announce(self) -> None:
        """Wake every stream waiting for a change; call on the event loop after `reload`."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self, seen: int, timeout: float) -> int:
        """Return the version once it differs from `seen`, or after `timeout` seconds whatever it is."""
        if self.version != seen:
            return self.version
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)
        return self.version

    def close(self) -> None:
        if "db" in self.project.__dict__:
            self.project.db.dispose()


@dataclass(frozen=True)
class WatchedFiles:
    """The folders to watch (not recursively) and the config file among their neighbours."""

    folders: tuple[Path, ...]
    config: Path | None

    @classmethod
    def of(cls, settings: Settings) -> WatchedFiles:
        folders = [settings.newsletter.lessons, settings.newsletter.templates]
        if settings.config_path is not None:
            folders.append(settings.config_path.parent)
        existing = tuple(dict.fromkeys(folder for folder in folders if folder.is_dir()))
        return cls(folders=existing, config=settings.config_path)

    def matters(self, change: Change, path: str) -> bool:
        """Lessons and templates count wherever they sit; in the project root only config.toml does."""
        changed = Path(path)
        if self.config is not None and changed == self.config:
            return True
        parent = changed.parent
        if self.config is not None and parent == self.config.parent and parent not in self.folders[:2]:
            return False
        return not changed.name.startswith(".") and not changed.name.endswith(("~", ".swp", ".tmp"))


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

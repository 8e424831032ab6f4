"""A project that follows its files: rebuilt when a lesson, a template or config.toml changes on disk.

The daemon sends from a `ProjectHolder` and the studio previews from one. When a watched file changes, a
new `Project` is built and checked before it replaces the running one: its config loads, its templates
compile, and every lesson renders and is gated (drafts, checklist failures). If that fails, or a lesson
file that was fine is broken now (an editor's half-saved change), the last good project goes on serving
and sending and `problems` says why, so /healthz can. A project that starts broken (no good version to
keep) runs with its broken lessons held (`load_series(lenient=True)`), and the rest goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change, watch

from newsletter.config import Settings, database_url
from newsletter.errors import NewsletterError
from newsletter.project import Project

log = logging.getLogger(__name__)
DEBOUNCE_MS = 150


class ProjectHolder:
    """The project in use, replaced by a fresh one when its files change and the fresh one is good."""

    def __init__(
        self, project: Project, reload_settings: Callable[[], Settings] | None = None, *, lenient: bool = False
    ) -> None:
        self.project = project
        self.error: NewsletterError | None = None
        self.version = 0
        self.lenient = lenient
        self._reload_settings = reload_settings or (lambda: project.settings)
        self._lock = threading.Lock()
        self._changed = asyncio.Event()
        self._check(project)

    @property
    def problems(self) -> list[str]:
        """What is wrong with the course on disk, in words for /healthz; empty when it is all in use."""
        found = [f"lesson file broken, its deliveries held: {error}" for error in self.project.series.broken]
        if self.error is not None:
            found.append(f"the course on disk does not load ({self.error}); still using it as it was before")
        return found

    def _check(self, project: Project) -> bool:
        """Load what editors break (lessons, templates, the gates) now, so errors surface here."""
        try:
            project.renderer  # noqa: B018  (loads the series and the template environment)
            if self.lenient:
                project.gates  # noqa: B018  (renders every lesson through the checklist)
        except NewsletterError as error:
            self.error = error
            return False
        self.error = None
        return True

    def reload(self) -> None:
        """Build a new project from the config; keep the old one if the new one does not load or broke a lesson."""
        with self._lock:
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
        fresh = Project(settings, lenient=self.lenient)
        old = self.project
        if "db" in old.__dict__ and database_url(old.settings) == database_url(settings):
            # Share the open connection pool: a reload must not drop connections requests are using.
            fresh.__dict__["db"] = old.db
        if not self._check(fresh):
            return
        newly_broken = _newly_broken(old, fresh)
        if newly_broken:
            self.error = NewsletterError("; ".join(newly_broken))
            return
        self.project = fresh
        if "db" in old.__dict__ and fresh.__dict__.get("db") is not old.db:
            old.db.dispose()

    def announce(self) -> None:
        """Wake every studio stream waiting for a change; call on the event loop after `reload`."""
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


def _newly_broken(old: Project, fresh: Project) -> list[str]:
    """Lesson files that loaded in the running project and do not load now."""
    if "series" not in old.__dict__:
        return []
    was_broken = {str(error.path) for error in old.series.broken}
    return [str(error) for error in fresh.series.broken if str(error.path) not in was_broken]


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


def watch_in_thread(holder: ProjectHolder, stop: threading.Event, on_reload: Callable[[], None]) -> threading.Thread:
    """Reload `holder` whenever a watched file changes, on a thread of its own, until `stop` is set."""

    def run() -> None:
        while not stop.is_set():
            watched = WatchedFiles.of(holder.project.settings)
            if not watched.folders:
                stop.wait(1)
                continue
            for _changes in watch(
                *watched.folders,
                watch_filter=watched.matters,
                recursive=False,
                stop_event=stop,
                debounce=DEBOUNCE_MS,
                step=50,
                raise_interrupt=False,
            ):
                holder.reload()
                on_reload()
                if WatchedFiles.of(holder.project.settings) != watched:
                    break  # the config moved the lessons or templates: watch the new folders

    thread = threading.Thread(target=run, name="watch", daemon=True)
    thread.start()
    return thread

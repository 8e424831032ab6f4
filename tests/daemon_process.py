"""`newsletter run` as a real process for tests: started with a 1-second tick, logging JSON lines to a file.

The test reads the address it listens on from the "listening" record and its ticks from /healthz. The
`daemons` fixture (tests/conftest.py) starts them and kills whatever is left at the end of a test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx2

STOP_WITHIN_SECONDS = 5.0
WAIT_SECONDS = 45.0


def wait_for(condition: Callable[[], object], what: str, seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class DaemonProcess:
    """`newsletter run --port 0 --log-format json` in a subprocess, logging to a file."""

    def __init__(self, project_dir: Path, environment: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        command = [sys.executable, "-m", "newsletter", "--config", str(project_dir / "config.toml")]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*command, "run", "--host", "127.0.0.1", "--port", "0", "--log-format", "json"],
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_for(lambda: self.url or self.process.poll() is not None, "the daemon to listen")
        assert self.url, self.log_path.read_text()

    def records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    @property
    def url(self) -> str:
        return next((str(r["url"]) for r in self.records() if r.get("event") == "listening"), "")

    def get(self, path: str) -> httpx2.Response:
        return httpx2.get(self.url + path, timeout=10)

    def ticks(self) -> list[dict[str, object]]:
        """The log lines of ticks that did something (an idle tick logs nothing)."""
        return [record for record in self.records() if record.get("event") == "tick"]

    def ticked(self) -> bool:
        return self.get("/healthz").json().get("last_tick_at") is not None

    def terminate(self) -> float:
        """SIGTERM; return how long the process took to exit."""
        self.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        self.process.wait(timeout=30)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def daemon_env(database_url: str, smtp_port: int, env: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        **env,
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_DELIVERY_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(smtp_port),
        "NEWSLETTER_SMTP_CONNECTIONS": "2",
        "NEWSLETTER_SMTP_TIMEOUT": "5",
        "NEWSLETTER_DELIVERY_BATCH_SIZE": "5",
        "NEWSLETTER_DAEMON_TICK_SECONDS": "1",
        "NEWSLETTER_SCHEDULE_FIRST_LESSON": "immediately",
    }

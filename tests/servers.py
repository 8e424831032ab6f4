"""`newsletter serve` or `run` as a real process on a free 127.0.0.1 port, for tests that need real sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2

STARTUP_SECONDS = 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """One `newsletter serve` (or `run`) with its output in a file; `max_files` lowers its descriptor limit."""

    def __init__(
        self,
        project_dir: Path,
        environment: dict[str, str],
        log_path: Path,
        *,
        command: str = "serve",
        max_files: int | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path

        arguments = ["--config", str(project_dir / "config.toml"), command, "--host", "127.0.0.1"]
        argv = [sys.executable, "-m", "newsletter", *arguments, "--port", str(self.port)]
        if max_files is not None:
            argv = ["sh", "-c", f'ulimit -n {max_files} && exec "$@"', "sh", *argv]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=project_dir,
                env={**os.environ, **environment, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_SECONDS
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                httpx2.get(self.url + "/subscribe", timeout=1)
                return
            except httpx2.TransportError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"newsletter {command} did not answer within {STARTUP_SECONDS} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

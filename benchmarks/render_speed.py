"""Personalised lessons per second in one process, against the Node `mjml` compiler in one long-running process.

    python benchmarks/render_speed.py --messages 5000

For lesson 1 of the bundled course it measures:

  per subscriber     what the send path does per message: fill the lesson (Jinja2 and MJML ran once for it)
                     for one subscriber, then write the MIME bytes (`Project.envelope`);
  everything again   Jinja2 + MJML + MIME for every subscriber (the renderer's cache emptied each time);
  mjml-python        compiling the lesson's MJML alone;
  Node mjml          the same MJML compiled by the `mjml` package in one long-running Node process
                     (benchmarks/node, `npm install` there): in a loop inside Node, and once per subscriber
                     with the subscriber's name in it, sent over a pipe as a Python sender would.

Node is skipped, with a note in the result, when `node` or benchmarks/node/node_modules is missing.
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import time as Time
from pathlib import Path
from typing import Any

import mjml
from common import (
    REPO,
    RESULTS,
    machine,
    make_project,
    scratch_folder,
    write_result,
)
from seeding import FIRST_SLOT

from newsletter.models import Subscriber
from newsletter.project import Project

NODE_FOLDER = REPO / "benchmarks" / "node"
LESSON = "muscle"


def reader(n: int) -> Subscriber:
    return Subscriber(
        id=n,
        email=f"reader{n}@example.com",
        name=f"Reader {n}",
        timezone="Europe/Berlin",
        weekday=n % 7,
        send_time=Time(7, 0),
        status="active",
        position=0,
    )


def per_second(count: int, work: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for n in range(1, count + 1):
        work(n)
    return round(count / (time.perf_counter() - started), 1)


def personalised_message(project: Project, n: int) -> bytes:
    """One subscriber's lesson as the send path builds it."""
    envelope = project.envelope(reader(n), LESSON, message_id=f"<bench.{n}@example.com>", delivery_id=n, now=FIRST_SLOT)
    return envelope.data


@contextmanager
def captured_mjml() -> Iterator[list[str]]:
    """Catch the MJML source the renderer hands to mjml-python (the renderer does not expose it)."""
    sources: list[str] = []
    original = mjml.mjml2html

    def capture(source: str, **options: Any) -> str:
        sources.append(source)
        return original(source, **options)

    mjml.mjml2html = capture  # type: ignore[assignment]  # same call, keyword options passed through
    try:
        yield sources
    finally:
        mjml.mjml2html = original


def node_rates(source: str, messages: int, loop_iterations: int) -> dict[str, Any]:
    """Compile rates of the Node mjml package, or why they could not be measured."""
    node = shutil.which("node")
    if node is None or not (NODE_FOLDER / "node_modules" / "mjml").is_dir():
        return {"skipped": "node or benchmarks/node/node_modules missing (run `npm install` in benchmarks/node)"}
    server = subprocess.Popen(
        [node, str(NODE_FOLDER / "compile_server.js")],
        cwd=NODE_FOLDER,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        hello = json.loads(server.stdout.readline())

        def ask(request: dict[str, Any]) -> dict[str, Any]:
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write(json.dumps(request) + "\n")
            server.stdin.flush()
            reply: dict[str, Any] = json.loads(server.stdout.readline())
            if "error" in reply:
                raise RuntimeError(f"Node mjml: {reply['error']}")
            return reply

        loop = ask({"op": "bench", "mjml": source, "iterations": loop_iterations, "warmup": 100})

        def one_email(n: int) -> None:
            personal = source.replace("@@nl:subscriber.name@@", html.escape(f"Reader {n}"))
            ask({"op": "compile", "id": n, "mjml": personal})

        one_email(0)  # warm up the pipe and the compiler
        return {
            "mjml_version": hello.get("mjml"),
            "node_version": subprocess.run(
                [node, "--version"], check=True, capture_output=True, text=True
            ).stdout.strip(),
            "loop_per_second": round(loop["iterations"] / loop["seconds"], 1),
            "per_email_over_a_pipe_per_second": per_second(messages, one_email),
        }
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="personalised messages per measurement")
    parser.add_argument("--full-renders", type=int, default=500, help="renders for 'everything again' and compiles")
    parser.add_argument("--output", type=Path, help="where to write the JSON result")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    output: Path = args.output or RESULTS / "render_speed.json"

    with scratch_folder(args.workdir, keep=False) as folder:
        project = make_project(folder, f"sqlite:///{folder / 'unused.db'}").open()
        with captured_mjml() as sources:
            first = personalised_message(project, 1)  # Jinja2 and MJML run here, once
        source = sources[0]
        cached = per_second(args.messages, lambda n: personalised_message(project, n))

        def everything_again(n: int) -> bytes:
            project.renderer._cache.clear()
            return personalised_message(project, n)

        uncached = per_second(args.full_renders, everything_again)
        compile_only = per_second(args.full_renders, lambda _: mjml.mjml2html(source, fonts={}, disable_comments=True))
        node = node_rates(source, min(args.messages, 2000), args.full_renders)

    result: dict[str, Any] = {
        "benchmark": "render_speed",
        "command": " ".join(["python", "benchmarks/render_speed.py", *(argv or sys.argv[1:])]),
        "lesson": LESSON,
        "mjml_source_bytes": len(source.encode()),
        "message_bytes": len(first),
        "per_subscriber_per_second": cached,
        "everything_again_per_second": uncached,
        "mjml_python_compile_per_second": compile_only,
        "node_mjml": node,
        "machine": machine(),
    }
    write_result(output, result)
    print(
        f"per subscriber (fill + MIME): {cached:.0f}/s   Jinja2+MJML+MIME each time: {uncached:.0f}/s   "
        f"mjml-python compile: {compile_only:.0f}/s"
    )
    if "skipped" in node:
        print(f"Node mjml: skipped ({node['skipped']})")
    else:
        print(
            f"Node mjml {node['mjml_version']}: {node['loop_per_second']:.0f}/s in a loop, "
            f"{node['per_email_over_a_pipe_per_second']:.0f}/s one email at a time over a pipe"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

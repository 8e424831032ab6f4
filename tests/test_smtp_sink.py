"""The test SMTP sink itself: as a subprocess, its fault plans, and the wire rules it enforces."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from smtp_sink import FaultPlan, SmtpSink, drop_after_data, permanent, stall, temporary

from newsletter.errors import PermanentSendError, RelayError, TransientSendError
from newsletter.transports import Envelope, SmtpTransport

SINK_SCRIPT = Path(__file__).resolve().parent / "smtp_sink.py"


def envelope(number: int, to: str = "reader@example.test", body: bytes = b"Hello.\r\n") -> Envelope:
    data = f"Message-ID: <m{number}@example.test>\r\nSubject: {number}\r\n\r\n".encode() + body
    return Envelope("bounces@example.test", (to,), data, f"<m{number}@example.test>")


@contextmanager
def sink_process(*options: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """Run ``tests/smtp_sink.py`` and yield its port once it says READY."""
    process = subprocess.Popen(
        [sys.executable, str(SINK_SCRIPT), "--port", "0", *options], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline().split()
        assert ready[:1] == ["READY"], ready
        yield int(ready[1]), process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    return output.strip()


@pytest.mark.slow
def test_subprocess_files_every_received_message_in_a_maildir(tmp_path: Path) -> None:
    plan = FaultPlan({"gone@*": permanent(550), "flaky@*": drop_after_data(times=1)})
    with sink_process("--maildir", str(tmp_path / "inbox"), "--faults", plan.to_json()) as (port, process):
        with closing(SmtpTransport("127.0.0.1", port)) as transport:
            sent = [envelope(1), envelope(2)]
            for message in sent:
                transport.send(message)
            with pytest.raises(PermanentSendError):
                transport.send(envelope(3, to="gone@example.test"))
            with pytest.raises(TransientSendError):
                transport.send(envelope(4, to="flaky@example.test"))
        output = stop(process)

    files = sorted((tmp_path / "inbox" / "new").iterdir())
    assert output == "COUNT 3"
    # A message the sink hung up on still counts as received: the sender cannot know it arrived.
    assert [path.read_bytes() for path in files] == [sent[0].data, sent[1].data, envelope(4).data]
    assert list((tmp_path / "inbox" / "tmp").iterdir()) == []


@pytest.mark.slow
def test_subprocess_counts_into_a_file_and_requires_auth(tmp_path: Path) -> None:
    count_file = tmp_path / "count"
    with sink_process("--count-only", "--count-file", str(count_file), "--auth", "ada:pw") as (port, process):
        with closing(SmtpTransport("127.0.0.1", port, username="ada", password="pw", connections=2)) as transport:
            for number in range(50):
                transport.send(envelope(number))
        deadline = time.monotonic() + 5
        while not (count_file.is_file() and count_file.read_text() == "50\n") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert count_file.read_text() == "50\n"
        assert stop(process) == "COUNT 50"


def test_fault_plans_survive_json() -> None:
    plan = FaultPlan({"a@*": temporary(421, times=3), "b@*": permanent(), "c@*": stall(0.5), "*": drop_after_data()})

    assert FaultPlan.from_json(plan.to_json()) == plan
    assert plan.fault_for("B@Example.test") == permanent(550)
    assert plan.fault_for("zed@example.test") == drop_after_data()


def test_unknown_fault_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault 'explode'"):
        FaultPlan.from_json('{"*": {"kind": "explode"}}')


def test_the_sink_refuses_lines_longer_than_998_octets() -> None:
    with SmtpSink() as sink, closing(SmtpTransport("127.0.0.1", sink.port)) as transport:
        transport.send(envelope(1, body=b"x" * 998 + b"\r\n"))
        with pytest.raises(RelayError) as failure:  # the content is refused, not the recipient
            transport.send(envelope(2, body=b"x" * 999 + b"\r\n"))

    assert (failure.value.code, failure.value.stage) == (500, "DATA")
    assert [message.message_id for message in sink.messages] == ["<m1@example.test>"]


def test_temporary_faults_count_attempts_per_address() -> None:
    faults = FaultPlan({"*@soft.test": temporary(451, times=2)})
    with SmtpSink(faults=faults) as sink, closing(SmtpTransport("127.0.0.1", sink.port)) as transport:
        outcomes = []
        for attempt in range(3):
            for who in ("a@soft.test", "b@soft.test"):
                try:
                    outcomes.append(transport.send(envelope(attempt, to=who))[:3])
                except TransientSendError as error:
                    outcomes.append(str(error.code))

    assert outcomes == ["451", "451", "451", "451", "250", "250"]
    assert sink.sessions == 1

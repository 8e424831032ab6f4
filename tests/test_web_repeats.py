"""The repeated-line filter: a few identical lines per interval, then one line that counts the rest."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from newsletter.web import repeats
from newsletter.web.repeats import RepeatedLineFilter, quiet_repeated_lines


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, Collected, Clock]]:
    clock = Clock()
    collected = Collected()
    logger = logging.getLogger("tests.repeats")
    logger.addHandler(collected)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    line_filter = RepeatedLineFilter(burst=3, interval=60, clock=clock)
    logger.addFilter(line_filter)
    yield logger, collected, clock
    logger.removeFilter(line_filter)
    logger.removeHandler(collected)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


def test_identical_lines_pass_a_few_times_per_interval_and_then_are_counted(
    logger: tuple[logging.Logger, Collected, Clock],
) -> None:
    log, collected, clock = logger
    for _ in range(1000):
        log.error("socket.accept() out of system resource")
        log.warning("client %s sent garbage", "192.0.2.1")
    log.info("client %s sent garbage", "192.0.2.2")  # a different message is a different line
    assert collected.lines == [
        *["ERROR socket.accept() out of system resource", "WARNING client 192.0.2.1 sent garbage"] * 3,
        "INFO client 192.0.2.2 sent garbage",
    ]
    clock.now = 61
    log.error("socket.accept() out of system resource")
    assert collected.lines[7:] == [
        "ERROR … repeated 997 more times in the last 60 s: socket.accept() out of system resource",
        "WARNING … repeated 997 more times in the last 60 s: client 192.0.2.1 sent garbage",
        "ERROR socket.accept() out of system resource",
    ]


def test_it_remembers_a_bounded_number_of_distinct_lines(
    logger: tuple[logging.Logger, Collected, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, collected, _clock = logger
    monkeypatch.setattr(repeats, "MAX_TRACKED", 50)
    for n in range(10_000):
        log.info("GET /page/%d", n)  # each line different, as access lines are
    line_filter = log.filters[0]
    assert isinstance(line_filter, RepeatedLineFilter) and len(line_filter._seen) == 50
    assert len(collected.lines) == 10_000


def test_the_floodable_loggers_get_one_filter_each_however_often_a_server_starts() -> None:
    quiet_repeated_lines()
    quiet_repeated_lines()
    for name in repeats.FLOODABLE_LOGGERS:
        found = [f for f in logging.getLogger(name).filters if isinstance(f, RepeatedLineFilter)]
        assert len(found) == 1, name

"""`newsletter demo`: the whole course reaches every sample reader on their own weekday and local time."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

from click.testing import CliRunner

from newsletter.cli import main
from newsletter.config import Settings
from newsletter.demo import LATE_READER, SAMPLE_READERS, run_demo
from newsletter.schedule import parse_send_time, parse_weekday
from newsletter.transports import read_outbox


def test_the_demo_delivers_every_lesson_on_each_readers_own_clock(settings: Settings, tmp_path: Path) -> None:
    report = run_demo(settings, weeks=9, folder=tmp_path / "demo")
    by_reader: dict[str, list[int]] = defaultdict(list)
    readers = {reader.email: reader for reader in (*SAMPLE_READERS, LATE_READER)}
    for send in report.sends:
        by_reader[send.email].append(send.week)
        if send.week == 0:
            continue
        reader = readers[send.email]
        local = send.sent_at.astimezone(ZoneInfo(send.timezone))
        assert local.weekday() == parse_weekday(str(reader.weekday))
        assert local.time().replace(second=0, microsecond=0) == parse_send_time(str(reader.send_time))
    for reader in SAMPLE_READERS:
        assert by_reader[reader.email] == [1, 2, 3, 4, 5, 6, 7]
    assert by_reader[LATE_READER.email] == [0, 1, 2, 3, 4, 5, 6, 7]  # confirmation, then the course
    assert len(read_outbox(report.outbox)) == len(report.sends) == 43


def test_the_demo_command_prints_the_table_and_leaves_the_project_database_alone(
    settings: Settings, project_dir: Path
) -> None:
    result = CliRunner().invoke(main, ["--config", str(project_dir / "config.toml"), "demo", "--weeks", "2"])
    assert result.exit_code == 0, result.output
    assert "ada" in result.output and "1 muscle" in result.output and "/outbox" in result.output
    assert (project_dir / "demo" / "newsletter.db").is_file()
    assert not (project_dir / "newsletter.db").exists()

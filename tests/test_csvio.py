"""CSV import and export: bad rows reported by line, encodings, idempotence, round trips, the bulk path."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.cli import main
from newsletter.config import Settings, load_settings
from newsletter.csvio import detect_encoding, export_subscribers, import_subscribers
from newsletter.errors import SubscriberError
from newsletter.message import message_id_for
from newsletter.models import Delivery, Event, Subscriber
from newsletter.project import Project
from newsletter.schedule import Cadence
from newsletter.subscribers import ValidSubscriber, create_subscriber

FIXTURES = Path(__file__).parent / "fixtures" / "import"
NOW = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday

Run = Callable[..., Result]


@pytest.fixture
def run(project_dir: Path, env: dict[str, str]) -> Run:
    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, ["--config", str(project_dir / "config.toml"), *args])

    return invoke


def snapshot(session: Session) -> dict[str, list[tuple[Any, ...]]]:
    """Every column of every row, to show that nothing at all changed."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for model in (Subscriber, Delivery, Event):
        columns = list(model.__table__.columns)
        tables[model.__tablename__] = [tuple(row) for row in session.execute(select(*columns).order_by(columns[0]))]
    return tables


def people(session: Session) -> dict[str, tuple[str, str, int, str, str, int]]:
    return {
        s.email: (s.name, s.timezone, s.weekday, f"{s.send_time:%H:%M}", s.status, s.position)
        for s in session.scalars(select(Subscriber))
    }


def test_every_bad_row_is_reported_by_line_and_the_good_ones_are_imported(project: Project) -> None:
    report = import_subscribers(project, FIXTURES / "bad-rows.csv", confirmed=True, now=NOW)
    assert [str(row) for row in report.rejected] == [
        "line 3: email 'not-an-email' is not a valid address: An email address must have an @-sign.",
        "line 4: time zone 'Mars/Olympus': expected an IANA zone name such as 'Europe/London' or 'America/New_York'",
        "line 5: weekday 'Funday': expected one of Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, "
        "Sunday (or at least its first three letters)",
        "line 6: send time '25:00': expected HH:MM on a 24-hour clock, 00:00 to 23:59",
        "line 7: duplicate of line 2 (ann@example.com)",
        "line 8: email 'eve@example.com\\nBcc: mallory@example.com': must be one line; a line break could inject "
        "mail headers",
        "line 10: name 'Fay\\r\\nBcc: mallory@example.com': contains the control character U+000D; a name must be "
        "one line of text",
        "line 12: has 7 fields but the header names 5; quote a value with a comma",
        "line 13: email is empty: expected an address such as ann@example.com",
    ]
    assert (report.rows, report.added, report.unchanged) == (11, 2, 0)
    with project.db.session() as session:
        assert people(session) == {
            "ann@example.com": ("Ann", "Europe/London", 6, "07:00", "active", 0),
            "hal@example.com": ("Hal", "Asia/Kathmandu", 4, "09:00", "active", 0),
        }


def test_reimporting_the_same_file_changes_nothing(project: Project) -> None:
    import_subscribers(project, FIXTURES / "bad-rows.csv", confirmed=False, now=NOW)
    with project.db.session() as session:
        before = snapshot(session)
    report = import_subscribers(project, FIXTURES / "bad-rows.csv", confirmed=True, now=NOW + timedelta(days=3))
    assert (report.added, report.unchanged, len(report.rejected)) == (0, 2, 9)
    with project.db.session() as session:
        assert snapshot(session) == before


@pytest.mark.parametrize(
    ("fixture", "encoding", "expected"),
    [
        ("bom-utf8.csv", "utf-8-sig", {"zoe@example.com": "Zoë Ångström"}),
        ("utf16.csv", "utf-16", {"jurgen@example.com": "Jürgen Groß"}),
        ("latin1.csv", "cp1252", {"rene@example.com": "René O’Hara", "ines@example.com": "Inês"}),
    ],
)
def test_byte_order_marks_and_legacy_encodings_are_read(
    project: Project, fixture: str, encoding: str, expected: dict[str, str]
) -> None:
    report = import_subscribers(project, FIXTURES / fixture, confirmed=False, now=NOW)
    assert (report.encoding, report.rejected) == (encoding, [])
    with project.db.session() as session:
        assert {email: row[0] for email, row in people(session).items()} == expected


def test_utf16_without_a_bom_and_an_explicit_encoding() -> None:
    text = "email,name\nana@example.com,Ana\n"
    assert detect_encoding(io.BytesIO(text.encode("utf-16-le"))) == "utf-16-le"
    assert detect_encoding(io.BytesIO(text.encode("utf-16-be"))) == "utf-16-be"
    assert detect_encoding(io.BytesIO("name\nRené\n".encode("cp1252")), "latin-1") == "latin-1"
    assert detect_encoding(io.BytesIO("name\nRené\n".encode("cp1252"))) == "cp1252"
    with pytest.raises(SubscriberError, match="not utf-8 text: invalid start byte at byte 0"):
        detect_encoding(io.BytesIO(b"\xff\xfe\xfa"), "utf-8")
    with pytest.raises(SubscriberError, match="encoding 'klingon' is unknown"):
        detect_encoding(io.BytesIO(b""), "klingon")


def test_semicolons_header_spellings_and_unknown_columns(project: Project) -> None:
    report = import_subscribers(project, FIXTURES / "semicolon.csv", confirmed=True, now=NOW)
    assert report.ignored_columns == ["Notes"] and report.rejected == []
    with project.db.session() as session:
        assert people(session) == {"kim@example.com": ("Kim", "America/Santiago", 5, "23:30", "active", 0)}


def test_a_file_without_a_header_imports_nothing(project: Project) -> None:
    with pytest.raises(SubscriberError, match=r"no-header.csv line 1: no header row naming an `email` column"):
        import_subscribers(project, FIXTURES / "no-header.csv", confirmed=True, now=NOW)
    with project.db.session() as session:
        assert people(session) == {}


def test_batches_commit_as_they_go_and_report_progress(project: Project, tmp_path: Path) -> None:
    source = tmp_path / "five.csv"
    source.write_text("email\n" + "".join(f"reader{n}@example.com\n" for n in range(5)), encoding="utf-8")
    calls: list[tuple[int, int]] = []
    report = import_subscribers(
        project,
        source,
        confirmed=False,
        now=NOW,
        batch_size=2,
        progress=lambda done, total: calls.append((done, total)),
    )
    size = source.stat().st_size
    assert report.added == 5 and [total for _, total in calls] == [size] * 3
    assert [done for done, _ in calls][-1] == size


def test_export_reimports_into_a_fresh_project_as_it_was(
    project: Project, project_dir: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    import_subscribers(project, FIXTURES / "bad-rows.csv", confirmed=True, now=NOW)
    import_subscribers(project, FIXTURES / "latin1.csv", confirmed=False, now=NOW)
    suppressed = tmp_path / "suppressed.csv"
    suppressed.write_text(
        'email,name,status,position\n=cmd@example.com,=HYPERLINK("x"),unsubscribed,0\n'
        "late@example.com,'Late,active,7\npaused@example.com,P,paused,3\n",
        encoding="utf-8",
    )
    import_subscribers(project, suppressed, confirmed=True, now=NOW)
    exported = io.StringIO()
    with project.db.session() as session:
        assert export_subscribers(session, exported) == 7
        original = people(session)
    assert '\'=cmd@example.com,"\'=HYPERLINK(""x"")"' in exported.getvalue()  # no formula runs in a spreadsheet
    assert original["late@example.com"][4:] == ("completed", 7)  # the course has 7 lessons
    assert original["paused@example.com"][4:] == ("paused", 3)

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(project_dir, elsewhere, ignore=shutil.ignore_patterns("newsletter.db*"))
    copy = tmp_path / "export.csv"
    copy.write_text(exported.getvalue(), encoding="utf-8")
    fresh = Project(load_settings(elsewhere / "config.toml", env={**env}))
    try:
        report = import_subscribers(fresh, copy, confirmed=True, now=NOW)
        assert report.rejected == [] and report.added == 7
        with fresh.db.session() as session:
            assert people(session) == original
    finally:
        fresh.db.dispose()


@pytest.fixture(params=["next_slot", "immediately"])
def first_lesson_project(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Project]:
    """The test project with each `first_lesson` setting."""
    opened = Project(settings.replace("schedule", first_lesson=request.param))
    yield opened
    opened.db.dispose()


def test_the_bulk_import_plans_exactly_what_create_subscriber_plans(
    first_lesson_project: Project, tmp_path: Path
) -> None:
    project = first_lesson_project
    rows = [("pending", 0), ("active", 0), ("active", 2), ("active", 7), ("paused", 1), ("bounced", 0)]
    source = tmp_path / "bulk.csv"
    source.write_text(
        "email,timezone,weekday,time,status,position\n"
        + "".join(f"bulk{n}@example.com,Pacific/Chatham,Sun,03:00,{s},{p}\n" for n, (s, p) in enumerate(rows)),
        encoding="utf-8",
    )
    import_subscribers(project, source, confirmed=True, now=NOW)
    cadence = Cadence("Pacific/Chatham", 6, time(3, 0))
    with project.db.session() as session:
        for n, (status, position) in enumerate(rows):
            valid = ValidSubscriber(f"one{n}@example.com", "", cadence)
            create_subscriber(session, project, valid, status=status, now=NOW, source="import", position=position)

    def outcome(session: Session, email: str) -> tuple[Any, ...]:
        subscriber = session.scalars(select(Subscriber).where(Subscriber.email == email)).one()
        planned = session.scalars(select(Delivery).where(Delivery.subscriber_id == subscriber.id)).all()
        events = session.execute(
            select(Event.kind, Event.lesson, Event.detail)
            .where(Event.subscriber_id == subscriber.id)
            .order_by(Event.id)
        )
        return (
            (subscriber.status, subscriber.position, subscriber.confirmed_at, subscriber.paused_at),
            subscriber.unsubscribed_at,
            [tuple(event) for event in events],
            [(d.lesson, d.slot_at, d.due_at, d.status, d.attempts) for d in planned],
            # The Message-ID depends on the subscriber's id; both paths must derive it the same way.
            [d.message_id == expected_message_id(project, subscriber.id, d.lesson) for d in planned],
        )

    with project.db.session() as session:
        for n in range(len(rows)):
            assert outcome(session, f"bulk{n}@example.com") == outcome(session, f"one{n}@example.com"), rows[n]
        planned = outcome(session, "bulk1@example.com")[3]
        # Sunday 8 March 03:00 in Chatham (+13:45, summer) = Saturday 7 March 13:15 UTC.
        immediately = project.settings.schedule.first_lesson == "immediately"
        first = NOW if immediately else datetime(2026, 3, 7, 13, 15, tzinfo=UTC)
        assert planned == [(project.series.week(1).slug, first, first, "pending", 0)]  # type: ignore[union-attr]


def expected_message_id(project: Project, subscriber_id: int, lesson: str) -> str | None:
    """A confirmation's Message-ID is fixed when it is requested; a lesson's when it first goes on the wire."""
    if lesson != "confirmation":
        return None
    return message_id_for(project.settings, project.series.slug, subscriber_id, "confirm1")


def test_cli_import_reports_bad_rows_on_stderr_and_exits_1(run: Run) -> None:
    result = run("subscribers", "import", str(FIXTURES / "bad-rows.csv"), "--now", "2026-03-02T00:00Z")
    assert result.exit_code == 1
    assert "bad-rows.csv (utf-8): 2 added, 0 unchanged, 9 rejected" in result.stdout
    assert "bad-rows.csv line 5: weekday 'Funday'" in result.stderr
    assert len([line for line in result.stderr.splitlines() if " line " in line]) == 9
    again = run("subscribers", "import", str(FIXTURES / "bom-utf8.csv"))
    assert again.exit_code == 0 and "1 added, 0 unchanged, 0 rejected" in again.stdout
    same = run("subscribers", "import", str(FIXTURES / "bom-utf8.csv"))
    assert same.exit_code == 0 and "0 added, 1 unchanged, 0 rejected" in same.stdout
    missing = run("subscribers", "import", str(FIXTURES / "no-header.csv"))
    assert missing.exit_code == 1 and "looks like data, not a header" in missing.stderr


def test_cli_export_to_stdout_and_to_a_file(run: Run, tmp_path: Path) -> None:
    run("subscribers", "import", str(FIXTURES / "semicolon.csv"), "--confirmed", "--now", "2026-03-02T06:00Z")
    printed = run("subscribers", "export")
    assert printed.exit_code == 0
    assert printed.stdout == (
        "email,name,timezone,weekday,time,status,position,subscribed_at,subscribed_ip,subscribed_user_agent,"
        "form_version,confirmed_at,confirmed_ip,confirmed_user_agent\n"
        "kim@example.com,Kim,America/Santiago,Saturday,23:30,active,0,2026-03-02T06:00:00+00:00,,,,"
        "2026-03-02T06:00:00+00:00,,\n"
    )
    target = tmp_path / "out.csv"
    written = run("subscribers", "export", str(target), "--status", "active")
    assert written.exit_code == 0 and "exported 1 subscriber to" in written.stderr
    assert target.read_text(encoding="utf-8") == printed.stdout


# --- files broken in the ways real files break -----------------------------------------------------------------


def write_rows(path: Path, rows: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes(("\n".join(rows) + "\n").encode(encoding))
    return path


def test_an_unclosed_quote_costs_its_own_line_only(project: Project, tmp_path: Path) -> None:
    rows = ["email,name"] + [f"r{n}@example.com,R{n}" for n in range(1000)]
    rows[3] = 'r2@example.com,"Unclosed'
    report = import_subscribers(project, write_rows(tmp_path / "unclosed.csv", rows), confirmed=True, now=NOW)
    assert [str(row) for row in report.rejected] == [
        "line 4: a quote opened on this line is never closed; close it or remove it"
    ]
    assert (report.rows, report.added) == (1000, 999)


def test_a_field_over_the_size_limit_is_one_bad_line(project: Project, tmp_path: Path) -> None:
    rows = ["email,name"] + [f"s{n}@example.com,S{n}" for n in range(10)]
    rows[3] = "s2@example.com," + "x" * 200_000
    report = import_subscribers(project, write_rows(tmp_path / "big.csv", rows), confirmed=True, now=NOW)
    (rejected,) = report.rejected
    assert rejected.line == 4 and "field larger than field limit" in rejected.reason
    assert report.added == 9
    huge_name = ["email,name", "t0@example.com," + "\u2028" * 100_000, "t1@example.com,T1"]
    report = import_subscribers(project, write_rows(tmp_path / "wide.csv", huge_name), confirmed=True, now=NOW)
    (rejected,) = report.rejected
    assert len(rejected.reason) < 600 and "100000 characters" in rejected.reason  # the value is not printed whole


def test_one_nul_byte_is_a_bad_line_not_a_utf16_file(project: Project, tmp_path: Path) -> None:
    rows = ["email,name"] + [f"u{n}@example.com,U{n}" for n in range(10)]
    rows[3] = "u2@example.com,U\x002"
    report = import_subscribers(project, write_rows(tmp_path / "nul.csv", rows), confirmed=True, now=NOW)
    assert report.encoding == "utf-8"
    (rejected,) = report.rejected
    assert rejected.line == 4 and ("U+0000" in rejected.reason or "NUL byte" in rejected.reason)
    assert report.added == 9


def test_a_multi_line_note_in_an_ignored_column_is_kept(project: Project, tmp_path: Path) -> None:
    rows = ["email,name,notes", 'v0@example.com,V0,"met at the race\nlikes hills"', "v1@example.com,V1,"]
    report = import_subscribers(project, write_rows(tmp_path / "notes.csv", rows), confirmed=True, now=NOW)
    assert report.rejected == [] and report.added == 2 and report.ignored_columns == ["notes"]


def test_a_duplicate_in_a_later_batch_is_reported_not_counted_unchanged(project: Project, tmp_path: Path) -> None:
    rows = ["email"] + [f"w{n}@example.com" for n in range(5)] + ["w1@example.com"]
    source = write_rows(tmp_path / "dupes.csv", rows)
    report = import_subscribers(project, source, confirmed=True, now=NOW, batch_size=2)
    assert [str(row) for row in report.rejected] == [
        "line 7: duplicate of an earlier line (w1@example.com), already imported by this run"
    ]
    assert (report.added, report.unchanged) == (5, 0)
    again = import_subscribers(project, source, confirmed=True, now=NOW, batch_size=2)
    assert (again.added, again.unchanged, again.rejected) == (0, 6, [])


def test_the_cli_names_ignored_columns_in_one_line_and_never_shows_a_traceback(run: Run, tmp_path: Path) -> None:
    header = "Email Address,First Name," + ",".join(f"Extra {n}" for n in range(20))
    rows = [header, "x0@example.com,X," + "," * 19, "x1@example.com," + "x" * 200_000]
    result = run("subscribers", "import", str(write_rows(tmp_path / "wide.csv", rows)))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    ignored = [line for line in result.stderr.splitlines() if line.startswith("ignored")]
    assert len(ignored) == 1 and "21 column(s)" in ignored[0]
    assert "1 added, 0 unchanged, 1 rejected" in result.stdout

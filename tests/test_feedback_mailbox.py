"""`newsletter bounces` and the daemon's pass: a real Maildir, and a real Dovecot over IMAPS and POP3S."""

from __future__ import annotations

import imaplib
import json
import mailbox
import poplib
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dovecot
import pytest
from click.testing import CliRunner
from conftest import IN_CI
from feedback_mail import AFTER_FIRST, Sent, bounce, readers, send_week, sent
from sqlalchemy import func, select

from newsletter.cli import main
from newsletter.daemon import Daemon
from newsletter.errors import ConfigError, MailboxError
from newsletter.feedback.mailbox import parse_mailbox_url
from newsletter.feedback.sweep import FeedbackSummary, process_mailbox
from newsletter.models import Feedback, Subscriber
from newsletter.project import Project
from newsletter.transports import MemoryTransport


@pytest.fixture
def lesson_one(any_project: Project) -> dict[str, Sent]:
    readers(any_project, "ann@example.com", "bo@example.com", "cy@example.com")
    send_week(any_project, 1)
    return {email: sent(any_project, email) for email in ("ann@example.com", "bo@example.com", "cy@example.com")}


def the_mail(project: Project, lessons: dict[str, Sent]) -> dict[str, bytes]:
    """A morning's bounce mailbox: a hard bounce, a complaint, a delay warning, an auto-reply, a stranger's bounce."""
    stranger = Sent("zed@example.org", 999, 999, "<somebody.else@example.org>")
    return {
        "hard": bounce(project, "postfix-hard.eml", lessons["ann@example.com"]),
        "complaint": bounce(project, "yahoo-complaint.eml", lessons["bo@example.com"]),
        "delay": bounce(project, "postfix-delayed.eml", lessons["cy@example.com"]),
        "auto-reply": bounce(project, "vacation-reply.eml", lessons["cy@example.com"]),
        "stranger": bounce(project, "exim-dsn.eml", stranger),
    }


def statuses(project: Project) -> dict[str, str]:
    with project.db.session() as session:
        return dict(session.execute(select(Subscriber.email, Subscriber.status)).all())  # type: ignore[arg-type]


def expected_first_pass() -> FeedbackSummary:
    return FeedbackSummary(
        messages=5, recorded=2, hard_bounces=1, complaints=1, suppressed=1, unsubscribed=1, ignored=1, kept=2
    )


# --- Maildir ---------------------------------------------------------------------------------------------------


@pytest.fixture
def maildir_project(any_project: Project, tmp_path: Path) -> Iterator[Project]:
    mailbox.Maildir(tmp_path / "bounces", create=True)
    project = Project(any_project.settings.replace("bounces", mailbox=str(tmp_path / "bounces")))
    yield project
    project.db.dispose()


def deliver(folder: Path, messages: dict[str, bytes]) -> None:
    box = mailbox.Maildir(folder, create=False)
    for data in messages.values():
        box.add(data)


def files(folder: Path) -> list[str]:
    return sorted(path.name.split(":")[0] for sub in ("new", "cur") for path in (folder / sub).iterdir())


def test_a_maildir_pass_records_moves_and_keeps_what_it_does_not_know(
    maildir_project: Project, lesson_one: dict[str, Sent], tmp_path: Path
) -> None:
    folder = tmp_path / "bounces"
    deliver(folder, the_mail(maildir_project, lesson_one))
    before = files(folder)
    dry = process_mailbox(maildir_project, AFTER_FIRST, dry_run=True)
    assert dry == expected_first_pass()
    assert files(folder) == before and set(statuses(maildir_project).values()) == {"active"}

    assert process_mailbox(maildir_project, AFTER_FIRST) == expected_first_pass()
    assert statuses(maildir_project) == {
        "ann@example.com": "bounced",
        "bo@example.com": "unsubscribed",
        "cy@example.com": "active",
    }
    assert len(files(folder)) == 2  # the auto-reply and the stranger's bounce stay for a person to read
    processed = folder / ".Processed"
    assert len(list((processed / "cur").iterdir())) == 3 and all(
        name.endswith(":2,S") for name in map(str, (processed / "cur").iterdir())
    )
    assert sorted(files(folder) + sorted(p.name.split(":")[0] for p in (processed / "cur").iterdir())) == before

    again = process_mailbox(maildir_project, AFTER_FIRST)
    assert again == FeedbackSummary(messages=2, kept=2)
    # The same bounce delivered twice (a relay retrying its DSN) is recorded once.
    deliver(folder, {"hard": the_mail(maildir_project, lesson_one)["hard"]})
    assert process_mailbox(maildir_project, AFTER_FIRST).duplicates == 1
    with maildir_project.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Feedback)) == 2


def test_the_command_prints_one_line_or_json(
    maildir_project: Project, lesson_one: dict[str, Sent], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(tmp_path / "bounces", the_mail(maildir_project, lesson_one))
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", maildir_project.settings.database.url)
    monkeypatch.setenv("NEWSLETTER_BOUNCES_MAILBOX", maildir_project.settings.bounces.mailbox)
    config = str(maildir_project.settings.config_path)
    dry = CliRunner().invoke(main, ["--config", config, "bounces", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.strip() == (
        "dry run, nothing changed: 5 messages: 2 recorded (1 hard, 0 soft, 1 complaints; 1 suppressed, "
        "1 unsubscribed), 0 duplicate, 1 ignored, 2 kept as unknown"
    )
    done = CliRunner().invoke(main, ["--config", config, "bounces", "--json", "--now", "2026-03-03T09:00Z"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {**expected_first_pass().as_dict(), "dry_run": False}
    again = CliRunner().invoke(main, ["--config", config, "bounces", "--json"])
    assert json.loads(again.output)["recorded"] == 0


def test_a_missing_mailbox_is_one_clear_line(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_BOUNCES_MAILBOX", str(tmp_path / "nowhere"))
    result = CliRunner().invoke(main, ["--config", str(project.settings.config_path), "bounces"])
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == f"Error: bounce mailbox {tmp_path / 'nowhere'}: not a Maildir (it needs cur/, new/ and tmp/ folders)"
    )
    monkeypatch.delenv("NEWSLETTER_BOUNCES_MAILBOX")
    unset = CliRunner().invoke(main, ["--config", str(project.settings.config_path), "bounces"])
    assert unset.exit_code == 1 and "[bounces] mailbox is not set" in unset.output


def test_each_daemon_tick_also_reads_the_mailbox(
    maildir_project: Project, lesson_one: dict[str, Sent], tmp_path: Path
) -> None:
    deliver(tmp_path / "bounces", the_mail(maildir_project, lesson_one))
    daemon = Daemon(maildir_project, host="127.0.0.1", port=0, tick_seconds=1, transport=MemoryTransport())
    assert daemon.tick() is not None
    assert statuses(maildir_project)["ann@example.com"] == "bounced"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("imaps://host/INBOX", "expected imaps://user@host"),
        ("pop3s://u@host/Other", "POP3 has only the inbox"),
        ("imaps://u:secret@host/INBOX", "only from NEWSLETTER_BOUNCES_PASSWORD"),
    ],
)
def test_a_bad_mailbox_url_says_what_is_expected(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_mailbox_url(url)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("address", "bounces+x@example.com", 'one bare address without "\\+"'),
        ("address", "bounces", "one bare address"),
        ("mailbox", "imap://u@host/INBOX", "imaps:// or pop3s:// URL"),
        ("soft_bounce_limit", 6, "at most soft_bounce_window"),
    ],
)
def test_bounce_settings_are_checked(
    project_dir: Path, env: dict[str, str], key: str, value: object, problem: str
) -> None:
    from newsletter.config import settings_from_mapping

    with pytest.raises(ConfigError, match=rf"\[bounces\] {key}.*{problem}"):
        settings_from_mapping({"bounces": {key: value}}, project_dir, env)


def test_an_at_sign_in_the_user_name_is_written_percent_40() -> None:
    parsed = parse_mailbox_url("imaps://bounces%40running.example.com@imap.example.com/Bounces")
    assert (parsed.user, parsed.host, parsed.port, parsed.folder) == (
        "bounces@running.example.com",
        "imap.example.com",
        993,
        "Bounces",
    )


# --- IMAP and POP3 against a real server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[dovecot.Dovecot]:
    if not dovecot.installed():
        message = "the IMAP and POP3 tests need Dovecot (apt-get install dovecot-imapd dovecot-pop3d; see .ci/run)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    # Not under pytest's temporary folders: they are private to us, and Dovecot's login processes run as
    # another user that must reach the sockets in its base_dir.
    folder = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
    try:
        running = dovecot.start(folder)
        yield running
        running.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def imap(server: dovecot.Dovecot, monkeypatch: pytest.MonkeyPatch) -> Iterator[imaplib.IMAP4_SSL]:
    """A client of the test server that starts every test with an empty INBOX and no Processed folder."""
    monkeypatch.setenv("SSL_CERT_FILE", str(server.certificate))  # what our reader trusts, as an operator would
    client = imaplib.IMAP4_SSL(
        "127.0.0.1",
        server.imaps_port,
        ssl_context=ssl.create_default_context(cafile=str(server.certificate)),
        timeout=10,
    )
    client.login(dovecot.USER, dovecot.PASSWORD)
    client.delete('"Processed"')
    _, count = client.select("INBOX")
    if count[0] != b"0":
        client.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
        client.expunge()
    yield client
    client.logout()


def folder_subjects(client: imaplib.IMAP4_SSL, folder: str) -> list[str]:
    status, _ = client.select(f'"{folder}"', readonly=True)
    if status != "OK":
        return []
    _, found = client.uid("SEARCH", "ALL")
    subjects = []
    for uid in found[0].split():
        _, data = client.uid("FETCH", uid.decode(), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects.append(data[0][1].decode().strip().removeprefix("Subject: "))
    return sorted(subjects)


def url_project(project: Project, url: str) -> Project:
    return Project(project.settings.replace("bounces", mailbox=url, password=dovecot.PASSWORD))


def test_an_imap_pass_moves_what_it_recorded_to_the_processed_folder(
    project: Project, server: dovecot.Dovecot, imap: imaplib.IMAP4_SSL
) -> None:
    readers(project, "ann@example.com", "bo@example.com", "cy@example.com")
    send_week(project, 1)
    lessons = {email: sent(project, email) for email in ("ann@example.com", "bo@example.com", "cy@example.com")}
    for data in the_mail(project, lessons).values():
        imap.append("INBOX", None, None, data)
    over_imap = url_project(project, f"imaps://{dovecot.USER}@127.0.0.1:{server.imaps_port}/INBOX")
    assert process_mailbox(over_imap, AFTER_FIRST) == expected_first_pass()
    assert folder_subjects(imap, "INBOX") == [
        "Mail delivery failed: returning message to sender",
        "Out of office: Week 1: Muscle",
    ]
    assert folder_subjects(imap, "Processed") == [
        "Delayed Mail (still being retried)",
        "FW: Week 1: Muscle",
        "Undelivered Mail Returned to Sender",
    ]
    assert statuses(project)["bo@example.com"] == "unsubscribed"
    assert process_mailbox(over_imap, AFTER_FIRST) == FeedbackSummary(messages=2, kept=2)


def test_without_move_imap_copies_then_deletes(
    project: Project, server: dovecot.Dovecot, imap: imaplib.IMAP4_SSL, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsletter.feedback.mailbox.imap import ImapMailbox

    readers(project, "ann@example.com")
    send_week(project, 1)
    imap.append("INBOX", None, None, bounce(project, "gmail-hard.eml", sent(project, "ann@example.com")))
    opened = ImapMailbox.__init__

    def without_move(self: ImapMailbox, *args: object) -> None:
        opened(self, *args)  # type: ignore[arg-type]
        self.can_move = self.can_uid_expunge = False  # as on a server older than RFC 6851

    monkeypatch.setattr(ImapMailbox, "__init__", without_move)
    over_imap = url_project(project, f"imaps://{dovecot.USER}@127.0.0.1:{server.imaps_port}")
    assert process_mailbox(over_imap, AFTER_FIRST).recorded == 1
    assert folder_subjects(imap, "INBOX") == []
    assert folder_subjects(imap, "Processed") == ["Delivery Status Notification (Failure)"]


def test_a_pop3_pass_deletes_only_what_it_recorded(
    project: Project, server: dovecot.Dovecot, imap: imaplib.IMAP4_SSL
) -> None:
    readers(project, "ann@example.com", "bo@example.com", "cy@example.com")
    send_week(project, 1)
    lessons = {email: sent(project, email) for email in ("ann@example.com", "bo@example.com", "cy@example.com")}
    for data in the_mail(project, lessons).values():
        imap.append("INBOX", None, None, data)
    over_pop3 = url_project(project, f"pop3s://{dovecot.USER}@127.0.0.1:{server.pop3s_port}")
    assert process_mailbox(over_pop3, AFTER_FIRST) == expected_first_pass()
    client = poplib.POP3_SSL(
        "127.0.0.1", server.pop3s_port, context=ssl.create_default_context(cafile=str(server.certificate)), timeout=10
    )
    client.user(dovecot.USER)
    client.pass_(dovecot.PASSWORD)
    assert client.stat()[0] == 2
    client.quit()
    assert process_mailbox(over_pop3, AFTER_FIRST) == FeedbackSummary(messages=2, kept=2)


def test_a_wrong_password_or_an_untrusted_certificate_is_a_clear_error(
    project: Project, server: dovecot.Dovecot, imap: imaplib.IMAP4_SSL, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"imaps://{dovecot.USER}@127.0.0.1:{server.imaps_port}/INBOX"
    wrong = Project(project.settings.replace("bounces", mailbox=url, password="not it"))
    with pytest.raises(
        MailboxError, match=r"bounce mailbox imaps://bounces@127\.0\.0\.1:\d+/INBOX: .*AUTHENTICATIONFAILED"
    ):
        process_mailbox(wrong, AFTER_FIRST)
    pop3 = Project(
        project.settings.replace(
            "bounces", mailbox=f"pop3s://{dovecot.USER}@127.0.0.1:{server.pop3s_port}", password="not it"
        )
    )
    with pytest.raises(MailboxError, match="login refused"):
        process_mailbox(pop3, AFTER_FIRST)
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(MailboxError, match=r"cannot connect: .*CERTIFICATE_VERIFY_FAILED"):
        process_mailbox(url_project(project, url), AFTER_FIRST)

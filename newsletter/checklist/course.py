"""`newsletter check`: the whole project against the checklist, as findings that name a file and a reason.

Config, lessons and templates are loaded the way sending loads them; then every lesson and the confirmation
email is rendered for a sample subscriber, built and serialised exactly as for the wire, and checked.
The sample subscriber's name holds markup and an ampersand, so every template proves it escapes names.

Settings that are allowed but will hurt real sending (no DKIM on an SMTP relay, the example postal address)
are warnings, not findings: a new project or a local outbox may rightly have them, so they never fail `check`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dkim
from dkim.crypto import UnparsableKeyError

from newsletter.checklist import CheckResult, run_checklist
from newsletter.checklist.signing import dns_serving, public_key_record
from newsletter.checklist.wire import DnsTxtLookup
from newsletter.config import SenderSection, Settings, load_settings
from newsletter.errors import ConfigError, LessonError, NewsletterError
from newsletter.ledger.waiting import Gate, file_gates, strip_root
from newsletter.lessons import empty_editor_sections
from newsletter.models import CONFIRMATION
from newsletter.project import Project

CALL_TO_ACTION = "Try this week"
CHECK_NAME = 'Alex "<b>Runner</b>" & Co'
CHECK_EMAIL = "check@example.com"
# The postal addresses the bundled config, `newsletter init`'s config and the built-in default print.
EXAMPLE_ADDRESS_MARKS = ("1 example street", SenderSection().address.lower())
AUTHOR_TASKS = {
    "Key takeaways": "write the three or four points a reader should remember",
    "Try this week": "write the one thing the reader should do this week",
}


@dataclass(frozen=True)
class Finding:
    """One problem: where it is (a file, maybe a line) and what is wrong."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" if self.where else self.reason


@dataclass
class CourseReport:
    emails_checked: int = 0
    findings: list[Finding] = field(default_factory=list)
    notices: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.findings


def check_course(
    config_path: str | None = None, *, env: Mapping[str, str] | None = None, now: datetime | None = None
) -> CourseReport:
    """Validate the project and run the email checklist on every email it sends."""
    report = CourseReport()
    try:
        settings = load_settings(config_path, env)
    except ConfigError as error:
        report.findings.append(Finding("", str(error)))
        return report
    report.notices = settings.notices
    report.warnings = deliverability_warnings(settings)
    root = settings.root
    config_name = _relative(settings.config_path or root / "config.toml", root)
    if not settings.newsletter.base_url.startswith("https://"):
        report.findings.append(
            Finding(
                f"{config_name} [newsletter] base_url",
                f"must be an https URL (mailbox providers ignore http unsubscribe links), "
                f"got {settings.newsletter.base_url!r}",
            )
        )
    project = Project(settings)
    try:
        series = project.series  # loaded strictly here: a broken file is a finding, not a placeholder
    except LessonError as error:
        where = _relative(Path(error.path), root) + (f" line {error.line}" if error.line else "")
        report.findings.append(Finding(where, error.reason))
        return report
    for lesson in series:
        for heading, line in empty_editor_sections(lesson):
            where = f"{_relative(lesson.path, root)} line {line}"
            task = AUTHOR_TASKS.get(heading, "write it")
            report.findings.append(Finding(where, f"“{heading}” is empty: {task} (content only you can write)"))
    dns = _dkim_dns(settings, report, config_name)
    render_errors: set[str] = set()
    for _lesson, where, outcome in checked_emails(project, now or datetime.now(UTC), dns):
        if isinstance(outcome, Exception):
            # A broken template breaks every email it renders: say so once, naming the template.
            message = strip_root(str(outcome), root)
            if message not in render_errors:
                render_errors.add(message)
                context = "" if where in message else f" (rendering {where})"
                report.findings.append(Finding("", message + context))
            continue
        report.emails_checked += 1
        for result in outcome:
            if not result.ok:
                report.findings.append(Finding(where, f"item {result.number} ({result.name}): {result.detail}"))
    return report


def deliverability_warnings(settings: Settings) -> tuple[str, ...]:
    """What will cost inbox placement or break the rules once real readers get mail, though nothing fails."""
    warnings = []
    if settings.delivery.transport == "smtp" and not settings.dkim.selector:
        # A relay may sign for the domain itself, but only our own signature covers Feedback-ID and the
        # List-Unsubscribe headers for certain, so the warning stands either way.
        warnings.append(
            "[delivery] transport is smtp but [dkim] selector is empty: every email goes out unsigned, and Gmail "
            "and Yahoo require DKIM from bulk senders; set [dkim] selector, domain and private_key"
        )
    address = " ".join(settings.sender.address.split())
    problem = "is empty" if not address else f"is still the example one ({address!r})"
    if not address or any(mark in address.lower() for mark in EXAMPLE_ADDRESS_MARKS):
        warnings.append(
            f"[sender] address {problem}: every footer prints it, and CAN-SPAM and the mailbox providers "
            "want your real postal address there"
        )
    return tuple(warnings)


def checked_emails(
    project: Project, moment: datetime, dns: DnsTxtLookup | None
) -> Iterator[tuple[str, str, list[CheckResult] | NewsletterError | dkim.DKIMException]]:
    """Each email of the course (the confirmation, then every lesson that can render) with its checklist.

    Yields (lesson slug, the file it comes from, the results or the error that stopped rendering it).
    """
    settings, root = project.settings, project.settings.root
    sample = project.sample_subscriber(CHECK_EMAIL, CHECK_NAME)
    confirmation_template = settings.newsletter.templates / "confirmation.mjml.j2"
    emails: list[tuple[str, str, str | None]] = [(CONFIRMATION, _relative(confirmation_template, root), None)]
    emails += [
        (lesson.slug, _relative(lesson.path, root), CALL_TO_ACTION) for lesson in project.series if not lesson.problem
    ]
    for lesson, where, action in emails:
        try:
            rendered = project.render(sample, lesson, moment)
            raw = project.envelope(sample, lesson, now=moment).data
        except (NewsletterError, dkim.DKIMException) as error:
            yield lesson, where, error
            continue
        yield lesson, where, run_checklist(raw, subject=rendered.subject, call_to_action=action, dkim_dns=dns)


def lesson_gates(project: Project, now: datetime | None = None) -> dict[str, Gate]:
    """The emails that may not go out, and why: drafts, broken lesson files, emails failing the checklist."""
    gates = file_gates(project.series, project.settings.root)
    dns = _dkim_dns(project.settings, CourseReport(), "")
    for slug, _where, outcome in checked_emails(project, now or datetime.now(UTC), dns):
        if slug in gates:
            continue
        if isinstance(outcome, Exception):
            gates[slug] = Gate("broken", strip_root(str(outcome), project.settings.root))
            continue
        failing = [result for result in outcome if not result.ok]
        if failing:
            items = "; ".join(f"item {result.number} ({result.name}): {result.detail}" for result in failing[:3])
            gates[slug] = Gate("checklist", f"fails the email checklist: {items}")
    return gates


def _dkim_dns(settings: Settings, report: CourseReport, config_name: str) -> DnsTxtLookup | None:
    """Verify signatures against the configured key's public half, so `check` needs no DNS."""
    key = settings.dkim.private_key
    if not settings.dkim.selector or key is None or not key.is_file():
        return None
    try:
        return dns_serving(public_key_record(key.read_bytes()))
    except (UnparsableKeyError, ValueError) as error:
        report.findings.append(Finding(f"{config_name} [dkim] private_key", f"not a PEM RSA private key: {error}"))
        return None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)

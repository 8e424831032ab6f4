"""One pass over the bounce mailbox: read each message, record what it reports, then move it out of the way.

A message is taken out of the mailbox (moved, or deleted on POP3) only once its records are committed,
and only when everything in it was recorded, was a duplicate, or asked for nothing (a delay warning, a
"delivered" report, a not-spam report). Anything else stays where it is and is counted: messages that
are no bounce at all, and bounces that name no delivery of ours. `newsletter bounces` runs one pass; the
daemon runs one each tick.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime

from newsletter.feedback.classifier import classify
from newsletter.feedback.mailbox import open_mailbox
from newsletter.feedback.record import DUPLICATE, RECORDED, Recorded, record_report
from newsletter.feedback.report import COMPLAINT, HARD_BOUNCE
from newsletter.project import Project

log = logging.getLogger("newsletter.feedback")


@dataclass
class FeedbackSummary:
    """What one pass found; `kept` counts the messages left in the mailbox for a person to look at."""

    messages: int = 0
    recorded: int = 0
    hard_bounces: int = 0
    soft_bounces: int = 0
    complaints: int = 0
    suppressed: int = 0
    unsubscribed: int = 0
    duplicates: int = 0
    ignored: int = 0
    kept: int = 0

    def add(self, recorded: Recorded) -> None:
        """Count one report's outcome."""
        if recorded.outcome == DUPLICATE:
            self.duplicates += 1
        if recorded.outcome != RECORDED:
            return
        self.recorded += 1
        if recorded.kind == HARD_BOUNCE:
            self.hard_bounces += 1
        elif recorded.kind == COMPLAINT:
            self.complaints += 1
        else:
            self.soft_bounces += 1
        self.suppressed += recorded.action == "suppressed"
        self.unsubscribed += recorded.action == "unsubscribed"

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def line(self) -> str:
        """The one-line summary the command prints and the daemon logs."""
        return (
            f"{self.messages} message{'s' if self.messages != 1 else ''}: {self.recorded} recorded "
            f"({self.hard_bounces} hard, {self.soft_bounces} soft, {self.complaints} complaints; "
            f"{self.suppressed} suppressed, {self.unsubscribed} unsubscribed), {self.duplicates} duplicate, "
            f"{self.ignored} ignored, {self.kept} kept as unknown"
        )


def process_mailbox(project: Project, now: datetime, *, dry_run: bool = False) -> FeedbackSummary:
    """Process every message in [bounces] mailbox; with `dry_run`, change nothing and say what would happen."""
    summary = FeedbackSummary()
    mailbox = open_mailbox(project.settings)
    try:
        for stored in mailbox.messages():
            summary.messages += 1
            classified = classify(project.settings, stored.data)
            if not classified.recognised:
                summary.kept += 1
                continue
            with project.db.session() as session:
                attempt = session.begin_nested()  # a dry run rolls back to here
                outcomes = [record_report(session, project, report, now=now) for report in classified.reports]
                if dry_run:
                    attempt.rollback()
                else:
                    attempt.commit()
            for outcome in outcomes:
                summary.add(outcome)
            if any(outcome.outcome not in (RECORDED, DUPLICATE) for outcome in outcomes):
                summary.kept += 1
                continue
            summary.ignored += not outcomes
            if not dry_run:
                mailbox.processed(stored.key)
    finally:
        mailbox.close()
    if summary.messages and not dry_run:
        log.info("bounces: %s", summary.line(), extra={"fields": {"event": "bounces", **summary.as_dict()}})
    return summary

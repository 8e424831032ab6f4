"""`newsletter demo`: the whole course for a few sample readers, simulated on a scratch database.

Ticks jump from one due time to the next (what `newsletter run` does every 30 seconds, without the
waiting), so nine weeks take seconds and every lesson lands on the reader's own weekday and local time.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from newsletter.config import Settings
from newsletter.dispatch import send_due
from newsletter.models import CONFIRMATION, Delivery, Subscriber
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber, confirm
from newsletter.transports import OutboxTransport

SAMPLE_READERS = (
    SubscriberInput("ada@example.com", "Ada", "Europe/London", "Monday", "07:00"),
    SubscriberInput("bo@example.com", "Bo", "America/New_York", "Wednesday", "18:30"),
    SubscriberInput("chandra@example.com", "Chandra", "Asia/Kathmandu", "Saturday", "06:15"),
    SubscriberInput("dee@example.com", "Dee", "Australia/Lord_Howe", "Sunday", "02:30"),
    SubscriberInput("eli@example.com", "Eli", "America/Santiago", "Friday", "20:00"),
)
# Signs up through the double opt-in and clicks the link a day later.
LATE_READER = SubscriberInput("fay@example.com", "Fay", "Asia/Tokyo", "Tuesday", "08:00")


@dataclass(frozen=True)
class DemoSend:
    email: str
    timezone: str
    week: int
    slug: str
    sent_at: datetime


@dataclass(frozen=True)
class DemoReport:
    folder: Path
    outbox: Path
    start: datetime
    end: datetime
    ticks: int
    sends: list[DemoSend]


def run_demo(settings: Settings, *, weeks: int = 9, folder: str | Path | None = None) -> DemoReport:
    """Create demo/ afresh, add the sample readers, and tick through `weeks` weeks of sends."""
    root = Path(folder) if folder else settings.root / "demo"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    outbox = root / "outbox"
    demo_settings = settings.replace("database", url=f"sqlite:///{root / 'newsletter.db'}").replace(
        "delivery", transport="outbox", outbox=outbox
    )
    project = Project(demo_settings)
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    end = start + timedelta(weeks=weeks)
    with project.db.session() as session:
        for reader in SAMPLE_READERS:
            add_subscriber(session, project, reader, confirmed=True, now=start, source="demo")
        late = add_subscriber(session, project, LATE_READER, confirmed=False, now=start, source="demo")
        late_id = late.id
    transport = OutboxTransport(outbox)
    click_at: datetime | None = start + timedelta(days=1)
    ticks, now = 0, start
    while now <= end:
        send_due(project, transport, now=now)
        ticks += 1
        if click_at is not None and now >= click_at:
            with project.db.session() as session:
                confirm(session, project, late_id, now=now)
            click_at = None
        with project.db.session() as session:
            next_due = session.scalar(select(func.min(Delivery.due_at)).where(Delivery.status == "pending"))
        upcoming = [moment for moment in (next_due, click_at) if moment is not None]
        if not upcoming:
            break
        now = max(min(upcoming), now + timedelta(seconds=1))
    with project.db.session() as session:
        rows = session.execute(
            select(Subscriber.email, Subscriber.timezone, Delivery.lesson, Delivery.sent_at)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.status == "sent")
            .order_by(Subscriber.id, Delivery.sent_at)
        )
        series = project.series
        sends = [
            DemoSend(email, zone, 0 if lesson == CONFIRMATION else (series.index(lesson) or 0) + 1, lesson, sent_at)
            for email, zone, lesson, sent_at in rows
            if sent_at
        ]
    project.db.dispose()
    return DemoReport(folder=root, outbox=outbox, start=start, end=end, ticks=ticks, sends=sends)


def print_report(report: DemoReport, console: Console) -> None:
    """The table of who got which lesson when, in each reader's own time."""
    table = Table(title=f"{report.start:%d %b %Y} to {report.end:%d %b %Y}: {report.ticks} send ticks", box=None)
    for column in ("reader", "zone", "lesson", "local time", "UTC"):
        table.add_column(column, no_wrap=True)
    previous = ""
    for send in report.sends:
        local = send.sent_at.astimezone(ZoneInfo(send.timezone))
        first_row = send.email != previous
        if first_row and previous:
            table.add_section()
        table.add_row(
            send.email.split("@")[0] if first_row else "",
            send.timezone if first_row else "",
            "confirmation" if send.week == 0 else f"{send.week} {send.slug}",
            f"{local:%a %d %b %H:%M}",
            f"{send.sent_at:%d %b %H:%M}",
        )
        previous = send.email
    console.print(table)
    messages = len(list((report.outbox / "new").glob("*")))
    console.print(f"\n{messages} emails are in {report.outbox}/new (a Maildir, one file per message).")
    console.print(
        f"Read them in a browser: NEWSLETTER_DELIVERY_OUTBOX={report.outbox} newsletter preview, then /outbox"
    )

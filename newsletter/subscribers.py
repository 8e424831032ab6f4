"""Subscribers: validate what people type, and move each subscriber through their states.

    pending ──confirm──▶ active ──pause──▶ paused ──resume──▶ active ──last lesson sent──▶ completed
                           ▲  │                                  (a lesson appended later reopens it)
                           │  └──unsubscribe / hard bounce──▶ unsubscribed | bounced ──unbounce──▶ active
                           └── resubscribe by their own unsubscribe link (keeps their position) ◀──┘

Every change records an `Event` and keeps the next email planned as one pending delivery (`planning.py`).
Time is never read from the clock here: every function takes `now`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter import events, ledger
from newsletter.config import Settings
from newsletter.errors import SubscriberError
from newsletter.feedback import consent
from newsletter.feedback.suppression import forget_subscriber, is_suppressed
from newsletter.models import CONFIRMATION, Delivery, Event, Subscriber, SubscriberStatus
from newsletter.schedule import WEEKDAY_NAMES, Cadence, parse_send_time, parse_timezone, parse_weekday

if TYPE_CHECKING:
    from newsletter.project import Project

NAME_MAX = 200
LIST_BATCH = 1000  # `list_subscribers` reads this many rows at a time
# C0 and C1 controls plus the Unicode line and paragraph separators: anything that could end a header line.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONFIRMED_STATUSES = ("active", "paused", "completed")
SUPPRESSED_STATUSES = ("unsubscribed", "bounced")
CONFIRMATION_INTERVAL = timedelta(hours=24)  # at most one confirmation email per address in this time


def normalise_email(text: str) -> str:
    """Return the address validated (syntax only, no DNS) and lower-cased."""
    if "\r" in text or "\n" in text:
        raise SubscriberError(f"email {_shown(text)}: must be one line; a line break could inject mail headers")
    candidate = text.strip()
    if not candidate:
        raise SubscriberError("email is empty: expected an address such as ann@example.com")
    try:
        checked = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as error:
        raise SubscriberError(f"email {_shown(text)} is not a valid address: {error}") from None
    return checked.normalized.lower()


def _shown(text: str, limit: int = 60) -> str:
    """A value quoted for a message, cut short: a stray quote in a file can make a value of megabytes."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}… ({len(text)} characters)"


def clean_name(text: str) -> str:
    """Return the display name trimmed; refuse line breaks, control characters and overlong names."""
    found = _CONTROL_CHARACTERS.search(text)
    if found:
        raise SubscriberError(
            f"name {_shown(text)}: contains the control character U+{ord(found.group()):04X}; "
            "a name must be one line of text"
        )
    if "=?" in text:
        raise SubscriberError(
            f"name {_shown(text)}: contains '=?', which mail programs decode as an encoded header; "
            "write the name as plain text"
        )
    name = text.strip()
    if len(name) > NAME_MAX:
        raise SubscriberError(f"name {name[:30]!r}…: has {len(name)} characters, at most {NAME_MAX} are allowed")
    return name


@dataclass(frozen=True)
class SubscriberInput:
    """What a person or a file gives us; None or "" means the project's default."""

    email: str
    name: str = ""
    timezone: str | None = None
    weekday: str | None = None
    send_time: str | None = None


@dataclass(frozen=True)
class ValidSubscriber:
    """A `SubscriberInput` checked and completed with the project's defaults."""

    email: str
    name: str
    cadence: Cadence


def resolve_cadence(
    settings: Settings,
    *,
    timezone: str | None = None,
    weekday: str | int | None = None,
    send_time: str | time | None = None,
) -> Cadence:
    """Return a validated cadence; a missing part takes the [schedule] default of config.toml."""
    defaults = settings.schedule
    zone = parse_timezone(timezone) if timezone else defaults.timezone
    if isinstance(weekday, int):
        if not 0 <= weekday <= 6:
            raise SubscriberError(f"weekday {weekday!r}: expected 0 (Monday) to 6 (Sunday)")
        day = weekday
    else:
        day = parse_weekday(weekday or defaults.weekday)
    if not send_time:
        send_time = defaults.time_
    at = send_time if isinstance(send_time, time) else parse_send_time(send_time)
    return Cadence(timezone=zone, weekday=day, send_time=at)


def validate(settings: Settings, data: SubscriberInput) -> ValidSubscriber:
    """Check every field of `data`; the first bad one raises a SubscriberError naming it."""
    return ValidSubscriber(
        email=normalise_email(data.email),
        name=clean_name(data.name or ""),
        cadence=resolve_cadence(settings, timezone=data.timezone, weekday=data.weekday, send_time=data.send_time),
    )


def find_subscriber(session: Session, email: str) -> Subscriber | None:
    """Return the subscriber with this address, or None."""
    try:
        address = normalise_email(email)
    except SubscriberError:
        return None
    return session.scalar(select(Subscriber).where(Subscriber.email == address))


def get_subscriber(session: Session, email: str) -> Subscriber:
    """Return the subscriber with this address; a SubscriberError if there is none."""
    subscriber = find_subscriber(session, normalise_email(email))
    if subscriber is None:
        raise SubscriberError(f"no subscriber {email.strip()}; `newsletter subscribers list` shows who exists")
    return subscriber


def get_subscriber_by_id(session: Session, subscriber_id: int) -> Subscriber:
    """Return the subscriber a signed link names; a SubscriberError if they were erased."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise SubscriberError(f"no subscriber with id {subscriber_id} (erased, or never existed)")
    return subscriber


def create_subscriber(
    session: Session,
    project: Project,
    valid: ValidSubscriber,
    *,
    status: SubscriberStatus,
    now: datetime,
    source: str,
    position: int = 0,
    signup_detail: str = "",
) -> Subscriber:
    """Insert a new subscriber in `status` and plan what they get first; the address must be new and not suppressed.

    `status` is one of pending (confirmation queued), active (next lesson planned), paused, unsubscribed or
    bounced (nothing planned; an imported suppression list stays suppressed). `signup_detail` is the
    "subscribed" event's detail (the consent evidence of a web sign-up).
    """
    if status not in ("unsubscribed", "bounced") and is_suppressed(session, project.settings, valid.email):
        raise SubscriberError(
            f"{valid.email} is on the suppression list (it bounced, complained or was erased); nothing was added. "
            "`newsletter suppressions remove` takes it off"
        )
    series = project.series
    position = min(position, len(series))
    subscriber = Subscriber(
        email=valid.email,
        name=valid.name,
        status="pending",
        position=position,
        last_lesson=series.lessons[position - 1].slug if position else None,
        source=source,
        created_at=now,
        updated_at=now,
        hard_bounces=0,
    )
    _apply_cadence(subscriber, valid.cadence)
    session.add(subscriber)
    session.flush()
    if status in ("unsubscribed", "bounced"):
        subscriber.status = status
        subscriber.unsubscribed_at = now
        record_event(session, subscriber, status, source=source, at=now, detail="added as suppressed")
        return subscriber
    record_event(session, subscriber, "subscribed", source=source, at=now, detail=signup_detail)
    if status == "pending":
        plan_confirmation(session, project, subscriber, now)
        return subscriber
    subscriber.confirmed_at = now
    record_event(session, subscriber, "confirmed", source=source, at=now, detail="confirmed by the operator")
    if status == "paused":
        subscriber.status, subscriber.paused_at = "paused", now
        record_event(session, subscriber, "paused", source=source, at=now)
    else:
        plan_next_lesson(session, project, subscriber, now=now)
    return subscriber


def add_subscriber(
    session: Session, project: Project, data: SubscriberInput, *, confirmed: bool, now: datetime, source: str = "cli"
) -> Subscriber:
    """Add a new subscriber: pending with a confirmation queued, or (confirmed) active with lesson 1 planned."""
    valid = validate(project.settings, data)
    existing = find_subscriber(session, valid.email)
    if existing is not None:
        raise SubscriberError(f"already subscribed: {valid.email} (status {existing.status}); nothing changed")
    try:
        with session.begin_nested():
            return create_subscriber(
                session, project, valid, status="active" if confirmed else "pending", now=now, source=source
            )
    except IntegrityError:
        raise SubscriberError(f"already subscribed: {valid.email} (added a moment ago); nothing changed") from None


def request_subscription(
    session: Session,
    project: Project,
    data: SubscriberInput,
    *,
    now: datetime,
    source: str = "web",
    ip: str = "",
    user_agent: str = "",
) -> Subscriber | None:
    """Handle the public form without revealing whether the address was known, and without mailing on demand.

    New → pending with a confirmation. Pending → a fresh confirmation, unless one was queued within
    CONFIRMATION_INTERVAL: however often the form names an address, it gets at most one email a day, and a
    request that sends nothing changes nothing (the email already sent describes what they confirm).
    Unsubscribed or bounced → nothing is sent and nothing changes: "never email me again" holds against
    anyone who types the address, so the way back is the Resubscribe button behind the unsubscribe link in
    their email (`resubscribe`), which proves the mailbox is theirs. Active, paused, completed → unchanged.
    An address on the suppression list (bounced, complained, erased) → nothing is stored or sent (None).
    `ip` and `user_agent` are kept as consent evidence.
    """
    valid = validate(project.settings, data)
    subscriber = find_subscriber(session, valid.email)
    if is_suppressed(session, project.settings, valid.email):
        return subscriber
    if subscriber is None:
        evidence = consent.signup_detail(ip=ip, user_agent=user_agent)
        try:
            with session.begin_nested():
                return create_subscriber(
                    session, project, valid, status="pending", now=now, source=source, signup_detail=evidence
                )
        except IntegrityError:
            # Another request inserted the same address in between: carry on as for a known address.
            subscriber = find_subscriber(session, valid.email)
            assert subscriber is not None
    if subscriber.status != "pending" or _confirmation_queued_after(session, subscriber, now - CONFIRMATION_INTERVAL):
        return subscriber
    # Nothing is ever sent before they confirm, so the newest form's name and schedule win.
    if valid.name:
        subscriber.name = valid.name
    _apply_cadence(subscriber, valid.cadence)
    subscriber.updated_at = now
    # plan_confirmation derives a fresh Message-ID from the number of "subscribed" events, so count this one.
    evidence = consent.signup_detail(ip=ip, user_agent=user_agent)
    record_event(session, subscriber, "subscribed", source=source, at=now, detail=evidence)
    plan_confirmation(session, project, subscriber, now)
    return subscriber


def _confirmation_queued_after(session: Session, subscriber: Subscriber, moment: datetime) -> bool:
    """Whether a confirmation was queued for them after `moment`: each one comes with a "subscribed" event."""
    last = session.scalar(
        select(func.max(Event.at)).where(Event.subscriber_id == subscriber.id, Event.kind == "subscribed")
    )
    return last is not None and last > moment


def resubscribe(
    session: Session, project: Project, subscriber: Subscriber, *, now: datetime, source: str = "web"
) -> Subscriber:
    """Take back an unsubscribe or a bounce through the subscriber's own signed link; nobody else changes.

    The link reached them at this address, which is all a confirmation email would prove, so none is sent:
    they continue with the lesson after the last one they received.
    """
    if subscriber.status not in SUPPRESSED_STATUSES:
        return subscriber
    detail = f"was {subscriber.status}"
    subscriber.unsubscribed_at, subscriber.hard_bounces, subscriber.updated_at = None, 0, now
    subscriber.confirmed_at = subscriber.confirmed_at or now
    record_event(session, subscriber, "resubscribed", source=source, at=now, detail=detail)
    plan_next_lesson(session, project, subscriber, now=now, after=now)
    return subscriber


def confirm(
    session: Session,
    project: Project,
    subscriber_id: int,
    *,
    now: datetime,
    source: str = "web",
    ip: str = "",
    user_agent: str = "",
) -> Subscriber:
    """Activate a pending subscriber and plan their next lesson; confirming twice changes nothing.

    `ip` and `user_agent` (of whoever pressed Confirm) are kept as consent evidence.
    """
    subscriber = get_subscriber_by_id(session, subscriber_id)
    if subscriber.status != "pending":
        return subscriber
    cancel_pending(session, subscriber)  # a confirmation still queued would only confuse them now
    subscriber.confirmed_at, subscriber.hard_bounces, subscriber.updated_at = now, 0, now
    evidence = consent.confirmation_detail(ip=ip, user_agent=user_agent)
    record_event(session, subscriber, "confirmed", source=source, at=now, detail=evidence)
    plan_next_lesson(session, project, subscriber, now=now, after=now)
    return subscriber


def pause(
    session: Session,
    project: Project,
    subscriber: Subscriber,
    *,
    now: datetime,
    until: datetime | None = None,
    source: str = "cli",
) -> Subscriber:
    """Stop the clock: withdraw the planned lesson; `until` resumes them automatically (planning.reconcile)."""
    if subscriber.status not in _CONFIRMED_STATUSES:
        raise SubscriberError(
            f"cannot pause {subscriber.email}: status is {subscriber.status}; only confirmed subscribers can pause"
        )
    if until is not None and until <= now:
        raise SubscriberError(f"pause until {until.isoformat()}: must be later than now ({now.isoformat()})")
    cancel_pending(session, subscriber)
    if subscriber.status != "paused":
        subscriber.paused_at = now
    subscriber.status, subscriber.pause_until, subscriber.updated_at = "paused", until, now
    detail = f"until {until.isoformat()}" if until else ""
    record_event(session, subscriber, "paused", source=source, at=now, detail=detail)
    return subscriber


def resume(
    session: Session, project: Project, subscriber: Subscriber, *, now: datetime, source: str = "cli"
) -> Subscriber:
    """Restart the clock: the next lesson at the first slot after now that keeps the minimum gap."""
    if subscriber.status in ("active", "completed"):
        return subscriber
    if subscriber.status != "paused":
        raise SubscriberError(f"cannot resume {subscriber.email}: status is {subscriber.status}, not paused")
    subscriber.paused_at = subscriber.pause_until = None
    subscriber.updated_at = now
    record_event(session, subscriber, "resumed", source=source, at=now)
    replan(session, project, subscriber, now)
    return subscriber


def change_schedule(
    session: Session,
    project: Project,
    subscriber: Subscriber,
    *,
    now: datetime,
    weekday: str | int | None = None,
    send_time: str | time | None = None,
    timezone: str | None = None,
    source: str = "cli",
) -> Subscriber:
    """Change weekday, time or zone; an active subscriber's next lesson moves at once."""
    cadence = resolve_cadence(
        project.settings,
        timezone=timezone or subscriber.timezone,
        weekday=subscriber.weekday if weekday is None or weekday == "" else weekday,
        send_time=send_time or subscriber.send_time,
    )
    before = describe(subscriber.weekday, subscriber.send_time, subscriber.timezone)
    after = describe(cadence.weekday, cadence.send_time, cadence.timezone)
    if before == after:
        return subscriber
    _apply_cadence(subscriber, cadence)
    subscriber.updated_at = now
    record_event(session, subscriber, "changed", source=source, at=now, detail=f"{before} → {after}")
    if subscriber.status == "active":
        replan(session, project, subscriber, now)
    return subscriber


def rename(session: Session, subscriber: Subscriber, name: str, *, now: datetime, source: str = "cli") -> Subscriber:
    """Change the display name used in greetings and the To header."""
    cleaned = clean_name(name)
    if cleaned != subscriber.name:
        subscriber.name, subscriber.updated_at = cleaned, now
        record_event(session, subscriber, "changed", source=source, at=now, detail="name")
    return subscriber


def unsubscribe(
    session: Session, project: Project, subscriber: Subscriber, *, now: datetime, source: str = "cli"
) -> Subscriber:
    """Stop all mail at once; unsubscribing twice changes nothing."""
    if subscriber.status == "unsubscribed":
        return subscriber
    cancel_pending(session, subscriber)
    subscriber.status, subscriber.unsubscribed_at, subscriber.updated_at = "unsubscribed", now, now
    subscriber.paused_at = subscriber.pause_until = None
    record_event(session, subscriber, "unsubscribed", source=source, at=now)
    return subscriber


def unbounce(
    session: Session, project: Project, subscriber: Subscriber, *, now: datetime, source: str = "cli"
) -> Subscriber:
    """Take back a subscriber suppressed as bounced (a relay fault, a mailbox that works again).

    The count of hard bounces starts again; a confirmed reader's next lesson is planned (their failed
    lessons stay failed: `newsletter retry` resends them), someone never confirmed gets a new confirmation.
    """
    if subscriber.status != "bounced":
        raise SubscriberError(f"{subscriber.email} is {subscriber.status}, not bounced; nothing changed")
    subscriber.hard_bounces, subscriber.unsubscribed_at, subscriber.updated_at = 0, None, now
    record_event(session, subscriber, "unbounced", source=source, at=now)
    if subscriber.confirmed_at is None:
        subscriber.status = "pending"
        plan_confirmation(session, project, subscriber, now)
    else:
        replan(session, project, subscriber, now)
    return subscriber


def bounced_since(session: Session, since: datetime | None = None) -> list[Subscriber]:
    """Subscribers suppressed as bounced, or only those whose latest bounce came at or after `since`."""
    query = select(Subscriber).where(Subscriber.status == "bounced").order_by(Subscriber.id)
    if since is not None:
        bounced_at = select(Event.subscriber_id).where(Event.kind == "bounced", Event.at >= since)
        query = query.where(Subscriber.id.in_(bounced_at))
    return list(session.scalars(query))


def erase(session: Session, project: Project, subscriber: Subscriber, *, now: datetime, source: str = "cli") -> None:
    """Delete the subscriber, their deliveries and event details; one anonymous "erased" event remains.

    The address stays on the suppression list (as a keyed hash), so no later import brings them back.
    """
    forget_subscriber(session, project.settings, subscriber, now=now)
    ledger.forget(session.connection(), subscriber.id)
    # Their earlier events stay as anonymous counts; details can hold a zone or a date, so they go too.
    session.execute(update(Event).where(Event.subscriber_id == subscriber.id).values(subscriber_id=None, detail=""))
    record_event(session, None, "erased", source=source, at=now)
    session.delete(subscriber)
    session.flush()


def next_lesson_due(session: Session, subscriber: Subscriber) -> Delivery | None:
    """Return the lesson row they wait on (pending, or held), for pages that say "next lesson on …"."""
    return session.scalar(
        select(Delivery)
        .where(
            Delivery.subscriber_id == subscriber.id,
            Delivery.status.in_(ledger.WAITING),
            Delivery.lesson != CONFIRMATION,
        )
        .order_by(Delivery.due_at)
        .limit(1)
        .execution_options(populate_existing=True)
    )


def list_subscribers(session: Session, status: str | None = None) -> Iterator[Subscriber]:
    """Yield subscribers in the order they were added (optionally one status only), read in batches."""
    query = select(Subscriber).order_by(Subscriber.id).execution_options(yield_per=LIST_BATCH)
    if status is not None:
        query = query.where(Subscriber.status == status)
    yield from session.scalars(query)


def describe(weekday: int, send_time: time, timezone: str) -> str:
    """Say a cadence as people read it: "Friday 09:00 Asia/Kathmandu"."""
    return f"{WEEKDAY_NAMES[weekday]} {send_time:%H:%M} {timezone}"


def record_event(
    session: Session, subscriber: Subscriber | None, kind: str, *, source: str, at: datetime, detail: str = ""
) -> None:
    """Append an event for this subscriber (their pending changes are written first)."""
    session.flush()
    subscriber_id, lesson = (subscriber.id, subscriber.last_lesson) if subscriber else (None, None)
    events.record_event(session.connection(), subscriber_id, kind, source=source, at=at, lesson=lesson, detail=detail)


def plan_confirmation(session: Session, project: Project, subscriber: Subscriber, now: datetime) -> None:
    session.flush()
    ledger.plan_confirmation(session.connection(), project.settings, project.series, subscriber.id, now)


def plan_next_lesson(
    session: Session, project: Project, subscriber: Subscriber, *, now: datetime, after: datetime | None = None
) -> None:
    """Plan the reader's next lesson by the one rule; they are completed when the course has no more."""
    session.flush()
    connection = session.connection()
    reader = ledger.load_readers(connection, [subscriber.id])[subscriber.id]
    planned = ledger.plan_next(
        connection, project.settings, project.series, project.gates, reader, now=now, after=after
    )
    subscriber.status = "active" if planned is not None else "completed"


def replan(session: Session, project: Project, subscriber: Subscriber, now: datetime) -> None:
    """Move the next lesson after a change of weekday, time or zone, or a resume."""
    session.flush()
    ledger.withdraw_waiting(session.connection(), subscriber.id)
    plan_next_lesson(session, project, subscriber, now=now, after=now)


def cancel_pending(session: Session, subscriber: Subscriber) -> None:
    session.flush()
    ledger.cancel_waiting(session.connection(), subscriber.id)


def _apply_cadence(subscriber: Subscriber, cadence: Cadence) -> None:
    subscriber.timezone, subscriber.weekday, subscriber.send_time = cadence.timezone, cadence.weekday, cadence.send_time

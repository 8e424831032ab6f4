"""A newsletter project opened once: settings, the series, the database, the renderer, and the links.

The CLI, the web app and the dispatcher all start from a `Project`, so each part is loaded once and lazily:
`newsletter split` never opens the database, `newsletter lessons` never connects to SMTP.
"""

from __future__ import annotations

import dataclasses
import email
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from functools import cached_property
from typing import TYPE_CHECKING

from newsletter import tokens
from newsletter.config import Settings, load_settings
from newsletter.db import Database, connect
from newsletter.lessons import Series, load_series
from newsletter.models import CONFIRMATION, Subscriber
from newsletter.planning import describe_cadence
from newsletter.schedule import WEEKDAY_NAMES, parse_weekday

if TYPE_CHECKING:
    from newsletter.ledger.waiting import Gates
    from newsletter.render import Recipient, RenderedEmail, Renderer
    from newsletter.transports import Envelope

# The renderer and the email composer (Jinja2, MJML, DKIM) are imported by the methods that use them, so a
# command that only reads the ledger (`status`, `deliveries`, `plan`) does not load them.

# The public routes every email links to; `web/public.py` serves exactly these.
CONFIRM_PATH = "/confirm/"
UNSUBSCRIBE_PATH = "/u/"
PREFERENCES_PATH = "/preferences/"
SAMPLE_NAME = "Alex Runner"
SAMPLE_EMAIL = "reader@example.com"
SAMPLE_ID = 0


@dataclass(frozen=True)
class Links:
    confirm: str
    unsubscribe: str
    preferences: str


class Project:
    """Everything a command needs, opened on first use."""

    def __init__(self, settings: Settings, *, lenient: bool = False) -> None:
        self.settings = settings
        # Lenient (the daemon): a broken lesson file is kept in its place, gated, and the rest goes on.
        self.lenient = lenient

    @classmethod
    def open(cls, config_path: str | None = None) -> Project:
        return cls(load_settings(config_path))

    def as_lenient(self) -> Project:
        """This project with broken lesson files held rather than fatal; it shares the open database."""
        if self.lenient:
            return self
        copy = Project(self.settings, lenient=True)
        copy.__dict__["db"] = self.db  # one pool: closing either project closes it
        return copy

    def close(self) -> None:
        """Release the database connections, if the database was opened."""
        if "db" in self.__dict__:
            self.db.dispose()

    @cached_property
    def series(self) -> Series:
        return load_series(self.settings.newsletter.lessons, lenient=self.lenient)

    @cached_property
    def db(self) -> Database:
        return connect(self.settings, course_slugs=self.course_slugs)

    def course_slugs(self) -> list[str]:
        """The lessons' slugs in week order, read leniently (a migration needs them even if a lesson is broken)."""
        return [lesson.slug for lesson in load_series(self.settings.newsletter.lessons, lenient=True)]

    @cached_property
    def gates(self) -> Gates:
        """The lessons that may not go out now, and why: drafts, broken files, emails failing the checklist."""
        from newsletter.checklist.course import lesson_gates

        return lesson_gates(self)

    @cached_property
    def renderer(self) -> Renderer:
        from newsletter.render import Renderer

        return Renderer(self.settings, self.series)

    @cached_property
    def list_id(self) -> str:
        from newsletter.message import list_id

        return list_id(self.settings, self.series.title, self.series.slug)

    def links(self, subscriber_id: int, now: datetime | None = None, *, confirm: bool = True) -> Links:
        """Signed links for one subscriber (confirm, one-click unsubscribe, preferences); lessons need no confirm."""
        base = self.settings.newsletter.base_url.rstrip("/")
        key = self.settings.secret_key
        return Links(
            confirm=base + CONFIRM_PATH + tokens.issue(key, "confirm", subscriber_id, now) if confirm else "",
            unsubscribe=base + UNSUBSCRIBE_PATH + tokens.issue(key, "unsubscribe", subscriber_id, now),
            preferences=base + PREFERENCES_PATH + tokens.issue(key, "preferences", subscriber_id, now),
        )

    def recipient(self, subscriber: Subscriber, now: datetime | None = None, *, confirm: bool = True) -> Recipient:
        from newsletter.render import Recipient

        links = self.links(subscriber.id, now, confirm=confirm)
        return Recipient(
            email=subscriber.email,
            name=subscriber.name,
            schedule=describe_cadence(subscriber),
            unsubscribe_url=links.unsubscribe,
            preferences_url=links.preferences,
            confirm_url=links.confirm,
        )

    def sample_subscriber(self, email: str = SAMPLE_EMAIL, name: str = SAMPLE_NAME) -> Subscriber:
        """An unsaved subscriber with the project's default schedule, for previews."""
        schedule = self.settings.schedule
        return Subscriber(
            id=SAMPLE_ID,
            email=email,
            name=name,
            timezone=schedule.timezone,
            weekday=parse_weekday(schedule.weekday),
            send_time=schedule.time_,
            status="active",
            position=0,
        )

    def render(self, subscriber: Subscriber, lesson: str, now: datetime | None = None) -> RenderedEmail:
        """The rendered lesson with that slug, or the confirmation email for `CONFIRMATION`."""
        return self._render(self.recipient(subscriber, now), lesson)

    def _render(self, recipient: Recipient, lesson: str) -> RenderedEmail:
        if lesson == CONFIRMATION:
            return self.renderer.confirmation(recipient)
        return self.renderer.lesson(self.series.lesson(self.series.identity(lesson) or lesson), recipient)

    def envelope(
        self,
        subscriber: Subscriber,
        lesson: str,
        *,
        message_id: str | None = None,
        delivery_id: int | None = None,
        now: datetime | None = None,
        subject_prefix: str = "",
    ) -> Envelope:
        """The email for one subscriber and one lesson (or the confirmation) as the wire bytes, signed."""
        from newsletter.envelope import wire_envelope
        from newsletter.feedback.mailto import unsubscribe_mailto
        from newsletter.message import compose, lesson_message_id, message_id_for

        now = now or datetime.now(UTC)
        # Its signed links serve the body and the headers alike; only the confirmation email links to confirm.
        recipient = self.recipient(subscriber, now, confirm=lesson == CONFIRMATION)
        if lesson == CONFIRMATION:
            # Until the address's owner confirms, the name is a stranger's text: it goes nowhere in the email,
            # so the sign-up form cannot carry a message of anyone's choosing to any address.
            recipient = dataclasses.replace(recipient, name="")
        message_id = message_id or (
            message_id_for(self.settings, self.series.slug, subscriber.id, "confirm")
            if lesson == CONFIRMATION
            else lesson_message_id(self.settings, self.series.slug, subscriber.id, lesson)
        )
        campaign = self.series.identity(lesson) or lesson  # a replaced lesson's row counts as its successor
        data = compose(
            self.settings,
            self._render(recipient, lesson),
            to_email=subscriber.email,
            to_name=recipient.name,
            message_id=message_id,
            unsubscribe_url=recipient.unsubscribe_url,
            unsubscribe_mailto=unsubscribe_mailto(self.settings, subscriber.id),
            list_id_value=self.list_id,
            campaign=campaign,
            # Precedence: bulk on lessons, the one header older auto-responders heed: vacation(1) sends no
            # out-of-office reply to it (BSD and NetBSD manuals), and sendmail's precedence classes queue it
            # behind personal mail and return only its headers in a bounce, which is all our bounce
            # matching reads. Not on the confirmation: one person asked for it a moment ago and is
            # waiting, so it must not wait behind personal mail, and Auto-Submitted already keeps RFC 3834
            # responders from answering it.
            bulk=lesson != CONFIRMATION,
            delivery_id=delivery_id,
            date=now,
            subject_prefix=subject_prefix,
        )
        return wire_envelope(
            self.settings, data, to_email=subscriber.email, message_id=message_id, delivery_id=delivery_id
        )

    def message(self, subscriber: Subscriber, lesson: str, *, now: datetime | None = None) -> EmailMessage:
        """The same email parsed, for previews and header views."""
        from newsletter.message import WIRE_POLICY

        parsed = email.message_from_bytes(self.envelope(subscriber, lesson, now=now).data, policy=WIRE_POLICY)
        assert isinstance(parsed, EmailMessage)
        return parsed


def weekday_name(weekday: int) -> str:
    return WEEKDAY_NAMES[weekday]

"""The database tables: subscribers, the delivery ledger, and an append-only event trail.

Models hold data only; what happens to them lives in `subscribers.py`, `planning.py` and `dispatch/`.
Every timestamp is stored as UTC and comes back timezone-aware, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from datetime import time as Time
from typing import Any, Literal, get_args

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SubscriberStatus = Literal["pending", "active", "paused", "completed", "unsubscribed", "bounced"]
DeliveryStatus = Literal["pending", "sending", "sent", "failed", "held", "cancelled"]
# Why a delivery is held: the lesson is a draft, fails the email checklist or its file is broken (all
# three lift by themselves once the lesson is fixed), or this one message could not be made or carried.
HoldReason = Literal["draft", "checklist", "broken", "render", "relay", "error"]
SUBSCRIBER_STATUSES: tuple[SubscriberStatus, ...] = get_args(SubscriberStatus)
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = get_args(DeliveryStatus)
HOLD_REASONS: tuple[HoldReason, ...] = get_args(HoldReason)
GATE_HOLDS: tuple[HoldReason, ...] = ("draft", "checklist", "broken")
EVENT_KINDS = (
    "subscribed",
    "confirmed",
    "paused",
    "resumed",
    "changed",
    "unsubscribed",
    "resubscribed",
    "bounced",
    "unbounced",
    "erased",
)
CONFIRMATION = "confirmation"  # the double opt-in email travels the ledger as this lesson (a reserved slug)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; stored naive in UTC so SQLite and PostgreSQL agree."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; pass an aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value  # raw SQL on SQLite gives text
        assert isinstance(moment, datetime)
        return moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class Subscriber(Base):
    __tablename__ = "subscribers"
    # AUTOINCREMENT on SQLite: an erased subscriber's id is never handed to someone else, since links in
    # old emails (unsubscribe tokens never expire) and Message-IDs are derived from it.
    __table_args__ = (
        CheckConstraint(_one_of("status", SUBSCRIBER_STATUSES), name="status"),
        # Every send run asks for the lowest position among completed readers (lessons appended later).
        Index("ix_subscribers_status_position", "status", "position"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    timezone: Mapped[str] = mapped_column(String(64))
    weekday: Mapped[int] = mapped_column(Integer)  # 0 = Monday
    send_time: Mapped[Time]
    status: Mapped[SubscriberStatus] = mapped_column(String(16), default="pending")
    # Progress: the slug of the last lesson received (in course order: a catch-up lesson never moves it
    # back), and where that lesson stands in the current order (1-based; 0 before the first lesson). The
    # slug is the truth; the number is kept in step with the course whenever the course changes.
    last_lesson: Mapped[str | None] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer, default=0)
    hard_bounces: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(32), default="cli")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pause_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Delivery(Base):
    """One (subscriber, lesson): the outbox row before sending and the ledger entry after."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "lesson"),
        # Ends with id: rows due at the same instant come in id order, read off the index (migration 0008).
        Index("ix_deliveries_status_due_at", "status", "due_at", "id"),
        CheckConstraint(_one_of("status", DELIVERY_STATUSES), name="status"),
        CheckConstraint(f"hold IS NULL OR {_one_of('hold', HOLD_REASONS)}", name="hold"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    lesson: Mapped[str] = mapped_column(String(100))  # the lesson's slug, or CONFIRMATION
    slot_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the calendar slot; the schedule counts from it
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)  # when it may next be tried (slot, or a retry)
    status: Mapped[DeliveryStatus] = mapped_column(String(16), default="pending")
    hold: Mapped[HoldReason | None] = mapped_column(String(16))  # why it is held
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64))  # while sending; once sent, who sent it
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[str | None] = mapped_column(String(255))  # fixed when first put on the wire
    smtp_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    smtp_reply: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Event(Base):
    """An append-only audit trail; erasing a subscriber keeps their events without personal data."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_kind_at", "kind", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(32), default="cli")
    lesson: Mapped[str | None] = mapped_column(String(100))  # the subscriber's last lesson when it happened
    detail: Mapped[str] = mapped_column(Text, default="")


class CourseState(Base):
    """The course the ledger was last planned for: when the lessons on disk differ, it is planned anew."""

    __tablename__ = "course_state"

    series: Mapped[str] = mapped_column(String(100), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    lessons: Mapped[str] = mapped_column(Text)  # JSON: the order as it was, for the impact preview
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DeliveryCount(Base):
    """Part of how many deliveries a (lesson, status) has, kept by triggers (migration 0007,
    `newsletter/counts.py`): the count is the sum over the key's shards."""

    __tablename__ = "delivery_counts"

    lesson: Mapped[str] = mapped_column(String(100), primary_key=True)
    status: Mapped[str] = mapped_column(String(100), primary_key=True)
    shard: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # 0, or a PostgreSQL transaction's id
    n: Mapped[int] = mapped_column(BigInteger)


class SubscriberCount(Base):
    """Part of how many subscribers a status has, kept like `DeliveryCount`."""

    __tablename__ = "subscriber_counts"

    status: Mapped[str] = mapped_column(String(100), primary_key=True)
    shard: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


# --- the deliverability loop (newsletter/feedback/) ----------------------------------------------------------------

FEEDBACK_KINDS = ("hard_bounce", "soft_bounce", "complaint")
SUPPRESSION_REASONS = ("hard_bounce", "soft_bounces", "complaint", "erased", "operator")

# A bounce or complaint names our Message-ID; finding its delivery must not scan the ledger.
Index("ix_deliveries_message_id", Delivery.__table__.c.message_id)
# `newsletter status`: the funnel counts by lesson and status from this index alone, and the latest errors
# are the last entries of a partial index that holds only the rows with an error (migration 0005).
Index("ix_deliveries_lesson_status_due_at", Delivery.lesson, Delivery.status, Delivery.due_at)
Index(
    "ix_deliveries_errors_updated_at",
    Delivery.updated_at,
    Delivery.id,
    sqlite_where=Delivery.error.is_not(None),
    postgresql_where=Delivery.error.is_not(None),
)


class Suppression(Base):
    """An address never to be mailed again, kept only as a keyed hash so that erasing a person keeps it."""

    __tablename__ = "suppressions"
    __table_args__ = (CheckConstraint(_one_of("reason", SUPPRESSION_REASONS), name="reason"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[str] = mapped_column(String(16))  # which secret key made the hash (a changed key cannot match it)
    reason: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Feedback(Base):
    """One bounce or complaint recorded against a delivery; `external_id` makes every source idempotent."""

    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint(_one_of("kind", FEEDBACK_KINDS), name="kind"),
        Index("ix_feedback_subscriber_id_kind", "subscriber_id", "kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    source: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"), index=True)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default="")  # the enhanced status code, such as 5.1.1
    diagnostic: Mapped[str] = mapped_column(Text, default="")
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookNonce(Base):
    """A signature nonce a provider used once (Mailgun signs a token, not the body): a second use is a replay."""

    __tablename__ = "webhook_nonces"
    __table_args__ = (UniqueConstraint("provider", "nonce"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    nonce: Mapped[str] = mapped_column(String(255))
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


# --- pacing shared by every sender (newsletter/ledger/pacing.py) ---------------------------------------------------


class DomainPause(Base):
    """A recipient domain that asked us to slow down (421, 451, 4.7.x): its rows wait until `until`."""

    __tablename__ = "domain_pauses"

    domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    strikes: Mapped[int] = mapped_column(Integer, default=1)  # pauses in a row; each doubles the next one
    reply: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RateSlot(Base):
    """The next free send slot of a rate limit shared by every sender on every machine (PostgreSQL)."""

    __tablename__ = "rate_slots"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    next_free: Mapped[float] = mapped_column(Float)  # seconds since the epoch by the database's clock

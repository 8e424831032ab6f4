"""Upgrading a ledger made by the week-keyed schema (revision 0002) keeps its whole history, on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, time
from pathlib import Path

from counting import counts_disagreement
from sqlalchemy import MetaData, create_engine, insert, select, text

from newsletter.db import HEAD_REVISION, current_revision, make_engine, upgrade
from newsletter.models import Delivery, Event, Subscriber
from newsletter.transports import read_outbox

SENT_AT = datetime(2026, 3, 2, 7, 0)  # naive UTC, as the schema stores it
DUE = datetime(2026, 3, 16, 7, 0)
SUBSCRIBERS = [  # id, email, status, position
    (1, "ann@example.com", "active", 2),  # two lessons from her ledger
    (2, "bob@example.com", "active", 3),  # a renumbering once gave him "knees" twice
    (3, "cy@example.com", "active", 1),  # imported at week 1: no ledger row names it, the course does
    (4, "dee@example.com", "pending", 0),
]
DELIVERIES = [  # subscriber, week, slug, status
    (1, 0, "confirmation", "sent"),
    (1, 1, "muscle", "sent"),
    (1, 2, "knees", "sent"),
    (1, 3, "brain", "pending"),
    (2, 1, "muscle", "sent"),
    (2, 2, "knees", "sent"),
    (2, 3, "knees", "sent"),
    (2, 4, "mood", "pending"),
    (3, 2, "knees", "pending"),
    (4, 0, "confirmation", "pending"),
]
EVENTS = [(1, "sent", 1), (3, "imported", 1), (2, "sent", 3), (4, "subscribed", None)]  # subscriber, kind, week


def made_by_the_old_schema(url: str) -> None:
    engine = make_engine(url)
    try:
        upgrade(engine, "0002")
        old = MetaData()
        old.reflect(engine)  # the tables as revision 0002 made them, with their own column types
        subscribers, deliveries, events = (old.tables[name] for name in ("subscribers", "deliveries", "events"))
        with engine.begin() as connection:
            connection.execute(
                insert(subscribers),
                [
                    {
                        "id": number,
                        "email": email,
                        "name": "",
                        "timezone": "UTC",
                        "weekday": 0,
                        "send_time": time(7),
                        "status": status,
                        "position": position,
                        "hard_bounces": 0,
                        "source": "cli",
                        "created_at": SENT_AT,
                        "confirmed_at": SENT_AT,
                        "updated_at": SENT_AT,
                    }
                    for number, email, status, position in SUBSCRIBERS
                ],
            )
            connection.execute(
                insert(deliveries),
                [
                    {
                        "id": number,
                        "subscriber_id": subscriber,
                        "week": week,
                        "slug": slug,
                        "slot_at": SENT_AT if status == "sent" else DUE,
                        "due_at": SENT_AT if status == "sent" else DUE,
                        "status": status,
                        "attempts": int(status == "sent"),
                        "message_id": f"<old-{number}@example.com>" if status == "sent" else None,
                        "sent_at": SENT_AT if status == "sent" else None,
                        "created_at": SENT_AT,
                        "updated_at": SENT_AT,
                    }
                    for number, (subscriber, week, slug, status) in enumerate(DELIVERIES, start=1)
                ],
            )
            connection.execute(
                insert(events),
                [
                    {
                        "subscriber_id": subscriber,
                        "kind": kind,
                        "at": SENT_AT,
                        "source": "cli",
                        "week": week,
                        "detail": "",
                    }
                    for subscriber, kind, week in EVENTS
                ],
            )
            if connection.dialect.name == "postgresql":  # explicit ids: move the sequences past them
                for table in ("subscribers", "deliveries"):
                    connection.execute(text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))"))
    finally:
        engine.dispose()


def newsletter(project_dir: Path, env: dict[str, str], url: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "newsletter", "--config", str(project_dir / "config.toml"), *args]
    environment = {**os.environ, **env, "NEWSLETTER_DATABASE_URL": url}
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120, check=False)


def test_db_upgrade_from_the_week_keyed_schema_keeps_every_row_and_each_readers_place(
    project_dir: Path, env: dict[str, str], database_url: str
) -> None:
    made_by_the_old_schema(database_url)

    upgraded = newsletter(project_dir, env, database_url, "db", "upgrade")

    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"database upgraded from revision 0002 to {HEAD_REVISION}"
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        assert current_revision(engine) == HEAD_REVISION
        with engine.connect() as connection:
            ledger = (Delivery.id, Delivery.subscriber_id, Delivery.lesson, Delivery.status, Delivery.message_id)
            rows = connection.execute(select(*ledger, Delivery.sent_at).order_by(Delivery.id)).all()
            places = dict(connection.execute(select(Subscriber.email, Subscriber.last_lesson)).all())
            trail = (Event.subscriber_id, Event.kind, Event.lesson)
            events = connection.execute(select(*trail).order_by(Event.id)).all()
        # The counts the database keeps start from the rows the upgrade found.
        assert counts_disagreement(engine) == ""
    finally:
        engine.dispose()
    # Every row kept, with its status, Message-ID and time; the second "knees" keeps its history by name.
    lessons = [slug if (subscriber, week) != (2, 3) else "knees~w3" for subscriber, week, slug, _ in DELIVERIES]
    assert [(row.id, row.subscriber_id, row.lesson, row.status) for row in rows] == [
        (number, subscriber, lesson, status)
        for number, ((subscriber, _, _, status), lesson) in enumerate(zip(DELIVERIES, lessons, strict=True), start=1)
    ]
    assert all((row.message_id == f"<old-{row.id}@example.com>") == (row.status == "sent") for row in rows), (
        "a sent row lost its Message-ID"
    )
    assert {row.sent_at for row in rows if row.status == "sent"} == {SENT_AT.replace(tzinfo=UTC)}
    # Positions became the last lesson received: from the ledger, else from the course on disk.
    assert places == {
        "ann@example.com": "knees",
        "bob@example.com": "knees~w3",
        "cy@example.com": "muscle",
        "dee@example.com": None,
    }
    assert [tuple(event) for event in events] == [
        (1, "sent", "muscle"),
        (3, "imported", "muscle"),
        (2, "sent", "knees~w3"),
        (4, "subscribed", None),
    ]

    # The upgraded ledger sends on: everyone's waiting row goes out, nobody gets a lesson twice.
    sent = newsletter(project_dir, env, database_url, "send", "--now", "2026-03-16T07:00:00+00:00", "--json")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["sent"] == 4  # brain, mood, knees and the confirmation: the waiting rows
    outbox = read_outbox(project_dir / "outbox")
    assert sorted(message.to for message in outbox) == [email for _, email, _, _ in SUBSCRIBERS]
    assert not {message.message_id for message in outbox} & {f"<old-{n}@example.com>" for n in range(1, 11)}

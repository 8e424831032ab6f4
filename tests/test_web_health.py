"""`/healthz` says what is wrong in words an operator can act on, and never where the database or relay is."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import reset_postgres
from sqlalchemy import make_url
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.testclient import TestClient
from tcp_relay import TcpRelay

from newsletter.config import load_settings
from newsletter.metrics import ProcessMetrics
from newsletter.project import Project
from newsletter.web.health import fault_class, health_routes, without_addresses


def healthz(project: Project, metrics: ProcessMetrics) -> tuple[int, str, dict[str, object]]:
    with TestClient(Starlette(routes=health_routes(project, metrics)), base_url="http://127.0.0.1") as client:
        response = client.get("/healthz")
    return response.status_code, response.text, response.json()


@pytest.mark.postgres
def test_a_database_that_went_away_is_named_by_its_fault_not_its_address(
    project_dir: Path, env: dict[str, str], postgres_server_url: str
) -> None:
    reset_postgres(postgres_server_url)
    server = make_url(postgres_server_url)
    with TcpRelay(server.host or "127.0.0.1", server.port or 5432) as relay:
        through = server.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
        project = Project(load_settings(project_dir / "config.toml", env={**env, "NEWSLETTER_DATABASE_URL": through}))
        metrics = ProcessMetrics(tick_seconds=None)
        assert healthz(project, metrics)[0] == 200
        relay.refuse()
        status, text, body = healthz(project, metrics)
    project.db.dispose()
    assert status == 503 and body["database_reachable"] is False
    assert body["problems"] == ["the database does not answer (connection refused)"]
    assert str(relay.port) not in text and "127.0.0.1" not in text and "newsletter_test" not in text


def test_a_failed_tick_is_reported_without_the_hosts_and_ports_in_its_error(project: Project) -> None:
    metrics = ProcessMetrics(tick_seconds=30)
    metrics.record_tick(
        0.2,
        '(psycopg.OperationalError) connection failed: connection to server at "10.1.2.3", port 5433 failed: '
        "Connection refused; then smtp.relay.example:587 and [2001:db8::7]:25 did not answer",
    )
    status, text, body = healthz(project, metrics)
    assert status == 503 and body["problems"] == [
        "the last tick failed: (psycopg.OperationalError) connection failed: connection to …, … failed: "
        "Connection refused; then … and … did not answer"
    ]
    for place in ("10.1.2.3", "5433", "smtp.relay.example", "587", "2001:db8"):
        assert place not in text


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            'connection to server at "db.internal" (10.0.0.5), port 5432 failed: Connection refused',
            "connection refused",
        ),
        ("database is locked", "locked by another process"),
        ("attempt to write a readonly database", "read-only"),
        ("database or disk is full", "disk full"),
        ('FATAL:  password authentication failed for user "newsletter"', "login refused"),
        ("the database system is shutting down", "restarting"),
        ("something nobody foresaw at 10.0.0.5", "OperationalError"),
    ],
)
def test_each_driver_message_becomes_a_class_of_fault(message: str, reason: str) -> None:
    error = OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))
    assert fault_class(error) == reason


def test_addresses_are_taken_out_and_times_are_left_alone() -> None:
    assert without_addresses("localhost:25 and 192.0.2.1 at 2026-03-02T07:00:00Z") == "… and … at 2026-03-02T07:00:00Z"

"""The web app in real headless Chromium: a reader's whole journey, and the studio's frame toggles.

The app runs under a real uvicorn server on a free 127.0.0.1 port. Screenshots of the studio at desktop and
mobile widths are written to the test's temporary folder for people to look at.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, expect
from sqlalchemy import select

from newsletter.dispatch import send_due
from newsletter.models import Delivery, Subscriber
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber
from newsletter.transports import OutboxTransport
from newsletter.web import create_app
from newsletter.web.serving import server_config

pytestmark = pytest.mark.browser


@contextlib.contextmanager
def serving(project: Project, *, live_reload: bool = False) -> Iterator[str]:
    """The app under uvicorn in a thread, on a port the system picked."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    app = create_app(project, host="127.0.0.1", live_reload=live_reload)
    server = uvicorn.Server(
        server_config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start within 10 seconds"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    listener.close()


@pytest.fixture
def base_url(project: Project) -> Iterator[str]:
    with serving(project) as url:
        yield url


def reader(project: Project, email: str = "ann@example.com") -> Subscriber:
    with project.db.session() as session:
        found = session.scalar(select(Subscriber).where(Subscriber.email == email))
        assert found is not None, f"{email} is not in the database"
        return found


def pending_lessons(project: Project, subscriber_id: int) -> list[str]:
    with project.db.session() as session:
        query = select(Delivery.lesson).where(Delivery.subscriber_id == subscriber_id, Delivery.status == "pending")
        return list(session.scalars(query))


def test_a_reader_subscribes_confirms_pauses_and_unsubscribes(
    chromium: Browser, base_url: str, project: Project, tmp_path: Path
) -> None:
    context = chromium.new_context(base_url=base_url, timezone_id="Australia/Adelaide", locale="en-GB")
    page = context.new_page()

    page.goto("/subscribe")
    expect(page.locator("#timezone")).to_have_value("Australia/Adelaide")  # from the browser, visible and editable
    expect(page.locator("#zone-hint")).to_contain_text("Your browser says you are in Australia/Adelaide")
    page.fill("#email", "Ann@Example.com")
    page.fill("#name", "Ann")
    page.select_option("#weekday", "Thursday")
    page.fill("#time", "08:15")
    page.screenshot(path=tmp_path / "subscribe.png", full_page=True)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Check your inbox")
    signed_up = reader(project)
    assert signed_up.status == "pending" and signed_up.timezone == "Australia/Adelaide"
    assert (signed_up.weekday, f"{signed_up.send_time:%H:%M}") == (3, "08:15")
    assert pending_lessons(project, signed_up.id) == ["confirmation"]

    summary = send_due(project, OutboxTransport(project.settings.delivery.outbox), now=datetime.now(UTC))
    assert summary.sent == 1
    page.goto("/outbox")
    page.get_by_role("link", name="Confirm your subscription").first.click()
    expect(page.locator("h1")).to_contain_text("Confirm your subscription")
    page.locator(".links a[href^='/confirm/']").click()
    expect(page.locator("h1")).to_have_text("Confirm your subscription")  # opening the link confirms nothing
    page.screenshot(path=tmp_path / "confirm.png", full_page=True)
    assert reader(project).status == "pending"
    confirm_url = page.url
    page.get_by_role("button", name="Confirm my subscription").click()
    expect(page.locator("h1")).to_have_text("You are in, Ann!")
    assert page.url == confirm_url  # answered in place
    expect(page.locator(".next")).to_contain_text("(Australia/Adelaide)")
    expect(page.locator(".next")).to_contain_text("Thursday")
    page.screenshot(path=tmp_path / "confirmed.png", full_page=True)
    confirmed = reader(project)
    assert confirmed.status == "active" and pending_lessons(project, confirmed.id) == ["muscle"]

    page.get_by_role("link", name="Change your day or pause").click()
    expect(page.locator("#status")).to_have_text("Receiving lessons")
    page.select_option("#weeks", "2")
    page.get_by_role("button", name="Pause lessons").click()
    expect(page.locator(".notice")).to_contain_text("Paused until")
    page.screenshot(path=tmp_path / "preferences-paused.png", full_page=True)
    paused = reader(project)
    assert paused.status == "paused" and paused.pause_until is not None
    assert pending_lessons(project, paused.id) == []

    page.locator(".actions a", has_text="Unsubscribe").click()
    expect(page.get_by_role("button", name="Unsubscribe")).to_be_visible()
    assert reader(project).status == "paused"  # looking at the page changes nothing
    unsubscribe_url = page.url
    page.get_by_role("button", name="Unsubscribe").click()
    expect(page.locator("h1")).to_have_text("You are unsubscribed")
    assert page.url == unsubscribe_url  # answered in place, no redirect
    gone = reader(project)
    assert gone.status == "unsubscribed" and pending_lessons(project, gone.id) == []

    page.get_by_role("button", name="Resubscribe").click()  # changed their mind: the link is proof enough
    expect(page.locator("h1")).to_have_text("Welcome back, Ann!")
    expect(page.locator(".next")).to_contain_text("Lesson 1")
    page.screenshot(path=tmp_path / "resubscribed.png", full_page=True)
    back = reader(project)
    assert back.status == "active" and pending_lessons(project, back.id) == ["muscle"]
    context.close()


def test_a_browser_reporting_an_old_zone_name_gets_its_current_name_preselected(
    chromium: Browser, base_url: str
) -> None:
    # Chromium reports India's zone by its old name, Asia/Calcutta; the form offers it as Asia/Kolkata.
    context = chromium.new_context(base_url=base_url, timezone_id="Asia/Kolkata")
    page = context.new_page()
    page.goto("/subscribe")
    reported = page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")
    assert reported in ("Asia/Calcutta", "Asia/Kolkata")
    expect(page.locator("#timezone")).to_have_value("Asia/Kolkata")
    expect(page.locator("#zone-hint")).to_contain_text("Your browser says you are in Asia/Kolkata")
    context.close()


def test_the_outbox_shows_a_message_as_it_lands(chromium: Browser, project: Project) -> None:
    outbox = project.settings.delivery.outbox
    with serving(project, live_reload=True) as url:
        context = chromium.new_context(base_url=url)
        page = context.new_page()
        page.goto("/outbox")
        expect(page.locator(".empty")).to_contain_text("Nothing here yet")
        expect(page.locator("#live-status")).to_have_class(re.compile(r"\bon\b"))  # the event stream is open
        with project.db.session() as session:
            add_subscriber(session, project, SubscriberInput("ada@example.com"), confirmed=False, now=datetime.now(UTC))
        assert send_due(project, OutboxTransport(outbox), now=datetime.now(UTC)).sent == 1  # makes the folder
        expect(page.locator("table.inbox tbody tr")).to_have_count(1, timeout=10_000)
        with project.db.session() as session:
            add_subscriber(session, project, SubscriberInput("bo@example.com"), confirmed=False, now=datetime.now(UTC))
        assert send_due(project, OutboxTransport(outbox), now=datetime.now(UTC)).sent == 1
        expect(page.locator("table.inbox tbody tr")).to_have_count(2, timeout=10_000)
        expect(page.locator("table.inbox tbody tr").first).to_contain_text("bo@example.com")
        context.close()


def test_the_studio_toggles_mobile_and_dark_and_looks_right(
    chromium: Browser, base_url: str, project: Project, tmp_path: Path
) -> None:
    with project.db.session() as session:
        for number, day in enumerate(["Monday", "Monday", "Wednesday", "Friday", "Saturday", "Monday"]):
            data = SubscriberInput(f"reader{number}@example.com", "", "UTC", day, "07:00")
            add_subscriber(session, project, data, confirmed=True, now=datetime.now(UTC))
    desktop = chromium.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    page = desktop.new_page()
    page.goto("/")
    expect(page.locator("table.lessons tbody tr")).to_have_count(8)
    expect(page.locator("#live-status")).to_have_class("live on")  # the live-reload stream is open
    page.screenshot(path=tmp_path / "studio-desktop.png", full_page=True)

    page.get_by_role("link", name="Can running build muscle?").click()
    frame = page.locator("#email-frame")
    desktop_width = frame.bounding_box()["width"]  # type: ignore[index]
    assert desktop_width >= 600
    page.click("#view-mobile")
    expect(page.locator("#view-mobile")).to_have_attribute("aria-pressed", "true")
    assert abs(frame.bounding_box()["width"] - 375) <= 2  # type: ignore[index]
    email = page.frame_locator("#email-frame")
    light_background = email.locator("body").evaluate("body => getComputedStyle(body).backgroundColor")
    page.click("#scheme-dark")
    expect(page.locator("#scheme-dark")).to_have_attribute("aria-pressed", "true")
    expect(frame).to_have_attribute("src", "/preview/muscle/frame?name=Alex%20Runner&scheme=dark")
    dark_background = email.locator("body").evaluate("body => getComputedStyle(body).backgroundColor")
    assert dark_background != light_background and dark_background == "rgb(17, 20, 24)"
    assert abs(frame.bounding_box()["width"] - 375) <= 2  # type: ignore[index]
    page.get_by_role("tab", name="Checklist").click()
    expect(page.locator("#checklist")).to_be_visible()
    expect(page.locator("#email")).to_be_hidden()
    page.screenshot(path=tmp_path / "preview-desktop-mobile-dark.png", full_page=True)
    desktop.close()

    phone = chromium.new_context(base_url=base_url, viewport={"width": 390, "height": 844}, is_mobile=True)
    page = phone.new_page()
    page.goto("/")
    page.screenshot(path=tmp_path / "studio-mobile.png", full_page=True)
    page.goto("/preview/knees?view=mobile")
    page.screenshot(path=tmp_path / "preview-mobile.png", full_page=True)
    phone.close()
    for name in ("studio-desktop", "studio-mobile", "preview-desktop-mobile-dark", "preview-mobile"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000

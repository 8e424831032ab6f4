"""The subscriber pages in-process: subscribe, confirm, one-click unsubscribe, preferences, and every bad input."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time as time_module
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import anyio
import httpx2
import pytest
from conftest import reset_postgres
from sqlalchemy import func, make_url, select
from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send
from tcp_relay import TcpRelay

from newsletter import tokens
from newsletter.config import Settings, load_settings
from newsletter.dispatch import send_due
from newsletter.models import Delivery, Event, Subscriber
from newsletter.project import Project
from newsletter.schedule import Cadence, next_slot_after
from newsletter.subscribers import SubscriberInput, add_subscriber, erase, unsubscribe
from newsletter.transports import MemoryTransport
from newsletter.web import create_app
from newsletter.web.public import DATABASE_WAIT_SECONDS, RETRY_AFTER_SECONDS
from newsletter.web.security import CSRF_COOKIE, MAX_BODY_BYTES, BodyLimit

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(project: Project, clock: Clock) -> Iterator[TestClient]:
    app = create_app(project, live_reload=False, clock=clock)
    with TestClient(app, base_url="http://127.0.0.1:8025", follow_redirects=False) as test_client:
        yield test_client


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has no CSRF field"
    return match.group(1)


def sign_up(client: TestClient, **fields: str) -> tuple[int, str]:
    form = client.get("/subscribe").text
    data = {
        "email": "ann@example.com",
        "name": "Ann",
        "weekday": "Friday",
        "time": "09:30",
        "timezone": "Europe/Berlin",
        "csrf_token": csrf_of(form),
        **fields,
    }
    response = client.post("/subscribe", data=data)
    return response.status_code, response.text


def subscriber(project: Project, email: str = "ann@example.com") -> Subscriber | None:
    with project.db.session() as session:
        return session.scalar(select(Subscriber).where(Subscriber.email == email))


def pending_rows(project: Project, subscriber_id: int) -> list[Delivery]:
    with project.db.session() as session:
        query = select(Delivery).where(Delivery.subscriber_id == subscriber_id, Delivery.status == "pending")
        return list(session.scalars(query))


def add_reader(project: Project, *, confirmed: bool = True, email: str = "bo@example.com") -> Subscriber:
    with project.db.session() as session:
        data = SubscriberInput(email, "Bo", "America/New_York", "Tuesday", "06:15")
        return add_subscriber(session, project, data, confirmed=confirmed, now=NOW)


def token(project: Project, scope: tokens.Scope, subscriber_id: int, now: datetime = NOW) -> str:
    return tokens.issue(project.settings.secret_key, scope, subscriber_id, now)


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


# --- subscribe -------------------------------------------------------------------------------------------------------


def test_the_subscribe_form_asks_for_email_name_day_time_and_a_visible_zone(client: TestClient) -> None:
    response = client.get("/subscribe")
    assert response.status_code == 200
    page = response.text
    for field in ('name="email"', 'name="name"', 'name="weekday"', 'name="time"', 'name="timezone"'):
        assert field in page
    assert "data-detect-zone" in page and "/static/subscribe.js" in page
    assert "<option selected>UTC</option>" in page  # the config's default until the browser says otherwise
    assert CSRF_COOKIE in response.cookies
    script = client.get("/static/subscribe.js").text
    assert "Intl.DateTimeFormat().resolvedOptions().timeZone" in script


def test_the_subscribe_form_offers_places_by_their_current_names_only(client: TestClient) -> None:
    import html
    import json

    page = client.get("/subscribe").text
    select = page[page.index('<select id="timezone"') : page.index("</select>", page.index('<select id="timezone"'))]
    offered = re.findall(r"<option(?: selected)?>([^<]+)</option>", select)
    assert offered[0] == "UTC" and offered == ["UTC", *sorted(offered[1:])]
    assert {"America/New_York", "Asia/Kolkata", "Europe/Kyiv", "America/Argentina/Buenos_Aires"} <= set(offered)
    for not_offered in ("US/Eastern", "Asia/Calcutta", "Europe/Kiev", "America/Buenos_Aires", "GB", "Japan"):
        assert not_offered not in offered  # other names of a place: links and deprecated spellings
    for not_a_place in ("EST", "EST5EDT", "CET", "GMT", "Etc/GMT+5", "Etc/UTC", "Factory", "localtime"):
        assert not_a_place not in offered
    assert all("/" in zone for zone in offered[1:])
    aliases = json.loads(html.unescape(re.search(r"data-zone-aliases='([^']*)'", select).group(1)))
    assert aliases["Asia/Calcutta"] == "Asia/Kolkata" and aliases["US/Eastern"] == "America/New_York"
    assert set(aliases.values()) <= set(offered)


def test_subscribing_queues_a_confirmation_with_the_chosen_schedule(client: TestClient, project: Project) -> None:
    status, page = sign_up(client)
    assert status == 200 and "Check your inbox" in page and "ann@example.com" in page
    reader = subscriber(project)
    assert reader is not None and reader.status == "pending" and reader.source == "web"
    assert (reader.weekday, reader.send_time, reader.timezone) == (4, time(9, 30), "Europe/Berlin")
    assert [row.lesson for row in pending_rows(project, reader.id)] == ["confirmation"]


def test_the_answer_is_the_same_whether_or_not_the_address_is_known(client: TestClient, project: Project) -> None:
    _, first = sign_up(client)
    reader = subscriber(project)
    assert reader is not None
    client.post(f"/confirm/{token(project, 'confirm', reader.id)}")
    _, again = sign_up(client, email="ANN@example.com ")
    _, stranger = sign_up(client, email="cy@example.com")
    assert again == first
    assert stranger == first.replace("ann@example.com", "cy@example.com")
    reader = subscriber(project)
    assert reader is not None and reader.status == "active"  # a known, confirmed reader is left alone


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("email", "not-an-address", "not a valid address"),
        ("email", "", "email is empty"),
        ("name", "Ann\r\nBcc: all@example.com", "control character"),
        ("name", "x" * 201, "at most 200"),
        ("weekday", "Funday", "expected one of Monday"),
        ("time", "25:00", "expected HH:MM"),
        ("timezone", "Mars/Olympus_Mons", "expected an IANA zone name"),
    ],
)
def test_a_malformed_field_shows_the_form_again_with_its_message(
    client: TestClient, project: Project, field: str, value: str, message: str
) -> None:
    status, page = sign_up(client, **{field: value})
    assert status == 400
    assert f'id="{field}-error"' in page and message in text_of(page).replace("&#39;", "'")
    assert 'aria-invalid="true"' in page
    if field != "name":
        assert 'value="Ann"' in page  # what they typed is kept
    with project.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0


def test_a_form_without_the_csrf_cookie_or_token_changes_nothing(client: TestClient, project: Project) -> None:
    form = client.get("/subscribe").text
    data = {"email": "ann@example.com", "weekday": "Monday", "time": "07:00", "timezone": "UTC"}
    assert client.post("/subscribe", data={**data, "csrf_token": "forged"}).status_code == 403
    assert client.post("/subscribe", data=data).status_code == 403
    other_site = client.post(
        "/subscribe", data={**data, "csrf_token": csrf_of(form)}, headers={"Origin": "https://evil.example"}
    )
    assert other_site.status_code == 403 and "another site" in other_site.text
    client.cookies.clear()
    no_cookie = client.post("/subscribe", data={**data, "csrf_token": csrf_of(form)})
    assert no_cookie.status_code == 403 and "cookie" in no_cookie.text
    assert subscriber(project) is None


@pytest.mark.parametrize(
    ("origin", "through_proxy", "accepted"),
    [
        ("https://running.example.com", True, True),  # [newsletter] base_url, whatever Host the proxy sends
        ("https://Running.Example.com:443", True, True),
        ("http://running.example.com", True, False),
        ("http://127.0.0.1:8025", False, True),  # the direct Host, for local use
        ("http://127.0.0.1:8025", True, False),  # not once a proxy is in between
        ("https://evil.example", False, False),
    ],
)
def test_a_form_is_accepted_from_the_public_url_or_its_direct_host_only(
    client: TestClient, project: Project, origin: str, through_proxy: bool, accepted: bool
) -> None:
    csrf = csrf_of(client.get("/subscribe").text)
    headers = {"Origin": origin, **({"X-Forwarded-For": "203.0.113.5"} if through_proxy else {})}
    data = {"email": "ann@example.com", "weekday": "Monday", "time": "07:00", "timezone": "UTC", "csrf_token": csrf}
    response = client.post("/subscribe", data=data, headers=headers)
    assert response.headers["content-type"].startswith("text/html")
    assert (response.status_code, subscriber(project) is not None) == ((200, True) if accepted else (403, False))


def test_sign_ups_are_rate_limited_per_client_address(project: Project, settings: Settings) -> None:
    limited = Project(settings.replace("web", subscribe_rate_per_hour=2))
    app = create_app(limited, live_reload=False, clock=Clock())
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for number in range(2):
            assert sign_up(client, email=f"r{number}@example.com")[0] == 200
        form = client.get("/subscribe").text
        response = client.post(
            "/subscribe",
            data={
                "email": "r9@example.com",
                "weekday": "Monday",
                "time": "07:00",
                "timezone": "UTC",
                "csrf_token": csrf_of(form),
            },
        )
    limited.db.dispose()
    assert response.status_code == 429 and "Too many" in response.text
    assert 0 < int(response.headers["Retry-After"]) <= 3600
    assert subscriber(project, "r9@example.com") is None


def test_a_body_over_the_limit_is_refused_with_413(client: TestClient, project: Project) -> None:
    csrf = csrf_of(client.get("/subscribe").text)
    declared = client.post(
        "/subscribe", data={"email": "a@example.com", "name": "x" * MAX_BODY_BYTES, "csrf_token": csrf}
    )
    assert declared.status_code == 413 and "too large" in declared.text

    def chunks() -> Iterator[bytes]:
        yield b"email=a%40example.com&name="
        for _ in range(MAX_BODY_BYTES // 1024 + 1):
            yield b"x" * 1024

    streamed = client.post(
        "/subscribe", content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert streamed.status_code == 413
    assert subscriber(project, "a@example.com") is None


def test_a_body_that_stalls_gets_408_and_one_that_arrived_is_never_timed_again() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        while message.get("more_body"):
            message = await receive()
        await receive()  # then waits, as a streaming response does, for the client to go away
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    def run(chunks: list[tuple[float, Message]]) -> list[Message]:
        sent: list[Message] = []

        async def receive() -> Message:
            delay, message = chunks.pop(0)
            await anyio.sleep(delay)
            return message

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/subscribe", "headers": [(b"content-length", b"20")]}
        # In a thread of its own: the browser tests' Playwright keeps an event loop running in this one.
        with ThreadPoolExecutor(1) as worker:
            worker.submit(asyncio.run, BodyLimit(app, max_seconds=0.3)(scope, receive, send)).result()
        return sent

    part = {"type": "http.request", "body": b"email=a", "more_body": True}
    stalled = run([(0, part), (5, part)])
    assert stalled[0]["status"] == 408 and b"too long" in stalled[1]["body"]
    arrived = run([(0, part), (0.1, {"type": "http.request", "body": b"b"}), (0.5, {"type": "http.disconnect"})])
    assert arrived[0]["status"] == 200


def test_other_methods_are_refused(client: TestClient) -> None:
    assert client.put("/subscribe").status_code == 405
    assert client.get("/no-such-page").status_code == 404


# --- confirm ---------------------------------------------------------------------------------------------------------


def test_opening_the_confirm_link_shows_one_button_and_confirms_nothing(client: TestClient, project: Project) -> None:
    """Link scanners GET (or HEAD) every link in an email; only a person's POST may sign anyone up."""
    sign_up(client)
    reader = subscriber(project)
    assert reader is not None
    url = f"/confirm/{token(project, 'confirm', reader.id)}"
    for response in (client.get(url), client.head(url), client.get(url)):
        assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    page = client.get(url).text
    assert page.count("<form") == 1 and page.count("<button") == 1
    assert 'method="post"' in page and "action=" not in page  # posts to the same URL
    assert "Confirm my subscription" in page and "Friday at 09:30 (Europe/Berlin)" in text_of(page)
    after = subscriber(project)
    assert after is not None and after.status == "pending" and after.confirmed_at is None
    assert [row.lesson for row in pending_rows(project, reader.id)] == ["confirmation"]


def test_the_confirm_button_activates_and_says_when_lesson_1_arrives_locally(project: Project, clock: Clock) -> None:
    app = create_app(project, live_reload=False, clock=clock)
    with TestClient(app, base_url="https://running.example.com") as browser:
        sign_up(browser)
        reader = subscriber(project)
        assert reader is not None
        url = f"/confirm/{token(project, 'confirm', reader.id)}"
        browser.cookies.clear()  # the email may be opened in another browser: the token is the whole proof
        response = browser.post(url)
        assert browser.post(url).status_code == 200  # twice is harmless
    assert response.status_code == 200 and "Location" not in response.headers
    assert "You are in, Ann!" in response.text
    reader = subscriber(project)
    assert reader is not None and reader.status == "active"
    [row] = pending_rows(project, reader.id)
    expected = next_slot_after(Cadence("Europe/Berlin", 4, time(9, 30)), NOW)
    assert row.lesson == "muscle" and row.due_at == expected
    assert "Friday 6 March 2026 at 09:30 (Europe/Berlin)" in response.text
    assert "Can running build muscle?" in response.text


@pytest.mark.parametrize("kind", ["forged", "altered", "wrong-scope", "expired", "malformed"])
def test_a_bad_confirm_link_gets_a_4xx_page_and_changes_nothing(
    client: TestClient, project: Project, clock: Clock, kind: str
) -> None:
    reader = add_reader(project, confirmed=False)
    good = token(project, "confirm", reader.id)
    signature = good.split(".")[1]
    bad = {
        "forged": tokens.issue(b"another key", "confirm", reader.id, NOW),
        "altered": tokens.issue(project.settings.secret_key, "confirm", reader.id + 1, NOW).split(".")[0]
        + "."
        + signature,
        "wrong-scope": token(project, "unsubscribe", reader.id),
        "expired": good,
        "malformed": "not-a-token",
    }[kind]
    if kind == "expired":
        clock.now = NOW + timedelta(days=8)
    for response in (client.get(f"/confirm/{bad}"), client.post(f"/confirm/{bad}")):
        assert 400 <= response.status_code < 500
        assert "This link does not work" in response.text
    after = subscriber(project, "bo@example.com")
    assert after is not None and after.status == "pending" and after.confirmed_at is None


def test_a_confirm_link_after_unsubscribing_does_not_sign_up_again(client: TestClient, project: Project) -> None:
    reader = add_reader(project)
    client.post(f"/u/{token(project, 'unsubscribe', reader.id)}", data=ONE_CLICK)
    response = client.post(f"/confirm/{token(project, 'confirm', reader.id)}")
    assert response.status_code == 200 and "This address is unsubscribed" in response.text
    assert "Resubscribe" in response.text and "<button" not in response.text  # the way back is the unsubscribe link
    after = subscriber(project, "bo@example.com")
    assert after is not None and after.status == "unsubscribed"


def test_a_link_of_an_erased_subscriber_says_so(client: TestClient, project: Project) -> None:
    reader = add_reader(project)
    with project.db.session() as session:
        erase(session, project, session.get(Subscriber, reader.id), now=NOW)  # type: ignore[arg-type]
    for path in (
        f"/confirm/{token(project, 'confirm', reader.id)}",
        f"/preferences/{token(project, 'preferences', reader.id)}",
        f"/u/{token(project, 'unsubscribe', reader.id)}",
    ):
        response = client.get(path)
        assert response.status_code == 404 and "no longer on the list" in response.text
    # One-click from a provider still succeeds: there is nobody left to mail.
    assert client.post(f"/u/{token(project, 'unsubscribe', reader.id)}", data=ONE_CLICK).status_code == 200


# --- unsubscribe (RFC 8058) ------------------------------------------------------------------------------------------


def test_get_shows_one_button_and_changes_nothing(client: TestClient, project: Project) -> None:
    reader = add_reader(project)
    response = client.get(f"/u/{token(project, 'unsubscribe', reader.id)}")
    assert response.status_code == 200
    assert response.text.count("<form") == 1 and response.text.count("<button") == 1
    assert 'name="List-Unsubscribe" value="One-Click"' in response.text
    assert 'method="post"' in response.text and "action=" not in response.text  # posts to the same URL
    after = subscriber(project, "bo@example.com")
    assert after is not None and after.status == "active"
    assert len(pending_rows(project, reader.id)) == 1


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_post_suppresses_at_once_without_cookies_or_redirect(
    project: Project, clock: Clock, encoding: str
) -> None:
    reader = add_reader(project)
    app = create_app(project, live_reload=False, clock=clock)
    with TestClient(app, base_url="https://running.example.com", follow_redirects=False) as provider:
        url = f"/u/{token(project, 'unsubscribe', reader.id)}"
        if encoding == "urlencoded":
            response = provider.post(
                url,
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            response = provider.post(url, files={"List-Unsubscribe": (None, "One-Click")})
        assert not provider.cookies
    assert response.status_code == 200 and "Location" not in response.headers
    assert "You are unsubscribed" in response.text
    after = subscriber(project, "bo@example.com")
    assert after is not None and after.status == "unsubscribed" and after.unsubscribed_at == NOW
    assert pending_rows(project, reader.id) == []
    with project.db.session() as session:
        event = session.scalar(select(Event).where(Event.kind == "unsubscribed"))
        assert event is not None and event.source == "one-click"


def test_the_page_button_unsubscribes_too(client: TestClient, project: Project) -> None:
    reader = add_reader(project)
    url = f"/u/{token(project, 'unsubscribe', reader.id)}"
    response = client.post(url, data={**ONE_CLICK, "via": "page"})
    assert response.status_code == 200
    after = subscriber(project, "bo@example.com")
    assert after is not None and after.status == "unsubscribed"
    assert "already unsubscribed" in client.get(url).text
    assert client.post(url, data=ONE_CLICK).status_code == 200  # twice is harmless


@pytest.mark.parametrize(
    "body", [b"", b"List-Unsubscribe=Yes", b"one-click=List-Unsubscribe", b'{"List-Unsubscribe": "One-Click"}']
)
def test_a_post_without_the_one_click_body_changes_nothing(client: TestClient, project: Project, body: bytes) -> None:
    reader = add_reader(project)
    content_type = "application/json" if body.startswith(b"{") else "application/x-www-form-urlencoded"
    response = client.post(
        f"/u/{token(project, 'unsubscribe', reader.id)}", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 400
    after = subscriber(project, "bo@example.com")
    assert after is not None and after.status == "active"


@pytest.mark.parametrize("scope", ["confirm", "preferences", "forged"])
def test_only_an_unsubscribe_token_unsubscribes(client: TestClient, project: Project, scope: str) -> None:
    reader = add_reader(project)
    bad = (
        tokens.issue(b"not our key", "unsubscribe", reader.id)
        if scope == "forged"
        else token(project, scope, reader.id)
    )  # type: ignore[arg-type]
    assert client.post(f"/u/{bad}", data=ONE_CLICK).status_code == 403
    assert client.get(f"/u/{bad}").status_code == 403
    after = subscriber(project, "bo@example.com")
    assert after is not None and after.status == "active" and len(pending_rows(project, reader.id)) == 1


@pytest.mark.parametrize("left_as", ["unsubscribed", "bounced"])
def test_the_form_never_mails_an_address_that_left_and_answers_as_for_anyone(
    client: TestClient, project: Project, clock: Clock, left_as: str
) -> None:
    reader = add_reader(project)
    with project.db.session() as session:
        stored = session.get_one(Subscriber, reader.id)
        unsubscribe(session, project, stored, now=NOW)
        stored.status = left_as
    clock.now = NOW + timedelta(days=30)
    _, page = sign_up(client, email="bo@example.com")
    _, stranger = sign_up(client, email="cy@example.com")
    assert page == stranger.replace("cy@example.com", "bo@example.com")
    after = subscriber(project, "bo@example.com")
    assert after is not None and after.status == left_as
    assert pending_rows(project, reader.id) == []
    transport = MemoryTransport()
    send_due(project, transport, now=clock.now)
    assert [envelope.recipients for envelope in transport.sent] == [("cy@example.com",)]


def test_the_unsubscribe_page_offers_resubscribe_which_continues_where_they_stopped(
    project: Project, clock: Clock
) -> None:
    reader = add_reader(project)
    with project.db.session() as session:
        stored = session.get_one(Subscriber, reader.id)
        stored.position, stored.last_lesson = 3, "brain"
    app = create_app(project, live_reload=False, clock=clock)
    with TestClient(app, base_url="https://running.example.com", follow_redirects=False) as browser:
        url = f"/u/{token(project, 'unsubscribe', reader.id)}"
        done = browser.post(url, data={**ONE_CLICK, "via": "page"}).text
        assert f'action="{url}/resubscribe"' in done and "Resubscribe" in done
        clock.now = NOW + timedelta(days=30)
        page = browser.get(url).text
        assert "already unsubscribed" in page and f'action="{url}/resubscribe"' in page
        assert subscriber(project, "bo@example.com").status == "unsubscribed"  # type: ignore[union-attr]
        back = browser.post(f"{url}/resubscribe")
        again = browser.post(f"{url}/resubscribe")
        assert browser.get(f"{url}/resubscribe").status_code == 405
        wrong = browser.post(f"/u/{token(project, 'confirm', reader.id)}/resubscribe")
    assert back.status_code == 200 and again.status_code == 200 and wrong.status_code == 403
    assert "Welcome back, Bo!" in back.text and "Lesson 4" in back.text
    returned = subscriber(project, "bo@example.com")
    assert returned is not None and returned.status == "active" and returned.position == 3
    assert returned.unsubscribed_at is None
    assert [row.lesson for row in pending_rows(project, reader.id)] == [
        "mood"
    ]  # no confirmation email: the link proved it
    with project.db.session() as session:
        kinds = session.scalars(select(Event.kind).where(Event.subscriber_id == reader.id).order_by(Event.id))
        assert list(kinds)[-2:] == ["unsubscribed", "resubscribed"]  # the second press changed nothing


def test_however_often_an_address_is_typed_it_gets_one_confirmation_a_day(any_project: Project) -> None:
    clock = Clock()
    transport = MemoryTransport()
    app = create_app(any_project, live_reload=False, clock=clock)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for attempt in range(5):
            clock.now = NOW + timedelta(hours=attempt * 5)
            assert sign_up(client, email="dee@example.com", name=f"Name {attempt}")[0] == 200
            send_due(any_project, transport, now=clock.now)
        assert len(transport.sent) == 1
        reader = subscriber(any_project, "dee@example.com")
        assert reader is not None and reader.name == "Name 0"  # a request that sends nothing changes nothing
        clock.now = NOW + timedelta(hours=24)
        assert sign_up(client, email="dee@example.com", name="Dee")[0] == 200
        send_due(any_project, transport, now=clock.now)
    assert [envelope.recipients for envelope in transport.sent] == [("dee@example.com",)] * 2
    assert transport.sent[0].message_id != transport.sent[1].message_id
    reader = subscriber(any_project, "dee@example.com")
    assert reader is not None and reader.name == "Dee" and reader.status == "pending"


# --- preferences -----------------------------------------------------------------------------------------------------


def preferences(client: TestClient, project: Project, reader: Subscriber, **fields: str) -> tuple[int, str]:
    url = f"/preferences/{token(project, 'preferences', reader.id)}"
    csrf = csrf_of(client.get(url).text)
    response = client.post(url, data={"csrf_token": csrf, **fields})
    return response.status_code, response.text


def test_the_preferences_page_shows_the_schedule_and_the_next_lesson(client: TestClient, project: Project) -> None:
    reader = add_reader(project)
    response = client.get(f"/preferences/{token(project, 'preferences', reader.id)}")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    text = text_of(response.text)
    assert "Tuesday at 06:15 (America/New_York)" in text
    assert "Lesson 1, “Can running build muscle?”, Tuesday 10 March 2026 at 06:15 (America/New_York)" in text
    assert 'value="pause"' in response.text and 'value="schedule"' in response.text
    assert "/u/" in response.text


def test_pausing_for_some_weeks_withdraws_the_lesson_and_says_when_it_comes_back(
    client: TestClient, project: Project
) -> None:
    reader = add_reader(project)
    status, page = preferences(client, project, reader, action="pause", weeks="2")
    assert status == 200
    after = subscriber(project, "bo@example.com")
    assert after is not None and after.status == "paused" and after.pause_until == NOW + timedelta(weeks=2)
    assert pending_rows(project, reader.id) == []
    back = next_slot_after(Cadence("America/New_York", 1, time(6, 15)), NOW + timedelta(weeks=2))
    assert back == datetime(2026, 3, 24, 10, 15, tzinfo=UTC)  # New York is on daylight time by then
    text = text_of(page)
    assert "Paused until Wednesday 18 March 2026 ." in text  # the date sits in its own <time>
    assert "next lesson then arrives Tuesday 24 March 2026 at 06:15 (America/New_York)" in text
    assert 'value="resume"' in page


def test_pausing_until_resumed_and_resuming_plan_the_next_lesson_again(client: TestClient, project: Project) -> None:
    reader = add_reader(project)
    assert preferences(client, project, reader, action="pause", weeks="until-resumed")[0] == 200
    paused = subscriber(project, "bo@example.com")
    assert paused is not None and paused.status == "paused" and paused.pause_until is None
    status, page = preferences(client, project, reader, action="resume")
    assert status == 200 and "Resumed." in page
    [row] = pending_rows(project, reader.id)
    assert row.lesson == "muscle" and row.due_at == next_slot_after(Cadence("America/New_York", 1, time(6, 15)), NOW)
    assert "Tuesday 10 March 2026 at 06:15 (America/New_York)" in text_of(page)


def test_changing_the_day_time_and_zone_moves_the_next_lesson(client: TestClient, project: Project) -> None:
    reader = add_reader(project)
    status, page = preferences(
        client, project, reader, action="schedule", weekday="Saturday", time="18:45", timezone="Asia/Kathmandu"
    )
    assert status == 200 and "Saved." in page
    after = subscriber(project, "bo@example.com")
    assert after is not None and (after.weekday, after.send_time, after.timezone) == (5, time(18, 45), "Asia/Kathmandu")
    [row] = pending_rows(project, reader.id)
    assert row.due_at == next_slot_after(Cadence("Asia/Kathmandu", 5, time(18, 45)), NOW)
    assert "Saturday 7 March 2026 at 18:45 (Asia/Kathmandu)" in text_of(page)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"action": "schedule", "weekday": "Someday", "time": "07:00", "timezone": "UTC"}, "expected one of Monday"),
        ({"action": "schedule", "weekday": "Monday", "time": "7pm", "timezone": "UTC"}, "expected HH:MM"),
        ({"action": "schedule", "weekday": "Monday", "time": "07:00", "timezone": "Nowhere"}, "IANA zone"),
        ({"action": "pause", "weeks": "500"}, "choose one of"),
        ({"action": "explode"}, "unknown action"),
    ],
)
def test_bad_preferences_change_nothing(
    client: TestClient, project: Project, fields: dict[str, str], message: str
) -> None:
    reader = add_reader(project)
    status, page = preferences(client, project, reader, **fields)
    assert status == 400 and message in text_of(page).replace("&#39;", "'")
    after = subscriber(project, "bo@example.com")
    assert after is not None and after.status == "active" and after.weekday == 1
    assert len(pending_rows(project, reader.id)) == 1


def test_a_pending_subscriber_cannot_pause(client: TestClient, project: Project) -> None:
    reader = add_reader(project, confirmed=False)
    status, page = preferences(client, project, reader, action="pause", weeks="2")
    assert status == 400 and "only confirmed subscribers can pause" in page
    assert 'value="pause"' not in page  # and the page does not offer it


def test_preferences_need_their_own_token_and_the_form_token(client: TestClient, project: Project) -> None:
    reader = add_reader(project)
    url = f"/preferences/{token(project, 'preferences', reader.id)}"
    assert client.post(url, data={"action": "pause", "weeks": "2"}).status_code == 403
    for scope in ("confirm", "unsubscribe"):
        wrong = f"/preferences/{token(project, scope, reader.id)}"  # type: ignore[arg-type]
        assert client.get(wrong).status_code == 403
    after = subscriber(project, "bo@example.com")
    assert after is not None and after.status == "active"


def test_token_pages_keep_their_url_to_themselves(client: TestClient, project: Project) -> None:
    reader = add_reader(project)
    response = client.get(f"/u/{token(project, 'unsubscribe', reader.id)}")
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'self'" in response.headers["Content-Security-Policy"]


def test_public_pages_never_need_the_studio_token(project: Project, settings: Settings) -> None:
    guarded = Project(settings.replace("web", admin_token="s3cret-token-value"))
    reader = add_reader(guarded)
    app = create_app(guarded, host="0.0.0.0", live_reload=False, clock=Clock())
    with TestClient(app, base_url="https://running.example.com", follow_redirects=False) as visitor:
        assert visitor.get("/subscribe").status_code == 200
        assert visitor.get(f"/preferences/{token(guarded, 'preferences', reader.id)}").status_code == 200
        assert visitor.post(f"/u/{token(guarded, 'unsubscribe', reader.id)}", data=ONE_CLICK).status_code == 200
        assert visitor.get("/").status_code == 401
    guarded.db.dispose()


def test_the_journey_works_on_each_database(any_project: Project) -> None:
    """Subscribe, confirm, pause, resume and one-click unsubscribe on SQLite and on PostgreSQL."""
    app = create_app(any_project, live_reload=False, clock=Clock())
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as client:
        assert sign_up(client, email="pg@example.com")[0] == 200
        reader = subscriber(any_project, "pg@example.com")
        assert reader is not None and reader.status == "pending"
        assert client.post(f"/confirm/{token(any_project, 'confirm', reader.id)}").status_code == 200
        assert preferences(client, any_project, reader, action="pause", weeks="until-resumed")[0] == 200
        assert pending_rows(any_project, reader.id) == []
        assert preferences(client, any_project, reader, action="resume")[0] == 200
        assert [row.lesson for row in pending_rows(any_project, reader.id)] == ["muscle"]
        one_click = client.post(f"/u/{token(any_project, 'unsubscribe', reader.id)}", data=ONE_CLICK)
        assert one_click.status_code == 200
    gone = subscriber(any_project, "pg@example.com")
    assert gone is not None and gone.status == "unsubscribed"
    assert pending_rows(any_project, reader.id) == []


def test_a_refusal_from_the_subscriber_rules_is_a_400_page_and_an_outage_a_503(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsletter.errors import DatabaseError, SubscriberError
    from newsletter.web import signup

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise SubscriberError("email ann@example.com: this domain does not take mail")

    monkeypatch.setattr(signup, "request_subscription", refuse)
    status, page = sign_up(client)
    assert status == 400 and "this domain does not take mail" in page

    def outage(*_args: object, **_kwargs: object) -> None:
        raise DatabaseError("cannot open the database")

    monkeypatch.setattr(signup, "request_subscription", outage)
    status, page = sign_up(client)
    assert status == 503 and "try again in a few minutes" in page and "cannot open" not in page


def test_after_a_pause_the_next_lesson_still_keeps_the_minimum_gap(settings: Settings) -> None:
    spaced = Project(settings.replace("schedule", min_gap=timedelta(days=20)))
    reader = add_reader(spaced)
    send_due(spaced, MemoryTransport(), now=datetime(2026, 3, 10, 10, 15, tzinfo=UTC))  # lesson 1, Tuesday 06:15 EDT
    clock = Clock(datetime(2026, 3, 11, 12, 0, tzinfo=UTC))
    with TestClient(create_app(spaced, live_reload=False, clock=clock), base_url="http://127.0.0.1") as client:
        status, page = preferences(client, spaced, reader, action="pause", weeks="1")
    spaced.db.dispose()
    assert status == 200
    # The first Tuesday slot after the pause (24 March) is within 20 days of lesson 1: the next one is.
    assert "next lesson then arrives Tuesday 31 March 2026 at 06:15 (America/New_York)" in text_of(page)


# --- the database does not answer --------------------------------------------------------------------------------


def relayed_project(project_dir: Path, env: dict[str, str], url: str, relay: TcpRelay) -> Project:
    """The project on PostgreSQL, reached through the relay."""
    through = make_url(url).set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    opened = Project(load_settings(project_dir / "config.toml", env={**env, "NEWSLETTER_DATABASE_URL": through}))
    opened.db  # noqa: B018  (migrated while the relay still forwards)
    return opened


def timed_sign_up(client: TestClient, email: str) -> tuple[httpx2.Response, float]:
    csrf = csrf_of(client.get("/subscribe").text)
    data = {"email": email, "weekday": "Monday", "time": "07:00", "timezone": "UTC", "csrf_token": csrf}
    started = time_module.monotonic()
    response = client.post("/subscribe", data=data)
    return response, time_module.monotonic() - started


@pytest.mark.postgres
@pytest.mark.parametrize("fault", ["refused", "silent"])
def test_when_postgresql_stops_answering_a_sign_up_gets_the_503_page_promptly(
    project_dir: Path, env: dict[str, str], postgres_server_url: str, fault: str
) -> None:
    reset_postgres(postgres_server_url)
    server = make_url(postgres_server_url)
    with TcpRelay(server.host or "127.0.0.1", server.port or 5432) as relay:
        project = relayed_project(project_dir, env, postgres_server_url, relay)
        app = create_app(project, live_reload=False, clock=Clock())
        with TestClient(app, base_url="http://127.0.0.1") as client:
            assert sign_up(client, email="before@example.com")[0] == 200
            relay.refuse() if fault == "refused" else relay.silence()
            response, seconds = timed_sign_up(client, "during@example.com")
    page = response.text
    assert response.status_code == 503 and "Please try again in a few minutes" in page and "Nothing was changed" in page
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert "127.0.0.1" not in page and str(relay.port) not in page
    assert seconds < (1.0 if fault == "refused" else DATABASE_WAIT_SECONDS + 2)
    project.db.dispose()


def test_when_sqlite_is_locked_by_another_process_a_sign_up_gets_the_503_page_and_writes_nothing(
    client: TestClient, project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    database = project.db.engine.url.database
    assert database is not None
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, database], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline() == "locked\n"
    with caplog.at_level("ERROR", logger="newsletter.web.public"):
        response, seconds = timed_sign_up(client, "during@example.com")
    holder.stdin.close()  # the other process commits and lets go; the abandoned request then rolls back
    holder.wait(timeout=10)
    holder.stdout.close()
    assert response.status_code == 503 and "Please try again in a few minutes" in response.text
    assert DATABASE_WAIT_SECONDS <= seconds < DATABASE_WAIT_SECONDS + 2  # not the 30 s of SQLite's busy timeout
    assert [record.getMessage() for record in caplog.records] == [
        f"public page /subscribe: no answer from the database in {DATABASE_WAIT_SECONDS:g} s"
    ]
    time_module.sleep(1.0)
    assert subscriber(project, "during@example.com") is None
    assert sign_up(client, email="after@example.com")[0] == 200


LOCK_HOLDER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
connection.execute("COMMIT")
"""

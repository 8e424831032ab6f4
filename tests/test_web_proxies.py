"""Who sent a request: proxy headers believed only from `[web] trusted_proxies`, in process and over real sockets."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest
from servers import ServerProcess
from starlette.testclient import TestClient

from newsletter.config import Settings
from newsletter.project import Project
from newsletter.web import create_app
from newsletter.web.proxies import RequestOrigin, TrustedProxies

PROXY = "127.0.0.1"
FORM = {"weekday": "Monday", "time": "07:00", "timezone": "UTC"}


def origin_of(proxies: list[str], peer: str, *headers: tuple[str, str]) -> tuple[RequestOrigin, str | None, str | None]:
    scope = {
        "type": "http",
        "client": (peer, 40000),
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
    }
    return TrustedProxies.parse(proxies).origin(scope)


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("198.51.100.7, 203.0.113.9", "203.0.113.9"),  # the rightmost hop not ours; the rest is the client's word
        ("198.51.100.7, 203.0.113.9, 10.1.2.3", "203.0.113.9"),  # 10.1.2.3 is one of our proxies
        ("10.0.0.5, 10.1.2.3", "10.0.0.5"),  # all ours: the farthest one
        ("203.0.113.9:51234", "203.0.113.9"),
        ("[2001:db8::1]:4711", "2001:db8::1"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("203.0.113.9, not-an-address", PROXY),  # garbage from our own proxy: we see no further than it
    ],
)
def test_a_trusted_proxy_names_the_rightmost_address_that_is_not_one_of_ours(forwarded_for: str, client: str) -> None:
    origin, _, _ = origin_of([PROXY, "10.0.0.0/8"], PROXY, ("X-Forwarded-For", forwarded_for))
    assert origin == RequestOrigin(peer=PROXY, client=client, via_proxy=True)


def test_an_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    claims = [("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "a.example")]
    origin, scheme, host = origin_of([], PROXY, *claims)  # no trusted proxies: not even 127.0.0.1
    assert (origin, scheme, host) == (RequestOrigin(PROXY, PROXY, via_proxy=True), None, None)
    assert not origin.local  # but its proxy headers mark it as forwarded: never a person at this machine
    assert origin_of([], "::1")[0].local and origin_of([], PROXY)[0].local
    assert not origin_of([], PROXY, ("Via", "1.1 proxy"))[0].local
    assert not origin_of([PROXY], PROXY)[0].local  # a declared proxy forwards, headers or not


def test_scheme_and_host_come_from_the_trusted_proxy_when_they_are_well_formed() -> None:
    good = origin_of([PROXY], PROXY, ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "running.example.com"))
    assert good[1:] == ("https", "running.example.com")
    bad = origin_of([PROXY], PROXY, ("X-Forwarded-Proto", "gopher"), ("X-Forwarded-Host", "evil.example/path"))
    assert bad[1:] == (None, None)


def test_forwarded_is_read_only_when_no_x_forwarded_for_came() -> None:
    elements = 'for=198.51.100.7;proto=http, for="[2001:db8::9]:80";proto=https;host=running.example.com'
    forwarded = ("Forwarded", elements)
    origin, scheme, host = origin_of([PROXY], PROXY, forwarded)
    assert (origin.client, scheme, host) == ("2001:db8::9", "https", "running.example.com")
    both, _, _ = origin_of([PROXY], PROXY, forwarded, ("X-Forwarded-For", "203.0.113.9"))
    assert both.client == "203.0.113.9"


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has no CSRF field"
    return match.group(1)


SignUp = Callable[[int, str], int]


@pytest.fixture
def sign_up_through_proxy(settings: Settings) -> Iterator[SignUp]:
    """Post the sign-up form as a trusted proxy would, forwarding for a given client (2 sign-ups an hour each)."""
    behind = Project(settings.replace("web", trusted_proxies=(PROXY,), subscribe_rate_per_hour=2))
    app = create_app(behind, live_reload=False)
    with TestClient(app, base_url="http://127.0.0.1:8025", client=(PROXY, 40000)) as proxy:
        csrf = csrf_of(proxy.get("/subscribe").text)

        def sign_up(number: int, forwarded_for: str) -> int:
            data = {"email": f"r{number}@example.com", "csrf_token": csrf, **FORM}
            return proxy.post("/subscribe", data=data, headers={"X-Forwarded-For": forwarded_for}).status_code

        yield sign_up
    behind.db.dispose()


def test_the_app_limits_the_forwarded_client_not_the_proxy(sign_up_through_proxy: SignUp) -> None:
    sign_up = sign_up_through_proxy
    forged = [sign_up(n, f"192.0.2.{n}, 203.0.113.9") for n in range(4)]  # the client rotates the left part
    other = sign_up(9, "198.51.100.20")
    assert forged == [200, 200, 429, 429] and other == 200


def test_an_ipv6_client_is_limited_by_its_slash_64_however_it_rotates_its_address(
    sign_up_through_proxy: SignUp,
) -> None:
    sign_up = sign_up_through_proxy
    rotating = [sign_up(n, f"2001:db8:1:2:{n:x}::{n + 1:x}") for n in range(4)]  # one /64, four addresses
    next_door = sign_up(8, "2001:db8:1:3::1")  # another /64: another household
    mapped = [sign_up(9, "::ffff:198.51.100.7"), sign_up(10, "198.51.100.7"), sign_up(11, "198.51.100.7")]
    assert rotating == [200, 200, 429, 429] and next_door == 200
    assert mapped == [200, 200, 429]  # an IPv4-mapped address is that IPv4 address


# --- over real sockets -------------------------------------------------------------------------------------------


@pytest.fixture
def start(project_dir: Path, env: dict[str, str], sqlite_url: str, tmp_path: Path) -> Iterator[type[ServerProcess]]:
    started: list[ServerProcess] = []

    class Started(ServerProcess):
        def __init__(self, **variables: str) -> None:
            environment = {**env, "NEWSLETTER_DATABASE_URL": sqlite_url, **variables}
            super().__init__(project_dir, environment, tmp_path / f"serve-{len(started)}.log")
            started.append(self)

    yield Started
    for server in started:
        server.stop()


def sign_ups(base: str, addresses: list[str], headers: dict[str, str] | None = None) -> list[int]:
    """POST the form once per forwarded-for value, each with a fresh email; the status codes."""
    with httpx2.Client(base_url=base, timeout=10) as browser:
        csrf = csrf_of(browser.get("/subscribe").text)
        statuses = []
        for number, forwarded_for in enumerate(addresses):
            data = {"email": f"reader{number}@example.com", "csrf_token": csrf, **FORM}
            sent = {**(headers or {}), "X-Forwarded-For": forwarded_for}
            statuses.append(browser.post("/subscribe", data=data, headers=sent).status_code)
        return statuses


@pytest.mark.slow
def test_rotating_x_forwarded_for_from_an_untrusted_peer_does_not_bypass_the_limit(
    start: type[ServerProcess],
) -> None:
    server = start(NEWSLETTER_WEB_SUBSCRIBE_RATE_PER_HOUR="3")
    assert sign_ups(server.url, [f"198.51.100.{n}" for n in range(6)]) == [200, 200, 200, 429, 429, 429]
    # The Host a reverse proxy on this machine sends does not open the studio to whoever it forwards.
    studio = httpx2.get(
        server.url + "/", headers={"Host": f"127.0.0.1:{server.port}", "X-Forwarded-For": "203.0.113.9"}
    )
    assert studio.status_code == 403 and "came through a proxy" in studio.text
    assert httpx2.get(server.url + "/").status_code == 200  # a person at this machine still gets in


@pytest.mark.slow
def test_behind_a_trusted_proxy_each_client_is_limited_and_the_public_origin_may_post(
    start: type[ServerProcess],
) -> None:
    server = start(NEWSLETTER_WEB_SUBSCRIBE_RATE_PER_HOUR="2", NEWSLETTER_WEB_TRUSTED_PROXIES="127.0.0.1")
    public = {"Origin": "https://running.example.com", "X-Forwarded-Proto": "https"}
    forged_left = [f"192.0.2.{n}, 203.0.113.9" for n in range(3)]
    assert sign_ups(server.url, forged_left, public) == [200, 200, 429]
    assert sign_ups(server.url, ["203.0.113.10"], public) == [200]
    with httpx2.Client(base_url=server.url, timeout=10) as browser:
        form = browser.get("/subscribe", headers={"X-Forwarded-For": "203.0.113.11", "X-Forwarded-Proto": "https"})
        assert "Secure" in form.headers["set-cookie"]  # the client's scheme, as the proxy said

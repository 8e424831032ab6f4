"""The per-client limiter: a burst of `limit`, one more every window/limit, a table that never outgrows its bound."""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.web.ratelimit import RateLimiter, client_key


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_may_spend_its_allowance_at_once_and_gets_one_back_each_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(3, window_seconds=3600, clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")  # every client has its own allowance
    assert limiter.retry_after("a") == 1200 and limiter.retry_after("b") == 0 and limiter.retry_after("c") == 0
    clock.now += 1199.5
    assert not limiter.allow("a") and limiter.retry_after("a") == 1  # refusals do not push the wait further
    clock.now += 0.5
    assert limiter.allow("a") and not limiter.allow("a")
    clock.now += 3600
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]  # a full window refills it all


def test_over_any_long_stretch_a_client_gets_no_more_than_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(10, window_seconds=3600, clock=clock)
    allowed = 0
    for _ in range(10 * 3600):  # ten hours, one attempt a second
        allowed += limiter.allow("hammering")
        clock.now += 1
    assert allowed == 10 + 10 * 10 - 1  # the first burst, then one every 360 s


def test_the_table_keeps_at_most_max_keys_and_forgets_the_least_recently_seen() -> None:
    clock = Clock()
    limiter = RateLimiter(2, window_seconds=3600, max_keys=100, clock=clock)
    assert limiter.allow("persistent") and limiter.allow("persistent")
    for n in range(20_000):
        limiter.allow(f"10.0.{n // 256}.{n % 256}")
        assert not limiter.allow("persistent")  # seen all along, so never the one forgotten
        assert len(limiter) <= 100
    assert limiter.allow("10.0.0.0")  # long forgotten: starts afresh


def test_clients_whose_allowance_is_full_again_are_dropped_as_others_come() -> None:
    clock = Clock()
    limiter = RateLimiter(5, window_seconds=60, clock=clock)
    for n in range(1000):
        limiter.allow(f"one-off-{n}")
    assert len(limiter) == 1000
    clock.now += 60
    limiter.allow("newcomer")
    assert len(limiter) == 1


def test_a_limit_of_zero_lets_everyone_through() -> None:
    limiter = RateLimiter(0)
    assert all(limiter.allow("anyone") for _ in range(1000)) and limiter.retry_after("anyone") == 0
    assert len(limiter) == 0


def test_clients_are_keyed_by_ipv4_address_and_ipv6_slash_64() -> None:
    assert client_key("203.0.113.9") == "203.0.113.9"
    assert client_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert client_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert client_key("unknown") == "unknown"  # no peer (a test client): one key, as before

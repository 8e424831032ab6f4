"""Who sent a request: the socket's peer and, behind a trusted reverse proxy, the client it forwarded for.

`[web] trusted_proxies` lists the proxies whose headers are believed; by default none is, not even 127.0.0.1,
because anything that can reach the port could otherwise claim to be anyone. From a trusted peer:

- `X-Forwarded-For` is read from the right. Each address that is itself a trusted proxy is one of our hops;
  the first that is not is the client. What stands left of it was written by the client and may be forged,
  so rotating it changes nothing.
- `X-Forwarded-Proto` and `X-Forwarded-Host` give the scheme and host the client used (the last value: the
  one our nearest proxy wrote).
- `Forwarded` (RFC 7239) is read only when no `X-Forwarded-For` came: a proxy passes on the headers it does
  not set itself, so believing both would let a client write whichever one its proxy leaves alone.

From any other peer these headers are ignored and the peer is the client. A request is *local* only when its
peer is a loopback address, the peer is not a trusted proxy, and it carries no proxy header at all: a proxy on
this machine that forwards the internet must never look like a person at this machine's keyboard.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

ORIGIN_KEY = "newsletter.origin"
PROXY_HEADERS = frozenset(
    {b"forwarded", b"via", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"x-real-ip"}
)
_HOST_VALUE = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_FORWARDED_PAIR = re.compile(r'\s*([A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*')

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> Address | None:
    """An IP address from a header or a socket, without port, brackets or quotes; None if it is not one."""
    value = text.strip().strip('"')
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address


@dataclass(frozen=True)
class RequestOrigin:
    """Where one request came from."""

    peer: str  # the address at the other end of the socket
    client: str  # the peer, or the client a trusted proxy forwarded for
    via_proxy: bool  # from a trusted proxy, or carrying any proxy header

    @property
    def local(self) -> bool:
        """Straight from this machine to our socket, not forwarded by anything."""
        address = parse_address(self.peer)
        return address is not None and address.is_loopback and not self.via_proxy


@dataclass(frozen=True)
class TrustedProxies:
    """The networks of `[web] trusted_proxies`, and how a request's origin follows from them."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        return cls(tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries))

    def trusts(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def client_in_chain(self, peer: str, chain: list[str]) -> str:
        """The rightmost address of a forwarded-for chain that is not one of our proxies."""
        client = peer
        for entry in reversed(chain):
            address = parse_address(entry)
            if address is None:
                break  # garbage from further out: the hop that handed it to us is as far as we can see
            client = str(address)
            if not self.trusts(address):
                break
        return client

    def origin(self, scope: Scope) -> tuple[RequestOrigin, str | None, str | None]:
        """The origin of a request, and the scheme and Host a trusted proxy says the client used."""
        peer = scope["client"][0] if scope.get("client") else ""
        headers: dict[bytes, list[str]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, []).append(value.decode("latin-1"))
        carries_proxy_headers = not PROXY_HEADERS.isdisjoint(headers)
        if not self.trusts(parse_address(peer)):
            return RequestOrigin(peer, peer, carries_proxy_headers), None, None
        forwarded_for = _values(headers.get(b"x-forwarded-for", []))
        scheme, host = _last(headers.get(b"x-forwarded-proto", [])), _last(headers.get(b"x-forwarded-host", []))
        if not forwarded_for and b"forwarded" in headers:
            elements = _forwarded_elements(headers[b"forwarded"])
            forwarded_for = [element["for"] for element in elements if "for" in element]
            if elements:
                scheme, host = scheme or elements[-1].get("proto"), host or elements[-1].get("host")
        client = self.client_in_chain(peer, forwarded_for)
        scheme = scheme.lower() if scheme and scheme.lower() in ("http", "https") else None
        host = host if host and _HOST_VALUE.match(host) else None
        return RequestOrigin(peer, client, True), scheme, host


def _values(header_lines: list[str]) -> list[str]:
    return [item.strip() for line in header_lines for item in line.split(",") if item.strip()]


def _last(header_lines: list[str]) -> str | None:
    values = _values(header_lines)
    return values[-1] if values else None


def _forwarded_elements(header_lines: list[str]) -> list[dict[str, str]]:
    """`Forwarded: for=192.0.2.60;proto=https, for="[2001:db8::1]"` as one dict per element."""
    elements = []
    for line in header_lines:
        for element in line.split(","):
            pairs = {}
            for part in element.split(";"):
                match = _FORWARDED_PAIR.fullmatch(part)
                if match:
                    pairs[match.group(1).lower()] = match.group(2).strip('"')
            elements.append(pairs)
    return elements


class ForwardedClient:
    """Put the real client in `scope["client"]` (and scheme and Host) and the whole origin in the scope."""

    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin, scheme, host = self.proxies.origin(scope)
            scope = {**scope, ORIGIN_KEY: origin}
            if origin.client != origin.peer:
                scope["client"] = (origin.client, 0)
            if scheme:
                scope["scheme"] = scheme
            if host:
                scope["headers"] = [(n, v) for n, v in scope["headers"] if n != b"host"] + [(b"host", host.encode())]
        await self.app(scope, receive, send)


def request_origin(request: Request) -> RequestOrigin:
    """The origin `ForwardedClient` found; without it (an app not built by `create_app`), the bare peer."""
    origin = request.scope.get(ORIGIN_KEY)
    if isinstance(origin, RequestOrigin):
        return origin
    peer = request.client.host if request.client else ""
    return RequestOrigin(peer, peer, not PROXY_HEADERS.isdisjoint(dict(request.scope["headers"])))

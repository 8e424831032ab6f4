"""Checklist item 10: a DKIM signature that verifies, covers what providers need, and aligns with From.

dkimpy looks the public key up through a DNS function; callers pass their own (`Expectations.dkim_dns`) to
verify without DNS, as `newsletter check` does with the public half of the configured private key.
"""

from __future__ import annotations

import base64
import re

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key, parse_public_key
from dkim.util import InvalidTagValueList, parse_tag_value

from newsletter.checklist.verdict import Verdict, judge
from newsletter.checklist.wire import DnsTxtLookup, WireEmail

MIN_KEY_BITS = 2048
REQUIRED_SIGNED = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-id",
)
# Headers providers act on that we may add: signed whenever the email carries them (Google counts a
# Feedback-ID only under a DKIM signature; an unsigned Reply-To could be changed on the way).
REQUIRED_SIGNED_WHEN_PRESENT = ("reply-to", "feedback-id", "auto-submitted", "precedence", "list-help", "list-archive")


def dkim_signature(wire: WireEmail) -> Verdict:
    values = wire.raw_header("DKIM-Signature")
    if not values:
        return judge([], "not signed")
    try:
        tags = parse_tag_value(re.sub(r"\s+", "", values[0]).encode())
    except InvalidTagValueList as error:
        return judge([f"DKIM-Signature does not parse: {error}"], "")
    domain = tags.get(b"d", b"").decode().lower()
    selector = tags.get(b"s", b"").decode()
    signed = {name.strip().lower() for name in tags.get(b"h", b"").decode().split(":")}
    problems = []
    carried = [name for name in REQUIRED_SIGNED_WHEN_PRESENT if wire.raw_header(name)]
    missing = [name for name in (*REQUIRED_SIGNED, *carried) if name not in signed]
    if missing:
        problems.append(f"the signature does not cover {', '.join(missing)}")
    from_domain = wire.from_domain
    if not (from_domain == domain or from_domain.endswith("." + domain)):
        problems.append(f"d={domain} does not align with the From domain {from_domain}")
    lookup = wire.expected.dkim_dns
    dns_name = f"{selector}._domainkey.{domain}.".encode()
    try:
        record = lookup(dns_name) if lookup else dkim.dnsplug.get_txt(dns_name)
        bits = _key_bits(record)
        if bits < MIN_KEY_BITS:
            problems.append(f"the key has {bits} bits, expected at least {MIN_KEY_BITS}")
        verified = dkim.verify(wire.raw, dnsfunc=lookup) if lookup else dkim.verify(wire.raw)
    except (dkim.DKIMException, UnparsableKeyError, ValueError) as error:
        return judge([*problems, f"the signature cannot be verified: {error}"], "")
    if not verified:
        problems.append(f"the signature does not verify with the key at {dns_name.decode()}")
    return judge(problems, f"verifies for d={domain} s={selector}, covers {', '.join((*REQUIRED_SIGNED, *carried))}")


def _key_bits(record: bytes | None) -> int:
    if not record:
        raise ValueError("no public key record found")
    tags = parse_tag_value(re.sub(rb"\s+", b"", record))
    key = parse_public_key(base64.b64decode(tags.get(b"p", b"")))
    return int(key["modulus"]).bit_length()


def public_key_record(private_key_pem: bytes) -> bytes:
    """The DNS TXT record (`v=DKIM1; k=rsa; p=…`) publishing the public half of a PEM RSA private key."""
    key = parse_pem_private_key(private_key_pem)
    public = _der(0x30, _der_integer(key["modulus"]) + _der_integer(key["publicExponent"]))
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def _der_integer(number: int) -> bytes:
    # One spare bit keeps the sign bit clear: DER integers are signed.
    return _der(0x02, number.to_bytes(number.bit_length() // 8 + 1, "big"))


def _der(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content (an RSAPublicKey is a SEQUENCE of two INTEGERs)."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def dns_serving(record: bytes) -> DnsTxtLookup:
    """A dkimpy DNS function that answers every lookup with one TXT record."""

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return record

    return lookup

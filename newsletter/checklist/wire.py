"""One message as the checks see it: the raw bytes, the parsed message, its raw headers, and its two parts."""

from __future__ import annotations

import email
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from functools import cached_property

from newsletter.checklist.dom import Document, parse_html

# dkimpy's DNS seam: (b"selector._domainkey.example.com.", timeout=…) -> the TXT record, or None.
DnsTxtLookup = Callable[..., bytes | None]
_HTTPS_IN_ANGLES = re.compile(r"<(https://[^>]*)>")


class CheckImpossible(Exception):
    """The message lacks what a check needs to look at (the check fails, saying what is missing)."""


@dataclass(frozen=True)
class Expectations:
    """What the caller knows about the message beyond its bytes."""

    subject: str | None = None
    expect_unsubscribe: bool = True
    call_to_action: str | None = None
    dkim_dns: DnsTxtLookup | None = None


@dataclass
class WireEmail:
    raw: bytes
    expected: Expectations = field(default_factory=Expectations)

    @cached_property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @cached_property
    def head(self) -> bytes:
        """The top-level header block as sent, folding and all."""
        return re.split(rb"\r?\n\r?\n", self.raw, maxsplit=1)[0]

    @cached_property
    def raw_headers(self) -> list[tuple[str, str]]:
        """The top-level header fields as sent: (name, value unfolded but not decoded)."""
        head = self.head.decode("ascii", errors="replace")
        fields: list[tuple[str, str]] = []
        for line in re.split(r"\r?\n", head):
            if line[:1] in (" ", "\t") and fields:
                name, value = fields[-1]
                fields[-1] = (name, value + line)
            else:
                name, _, value = line.partition(":")
                fields.append((name, value.strip()))
        return fields

    def raw_header(self, name: str) -> list[str]:
        """Every raw value of one header field."""
        return [value for key, value in self.raw_headers if key.lower() == name.lower()]

    def header_values(self, name: str) -> list[str]:
        return [str(value) for value in self.message.get_all(name, [])]

    @cached_property
    def parts(self) -> list[EmailMessage]:
        if not self.message.is_multipart():
            return [self.message]
        return list(self.message.iter_parts())  # type: ignore[arg-type]

    def _part(self, content_type: str) -> str | None:
        for part in self.parts:
            if part.get_content_type() == content_type:
                content = part.get_content()
                return content if isinstance(content, str) else None
        return None

    @cached_property
    def html(self) -> str:
        content = self._part("text/html")
        if content is None:
            raise CheckImpossible("the message has no text/html part")
        return content

    @cached_property
    def text(self) -> str:
        content = self._part("text/plain")
        if content is None:
            raise CheckImpossible("the message has no text/plain part")
        return content

    @cached_property
    def document(self) -> Document:
        return parse_html(self.html)

    @property
    def subject(self) -> str:
        return self.expected.subject if self.expected.subject is not None else str(self.message["Subject"] or "")

    @cached_property
    def unsubscribe_url(self) -> str:
        """The https URL of List-Unsubscribe: the link the footer and the text part must carry."""
        values = self.raw_header("List-Unsubscribe")
        urls = _HTTPS_IN_ANGLES.findall(values[0]) if values else []
        if not urls:
            raise CheckImpossible("the message has no List-Unsubscribe header with an https URL")
        return str(urls[0])

    @property
    def from_domain(self) -> str:
        addresses = self.message["From"].addresses if self.message["From"] else ()
        return addresses[0].domain.lower() if addresses else ""

    @property
    def recipient_address(self) -> str:
        addresses = self.message["To"].addresses if self.message["To"] else ()
        return addresses[0].addr_spec if addresses else ""

    @property
    def recipient_name(self) -> str:
        addresses = self.message["To"].addresses if self.message["To"] else ()
        return addresses[0].display_name if addresses else ""

"""Amazon SNS message signatures, verified as AWS documents it.

The string to sign is fixed name/value lines of the message's fields (Message, MessageId, Subject when
present, SubscribeURL and Token for the confirmations, Timestamp, TopicArn, Type). SignatureVersion 1 is
RSA with SHA-1, 2 is RSA with SHA-256. The certificate comes from SigningCertURL, accepted only over https
from an `sns.<region>.amazonaws.com` host (the TLS connection proves the host), checked for its validity
period, and cached by URL. The fetcher is a parameter so that tests can serve their own certificate.
"""

from __future__ import annotations

import base64
import binascii
import re
import ssl
import threading
import urllib.request
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from newsletter.errors import WebhookError

SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_DOWNLOAD_BYTES = 64 * 1024
CACHED_CERTIFICATES = 32
Fetch = Callable[[str], bytes]


def fetch_https(url: str) -> bytes:
    """GET an https URL with the system's certificate checks; at most 64 KB."""
    request = urllib.request.Request(url, headers={"User-Agent": "newsletter"})
    try:
        with urllib.request.urlopen(request, timeout=10, context=ssl.create_default_context()) as response:
            return bytes(response.read(MAX_DOWNLOAD_BYTES))
    except OSError as error:
        raise WebhookError(f"ses webhook: cannot fetch {url}: {error}", status=502) from None


def checked_sns_url(url: object, field: str) -> str:
    """`url` when it is https on an SNS host; a WebhookError (403) otherwise."""
    parts = urlsplit(str(url or ""))
    if parts.scheme != "https" or not SNS_HOST.match(parts.hostname or "") or parts.port not in (None, 443):
        raise WebhookError(f"ses webhook: {field} {str(url)[:200]!r} is not an https URL on an SNS host", status=403)
    return str(url)


def signing_string(message: Mapping[str, Any]) -> bytes:
    """The lines SNS signs, for this message's type."""
    confirmation = message.get("Type") in ("SubscriptionConfirmation", "UnsubscribeConfirmation")
    fields = CONFIRMATION_FIELDS if confirmation else NOTIFICATION_FIELDS
    lines = []
    for name in fields:
        if name not in message:
            if name == "Subject":
                continue
            raise WebhookError(f"ses webhook: the SNS message has no {name}", status=400)
        lines.append(f"{name}\n{message[name]}\n")
    return "".join(lines).encode("utf-8")


class SnsVerifier:
    """Checks SNS signatures, keeping each signing certificate it has fetched."""

    def __init__(self, fetch: Fetch = fetch_https) -> None:
        self.fetch = fetch
        self._certificates: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def verify(self, message: Mapping[str, Any], now: datetime) -> None:
        """Return if SNS signed `message`; raise WebhookError (403) if not."""
        algorithm = HASHES.get(str(message.get("SignatureVersion", "")))
        if algorithm is None:
            raise WebhookError("ses webhook: SignatureVersion must be 1 or 2", status=403)
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise WebhookError("ses webhook: the Signature is not base64", status=403) from None
        certificate = self.certificate(checked_sns_url(message.get("SigningCertURL"), "SigningCertURL"))
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise WebhookError("ses webhook: the signing certificate is not valid now", status=403)
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookError("ses webhook: the signing certificate holds no RSA key", status=403)
        try:
            key.verify(signature, signing_string(message), padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise WebhookError("ses webhook: the SNS signature does not verify", status=403) from None

    def certificate(self, url: str) -> x509.Certificate:
        with self._lock:
            cached = self._certificates.get(url)
        if cached is not None:
            return cached
        try:
            certificate = x509.load_pem_x509_certificate(self.fetch(url))
        except ValueError:
            raise WebhookError(f"ses webhook: {url} holds no PEM certificate", status=403) from None
        with self._lock:
            if len(self._certificates) >= CACHED_CERTIFICATES:
                self._certificates.clear()  # SNS rotates certificates rarely; many URLs means something odd
            self._certificates[url] = certificate
        return certificate

"""Addresses checked exactly as `subscribers.normalise_email` checks them, fast enough for a million rows.

email_validator spends nearly all of its time on the domain (IDNA, Unicode tables), and a list of a million
readers has a few thousand domains. An address whose local part is a plain ASCII dot-atom, the form
email_validator accepts at once and leaves as it is (its own `DOT_ATOM_TEXT` pattern decides), needs only
its domain checked, so each domain is checked once, through email_validator itself, and remembered. Every
other address, every domain that fails and every address near the length limit goes through
`normalise_email` whole, so a refused address is refused with the very same message
(tests/test_csvio.py runs both over a list of tricky addresses).
"""

from __future__ import annotations

import functools

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import DOT_ATOM_TEXT, EMAIL_MAX_LENGTH

from newsletter.subscribers import normalise_email

DOMAINS_REMEMBERED = 100_000


def checked_address(text: str) -> str:
    """The address validated and lower-cased, or a SubscriberError naming what is wrong, as `normalise_email`."""
    local, at, domain = text.partition("@")
    plain = at and text == text.strip() and "\n" not in text and "\r" not in text
    if plain and DOT_ATOM_TEXT.match(local) and "@" not in domain:
        known = checked_domain(domain)
        # email_validator measures three forms: as given, normalised, and with the IDNA domain.
        if known is not None and len(local) + known[1] < EMAIL_MAX_LENGTH:
            return f"{local}@{known[0]}".lower()
    return normalise_email(text)


@functools.lru_cache(maxsize=DOMAINS_REMEMBERED)
def checked_domain(domain: str) -> tuple[str, int] | None:
    """A domain email_validator accepts, normalised, and the bytes of its longest form; None if it refuses it."""
    try:
        probe = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return None
    return probe.domain, max(len(domain.encode()), len(probe.domain.encode()), len(probe.ascii_domain))

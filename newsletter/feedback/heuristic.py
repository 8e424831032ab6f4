"""Bounces that follow no standard (Yahoo's "Failure Notice", classic Exim text, qmail, old Exchange).

They are read by flufl.bounce's detectors, the ones GNU Mailman uses: each knows one MTA's wording and
says which addresses failed, for good or for now. They see only addresses; the anchors that tie a
report to a delivery are found by the classifier in the quoted original.
"""

from __future__ import annotations

import email

from flufl.bounce import all_failures


def failed_addresses(raw: bytes) -> tuple[list[str], list[str]]:
    """(temporarily, permanently) failing recipients a free-form bounce names, lower-cased and sorted."""
    # The detectors were written against the email package's compat32 messages, as Mailman parses them.
    temporary, permanent = all_failures(email.message_from_bytes(raw))

    def addresses(found: frozenset[bytes]) -> list[str]:
        return sorted({address.decode("utf-8", "replace").strip("<> ").lower() for address in found} - {""})

    hard = addresses(permanent)
    return [address for address in addresses(temporary) if address not in hard], hard

"""The subscriber exports of other newsletter tools, recognised by their header: which column holds what.

Each preset follows the tool's own export (tests/fixtures/import/ holds one file of each, in its real
format): the columns of the address, the name (or first and last name), the time zone, the sign-up date and
the reader's state, and what the tool's words for that state mean here. A reader in good standing counts as
`active` (confirmed only with `--confirmed`, as for the engine's own files); one who never confirmed as
`pending`; every word for "gone" (unsubscribed, cleaned, bounced, complained, blocklisted, …) is a
suppression, with the reason in the tool's terms. A word the preset does not know rejects the row, so a
new state in a tool's export is never guessed to be a reader who wants mail.

    Mailchimp   one file per state (subscribed, unsubscribed, cleaned, non-subscribed members); the state is
                the file's: its UNSUB_TIME / CLEAN_TIME columns, else its name. Times are UTC.
    Kit         `state`: active, inactive (unconfirmed), cancelled, bounced, complained.
    Substack    `email_disabled`: true for a reader who gets no email (unsubscribed or undeliverable).
    listmonk    `status`: enabled, disabled, blocklisted; name and time zone may sit in the `attributes` JSON.
    Buttondown  `subscriber_type`; name and time zone may sit in the `metadata` JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

Standing = Literal["active", "pending", "unsubscribed", "bounced"]
# Keys of a tool's JSON column (listmonk `attributes`, Buttondown `metadata`) that hold our fields.
_JSON_KEYS = {
    "name": "name",
    "full_name": "name",
    "first_name": "first_name",
    "firstname": "first_name",
    "last_name": "last_name",
    "lastname": "last_name",
    "timezone": "timezone",
    "time_zone": "timezone",
    "tz": "timezone",
}
# A date and time with what tools add around them: any fraction of a second, a space before the offset, and a
# zone name or Go's repeated offset after it ("+0000 UTC", "+0530 +0530").
_LOOSE_DATE = re.compile(
    r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d+))?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?(?:\s+(?:[A-Z]{2,5}|[+-]\d{4}))?"
)


@dataclass(frozen=True)
class ToolStatus:
    """What one of a tool's words for a reader's state means here, and why a suppressed row is suppressed."""

    standing: Standing
    reason: str = ""


def _gone(reason: str) -> ToolStatus:
    return ToolStatus("unsubscribed", reason)


def _bounced(reason: str) -> ToolStatus:
    return ToolStatus("bounced", reason)


READER = ToolStatus("active")
UNCONFIRMED = ToolStatus("pending")


@dataclass(frozen=True)
class Preset:
    """One tool's export: the header that identifies it and the columns (lower-cased) that hold each field."""

    title: str
    email: str
    required: frozenset[str]  # every export of the tool has all of these columns
    telltales: frozenset[str] = frozenset()  # ... and at least `telltales_needed` of these
    telltales_needed: int = 0
    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    timezone: str | None = None
    signed_up: tuple[str, ...] = ()  # the first of these with a value is the sign-up date
    fields_json: str | None = None  # a column of JSON whose keys may hold the name and the time zone
    status: str | None = None  # the column of the tool's word for the reader's state
    statuses: Mapping[str, ToolStatus] = field(default_factory=dict)
    # Without a status column: a value in one of these columns means that word...
    markers: tuple[tuple[str, str], ...] = ()
    # ... else the file's name starting with one of these means that word, else `default_status`.
    file_names: tuple[tuple[str, str], ...] = ()
    default_status: str = ""

    def identifies(self, columns: set[str]) -> bool:
        """Whether a header with these (lower-cased) column names is this tool's export."""
        return self.required <= columns and len(self.telltales & columns) >= self.telltales_needed

    def status_of_file(self, columns: set[str], file_name: str) -> str:
        """The state every row of a file without a status column is in, unless a marker column says otherwise."""
        present = [word for column, word in self.markers if column in columns]
        if len(present) == 1:
            return present[0]  # a file of one state: its own columns say which
        name = file_name.lower()
        return next((word for prefix, word in self.file_names if name.startswith(prefix)), self.default_status)


MAILCHIMP = Preset(
    title="Mailchimp",
    email="email address",
    required=frozenset({"email address"}),
    telltales=frozenset(
        {"member_rating", "optin_time", "optin_ip", "confirm_time", "confirm_ip", "leid", "euid", "last_changed"}
    ),
    telltales_needed=2,
    name="name",
    first_name="first name",
    last_name="last name",
    timezone="timezone",
    signed_up=("optin_time", "confirm_time"),
    statuses={
        "subscribed": READER,
        "pending": UNCONFIRMED,
        "unsubscribed": _gone("unsubscribed in Mailchimp"),
        "cleaned": _bounced("cleaned by Mailchimp: the address bounced"),
        "nonsubscribed": _gone("non-subscribed in Mailchimp: never opted in to email"),
    },
    markers=(("clean_time", "cleaned"), ("unsub_time", "unsubscribed")),
    file_names=(("cleaned", "cleaned"), ("unsubscribed", "unsubscribed"), ("nonsubscribed", "nonsubscribed")),
    default_status="subscribed",
)

KIT = Preset(
    title="Kit",
    email="email_address",
    required=frozenset({"email_address", "state"}),
    first_name="first_name",
    last_name="last_name",  # the custom field Kit suggests for it
    signed_up=("created_at",),
    status="state",
    statuses={
        "active": READER,
        "inactive": UNCONFIRMED,
        "cancelled": _gone("cancelled in Kit (unsubscribed)"),
        "bounced": _bounced("bounced in Kit"),
        "complained": _gone("complained in Kit: marked an email as spam"),
    },
)

SUBSTACK = Preset(
    title="Substack",
    email="email",
    required=frozenset({"email", "active_subscription", "email_disabled"}),
    name="name",
    signed_up=("created_at",),
    status="email_disabled",
    statuses={
        "false": READER,
        "": READER,
        "true": _gone("email disabled in Substack: unsubscribed from email or undeliverable"),
    },
)

LISTMONK = Preset(
    title="listmonk",
    email="email",
    required=frozenset({"uuid", "email", "attributes", "status"}),
    name="name",
    signed_up=("created_at",),
    fields_json="attributes",
    status="status",
    statuses={
        "enabled": READER,
        "disabled": _gone("disabled in listmonk"),
        "blocklisted": _gone("blocklisted in listmonk"),
    },
)

# Buttondown's types for readers in good standing, paid or not ("paused" pauses a payment, not the email).
_BUTTONDOWN_READERS = ("regular", "premium", "trialed", "unpaid", "gifted", "churning", "past_due", "paused")
BUTTONDOWN = Preset(
    title="Buttondown",
    email="email",
    required=frozenset({"email", "subscriber_type"}),
    signed_up=("creation_date",),
    fields_json="metadata",
    status="subscriber_type",
    statuses={
        **dict.fromkeys(_BUTTONDOWN_READERS, READER),
        "unactivated": UNCONFIRMED,
        "unsubscribed": _gone("unsubscribed in Buttondown"),
        "removed": _gone("removed from the newsletter in Buttondown"),
        "complained": _gone("complained in Buttondown: marked an email as spam"),
        "spammy": _gone("judged spammy by Buttondown"),
        "blocked": _gone("blocked at sign-up by Buttondown's filter"),
        "undeliverable": _bounced("undeliverable in Buttondown: the address bounced"),
        "malformed": _bounced("undeliverable in Buttondown: a malformed address"),
    },
)

PRESETS = (MAILCHIMP, KIT, SUBSTACK, LISTMONK, BUTTONDOWN)


def detect_preset(columns: set[str]) -> Preset | None:
    """The tool whose export has this header (lower-cased column names), or None for any other file."""
    return next((preset for preset in PRESETS if preset.identifies(columns)), None)


def read_date(text: str) -> datetime | None:
    """A sign-up date as tools write it (ISO 8601, `2024-01-15 10:00:00 UTC`, Go's `… +0000 +0000`), in UTC.

    A date without an offset is taken as UTC: the five tools keep and export UTC, and the operator's own zone
    would be a guess.
    """
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        match = _LOOSE_DATE.fullmatch(value)
        if match is None:
            return None
        day, clock, fraction, offset = match.groups()
        fraction = f".{(fraction + '00000')[:6]}" if fraction else ""
        try:
            moment = datetime.fromisoformat(f"{day}T{clock}{fraction}{offset or ''}")
        except ValueError:
            return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def json_fields(text: str) -> dict[str, str]:
    """Our fields among a JSON object's keys (any case); nothing when the cell is empty or not an object."""
    if not text.strip():
        return {}
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    fields: dict[str, str] = {}
    for key, value in found.items():
        field = _JSON_KEYS.get(str(key).strip().lower().replace(" ", "_"))
        if field and isinstance(value, str):
            fields.setdefault(field, value)
    return fields

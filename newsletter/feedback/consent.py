"""Consent records: who agreed, from where, when, and to which wording of the sign-up form.

They live in the `detail` of the "subscribed" and "confirmed" events, as JSON when the web gave us
something to keep (`{"ip": …, "user_agent": …, "form_version": …, "note": …}`) and as the plain note
otherwise (a subscriber the operator added has no IP to record). The time is the event's own `at`.

The form version is the Git blob id (12 hex digits) of the template the sign-up page is rendered from,
`web/templates/public_subscribe.html`, computed from the file: a change of wording changes it without
anyone having to remember, and `git log --find-object=<version>` shows exactly the words a person saw.

On erase, `subscribers.erase` empties every detail of the person's events, so what remains is the least a
consent record can be: that someone signed up and confirmed at those times, from that source, with no
address, IP or user agent. `subscribers export` writes the latest of each as extra columns, which
`subscribers import` reads past without complaint (a CSV's claim of consent is no evidence; the export
file itself is what to keep).
"""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ScalarSelect, select

from newsletter.models import Event, Subscriber

SIGNUP_FORM = Path(__file__).resolve().parent.parent / "web" / "templates" / "public_subscribe.html"
USER_AGENT_MAX = 500
EXPORT_COLUMNS = (
    "subscribed_at",
    "subscribed_ip",
    "subscribed_user_agent",
    "form_version",
    "confirmed_at",
    "confirmed_ip",
    "confirmed_user_agent",
)
# How csvio spells a header once lower-cased and stripped to letters, so an export re-imports without warnings.
EXPORT_COLUMN_KEYS = tuple(name.replace("_", "") for name in EXPORT_COLUMNS)


@functools.cache
def form_version() -> str:
    """The Git blob id of the sign-up form's template, shortened: changes whenever its wording does."""
    data = SIGNUP_FORM.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()[:12]


def signup_detail(note: str = "", *, ip: str = "", user_agent: str = "") -> str:
    """The "subscribed" event's detail: the note alone, or JSON with the evidence when there is some."""
    if not ip and not user_agent:
        return note
    return _as_json({"ip": ip, "user_agent": user_agent[:USER_AGENT_MAX], "form_version": form_version()}, note)


def confirmation_detail(*, ip: str = "", user_agent: str = "") -> str:
    """The "confirmed" event's detail: empty without evidence."""
    if not ip and not user_agent:
        return ""
    return _as_json({"ip": ip, "user_agent": user_agent[:USER_AGENT_MAX]}, "")


def _as_json(evidence: dict[str, str], note: str) -> str:
    return json.dumps({**evidence, **({"note": note} if note else {})}, ensure_ascii=False, sort_keys=True)


def read_detail(detail: str | None) -> dict[str, str]:
    """An event detail as fields: the JSON's, or {"note": text} for a plain one."""
    if not detail:
        return {}
    if detail.startswith("{"):
        try:
            value: Any = json.loads(detail)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return {str(key): str(item) for key, item in value.items()}
    return {"note": detail}


def _latest(kind: str, column: Any) -> ScalarSelect[Any]:
    return (
        select(column)
        .where(Event.subscriber_id == Subscriber.id, Event.kind == kind)
        .order_by(Event.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def export_columns() -> list[ScalarSelect[Any]]:
    """Correlated subqueries that add, per subscriber row, the latest sign-up's and confirmation's time and detail."""
    return [
        _latest("subscribed", Event.at),
        _latest("subscribed", Event.detail),
        _latest("confirmed", Event.at),
        _latest("confirmed", Event.detail),
    ]


def export_cells(
    subscribed_at: datetime | None, signup: str | None, confirmed_at: datetime | None, confirmation: str | None
) -> tuple[str, ...]:
    """The EXPORT_COLUMNS cells from what `export_columns` selected."""
    signed, confirmed = read_detail(signup), read_detail(confirmation)
    return (
        subscribed_at.isoformat() if subscribed_at else "",
        signed.get("ip", ""),
        signed.get("user_agent", ""),
        signed.get("form_version", ""),
        confirmed_at.isoformat() if confirmed_at else "",
        confirmed.get("ip", ""),
        confirmed.get("user_agent", ""),
    )

"""Time zone names: the places people live in, the other names for them, and the names that are not places.

The tz database says which of its names are zones and which are links to a zone (`US/Eastern` is a link to
`America/New_York`, `Asia/Calcutta` an old spelling of `Asia/Kolkata`); it writes this down in `tzdata.zi`
beside the zone files. A *place* is a zone named Area/City. Names that are not places still parse, since
they are valid zones and readers may hold them, but they are rarely what a person means:

- `EST`, `MST`, `HST` are fixed offsets without daylight saving: New York is on UTC−4 all summer, `EST` is not;
- `EST5EDT`, `CET` and the like follow one set of rules and no place's history;
- `Etc/GMT+5` is UTC−5: its sign is POSIX's, the reverse of ISO 8601's, so `Etc/GMT+2` is two hours *behind*;
- `GMT+2` is no zone at all, and an offset cannot say whether clocks change for summer.

`caveat` says what such a name means and which city zone to choose instead; `offset_hint` explains an offset
typed as a zone. Nothing here reads the clock: offsets are looked up in January and July of SAMPLE_YEAR.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

# Files in the zone database that are not zones at all: the host's own setting and build artefacts.
NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
# The one non-place a form offers: the name everyone knows for UTC (the tz database's Etc/UTC).
UTC_NAME = "UTC"
UTC_SYNONYMS = frozenset({"UTC", "Etc/UTC", "UCT", "Etc/UCT", "Universal", "Etc/Universal", "Zulu", "Etc/Zulu"})
# A year whose January and July show whether a zone keeps daylight saving (kept fixed: no clock here).
SAMPLE_YEAR = 2025
# The city zone each legacy abbreviation is usually meant for.
_CITY_FOR = {
    "EST": "America/New_York",
    "EST5EDT": "America/New_York",
    "CST6CDT": "America/Chicago",
    "MST": "America/Denver",
    "MST7MDT": "America/Denver",
    "PST8PDT": "America/Los_Angeles",
    "HST": "Pacific/Honolulu",
    "CET": "Europe/Paris",
    "MET": "Europe/Paris",
    "EET": "Europe/Athens",
    "WET": "Europe/Lisbon",
    "GMT": "Europe/London",
}
_GEOGRAPHIC_AREAS = frozenset(
    {"Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic", "Australia", "Europe", "Indian", "Pacific"}
)
# "GMT+2", "UTC-05:00", "+0530", "UTC +2": an offset typed where a zone name belongs.
_OFFSET = re.compile(r"(?:UTC|GMT)?\s*([+\-\u2212])\s*(\d{1,2})(?::?([0-5]\d))?", re.IGNORECASE)
_POSIX_ETC = re.compile(r"Etc/GMT([+-])(\d{1,2})")


@functools.cache
def known_zones() -> dict[str, str]:
    """Map each lower-cased zone name (places, links and the rest) to its spelling."""
    return {name.lower(): name for name in available_timezones() - NOT_ZONES}


@functools.cache
def known_spellings() -> frozenset[str]:
    """Every zone name as spelled (a set: `in` on the dict's values would walk all ~600 of them)."""
    return frozenset(known_zones().values())


@functools.cache
def _zone_source() -> tuple[frozenset[str], dict[str, str]] | None:
    """(zones, link → zone) from the tz database's own `tzdata.zi`, or None where it is not installed."""
    for folder in zoneinfo.TZPATH:
        source = Path(folder) / "tzdata.zi"
        if source.is_file():
            zones: set[str] = set()
            links: dict[str, str] = {}
            for line in source.read_text(encoding="utf-8").splitlines():
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "Z":
                    zones.add(fields[1])
                elif len(fields) >= 3 and fields[0] == "L":
                    links[fields[2]] = fields[1]
            return frozenset(zones), links
    return None


def _is_place(name: str) -> bool:
    return name.split("/", 1)[0] in _GEOGRAPHIC_AREAS and "/" in name


@functools.cache
def places() -> tuple[str, ...]:
    """Every zone named for a place, without its links and old spellings, sorted."""
    source = _zone_source()
    # Without tzdata.zi the links cannot be told apart; every Area/City name is the best we have.
    names = source[0] if source is not None else frozenset(known_zones().values())
    installed = set(known_zones().values())
    return tuple(sorted(name for name in names if _is_place(name) and name in installed))


@functools.cache
def form_zones() -> tuple[str, ...]:
    """The zones a form offers: "UTC" and every place, without aliases or deprecated links."""
    return (UTC_NAME, *places())


@functools.cache
def aliases() -> dict[str, str]:
    """Each other name of an offered zone (a link, an old spelling) → the name the form offers."""
    source = _zone_source()
    if source is None:
        return {}
    offered = set(form_zones())
    found = {link: target for link, target in source[1].items() if target in offered and link not in offered}
    found.update({name: UTC_NAME for name in UTC_SYNONYMS if name != UTC_NAME})
    return dict(sorted(found.items()))


def _offsets(name: str) -> tuple[timedelta, timedelta]:
    """The zone's UTC offsets in mid-January and mid-July of SAMPLE_YEAR."""
    zone = ZoneInfo(name)
    winter, summer = (datetime(SAMPLE_YEAR, month, 15, 12, tzinfo=zone).utcoffset() for month in (1, 7))
    assert winter is not None and summer is not None
    return winter, summer


def _shown(offset: timedelta) -> str:
    """UTC+2, UTC−5, UTC+5:30."""
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "\u2212"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")


@functools.cache
def _prominence() -> dict[str, int]:
    """How many countries each zone serves, from the tz database's zone1970.tab (empty where not installed)."""
    for folder in zoneinfo.TZPATH:
        table = Path(folder) / "zone1970.tab"
        if table.is_file():
            rows = (line.split("\t") for line in table.read_text(encoding="utf-8").splitlines())
            return {row[2]: len(row[0].split(",")) for row in rows if len(row) >= 3 and not row[0].startswith("#")}
    return {}


@functools.cache
def _steady_places() -> dict[timedelta, tuple[str, ...]]:
    """Places that keep one offset all year, by that offset, the zones serving most countries first."""
    found: dict[timedelta, list[str]] = {}
    for name in places():
        winter, summer = _offsets(name)
        if winter == summer:
            found.setdefault(winter, []).append(name)
    served = _prominence()
    return {offset: tuple(sorted(names, key=lambda n: (-served.get(n, 0), n))) for offset, names in found.items()}


def _steady_cities(offset: timedelta, count: int = 3) -> str:
    """ "'Africa/Maputo', 'Africa/Johannesburg' or 'Africa/Cairo'": places on this offset all year."""
    names = [repr(name) for name in _steady_places().get(offset, ())[:count]]
    if offset == timedelta(0):
        names.append(repr(UTC_NAME))
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} or {names[-1]}"


def _is_alias_of_a_place(name: str) -> bool:
    source = _zone_source()
    return source is not None and _is_place(source[1].get(name, ""))


def caveat(name: str) -> str | None:
    """What a zone name that is not a place means, and which city zone to choose; None for places and UTC."""
    if name in UTC_SYNONYMS or name not in known_zones().values():
        return None
    legacy = name in _CITY_FOR or name.startswith("Etc/")
    if not legacy and (_is_place(name) or _is_alias_of_a_place(name)):
        return None  # US/Eastern, Asia/Calcutta: other names of a place, with its history
    winter, summer = _offsets(name)
    city = _CITY_FOR.get(name)
    if winter != summer:
        return (
            f"time zone {name!r} follows one set of daylight-saving rules ({_shown(winter)} in winter, "
            f"{_shown(summer)} in summer) and no place's history: choose the zone of a city"
            + (f", such as {city!r}" if city else "")
        )
    meaning = f"time zone {name!r} is {_shown(winter)} all year, without daylight saving"
    posix = _POSIX_ETC.fullmatch(name)
    if posix:
        sign, hours = posix.groups()
        unit = "hour" if hours == "1" else "hours"
        meaning += (
            f" (its sign is POSIX's, the reverse of what it looks like: {name} is {hours} {unit} "
            f"{'behind' if sign == '+' else 'ahead of'} UTC, and {_shown(-winter)} is "
            f"Etc/GMT{'-' if sign == '+' else '+'}{hours})"
        )
    steady = _steady_cities(winter)
    if city is None:
        return f"{meaning}: choose the zone of a city" + (f", such as {steady}" if steady else "")
    city_winter, city_summer = _offsets(city)
    if city_winter != city_summer:
        meaning += f", while {city} moves to {_shown(city_summer)} in summer"
    suggestion = f"choose the zone of a city, such as {city!r}"
    if steady and city_winter != city_summer:
        suggestion += f" (or, for {_shown(winter)} all year, {steady})"
    return f"{meaning}: {suggestion}"


def offset_hint(text: str) -> str | None:
    """For an offset typed as a zone ("GMT+2"), why it is not one and which zones mean it; else None."""
    match = _OFFSET.fullmatch(text.strip())
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    offset = timedelta(hours=int(hours), minutes=int(minutes or 0))
    if sign != "+":
        offset = -offset
    if abs(offset) > timedelta(hours=14):
        return None
    hint = (
        f"{text.strip()!r} is an offset from UTC, not a time zone: it cannot say whether clocks change for "
        "summer. Choose the zone of a city"
    )
    steady = _steady_cities(offset)
    if steady:
        hint += f" (for {_shown(offset)} all year: {steady})"
    if offset and not offset.total_seconds() % 3600:
        hours_east = int(offset.total_seconds()) // 3600
        hint += (
            f"; the tz database's Etc/GMT{'-' if hours_east > 0 else '+'}{abs(hours_east)} is {_shown(offset)} "
            "all year, its sign reversed as POSIX writes it"
        )
    return hint

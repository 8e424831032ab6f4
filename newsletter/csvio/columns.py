"""A file's header read once: which column holds each field, which tool made the file, what is ignored.

The engine's own columns (`email`, `name`, `timezone`, `weekday`, `time`, `status`, `position`) are named
in any order and case, with the spellings people use (`E-Mail`, `Time Zone`, `First Name` + `Last Name`);
a header that is another tool's export takes that tool's preset (`presets.py`) instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from newsletter.csvio.exporting import COLUMNS
from newsletter.csvio.presets import Preset, detect_preset
from newsletter.errors import SubscriberError
from newsletter.feedback import consent

# Header spellings people use, after lower-casing and dropping everything but letters.
_ALIASES = {
    "emailaddress": "email",
    "zone": "timezone",
    "day": "weekday",
    "sendtime": "time",
    "firstname": "first_name",
    "givenname": "first_name",
    "lastname": "last_name",
    "surname": "last_name",
    "familyname": "last_name",
}
KNOWN_COLUMNS = (*COLUMNS, "first_name", "last_name")


@dataclass(frozen=True)
class Layout:
    """Where each field sits in a row (cell indexes by field name), for the engine's columns or a tool's."""

    fields: dict[str, int]
    width: int  # the number of columns the header names
    ignored: list[str]
    preset: Preset | None = None
    signed_up: tuple[int, ...] = ()  # a tool's sign-up date: the first of these cells with a value
    markers: tuple[tuple[int, str], ...] = ()  # a tool's marker columns: a value means that state word
    file_status: str = ""  # a tool's state word for rows that carry none of their own


def read_header(header: list[str], line: int, source_name: str, file_name: str) -> Layout:
    """The layout of a file from its header row (none: `[]`); a SubscriberError if it names no `email` column."""
    lowered = [raw.strip().lower() for raw in header]
    preset = detect_preset(set(lowered))
    if preset is not None:
        return _preset_layout(preset, header, lowered, file_name)
    fields: dict[str, int] = {}
    ignored: list[str] = []
    for index, raw in enumerate(header):
        key = re.sub(r"[^a-z]", "", raw.lower())
        name = _ALIASES.get(key, key)
        if name not in KNOWN_COLUMNS:
            if name not in consent.EXPORT_COLUMN_KEYS:  # the export's consent columns: evidence, not imported
                ignored.append(raw.strip())
            continue
        if name in fields:
            raise SubscriberError(f"{source_name} line {line}: the header names the column {name!r} twice")
        fields[name] = index
    if "email" not in fields:
        looks_like_data = any("@" in cell for cell in header)
        hint = f" (line {line} looks like data, not a header)" if looks_like_data else ""
        raise SubscriberError(
            f"{source_name} line {line or 1}: no header row naming an `email` column{hint}; "
            "the first line must name the columns, such as: email,name,timezone,weekday,time"
        )
    return Layout(fields, len(header), ignored)


def _preset_layout(preset: Preset, header: list[str], lowered: list[str], file_name: str) -> Layout:
    position = {name: index for index, name in reversed(list(enumerate(lowered)))}  # the first of a repeated name
    wanted = {
        "email": preset.email,
        "name": preset.name,
        "first_name": preset.first_name,
        "last_name": preset.last_name,
        "timezone": preset.timezone,
        "status": preset.status,
        "fields_json": preset.fields_json,
    }
    fields = {field: position[column] for field, column in wanted.items() if column in position}
    signed_up = tuple(position[column] for column in preset.signed_up if column in position)
    markers = tuple((position[column], word) for column, word in preset.markers if column in position)
    used = {*fields.values(), *signed_up, *(index for index, _ in markers)}
    ignored = [raw.strip() for index, raw in enumerate(header) if index not in used]
    file_status = "" if preset.status else preset.status_of_file(set(lowered), file_name)
    return Layout(fields, len(header), ignored, preset, signed_up, markers, file_status)

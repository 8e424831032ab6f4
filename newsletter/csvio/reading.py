"""Reading a CSV file people made: its encoding, its separator, and records that survive broken quoting.

Encoding, decided: a byte-order mark wins (UTF-8, UTF-16 LE or BE); without one, a file whose bytes are
largely NUL on alternate positions is UTF-16 (an ASCII-heavy UTF-16 file; a stray NUL byte is just a bad
line); otherwise the file is UTF-8 if all of it decodes as UTF-8, else Windows-1252 (what spreadsheets on
Windows write; its printable characters include all of Latin-1's). An explicit encoding overrides the guess.
The whole file is checked once, in chunks, before any row is read, so a decoding problem never surfaces
halfway through an import.

Records are read a physical line at a time, so memory stays flat however large the file. A record that
runs over several lines is accepted only when the caller says it is genuine (`is_genuine`); otherwise its
first line is reported as "a quote opened here is never closed" and the lines it swallowed are read again
as records of their own, so one stray quote costs one row, not the rest of the file. A line the csv
module cannot read at all (a NUL byte, a field over the size limit) is reported the same way.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from newsletter.errors import SubscriberError

SAMPLE_BYTES = 64 * 1024
CHECK_CHUNK_BYTES = 1 << 20
DELIMITERS = (",", ";", "\t")
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# In UTF-16 text that is mostly ASCII, every other byte is NUL.
_UTF16_NUL_SHARE = 0.3


@dataclass(frozen=True)
class Record:
    """One CSV record: the line it starts on and its cells, or why it could not be read."""

    line: int
    cells: list[str]
    problem: str = ""


def detect_encoding(handle: BinaryIO, encoding: str | None = None) -> str:
    """The encoding to read `handle` with (rules in the module docstring); the handle is left at its start."""
    try:
        if encoding:
            try:
                codecs.lookup(encoding)
            except LookupError:
                raise SubscriberError(f"encoding {encoding!r} is unknown; try utf-8, utf-16 or cp1252") from None
            _check_decodes(handle, encoding)
            return encoding
        head = handle.read(SAMPLE_BYTES)
        for bom, name in _BOMS:
            if head.startswith(bom):
                _check_decodes(handle, name)
                return name
        utf16 = _utf16_without_bom(head)
        if utf16:
            _check_decodes(handle, utf16)
            return utf16
        try:
            _check_decodes(handle, "utf-8")
            return "utf-8"
        except SubscriberError:
            pass
        try:
            _check_decodes(handle, "cp1252")
            return "cp1252"
        except SubscriberError:
            return "latin-1"  # every byte is a Latin-1 character
    finally:
        handle.seek(0)


def _utf16_without_bom(head: bytes) -> str | None:
    half = len(head) // 2
    if half == 0:
        return None
    even, odd = head[0::2].count(0), head[1::2].count(0)
    if odd >= _UTF16_NUL_SHARE * half and even * 4 <= odd:
        return "utf-16-le"
    if even >= _UTF16_NUL_SHARE * half and odd * 4 <= even:
        return "utf-16-be"
    return None


def _check_decodes(handle: BinaryIO, encoding: str) -> None:
    """Raise SubscriberError naming the byte where the file stops being `encoding` text."""
    handle.seek(0)
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    while True:
        chunk = handle.read(CHECK_CHUNK_BYTES)
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as error:
            raise SubscriberError(
                f"not {encoding} text: {error.reason} at byte {offset + error.start}; pass --encoding"
            ) from None
        if not chunk:
            return
        offset += len(chunk)


def sniff_delimiter(first_line: str) -> str:
    """Comma, semicolon or tab: whichever the header line uses most (comma when it uses none)."""
    if not any(delimiter in first_line for delimiter in DELIMITERS):
        return ","
    return max(DELIMITERS, key=first_line.count)


class _Lines:
    """Physical lines for csv.reader, numbered, keeping those of the current record so they can be read again."""

    def __init__(self, source: Iterable[str]) -> None:
        self._source = iter(source)
        self._again: list[str] = []  # a stack: the next line to hand out is last
        self.number = 0  # the line number of the last line handed out
        self.taken: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._again.pop() if self._again else next(self._source)
        self.number += 1
        self.taken.append(line)
        return line

    def read_again(self, lines: list[str]) -> None:
        self._again.extend(reversed(lines))
        self.number -= len(lines)


def read_records(
    lines: Iterable[str], delimiter: str, is_genuine: Callable[[list[str], list[str]], bool]
) -> Iterator[Record]:
    """Yield every record, one per line unless `is_genuine(cells, swallowed_lines)` accepts a longer one."""
    source = _Lines(lines)
    reader = csv.reader(source, delimiter=delimiter)
    while True:
        source.taken = []
        start = source.number + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            reason = str(error).replace("line contains NUL", "contains a NUL byte")
            yield Record(start, [], f"cannot be read as CSV ({reason}); fix or remove this line")
            source.read_again(source.taken[1:])
            reader = csv.reader(source, delimiter=delimiter)  # the failed record left the parser mid-field
            continue
        swallowed = source.taken[1:]
        if swallowed and not is_genuine(cells, swallowed):
            yield Record(start, [], "a quote opened on this line is never closed; close it or remove it")
            source.read_again(swallowed)
            reader = csv.reader(source, delimiter=delimiter)
            continue
        yield Record(start, cells)

"""What one check says, and the result of one checklist item."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckResult:
    """One checklist item (numbered as in the email checklist) for one message."""

    number: int
    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.number:>2}. {self.name}: {self.detail}"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str


def judge(problems: list[str], ok_detail: str) -> Verdict:
    """Fail with every problem found, or pass saying what was verified."""
    if problems:
        return Verdict(False, "; ".join(problems))
    return Verdict(True, ok_detail)

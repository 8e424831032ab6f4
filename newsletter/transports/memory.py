"""Keep messages in a list, and fail on cue: the transport for tests whose point is elsewhere."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from newsletter.errors import PermanentSendError, TransientSendError

if TYPE_CHECKING:
    from newsletter.transports import Envelope


@dataclass
class _ScriptedFailure:
    code: int
    remaining: int | None  # None: fail every time


class MemoryTransport:
    """Record every accepted envelope in `sent`; refuse the recipients it was told to refuse."""

    def __init__(self) -> None:
        self.sent: list[Envelope] = []
        self.attempts = 0
        self.closed = False
        self._failures: dict[str, _ScriptedFailure] = {}
        self._lock = threading.Lock()

    def fail_transiently(self, *recipients: str, code: int = 451, times: int | None = None) -> None:
        """Refuse these recipients with a 4xx reply, `times` times (every time when None)."""
        if not 400 <= code < 500:
            raise ValueError(f"a transient failure needs a 4xx code, got {code}")
        self._script(recipients, code, times)

    def fail_permanently(self, *recipients: str, code: int = 550) -> None:
        """Refuse these recipients with a 5xx reply every time."""
        if not 500 <= code < 600:
            raise ValueError(f"a permanent failure needs a 5xx code, got {code}")
        self._script(recipients, code, None)

    def check(self) -> None:
        """Always ready."""

    def send(self, envelope: Envelope) -> str:
        """Accept the envelope, or raise the scripted failure of its first refused recipient."""
        with self._lock:
            self.attempts += 1
            for recipient in envelope.recipients:
                failure = self._failures.get(recipient.lower())
                if failure is None or failure.remaining == 0:
                    continue
                if failure.remaining is not None:
                    failure.remaining -= 1
                reply = f"{failure.code} refused {recipient} (scripted failure)"
                error = TransientSendError if failure.code < 500 else PermanentSendError
                raise error(f"memory transport: {reply}", code=failure.code, reply=reply)
            self.sent.append(envelope)
            return f"250 2.0.0 Ok: queued as {len(self.sent)}"

    def close(self) -> None:
        """Remember that the transport was closed (tests may assert it)."""
        self.closed = True

    def _script(self, recipients: tuple[str, ...], code: int, times: int | None) -> None:
        with self._lock:
            for recipient in recipients:
                self._failures[recipient.lower()] = _ScriptedFailure(code, times)

"""`newsletter serve` sends each sign-up's confirmation within seconds, from a thread of its own.

A reader who has just pressed Subscribe waits for the email; at the next cron `newsletter send` it could be
minutes away. So the web process sends confirmations itself, and only those: lessons stay with `send` and
`run`, which an operator starts and stops on purpose. Each sign-up wakes the thread; sign-ups that arrive
while it sends are covered by one more run, however many they are. The run claims rows like any sender, so
`serve`, `send` and `run` side by side still send each confirmation once. A relay that fails is reported
and the confirmation waits, pending, for the next run of any sender.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from newsletter.dispatch import send_due
from newsletter.dispatch.sender import OnOutcome
from newsletter.errors import NewsletterError
from newsletter.logs import one_line
from newsletter.models import CONFIRMATION
from newsletter.project import Project
from newsletter.transports import Transport


class ConfirmationSender:
    """A thread that sends the due confirmations whenever `nudge` is called; `close` finishes and stops it."""

    def __init__(
        self,
        project: Callable[[], Project],
        transport: Transport,
        *,
        on_outcome: OnOutcome,
        on_failure: Callable[[str], None],
    ) -> None:
        self._project = project
        self._transport = transport
        self._on_outcome = on_outcome
        self._on_failure = on_failure
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="confirmations", daemon=True)

    def start(self) -> None:
        """Start the thread, with one run for confirmations that were due before this process started."""
        self._thread.start()
        self.nudge()

    def nudge(self) -> None:
        """Send the due confirmations soon; safe from any thread, cheap to call often."""
        self._wanted.set()

    def close(self) -> None:
        """Let the message on the wire finish and be recorded, then stop the thread."""
        self._stop.set()
        self._wanted.set()
        if self._thread.is_alive():
            self._thread.join()
        self._transport.close()

    def _loop(self) -> None:
        while True:
            self._wanted.wait()
            if self._stop.is_set():
                return
            self._wanted.clear()  # a sign-up from here on gets a run of its own
            try:
                send_due(
                    self._project(), self._transport, stop=self._stop, on_outcome=self._on_outcome, lesson=CONFIRMATION
                )
            except (NewsletterError, SQLAlchemyError) as error:
                self._on_failure(one_line(error))
            finally:
                self._transport.close()  # relays drop idle connections; reconnecting per run is cheap

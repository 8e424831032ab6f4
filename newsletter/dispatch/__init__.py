"""Send what is due: claim → render → send → record (the ledger's changes are `newsletter.ledger`'s).

    queue.py    a run's counts, clock and name, and what is due (`send --dry-run`, the progress bar)
    sender.py   `Dispatcher`: one run over the SMTP connections; `send_due`, `send_test`

Crash safety: `smtp_started_at` is committed before a message goes on the wire, and outcomes are committed
in batches (half the window, or whatever has landed within `GATHER_SECONDS`), guarded by `lease_owner`;
the same commit marks the next messages started. At most `IN_FLIGHT_PER_CONNECTION × connections` messages are
marked but not yet recorded, so a sender process killed at any moment repeats at most that many, each
with the same Message-ID; it never loses one. Concurrency: the claim is one
UPDATE … WHERE id IN (due rows) RETURNING, with `FOR UPDATE SKIP LOCKED` on PostgreSQL and `BEGIN
IMMEDIATE` on SQLite, so any number of senders split the work and never take the same row.
"""

from newsletter.dispatch.queue import (
    Clock,
    DryRun,
    DueDelivery,
    SendSummary,
    clock_from,
    count_due,
    dry_run,
    worker_name,
)
from newsletter.dispatch.sender import Dispatcher, send_due, send_test

__all__ = [
    "Clock",
    "Dispatcher",
    "DryRun",
    "DueDelivery",
    "SendSummary",
    "clock_from",
    "count_due",
    "dry_run",
    "send_due",
    "send_test",
    "worker_name",
]

"""Send what is due: claim → render → send → record, one ledger row at a time.

    ledger.py   what is due, claims, leases, backoff, who may receive what
    sender.py   `Dispatcher`: one run over the SMTP connections; `send_due`, `send_test`

The delivery ledger (`deliveries`) is both outbox and record:

    pending ──claim──▶ sending (lease_owner, lease_until) ──250──▶ sent  (+ the next lesson planned)
       ▲                  │  └──4xx / timeout / dropped──▶ pending again, due after backoff + jitter
       │                  ├──recipient refused (5xx)──▶ failed (the reply kept; repeats suppress the subscriber)
       │                  ├──relay refused sender / content──▶ pending, attempt uncounted; the run stops
       │                  └──render error, no SMTPUTF8, a surprise──▶ held (the error kept; `retry` releases it)
       └── sending whose lease expired (its sender died): released at the start of every run

Crash safety: `smtp_started_at` is committed before the message goes on the wire and each outcome is
committed before the next message goes out on that connection, guarded by `lease_owner`; one commit does
both, so the send path costs one commit per message. A sender killed mid-run repeats at most the messages
that were on its open connections, and a repeat carries the same Message-ID. Concurrency: the claim is one
UPDATE … WHERE id IN (due rows) RETURNING, with `FOR UPDATE SKIP LOCKED` on PostgreSQL and `BEGIN
IMMEDIATE` on SQLite, so any number of senders split the work and never take the same row.

A 5xx for a lesson records it as failed and moves the subscriber on to the next lesson (a mailbox that
refuses one lesson would otherwise stall the course); `hard_bounce_limit` consecutive refusals suppress
the subscriber as `bounced`. `newsletter retry` can put a failed lesson back; a lesson sent late that way
never moves the subscriber's position backwards.
"""

from newsletter.dispatch.ledger import (
    Clock,
    DueDelivery,
    SendSummary,
    claim_due_deliveries,
    clock_from,
    count_due,
    list_due,
    may_receive,
    receiving_statuses,
    release_expired_leases,
    retry_delay,
    worker_name,
)
from newsletter.dispatch.sender import Dispatcher, send_due, send_test

__all__ = [
    "Clock",
    "Dispatcher",
    "DueDelivery",
    "SendSummary",
    "claim_due_deliveries",
    "clock_from",
    "count_due",
    "list_due",
    "may_receive",
    "receiving_statuses",
    "release_expired_leases",
    "retry_delay",
    "send_due",
    "send_test",
    "worker_name",
]

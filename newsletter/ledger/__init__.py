"""The delivery ledger: every change of a delivery's status happens in this package, nowhere else.

    waiting.py   the row each reader waits on: planning it (the one rule is `planning.next_send`),
                 cancelling it, holding and releasing it for lessons that may not go out (the gates)
    wire.py      the send path: claims, leases, "on the wire", held and released rows
    outcomes.py  recording what the relay said, in batches: sent, retried, failed, and the next lesson
    pacing.py    recipient domains that asked us to slow down: paused for every sender, through the database
    course.py    a course that changed on disk: re-planning every waiting row, and the impact preview
    operator.py  what an operator puts back: `retry`

One row per (subscriber, lesson), the lesson named by its slug (the double opt-in email is the lesson
"confirmation"). The next lesson of every reader is always one waiting row (pending, or held), so "what
is due" is one indexed range query on (status, due_at) at any scale.

    pending ──claim──▶ sending (lease) ──relay accepted──▶ sent      (+ the next lesson planned)
      ▲  ▲               │  ├──4xx / timeout / dropped──▶ pending again, after backoff + jitter
      │  │               │  ├──recipient refused──▶ failed           (+ the next lesson planned)
      │  │               │  ├──relay refused sender / content──▶ pending, attempt uncounted; run stops
      │  │               │  └──cannot render, cannot carry, a surprise──▶ held (render | relay | error)
      │  │               └── lease expired (its sender died): pending again, same Message-ID
      │  └── held (draft | checklist | broken): released when the lesson may go out again
      └───── held (render | relay | error), failed: `newsletter retry`
    pending | held ──pause / unsubscribe / bounce──▶ cancelled
"""

from newsletter.ledger.waiting import (
    RECEIVED,
    RECEIVING,
    WAITING,
    Gate,
    Reader,
    apply_gates,
    cancel_waiting,
    forget,
    load_readers,
    plan_confirmation,
    plan_next,
    put_waiting,
    withdraw_waiting,
)

__all__ = [
    "RECEIVED",
    "RECEIVING",
    "WAITING",
    "Gate",
    "Reader",
    "apply_gates",
    "cancel_waiting",
    "forget",
    "load_readers",
    "plan_confirmation",
    "plan_next",
    "put_waiting",
    "withdraw_waiting",
]

"""The deliverability loop: what happens to a message after the relay accepted it.

    bounce mailbox (mailbox/: Maildir, IMAP, POP3)          provider webhooks (webhooks/: SES, Postmark, ...)
        └─ classifier: dsn (RFC 3464), arf (RFC 5965),              └─ each verifies its signature, then
           heuristic (flufl.bounce) ─▶ FeedbackReport ◀─────────────── turns events into FeedbackReports
                                            │
                                 record.record_report: idempotent by external id; tied to a delivery by the
                                 VERP address (verp), our Message-ID, or X-Newsletter-Delivery; then
                                 hard bounce → bounced + suppressed, 3 soft of the last 5 → the same,
                                 complaint → unsubscribed + suppressed (suppression)

`sweep.process_mailbox` is one pass over the mailbox (the `newsletter bounces` command and each daemon tick).
`consent` keeps the evidence of sign-up and confirmation that complaints are answered with. This module
imports nothing, so `subscribers` can import `suppression` without a cycle.
"""

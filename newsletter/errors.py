"""Every error the engine raises on purpose.

    NewsletterError                 base: a message meant for a person; the CLI prints it and exits 1
    ├── ConfigError                 config.toml or a NEWSLETTER_* variable: names the key and what is allowed
    ├── LessonError                 a lesson or series.toml: names the file and, where known, the line
    ├── TemplateError               a Jinja2 or MJML template that cannot render: file and line
    ├── SubscriberError             a bad address, zone, weekday or time; an unknown subscriber
    │   └── ScheduleValueError      a weekday, send time or time zone that is not one (config.toml, CLI, forms)
    ├── TokenError                  a signed link that is forged, altered, expired or for another purpose
    ├── DatabaseError               the database cannot be reached or migrated
    ├── MessageError                an email that cannot be written safely (a header value that would break)
    ├── MailboxError                the bounce mailbox cannot be opened, read or tidied
    ├── WebhookError                a provider's webhook call that is refused: carries the HTTP status to answer
    └── TransportError              the mail transport as a whole cannot work (auth refused, no such host)
        ├── RelayError              the relay refused the sender, the session or the content, not a recipient:
        │                           the run stops and every subscriber keeps their state
        └── SendError               one message could not be sent
            ├── TransientSendError  try again later: 4xx, timeout, dropped connection
            ├── PermanentSendError  do not retry: the recipient was refused (5xx at RCPT, or naming them)
            └── UncarriedSendError  this relay cannot carry this message (no SMTPUTF8): held, not a bounce

Anything else escaping to the CLI is a bug and shows its traceback.
"""

from __future__ import annotations


class NewsletterError(Exception):
    """A failure explained for a person; the message says what to do next."""


class ConfigError(NewsletterError):
    """A missing or invalid setting."""


class LessonError(NewsletterError):
    """A lesson file or series.toml that cannot be loaded."""

    def __init__(self, path: object, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path} line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class TemplateError(NewsletterError):
    """An email template that fails to render."""


class SubscriberError(NewsletterError):
    """Invalid subscriber data or an unknown subscriber."""


class ScheduleValueError(SubscriberError):
    """A weekday, send time or time zone that does not parse; `expected` says what would."""

    def __init__(self, what: str, value: str, expected: str) -> None:
        self.what = what
        self.value = value
        self.expected = expected
        super().__init__(f"{what} {value!r}: expected {expected}")


class TokenError(NewsletterError):
    """A signed token that cannot be trusted for the requested purpose."""


class DatabaseError(NewsletterError):
    """The database is unreachable or cannot be brought up to date."""


class MessageError(NewsletterError):
    """A value that cannot go into an email's headers without changing their structure."""


class MailboxError(NewsletterError):
    """The bounce mailbox cannot be reached, logged in to, read or tidied."""


class WebhookError(NewsletterError):
    """A webhook call we refuse: unauthenticated, malformed, replayed, or for an endpoint not configured."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


class TransportError(NewsletterError):
    """The transport cannot send at all (bad credentials, unreachable host, TLS mismatch)."""


class RelayError(TransportError):
    """The relay refused something that is not about one recipient; retrying the run later may work."""

    def __init__(self, message: str, *, code: int, reply: str, stage: str) -> None:
        self.code = code
        self.reply = reply
        self.stage = stage
        super().__init__(message)


class SendError(TransportError):
    """One message was not accepted; `by_recipient` when the recipient's server answered, not the connection."""

    def __init__(self, message: str, *, code: int | None = None, reply: str = "", by_recipient: bool = False) -> None:
        self.code = code
        self.reply = reply
        self.by_recipient = by_recipient
        super().__init__(message)


class TransientSendError(SendError):
    """The message may succeed later: 4xx reply, timeout or lost connection."""


class PermanentSendError(SendError):
    """The server refused the message for good: 5xx reply."""


class UncarriedSendError(SendError):
    """The relay lacks what this one message needs (SMTPUTF8 for a non-ASCII address); the recipient is fine."""

"""Settings: loaded once from config.toml and `NEWSLETTER_*` variables into one frozen, validated object.

Precedence, lowest first: the defaults below < config.toml < `NEWSLETTER_<SECTION>_<KEY>` < command-line flags
(the CLI applies flags with `Settings.replace`). Secrets never live in a file we commit: the SMTP password comes
from `NEWSLETTER_SMTP_PASSWORD`, the signing key from `NEWSLETTER_SECRET_KEY` (or a generated, git-ignored file),
the studio token from `NEWSLETTER_WEB_ADMIN_TOKEN`, the bounce mailbox's password from `NEWSLETTER_BOUNCES_PASSWORD`,
the webhook credentials from `NEWSLETTER_WEBHOOKS_POSTMARK_PASSWORD` and `NEWSLETTER_WEBHOOKS_MAILGUN_SIGNING_KEY`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import secrets
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Any, Literal

from newsletter.errors import ConfigError

FirstLesson = Literal["next_slot", "immediately"]
CONFIG_FILENAME = "config.toml"
SECRET_KEY_FILENAME = ".secret-key"


@dataclass(frozen=True, slots=True)
class NewsletterSection:
    name: str = "Newsletter"
    base_url: str = "http://127.0.0.1:8025"
    lessons: Path = Path("lessons")
    templates: Path = Path("templates")


@dataclass(frozen=True, slots=True)
class SenderSection:
    from_: str = "lessons@example.com"
    from_name: str = ""
    reply_to: str = ""
    list_id: str = "example.com"
    address: str = "Example Publishing, 1 Main Street, Springfield"


@dataclass(frozen=True, slots=True)
class ScheduleSection:
    timezone: str = "UTC"
    weekday: str = "Monday"
    time_: time = time(7, 0)
    min_gap: timedelta = timedelta(days=3)
    first_lesson: FirstLesson = "next_slot"


@dataclass(frozen=True, slots=True)
class DatabaseSection:
    url: str = "sqlite:///newsletter.db"


@dataclass(frozen=True, slots=True)
class DeliverySection:
    transport: Literal["outbox", "smtp"] = "outbox"
    outbox: Path = Path("outbox")
    batch_size: int = 100
    lease_seconds: int = 300
    max_attempts: int = 8
    retry_base_seconds: int = 60
    hard_bounce_limit: int = 2


@dataclass(frozen=True, slots=True)
class SmtpSection:
    host: str = "localhost"
    port: int = 25
    security: Literal["none", "starttls", "tls"] = "none"
    username: str = ""
    password: str = field(default="", metadata={"secret": "NEWSLETTER_SMTP_PASSWORD"})
    connections: int = 4
    rate_per_second: float = 0.0
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class DkimSection:
    selector: str = ""
    domain: str = ""
    private_key: Path | None = None


@dataclass(frozen=True, slots=True)
class WebSection:
    host: str = "127.0.0.1"
    port: int = 8025
    admin_token: str = field(default="", metadata={"secret": "NEWSLETTER_WEB_ADMIN_TOKEN"})
    subscribe_rate_per_hour: int = 10
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DaemonSection:
    tick_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class BouncesSection:
    address: str = ""  # local@domain: the envelope sender becomes local+<signed delivery id>@domain; empty = off
    mailbox: str = ""  # a Maildir path, or imaps://user@host[:port]/FOLDER, or pop3s://user@host[:port]
    password: str = field(default="", metadata={"secret": "NEWSLETTER_BOUNCES_PASSWORD"})
    processed_folder: str = "Processed"
    soft_bounce_limit: int = 3
    soft_bounce_window: int = 5
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class WebhooksSection:
    ses_topic_arns: str = ""  # the SNS topics we accept, separated by commas or spaces; empty = endpoint off
    postmark_username: str = ""
    postmark_password: str = field(default="", metadata={"secret": "NEWSLETTER_WEBHOOKS_POSTMARK_PASSWORD"})
    sendgrid_public_key: str = ""  # the verification key SendGrid shows (public, so it may live in the file)
    mailgun_signing_key: str = field(default="", metadata={"secret": "NEWSLETTER_WEBHOOKS_MAILGUN_SIGNING_KEY"})


SECTIONS: dict[str, type] = {
    "newsletter": NewsletterSection,
    "sender": SenderSection,
    "schedule": ScheduleSection,
    "database": DatabaseSection,
    "delivery": DeliverySection,
    "smtp": SmtpSection,
    "dkim": DkimSection,
    "web": WebSection,
    "daemon": DaemonSection,
    "bounces": BouncesSection,
    "webhooks": WebhooksSection,
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the engine reads from configuration; paths are absolute."""

    root: Path
    newsletter: NewsletterSection
    sender: SenderSection
    schedule: ScheduleSection
    database: DatabaseSection
    delivery: DeliverySection
    smtp: SmtpSection
    dkim: DkimSection
    web: WebSection
    daemon: DaemonSection
    bounces: BouncesSection
    webhooks: WebhooksSection
    secret_key: bytes = field(repr=False, default=b"")
    config_path: Path | None = None
    notices: tuple[str, ...] = ()

    def replace(self, section: str, **changes: Any) -> Settings:
        """Return a copy with some keys of one section changed (how flags override)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **changes)})

    @property
    def from_name(self) -> str:
        """The From display name: [sender] from_name, else the newsletter's name."""
        return self.sender.from_name or self.newsletter.name

    @property
    def sender_domain(self) -> str:
        """The domain of the From address: Message-IDs and DKIM use it."""
        return self.sender.from_.rsplit("@", 1)[-1].lower()


def _key_name(field_name: str) -> str:
    return field_name.rstrip("_")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(d|days?|h|hours?|m|min|minutes?|s|seconds?)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """Parse "3 days", "72h", "90 minutes" or "30s"."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError('a duration such as "3 days", "72 hours" or "90 minutes"')
    amount, unit = float(match.group(1)), match.group(2).lower()
    seconds = _UNIT_SECONDS["m" if unit.startswith("min") else unit[0]]
    return timedelta(seconds=amount * seconds)


def _parse_time(text: str) -> time:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError('a 24-hour time such as "07:00"')
    return time(int(match.group(1)), int(match.group(2)))


def _coerce(value: Any, target: Any, base: Path, from_env: bool) -> Any:
    """Convert a TOML value or an environment string to the field type; ValueError says what is expected."""
    if typing.get_origin(target) in (types.UnionType, typing.Union):
        if value in ("", None):
            return None
        (target,) = [arg for arg in typing.get_args(target) if arg is not type(None)]
    if typing.get_origin(target) is Literal:
        allowed = typing.get_args(target)
        if value not in allowed:
            raise ValueError(f"one of {', '.join(allowed)}")
        return value
    if target is str:
        if not isinstance(value, str):
            raise ValueError("a string")
        return value
    if typing.get_origin(target) is tuple:
        # A TOML list of strings, or in the environment one comma-separated string.
        items = value.split(",") if from_env and isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
            raise ValueError('a list of strings such as ["127.0.0.1", "10.0.0.0/8"]')
        return tuple(item.strip() for item in items if item.strip())
    if target is bool:
        if isinstance(value, bool):
            return value
        if from_env and str(value).lower() in {"1", "true", "yes", "0", "false", "no"}:
            return str(value).lower() in {"1", "true", "yes"}
        raise ValueError("true or false")
    if target is int:
        if isinstance(value, bool):
            raise ValueError("a whole number")
        if isinstance(value, int) or (from_env and re.fullmatch(r"-?\d+", str(value))):
            number = int(value)
            if number < 0:
                raise ValueError("a whole number ≥ 0")
            return number
        raise ValueError("a whole number")
    if target is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("a number")
        if isinstance(value, str) and not (from_env and re.fullmatch(r"\d+(\.\d*)?", value)):
            raise ValueError("a number")
        real = float(value)
        if real < 0:
            raise ValueError("a number ≥ 0")
        return real
    if target is Path:
        if not isinstance(value, str) or not value:
            raise ValueError("a path")
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path).resolve()
    if target is time:
        if isinstance(value, time):
            return value
        return _parse_time(str(value))
    if target is timedelta:
        if isinstance(value, int) and not isinstance(value, bool):
            return timedelta(days=value)
        return parse_duration(str(value))
    raise TypeError(f"unsupported setting type {target!r}")


def _build_section(
    name: str, cls: type, table: Mapping[str, Any], env: Mapping[str, str], base: Path, source: str
) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {_key_name(f.name): f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields or fields[key].metadata.get("secret"):
            allowed = ", ".join(k for k, f in fields.items() if not f.metadata.get("secret"))
            hint = " (secrets come only from the environment)" if key in fields else ""
            raise ConfigError(f"{source}: unknown key [{name}] {key}{hint}; allowed keys: {allowed}")
    values: dict[str, Any] = {}
    for key, spec in fields.items():
        secret_var = spec.metadata.get("secret")
        env_var = secret_var or f"NEWSLETTER_{name.upper()}_{key.upper()}"
        if env_var in env:
            raw, origin, from_env = env[env_var], env_var, True
        elif key in table:
            raw, origin, from_env = table[key], f"{source}: [{name}] {key}", False
        else:
            continue
        try:
            value = _coerce(raw, hints[spec.name], base, from_env)
        except ValueError as error:
            raise ConfigError(f"{origin} must be {error}, got {raw!r}") from None
        values[spec.name] = value
    instance = cls(**values)
    # Relative defaults are relative to the project root, like relative values in the file.
    for spec in dataclasses.fields(cls):
        current = getattr(instance, spec.name)
        if isinstance(current, Path) and not current.is_absolute():
            instance = dataclasses.replace(instance, **{spec.name: (base / current).resolve()})
    return instance


def find_config(explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None) -> Path:
    """Locate config.toml: the explicit path, else ./config.toml."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        return path.resolve()
    candidate = (cwd or Path.cwd()) / CONFIG_FILENAME
    if not candidate.is_file():
        raise ConfigError(
            f"no {CONFIG_FILENAME} in {candidate.parent}; run from a newsletter project or pass --config PATH"
        )
    return candidate.resolve()


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load and validate settings once; `path` None means ./config.toml or `NEWSLETTER_CONFIG`."""
    env = os.environ if env is None else env
    config_path = find_config(path or env.get("NEWSLETTER_CONFIG"))
    try:
        document = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{config_path}: not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{config_path}: cannot read: {error}") from None
    return settings_from_mapping(document, config_path.parent, env, source=str(config_path), config_path=config_path)


def settings_from_mapping(
    document: Mapping[str, Any],
    root: Path,
    env: Mapping[str, str] | None = None,
    *,
    source: str = CONFIG_FILENAME,
    config_path: Path | None = None,
) -> Settings:
    """Validate a parsed config document; relative paths are relative to `root`."""
    env = {} if env is None else env
    for name, table in document.items():
        if name not in SECTIONS:
            raise ConfigError(f"{source}: unknown section [{name}]; allowed: {', '.join(SECTIONS)}")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: [{name}] must be a table of keys")
    root = root.resolve()
    sections = {
        name: _build_section(name, cls, document.get(name, {}), env, root, source) for name, cls in SECTIONS.items()
    }
    settings = Settings(root=root, config_path=config_path, **sections)
    _validate(settings, source)
    key, notices = _secret_key(settings, env)
    return dataclasses.replace(settings, secret_key=key, notices=notices)


def _validate(settings: Settings, source: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    base_url = settings.newsletter.base_url
    if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", base_url):
        raise ConfigError(f"{source}: [newsletter] base_url must be an http(s) URL, got {base_url!r}")
    if "@" not in settings.sender.from_ or "\n" in settings.sender.from_ or "\r" in settings.sender.from_:
        raise ConfigError(f'{source}: [sender] from must be one address such as "Name <you@example.com>"')
    try:
        ZoneInfo(settings.schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f'{source}: [schedule] timezone must be an IANA zone such as "Europe/Berlin", '
            f"got {settings.schedule.timezone!r}"
        ) from None
    weekdays = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    day = settings.schedule.weekday.strip().lower()
    if not any(day in (name, name[:3]) for name in weekdays):
        raise ConfigError(f'{source}: [schedule] weekday must be a day such as "Monday" or "Mon"')
    if settings.delivery.batch_size < 1 or settings.smtp.connections < 1:
        raise ConfigError(f"{source}: [delivery] batch_size and [smtp] connections must be at least 1")
    if settings.daemon.tick_seconds <= 0:
        raise ConfigError(f"{source}: [daemon] tick_seconds must be greater than 0")
    for entry in settings.web.trusted_proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"{source}: [web] trusted_proxies: {entry!r} is not an IP address or network; "
                'expected entries such as "127.0.0.1", "::1" or "10.0.0.0/8"'
            ) from None
    _validate_bounces(settings.bounces, source)


def _validate_bounces(bounces: BouncesSection, source: str) -> None:
    local, at, domain = bounces.address.partition("@")
    if bounces.address and (not local or not at or not domain or "+" in local or re.search(r"[\s<>@]", domain)):
        raise ConfigError(
            f'{source}: [bounces] address must be one bare address without "+", such as '
            f'"bounces@mail.example.com", got {bounces.address!r}'
        )
    scheme = bounces.mailbox.partition("://")[0].lower() if "://" in bounces.mailbox else ""
    if scheme and scheme not in ("imaps", "pop3s"):
        raise ConfigError(
            f"{source}: [bounces] mailbox must be a Maildir path or an imaps:// or pop3s:// URL "
            f"(the password travels encrypted), got {bounces.mailbox!r}"
        )
    if not bounces.processed_folder.strip():
        raise ConfigError(f'{source}: [bounces] processed_folder must name a folder, such as "Processed"')
    if not 1 <= bounces.soft_bounce_limit <= bounces.soft_bounce_window:
        raise ConfigError(
            f"{source}: [bounces] soft_bounce_limit must be at least 1 and at most soft_bounce_window, "
            f"got {bounces.soft_bounce_limit} of {bounces.soft_bounce_window}"
        )


def _secret_key(settings: Settings, env: Mapping[str, str]) -> tuple[bytes, tuple[str, ...]]:
    """The signing key from the environment, or one generated once into a git-ignored file."""
    if env.get("NEWSLETTER_SECRET_KEY"):
        return env["NEWSLETTER_SECRET_KEY"].encode(), ()
    url = settings.database.url
    folder = settings.root
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        database_file = Path(url.removeprefix("sqlite:///"))
        folder = (database_file if database_file.is_absolute() else settings.root / database_file).parent
    key_file = folder / SECRET_KEY_FILENAME
    if key_file.is_file():
        return key_file.read_text(encoding="ascii").strip().encode(), ()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    notice = (
        f"generated a signing key in {key_file} (keep it; set NEWSLETTER_SECRET_KEY in production "
        "so every machine signs links alike)"
    )
    return key_file.read_text(encoding="ascii").strip().encode(), (notice,)


def database_url(settings: Settings) -> str:
    """The database URL with a relative SQLite path resolved against the project root."""
    url = settings.database.url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        return "sqlite:///" + str(settings.root / url.removeprefix("sqlite:///"))
    return url

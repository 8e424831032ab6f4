"""Settings: loaded once from config.toml and `NEWSLETTER_*` variables into one frozen, validated object.

Precedence, lowest first: the defaults below < config.toml < `NEWSLETTER_<SECTION>_<KEY>` < command-line flags
(the CLI applies flags with `Settings.replace`). Secrets never live in a file we commit: the SMTP password comes
from `NEWSLETTER_SMTP_PASSWORD`, the signing key from `NEWSLETTER_SECRET_KEY` (or a generated, git-ignored file),
the studio token from `NEWSLETTER_WEB_ADMIN_TOKEN`, the bounce mailbox's password from `NEWSLETTER_BOUNCES_PASSWORD`
(a separate unsubscribe mailbox's from `NEWSLETTER_BOUNCES_UNSUBSCRIBE_PASSWORD`), the webhook credentials from
`NEWSLETTER_WEBHOOKS_POSTMARK_PASSWORD` and `NEWSLETTER_WEBHOOKS_MAILGUN_SIGNING_KEY`.

Every bad value is named where it came from: the variable, or the file and its [section] key. A `NEWSLETTER_*`
variable that nothing reads is refused like an unknown key in the file: a misspelled NEWSLETTER_DATABSE_URL
would otherwise run every command against the default database, and a misspelled secret key would sign links
with a fresh one. Weekday, time and time zone are read by the same functions as the CLI's and the forms'
(`newsletter.schedule`).
"""

from __future__ import annotations

import dataclasses
import difflib
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

from newsletter.errors import ConfigError, ScheduleValueError
from newsletter.schedule import parse_send_time, parse_timezone, weekday_name
from newsletter.zones import caveat

FirstLesson = Literal["next_slot", "immediately"]
CONFIG_FILENAME = "config.toml"
SECRET_KEY_FILENAME = ".secret-key"
CONFIG_VARIABLE = "NEWSLETTER_CONFIG"
SECRET_KEY_VARIABLE = "NEWSLETTER_SECRET_KEY"
# Variables of the project's own tooling, which the engine never reads: the test suite's database
# (NEWSLETTER_TEST_DATABASE_URL) and the benchmarks'. Both hand their whole environment to the commands they run.
TOOLING_PREFIXES = ("NEWSLETTER_TEST_", "NEWSLETTER_BENCH_")
# A claimed batch is held in memory and under one lease: beyond this a crashed sender's claim keeps more
# readers waiting, for no speed (a claim of 1,000 rows takes milliseconds).
MAX_BATCH_SIZE = 10_000
# Relays cap a client's parallel sessions (Postfix's smtpd_client_connection_count_limit is 50) and refuse
# the rest at connect; each connection is also a thread of every sender process.
MAX_CONNECTIONS = 50


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
    timezone: str = field(default="UTC", metadata={"parse": parse_timezone})
    weekday: str = field(default="Monday", metadata={"parse": weekday_name})  # kept as the full name
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
    domain_pause_seconds: int = 300
    domain_pause_max_seconds: int = 3600


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
    unsubscribe_address: str = ""  # the mailto: unsubscribe addresses' own local@domain; empty = address
    unsubscribe_mailbox: str = ""  # where mail to them arrives, when not in mailbox; empty = mailbox
    unsubscribe_password: str = field(default="", metadata={"secret": "NEWSLETTER_BOUNCES_UNSUBSCRIBE_PASSWORD"})
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
    # True when loading these settings wrote `.secret-key`: the project is new, so is its database.
    secret_key_generated: bool = False
    # "section.key" → where its value came from: the variable, or the file and its key (for messages).
    origins: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def replace(self, section: str, **changes: Any) -> Settings:
        """Return a copy with some keys of one section changed (how flags override)."""
        current = getattr(self, section)
        origins = {
            **self.origins,
            **{f"{section}.{_key_name(key)}": f"[{section}] {_key_name(key)}" for key in changes},
        }
        return dataclasses.replace(self, origins=origins, **{section: dataclasses.replace(current, **changes)})

    def origin(self, section: str, key: str) -> str:
        """Where a setting came from, for a message: `NEWSLETTER_DATABASE_URL` or `config.toml: [database] url`."""
        return self.origins.get(f"{section}.{key}", f"[{section}] {key}")

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


def _coerce(value: Any, target: Any, base: Path, from_env: bool, parse: Any = None) -> Any:
    """Convert a TOML value or an environment string to the field type; ValueError says what is expected."""
    if parse is not None:
        if not isinstance(value, str):
            raise ValueError("a string")
        try:
            return parse(value)
        except ScheduleValueError as error:
            raise ValueError(error.expected) from None
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
        try:
            return parse_send_time(str(value))
        except ScheduleValueError as error:
            raise ValueError(error.expected) from None
    if target is timedelta:
        if isinstance(value, int) and not isinstance(value, bool):
            return timedelta(days=value)
        return parse_duration(str(value))
    raise TypeError(f"unsupported setting type {target!r}")


def _env_variable(section: str, spec: dataclasses.Field[Any]) -> str:
    secret: str | None = spec.metadata.get("secret")
    return secret or f"NEWSLETTER_{section.upper()}_{_key_name(spec.name).upper()}"


def environment_variables() -> tuple[str, ...]:
    """Every NEWSLETTER_* variable the engine reads."""
    names = [_env_variable(section, spec) for section, cls in SECTIONS.items() for spec in dataclasses.fields(cls)]
    return (*names, SECRET_KEY_VARIABLE, CONFIG_VARIABLE)


def _check_variables(env: Mapping[str, str]) -> None:
    """Refuse NEWSLETTER_* variables nothing reads, naming the one each was probably meant to be."""
    known = environment_variables()
    problems = []
    for name in sorted(env):
        if not name.startswith("NEWSLETTER_") or name in known or name.startswith(TOOLING_PREFIXES):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        problems.append(f"{name} (did you mean {close[0]}?)" if close else name)
    if problems:
        raise ConfigError(
            f"not a variable newsletter reads: {'; '.join(problems)}. Rename or unset it: the variables are "
            f"NEWSLETTER_<SECTION>_<KEY> for each key of {CONFIG_FILENAME}, the secrets its first lines list, "
            f"{SECRET_KEY_VARIABLE} and {CONFIG_VARIABLE}"
        )


def _build_section(
    name: str,
    cls: type,
    table: Mapping[str, Any],
    env: Mapping[str, str],
    base: Path,
    source: str,
    origins: dict[str, str],
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
        env_var = _env_variable(name, spec)
        if env_var in env:
            raw, origin, from_env = env[env_var], env_var, True
        elif key in table:
            raw, origin, from_env = table[key], f"{source}: [{name}] {key}", False
        else:
            origins[f"{name}.{key}"] = f"[{name}] {key} (the default)"
            continue
        origins[f"{name}.{key}"] = origin
        try:
            value = _coerce(raw, hints[spec.name], base, from_env, spec.metadata.get("parse"))
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


def find_config(explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None, *, origin: str = "") -> Path:
    """Locate config.toml: the explicit path (named by `origin`, such as NEWSLETTER_CONFIG), else ./config.toml."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            named = f" (named by {origin})" if origin else ""
            raise ConfigError(f"{path}: no such config file{named}")
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
    if path is None and env.get(CONFIG_VARIABLE):
        config_path = find_config(env[CONFIG_VARIABLE], origin=CONFIG_VARIABLE)
    else:
        config_path = find_config(path)
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
    _check_variables(env)
    for name, table in document.items():
        if name not in SECTIONS:
            raise ConfigError(f"{source}: unknown section [{name}]; allowed: {', '.join(SECTIONS)}")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: [{name}] must be a table of keys")
    root = root.resolve()
    origins: dict[str, str] = {}
    sections = {
        name: _build_section(name, cls, document.get(name, {}), env, root, source, origins)
        for name, cls in SECTIONS.items()
    }
    settings = Settings(root=root, config_path=config_path, origins=origins, **sections)
    _validate(settings)
    key, notices = _secret_key(settings, env)
    generated = bool(notices)  # the key's only notice says that it was generated
    zone_caveat = caveat(settings.schedule.timezone)
    if zone_caveat:
        notices = (*notices, f"{settings.origin('schedule', 'timezone')}: {zone_caveat}")
    return dataclasses.replace(settings, secret_key=key, notices=notices, secret_key_generated=generated)


def _validate(settings: Settings) -> None:
    """Check what one value's type cannot say, naming where each value came from."""
    where = settings.origin
    base_url = settings.newsletter.base_url
    if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", base_url):
        raise ConfigError(f"{where('newsletter', 'base_url')} must be an http(s) URL, got {base_url!r}")
    if "@" not in settings.sender.from_ or "\n" in settings.sender.from_ or "\r" in settings.sender.from_:
        raise ConfigError(f'{where("sender", "from")} must be one address such as "Name <you@example.com>"')
    for section, key, most in (("delivery", "batch_size", MAX_BATCH_SIZE), ("smtp", "connections", MAX_CONNECTIONS)):
        if not 1 <= getattr(getattr(settings, section), key) <= most:
            raise ConfigError(f"{where(section, key)} must be at least 1 and at most {most:,}")
    delivery = settings.delivery
    if not 1 <= delivery.domain_pause_seconds <= delivery.domain_pause_max_seconds:
        raise ConfigError(
            f"{where('delivery', 'domain_pause_seconds')} must be at least 1 and at most domain_pause_max_seconds"
        )
    if settings.daemon.tick_seconds <= 0:
        raise ConfigError(f"{where('daemon', 'tick_seconds')} must be greater than 0")
    for entry in settings.web.trusted_proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"{where('web', 'trusted_proxies')}: {entry!r} is not an IP address or network; "
                'expected entries such as "127.0.0.1", "::1" or "10.0.0.0/8"'
            ) from None
    _validate_database(settings)
    _validate_bounces(settings)


def sqlite_file(settings: Settings) -> Path | None:
    """The SQLite database file the settings name, absolute; None for another database or one in memory."""
    url = database_url(settings)
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return None
    return Path(url.removeprefix("sqlite:///").partition("?")[0])


def _validate_database(settings: Settings) -> None:
    # Refused rather than created: a folder that is not there means the url is not the one intended (a
    # relative path where an absolute one was meant, a typo), and a fresh database there would start afresh.
    database_file = sqlite_file(settings)
    if database_file is not None and not database_file.parent.is_dir():
        raise ConfigError(
            f"{settings.origin('database', 'url')} names the SQLite file {database_file}, but its folder "
            f"{database_file.parent} does not exist: correct the url, or create the folder first"
        )


def _validate_bounces(settings: Settings) -> None:
    bounces, where = settings.bounces, settings.origin
    for key in ("address", "unsubscribe_address"):
        value = getattr(bounces, key)
        local, at, domain = value.partition("@")
        if value and (not local or not at or not domain or "+" in local or re.search(r"[\s<>@]", domain)):
            raise ConfigError(
                f'{where("bounces", key)} must be one bare address without "+", such as '
                f'"bounces@mail.example.com", got {value!r}'
            )
    for key in ("mailbox", "unsubscribe_mailbox"):
        value = getattr(bounces, key)
        scheme = value.partition("://")[0].lower() if "://" in value else ""
        if scheme and scheme not in ("imaps", "pop3s"):
            raise ConfigError(
                f"{where('bounces', key)} must be a Maildir path or an imaps:// or pop3s:// URL "
                f"(the password travels encrypted), got {value!r}"
            )
    if not bounces.processed_folder.strip():
        raise ConfigError(f'{where("bounces", "processed_folder")} must name a folder, such as "Processed"')
    if not 1 <= bounces.soft_bounce_limit <= bounces.soft_bounce_window:
        raise ConfigError(
            f"{where('bounces', 'soft_bounce_limit')} must be at least 1 and at most soft_bounce_window "
            f"({where('bounces', 'soft_bounce_window')}), got {bounces.soft_bounce_limit} of "
            f"{bounces.soft_bounce_window}"
        )


def secret_key_file(settings: Settings) -> Path:
    """Where a generated signing key is kept: beside the SQLite database, else in the project root."""
    database_file = sqlite_file(settings)
    return (database_file.parent if database_file is not None else settings.root) / SECRET_KEY_FILENAME


def _secret_key(settings: Settings, env: Mapping[str, str]) -> tuple[bytes, tuple[str, ...]]:
    """The signing key from the environment, or one generated once into a git-ignored file."""
    if env.get(SECRET_KEY_VARIABLE):
        return env[SECRET_KEY_VARIABLE].encode(), ()
    key_file = secret_key_file(settings)
    if key_file.is_file():
        return key_file.read_text(encoding="ascii").strip().encode(), ()
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

"""Settings: config.toml plus NEWSLETTER_* variables, validated once; bad input names the key and what is allowed."""

from __future__ import annotations

import dataclasses
import stat
from datetime import time, timedelta
from pathlib import Path

import pytest

from newsletter.config import SECRET_KEY_FILENAME, database_url, load_settings
from newsletter.errors import ConfigError

KEY = {"NEWSLETTER_SECRET_KEY": "a-test-key-of-some-length"}


def write_config(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=KEY if env is None else env)
    return str(caught.value)


def test_the_bundled_config_loads(project_dir: Path) -> None:
    settings = load_settings(project_dir / "config.toml", env=KEY)
    assert settings.newsletter.base_url.startswith("https://")
    assert settings.schedule.time_ == time(7, 0)
    assert settings.schedule.min_gap == timedelta(days=3)
    assert settings.delivery.transport == "outbox"
    assert settings.notices == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.smtp.host = "elsewhere"  # type: ignore[misc]


def test_an_empty_config_gets_the_defaults(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, ""), env=KEY)
    assert settings.smtp.port == 25 and settings.schedule.first_lesson == "next_slot"


def test_an_unknown_key_names_section_key_and_the_allowed_keys(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[smtp]\nhots = "mail.example.com"\n')
    message = config_error(path)
    assert message.startswith(f"{path}: unknown key [smtp] hots; allowed keys: host, port, security")
    assert "password" not in message.split("allowed keys:")[1]


def test_an_unknown_section_is_named(tmp_path: Path) -> None:
    message = config_error(write_config(tmp_path, "[mailer]\nhost = 1\n"))
    assert "unknown section [mailer]; allowed: newsletter, sender, schedule" in message


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[smtp]\nport = "twenty-five"', "[smtp] port must be a whole number, got 'twenty-five'"),
        ('[smtp]\nsecurity = "ssl"', "[smtp] security must be one of none, starttls, tls, got 'ssl'"),
        ('[schedule]\ntime = "7am"', "[schedule] time must be HH:MM on a 24-hour clock, 00:00 to 23:59, got '7am'"),
        ('[schedule]\nmin_gap = "soon"', "[schedule] min_gap must be a duration such as"),
        (
            '[schedule]\ntimezone = "Mars/Olympus"',
            "[schedule] timezone must be an IANA zone name such as 'Europe/London'",
        ),
        ('[schedule]\nweekday = "Funday"', "[schedule] weekday must be one of Monday, Tuesday, Wednesday, Thursday"),
        ('[newsletter]\nbase_url = "running.example.com"', "[newsletter] base_url must be an http(s) URL"),
        ('[delivery]\ntransport = "pigeon"', "[delivery] transport must be one of outbox, smtp, got 'pigeon'"),
        ("[smtp]\nrate_per_second = -1", "[smtp] rate_per_second must be a number ≥ 0, got -1"),
    ],
)
def test_a_bad_value_names_the_key_and_what_is_allowed(tmp_path: Path, toml: str, expected: str) -> None:
    path = write_config(tmp_path, toml + "\n")
    assert expected in config_error(path)


def test_invalid_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[smtp\nhost = 1\n")
    assert config_error(path).startswith(f"{path}: not valid TOML")


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[smtp]\nhost = "file.example.com"\nport = 25\n')
    settings = load_settings(
        path, env={**KEY, "NEWSLETTER_SMTP_HOST": "env.example.com", "NEWSLETTER_SMTP_PORT": "2525"}
    )
    assert settings.smtp.host == "env.example.com"
    assert settings.smtp.port == 2525


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    message = config_error(path, env={**KEY, "NEWSLETTER_SMTP_PORT": "many"})
    assert message == "NEWSLETTER_SMTP_PORT must be a whole number, got 'many'"


def test_trusted_proxies_are_a_list_of_addresses_and_networks_none_by_default(tmp_path: Path) -> None:
    assert load_settings(write_config(tmp_path, ""), env=KEY).web.trusted_proxies == ()
    path = write_config(tmp_path, '[web]\ntrusted_proxies = ["127.0.0.1", "::1", "10.0.0.0/8"]\n')
    assert load_settings(path, env=KEY).web.trusted_proxies == ("127.0.0.1", "::1", "10.0.0.0/8")
    from_env = load_settings(path, env={**KEY, "NEWSLETTER_WEB_TRUSTED_PROXIES": "192.0.2.10, 2001:db8::/32"})
    assert from_env.web.trusted_proxies == ("192.0.2.10", "2001:db8::/32")
    assert load_settings(path, env={**KEY, "NEWSLETTER_WEB_TRUSTED_PROXIES": ""}).web.trusted_proxies == ()
    bad = config_error(write_config(tmp_path, '[web]\ntrusted_proxies = ["127.0.0.1", "nginx"]\n'))
    assert bad.endswith(
        "[web] trusted_proxies: 'nginx' is not an IP address or network; expected entries such as "
        '"127.0.0.1", "::1" or "10.0.0.0/8"'
    )
    not_a_list = config_error(write_config(tmp_path, '[web]\ntrusted_proxies = "127.0.0.1"\n'))
    assert "[web] trusted_proxies must be a list of strings such as" in not_a_list


def test_secrets_come_only_from_the_environment(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[smtp]\npassword = "hunter2"\n')
    assert "unknown key [smtp] password (secrets come only from the environment)" in config_error(path)
    settings = load_settings(write_config(tmp_path, ""), env={**KEY, "NEWSLETTER_SMTP_PASSWORD": "hunter2"})
    assert settings.smtp.password == "hunter2"
    assert settings.secret_key == KEY["NEWSLETTER_SECRET_KEY"].encode()


def test_without_a_signing_key_one_is_generated_beside_the_database_and_announced(tmp_path: Path) -> None:
    path = write_config(tmp_path / "project", '[database]\nurl = "sqlite:///data/newsletter.db"\n')
    (tmp_path / "project" / "data").mkdir()
    settings = load_settings(path, env={})
    key_file = tmp_path / "project" / "data" / SECRET_KEY_FILENAME
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(settings.secret_key) >= 32
    assert settings.notices and str(key_file) in settings.notices[0]
    assert "NEWSLETTER_SECRET_KEY" in settings.notices[0]
    again = load_settings(path, env={})
    assert again.secret_key == settings.secret_key
    assert again.notices == ()


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    path = write_config(
        project,
        '[newsletter]\nlessons = "course"\n[delivery]\noutbox = "mail/out"\n[database]\nurl = "sqlite:///db/n.db"\n',
    )
    (project / "db").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(path, env=KEY)
    assert settings.root == project.resolve()
    assert settings.newsletter.lessons == (project / "course").resolve()
    assert settings.newsletter.templates == (project / "templates").resolve()
    assert settings.delivery.outbox == (project / "mail" / "out").resolve()
    assert database_url(settings) == f"sqlite:///{project.resolve() / 'db' / 'n.db'}"


def test_newsletter_config_selects_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path / "other", '[newsletter]\nname = "Other Course"\n')
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, env={**KEY, "NEWSLETTER_CONFIG": str(path)})
    assert settings.newsletter.name == "Other Course"
    assert settings.config_path == path.resolve()


def test_a_missing_config_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError, match=r"no config\.toml in .*; run from a newsletter project or pass --config PATH"
    ):
        load_settings(None, env=KEY)
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "absent.toml", env=KEY)


def test_the_cli_says_once_that_it_generated_a_signing_key(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from newsletter.cli import main

    monkeypatch.delenv("NEWSLETTER_SECRET_KEY", raising=False)
    command = ["--config", str(project_dir / "config.toml"), "lessons"]
    first = CliRunner().invoke(main, command)
    second = CliRunner().invoke(main, command)
    assert first.exit_code == second.exit_code == 0
    assert "note: generated a signing key" in first.stderr and (project_dir / ".secret-key").is_file()
    assert "signing key" not in second.stderr


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("weekday", "Mond"),
        ("weekday", "thurs"),
        ("weekday", "Funday"),
        ("weekday", "1"),
        ("timezone", "Factory"),
        ("timezone", "localtime"),
        ("timezone", "europe/london"),
        ("timezone", "GMT+2"),
        ("timezone", "EST"),
        ("time", "7:05"),
        ("time", "24:00"),
    ],
)
def test_config_and_the_cli_read_weekday_time_and_zone_alike(tmp_path: Path, key: str, value: str) -> None:
    from newsletter.errors import SubscriberError
    from newsletter.subscribers import resolve_cadence
    from newsletter.web.public import SCHEDULE_CHECKS

    path = write_config(tmp_path, f'[schedule]\n{key} = "{value}"\n')
    try:
        settings = load_settings(path, env=KEY)
    except ConfigError:
        settings = None
    cli_argument = {"weekday": "weekday", "timezone": "timezone", "time": "send_time"}[key]
    try:
        resolve_cadence(load_settings(write_config(tmp_path / "empty", ""), env=KEY), **{cli_argument: value})
        cli_accepts = True
    except SubscriberError:
        cli_accepts = False
    try:
        SCHEDULE_CHECKS[key](value)
        form_accepts = True
    except SubscriberError:
        form_accepts = False
    assert (settings is not None) == cli_accepts == form_accepts
    if settings is not None:
        cadence = resolve_cadence(settings)
        assert cadence == resolve_cadence(settings, **{cli_argument: value})


@pytest.mark.parametrize("typed", ["Mond", "Wednes"])
def test_a_prefix_that_is_no_abbreviation_is_refused_by_config_cli_and_form(tmp_path: Path, typed: str) -> None:
    from newsletter.errors import SubscriberError
    from newsletter.subscribers import resolve_cadence
    from newsletter.web.public import SCHEDULE_CHECKS

    message = config_error(write_config(tmp_path, f'[schedule]\nweekday = "{typed}"\n'), env=KEY)
    assert "[schedule] weekday must be one of Monday, Tuesday" in message and repr(typed) in message
    with pytest.raises(SubscriberError, match=f"weekday '{typed}': expected one of Monday"):
        resolve_cadence(load_settings(write_config(tmp_path / "empty", ""), env=KEY), weekday=typed)
    with pytest.raises(SubscriberError):
        SCHEDULE_CHECKS["weekday"](typed)


def test_the_weekday_is_kept_as_its_full_name(tmp_path: Path) -> None:
    assert load_settings(write_config(tmp_path, '[schedule]\nweekday = " thu "\n'), env=KEY).schedule.weekday == (
        "Thursday"
    )


def test_a_zone_that_is_not_a_place_is_said_aloud_with_a_city_to_choose(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[schedule]\ntimezone = "EST"\n')
    (notice,) = load_settings(path, env=KEY).notices
    assert notice.startswith(f"{path}: [schedule] timezone: time zone 'EST' is UTC−5 all year, without daylight")
    assert "'America/New_York'" in notice
    (from_env,) = load_settings(path, env={**KEY, "NEWSLETTER_SCHEDULE_TIMEZONE": "Etc/GMT+2"}).notices
    assert from_env.startswith("NEWSLETTER_SCHEDULE_TIMEZONE: time zone 'Etc/GMT+2' is UTC−2 all year")
    assert "Etc/GMT+2 is 2 hours behind UTC, and UTC+2 is Etc/GMT-2" in from_env
    assert load_settings(path, env={**KEY, "NEWSLETTER_SCHEDULE_TIMEZONE": "Europe/Berlin"}).notices == ()


# Every check of a value, set from the environment: the message names the variable and never the file.
BAD_VARIABLES = [
    ("NEWSLETTER_NEWSLETTER_BASE_URL", "running.example.com", "must be an http(s) URL"),
    ("NEWSLETTER_SENDER_FROM", "nobody", "must be one address"),
    ("NEWSLETTER_DELIVERY_BATCH_SIZE", "0", "must be at least 1 and at most 10,000"),
    ("NEWSLETTER_DELIVERY_BATCH_SIZE", "1000000", "must be at least 1 and at most 10,000"),
    ("NEWSLETTER_SMTP_CONNECTIONS", "0", "must be at least 1 and at most 50"),
    ("NEWSLETTER_SMTP_CONNECTIONS", "1000", "must be at least 1 and at most 50"),
    ("NEWSLETTER_DAEMON_TICK_SECONDS", "0", "must be greater than 0"),
    ("NEWSLETTER_WEB_TRUSTED_PROXIES", "nginx", "'nginx' is not an IP address or network"),
    ("NEWSLETTER_SCHEDULE_TIMEZONE", "Factory", "must be an IANA zone name"),
    ("NEWSLETTER_SCHEDULE_WEEKDAY", "Funday", "must be one of Monday"),
    ("NEWSLETTER_SCHEDULE_TIME", "7am", "must be HH:MM"),
    ("NEWSLETTER_BOUNCES_ADDRESS", "bounces+x@example.com", 'must be one bare address without "+"'),
    ("NEWSLETTER_BOUNCES_MAILBOX", "imap://user@mail.example.com/INBOX", "must be a Maildir path or an imaps://"),
    ("NEWSLETTER_BOUNCES_PROCESSED_FOLDER", " ", "must name a folder"),
    ("NEWSLETTER_BOUNCES_SOFT_BOUNCE_LIMIT", "9", "must be at least 1 and at most soft_bounce_window"),
    ("NEWSLETTER_DATABASE_URL", "sqlite:///no/such/folder/newsletter.db", "its folder"),
]


@pytest.mark.parametrize(("variable", "value", "expected"), BAD_VARIABLES, ids=[row[0] for row in BAD_VARIABLES])
def test_a_bad_environment_value_is_blamed_on_its_variable_never_on_the_file(
    project_dir: Path, variable: str, value: str, expected: str
) -> None:
    message = config_error(project_dir / "config.toml", env={**KEY, variable: value})
    assert message.startswith(variable), message
    assert expected in message
    blamed = message.partition(" must ")[0]  # a limit checked against another key names that key's origin after
    assert "config.toml" not in blamed


def test_a_limit_checked_against_another_key_names_where_both_came_from(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[bounces]\nsoft_bounce_limit = 3\n")
    message = config_error(path, env={**KEY, "NEWSLETTER_BOUNCES_SOFT_BOUNCE_WINDOW": "2"})
    assert message == (
        f"{path}: [bounces] soft_bounce_limit must be at least 1 and at most soft_bounce_window "
        "(NEWSLETTER_BOUNCES_SOFT_BOUNCE_WINDOW), got 3 of 2"
    )


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("NEWSLETTER_SMTP_PASWORD", "NEWSLETTER_SMTP_PASSWORD"),
        ("NEWSLETTER_DATABSE_URL", "NEWSLETTER_DATABASE_URL"),
        ("NEWSLETTER_SECRETKEY", "NEWSLETTER_SECRET_KEY"),
        ("NEWSLETTER_CONFG", "NEWSLETTER_CONFIG"),
        ("NEWSLETTER_WEBHOOKS_MAILGUN_SIGNINGKEY", "NEWSLETTER_WEBHOOKS_MAILGUN_SIGNING_KEY"),
        ("NEWSLETTER_SMTP_HOTS", "NEWSLETTER_SMTP_HOST"),
    ],
)
def test_a_misspelled_variable_is_refused_naming_the_one_it_was_meant_to_be(
    tmp_path: Path, variable: str, meant: str
) -> None:
    message = config_error(write_config(tmp_path, ""), env={**KEY, variable: "x"})
    assert f"not a variable newsletter reads: {variable} (did you mean {meant}?)" in message


def test_a_variable_close_to_nothing_is_refused_by_name_and_tooling_variables_are_left_alone(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    message = config_error(path, env={**KEY, "NEWSLETTER_COLOUR": "green", "NEWSLETTER_SMTP_PORTT": "25"})
    assert "not a variable newsletter reads: NEWSLETTER_COLOUR; NEWSLETTER_SMTP_PORTT (did you mean" in message
    tooling = {"NEWSLETTER_TEST_DATABASE_URL": "postgresql://x/y", "NEWSLETTER_BENCH_DATABASE_URL": "postgresql://x/z"}
    assert load_settings(path, env={**KEY, **tooling}).notices == ()


def test_the_cli_refuses_a_misspelled_variable_in_its_environment(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from newsletter.cli import main

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY["NEWSLETTER_SECRET_KEY"])
    monkeypatch.setenv("NEWSLETTER_SMTP_PASWORD", "hunter2")
    result = CliRunner().invoke(main, ["--config", str(project_dir / "config.toml"), "lessons"])
    assert result.exit_code == 1
    assert "NEWSLETTER_SMTP_PASWORD (did you mean NEWSLETTER_SMTP_PASSWORD?)" in result.output
    assert "Traceback" not in result.output


def test_newsletter_config_naming_no_file_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from newsletter.cli import main

    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match=r"no such config file \(named by NEWSLETTER_CONFIG\)"):
        load_settings(None, env={**KEY, "NEWSLETTER_CONFIG": str(missing)})
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(missing))
    result = CliRunner().invoke(main, ["lessons"])
    assert result.exit_code == 1 and "(named by NEWSLETTER_CONFIG)" in result.output


def test_a_database_folder_that_does_not_exist_is_refused_not_created(tmp_path: Path) -> None:
    project = tmp_path / "project"
    path = write_config(project, '[database]\nurl = "sqlite:///var/lib/newsletter/newsletter.db"\n')
    message = config_error(path, env={})
    assert message.startswith(f"{path}: [database] url names the SQLite file {project / 'var/lib/newsletter'}")
    assert "does not exist: correct the url, or create the folder first" in message
    assert not (project / "var").exists()
    assert not (project / SECRET_KEY_FILENAME).exists()

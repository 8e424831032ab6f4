"""The preview studio in-process: the course table, the upcoming-sends chart, one email, errors, guard, outbox."""

from __future__ import annotations

import email
import json
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from sqlalchemy import update
from starlette.testclient import TestClient

from newsletter.cli import main
from newsletter.cli.web import check_exposure
from newsletter.config import Settings, load_settings
from newsletter.errors import ConfigError
from newsletter.models import Delivery
from newsletter.project import Project
from newsletter.subscribers import SubscriberInput, add_subscriber
from newsletter.transports import OutboxTransport
from newsletter.web import chart, create_app, preview
from newsletter.web.livereload import ProjectHolder
from newsletter.web.preview import force_scheme

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday
THIS_MACHINE = ("127.0.0.1", 50000)  # the socket peer of a browser on this machine
SLUGS = ["muscle", "knees", "brain", "mood", "sleep", "immunity", "longevity"]


@pytest.fixture
def client(project: Project) -> Iterator[TestClient]:
    app = create_app(project, live_reload=False, clock=lambda: NOW)
    with TestClient(app, base_url="http://127.0.0.1:8025", client=THIS_MACHINE, follow_redirects=False) as test_client:
        yield test_client


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def reopened(settings: Settings) -> Settings:
    """The settings as the app reads them again after a change (same database and key as the fixture)."""
    assert settings.config_path is not None
    return load_settings(
        settings.config_path,
        env={"NEWSLETTER_SECRET_KEY": settings.secret_key.decode(), "NEWSLETTER_DATABASE_URL": settings.database.url},
    )


# --- the course ------------------------------------------------------------------------------------------------------


def test_the_index_lists_every_lesson_with_subject_preheader_size_and_checklist(
    client: TestClient, project: Project
) -> None:
    response = client.get("/")
    assert response.status_code == 200
    page = response.text
    rows = re.findall(r"<tr>\s*<td class=\"week\">(.*?)</td>(.*?)</tr>", page, re.DOTALL)
    assert [week for week, _ in rows] == ["—", "1", "2", "3", "4", "5", "6", "7"]
    for lesson, (_, row) in zip(project.series, rows[1:], strict=True):
        assert f'href="/preview/{lesson.slug}"' in row
        assert lesson.subject.replace("—", "—") in text_of(row).replace("&amp;", "&")
        assert lesson.preheader.split(".")[0] in text_of(row)
        size = len(project.render(project.sample_subscriber(), lesson.slug, NOW).html.encode())
        assert f'value="{size}"' in row and "<meter" in row
        assert "passed" in row or "failing" in row


def chart_table(page: str) -> dict[str, int]:
    return {day: int(count) for day, count in re.findall(r"<tr><td>(\w+ \d+ \w+)</td><td>(\d+)</td></tr>", page)}


def test_the_chart_counts_what_plan_lists_per_day(client: TestClient, project: Project) -> None:
    with project.db.session() as session:
        for number, (zone, day) in enumerate([("UTC", "Monday"), ("UTC", "Monday"), ("Asia/Tokyo", "Thursday")]):
            data = SubscriberInput(f"r{number}@example.com", "", zone, day, "07:00")
            add_subscriber(session, project, data, confirmed=True, now=NOW)
        add_subscriber(session, project, SubscriberInput("late@example.com"), confirmed=True, now=NOW)
        session.execute(update(Delivery).where(Delivery.subscriber_id == 4).values(due_at=NOW - timedelta(hours=1)))
    page = client.get("/").text
    table = chart_table(page)
    assert len(table) == 28
    # What `newsletter plan` prints, by day in the operator's zone: the ledger's rows and the lessons after them.
    result = CliRunner().invoke(
        main,
        ["--config", str(project.settings.config_path), "plan", "--json", "--days", "29", "--now", NOW.isoformat()],
    )
    assert result.exit_code == 0, result.output
    zone = ZoneInfo(project.settings.schedule.timezone)
    listed: Counter[str] = Counter()
    overdue = 0
    for entry in json.loads(result.stdout):
        due_at = datetime.fromisoformat(entry["due_at"])
        local = due_at.astimezone(zone)
        if due_at <= NOW:
            overdue += 1
        elif (label := f"{local:%a} {local.day} {local:%b}") in table:
            listed[label] += 1
    assert {day: count for day, count in table.items() if count} == dict(listed)
    # Tokyo's Thursday 07:00 is Wednesday 22:00 UTC; on Monday 16 March come the projected lesson 2 of the two
    # Monday readers and of the late reader (whose slot stays Monday 9 March: the next one is a week on).
    assert table["Wed 4 Mar"] == 1 and table["Mon 9 Mar"] == 2 and table["Mon 16 Mar"] == 3 and table["Wed 11 Mar"] == 1
    assert overdue == 1 and "1 due now" in text_of(page)
    assert page.count('class="bar"') == sum(1 for count in table.values() if count) and "Mon 9 Mar: 2 emails" in page


def test_a_large_ledger_is_counted_off_the_request_and_shown_once_ready(
    client: TestClient, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chart, "SMALL_LEDGER", 0)  # every ledger is large
    with project.db.session() as session:
        add_subscriber(
            session, project, SubscriberInput("r@example.com", "", "UTC", "Monday", "07:00"), confirmed=True, now=NOW
        )
    first = client.get("/")
    assert first.status_code == 200
    deadline = time.monotonic() + 30
    while not chart_table(page := client.get("/").text) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert chart_table(page)["Mon 9 Mar"] == 1
    assert "Counted at 12:00:00 UTC" in text_of(page)


def test_the_index_renders_each_email_once_per_version_of_the_course(
    client: TestClient, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered: list[str] = []
    real = preview.build_preview

    def counting(*args: Any) -> Any:
        rendered.append(args[1])
        return real(*args)

    monkeypatch.setattr(preview, "build_preview", counting)
    for _ in range(3):
        assert client.get("/").status_code == 200
    assert rendered == ["confirmation", *SLUGS]


# --- one email -------------------------------------------------------------------------------------------------------


def test_a_preview_renders_for_an_editable_sample_name(client: TestClient) -> None:
    page = client.get("/preview/knees", params={"name": "Zoë <script>alert(1)</script>"}).text
    assert 'value="Zoë &lt;script&gt;alert(1)&lt;/script&gt;"' in page
    frame_src = re.search(r'<iframe id="email-frame"[^>]*src="([^"]+)"', page, re.DOTALL)
    assert frame_src is not None
    frame = client.get(frame_src.group(1).replace("&amp;", "&"))
    assert frame.status_code == 200
    assert "Hi Zoë &lt;script&gt;alert(1)&lt;/script&gt;," in frame.text
    assert "<script>alert" not in frame.text
    assert "default-src 'none'" in frame.headers["Content-Security-Policy"]
    assert 'sandbox="allow-same-origin allow-popups' in page  # no allow-scripts


def test_toggles_switch_the_frame_between_desktop_mobile_light_and_dark(client: TestClient) -> None:
    desktop = client.get("/preview/sleep").text
    assert 'class="frame desktop"' in desktop and "scheme=light" in desktop
    mobile_dark = client.get("/preview/sleep", params={"view": "mobile", "scheme": "dark"}).text
    assert 'class="frame mobile"' in mobile_dark
    assert "/preview/sleep/frame?name=Alex%20Runner&amp;scheme=dark" in mobile_dark
    assert re.search(r'id="scheme-dark"[^>]*aria-pressed="true"', mobile_dark)
    dark = client.get("/preview/sleep/frame", params={"scheme": "dark"}).text
    light = client.get("/preview/sleep/frame", params={"scheme": "light"}).text
    assert "prefers-color-scheme" not in dark and "@media all" in dark
    assert "prefers-color-scheme" not in light and "@media not all" in light
    odd = client.get("/preview/sleep", params={"view": "watch", "scheme": "sepia"}).text
    assert 'class="frame desktop"' in odd and "scheme=light" in odd


def test_force_scheme_only_touches_the_dark_mode_media_query() -> None:
    html = "@media (prefers-color-scheme: dark) { a {} } @media (max-width: 480px) { b {} }"
    assert force_scheme(html, "dark") == "@media all { a {} } @media (max-width: 480px) { b {} }"
    assert force_scheme(html, "light").startswith("@media not all { a {} }")


def test_the_tabs_show_text_source_headers_and_checklist(client: TestClient, project: Project) -> None:
    page = client.get("/preview/brain").text
    rendered = project.render(project.sample_subscriber(), "brain", NOW)
    for panel in ("email", "text", "source", "headers", "checklist"):
        assert f'id="{panel}" role="tabpanel"' in page
    assert rendered.text.splitlines()[0] in page
    assert "&lt;!doctype html&gt;" in page.lower()
    assert re.search(r"<th scope=\"row\">List-Unsubscribe</th><td>&lt;https://running.example.com/u/", page)
    checks = re.findall(r'<li class="(ok|fail)"><span class="mark">', page)
    assert len(checks) == 25
    assert "/static/studio.js" in page
    assert "EventSource" in client.get("/static/studio.js").text


def test_the_confirmation_email_is_previewed_too(client: TestClient) -> None:
    page = client.get("/preview/confirmation").text
    assert "Confirm your subscription" in page
    assert re.search(r'<pre class="text-part">[^<]*https://running.example.com/confirm/', page)
    frame = client.get("/preview/confirmation/frame").text
    assert re.search(r'href="https://running.example.com/confirm/[^"]+"[^>]*>\s*Yes, send me the lessons', frame)


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("html", "text/html"), ("txt", "text/plain"), ("eml", "message/rfc822")]
)
def test_the_email_downloads_as_html_text_and_eml(
    client: TestClient, project: Project, fmt: str, content_type: str
) -> None:
    response = client.get(f"/preview/mood.{fmt}", params={"name": "Sam"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(content_type)
    assert response.headers["content-disposition"] == f'attachment; filename="mood.{fmt}"'
    if fmt == "eml":
        message = email.message_from_bytes(response.content, policy=policy.default)
        assert message.get_content_type() == "multipart/alternative"
        assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
        assert "Sam" in str(message["To"])
        assert b"\r\n" in response.content
    elif fmt == "txt":
        assert "\nHi Sam,\n" in response.text and "<" not in response.text
    else:
        assert response.text.lower().startswith("<!doctype html>")
    assert client.get("/preview/mood.pdf").status_code == 404


def test_an_unknown_slug_gets_a_404_page_listing_the_lessons(client: TestClient) -> None:
    for path in ("/preview/marathon", "/preview/marathon/frame", "/preview/marathon.eml"):
        response = client.get(path)
        assert response.status_code == 404
        for slug in SLUGS:
            assert f'href="/preview/{slug}"' in response.text
    assert client.get("/preview").status_code == 307


def test_with_dkim_configured_the_checklist_verifies_the_signature_without_dns(
    settings: Settings, tmp_path: Path
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to generate a DKIM test key")
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    signed = Project(settings.replace("dkim", selector="news2026", domain="running.example.com", private_key=key))
    app = create_app(signed, live_reload=False, clock=lambda: NOW)
    with TestClient(app, base_url="http://127.0.0.1", client=THIS_MACHINE) as client:
        page = client.get("/preview/muscle").text
        eml = client.get("/preview/muscle.eml").content
    signed.db.dispose()
    assert eml.startswith(b"DKIM-Signature:")
    assert re.search(r'<li class="ok"><span class="mark">✓</span> <strong>10\. DKIM signature</strong>', page)


# --- errors an editor makes ------------------------------------------------------------------------------------------


def break_file(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_a_template_syntax_error_shows_file_and_line_in_the_preview(
    project_dir: Path, client: TestClient, project: Project
) -> None:
    template = project_dir / "templates" / "lesson.mjml.j2"
    break_file(template, "{% if next_lesson %}", "{% if next_lesson %%}")
    line = template.read_text().splitlines().index("{% if next_lesson %%}") + 1
    project.renderer._cache.clear()
    project.__dict__.pop("renderer")
    response = client.get("/preview/muscle")
    assert response.status_code == 200
    assert 'role="alert"' in response.text
    assert f"templates/lesson.mjml.j2</code> line {line}" in response.text
    assert '<span class="line hit"><span class="number">' + str(line) in response.text
    index = client.get("/")
    assert index.status_code == 200 and "Cannot render" in index.text
    assert "Confirm your subscription" in index.text  # the confirmation does not use lesson.mjml.j2
    assert client.get("/preview/muscle.html").status_code == 422


def test_a_template_error_at_render_time_names_the_template_line(
    project_dir: Path, client: TestClient, project: Project
) -> None:
    template = project_dir / "templates" / "lesson.mjml.j2"
    break_file(template, "{{ lesson.title }}", "{{ lesson.title }}{{ lesson.week // 0 }}")
    line = next(number for number, text in enumerate(template.read_text().splitlines(), 1) if "// 0" in text)
    project.__dict__.pop("renderer", None)
    page = client.get("/preview/knees").text
    assert f"templates/lesson.mjml.j2</code> line {line}" in page
    assert '<pre class="message">ZeroDivisionError: integer division or modulo by zero</pre>' in page


def test_a_broken_lesson_shows_its_file_and_line_and_reloading_the_fix_recovers(
    project_dir: Path, project: Project, settings: Settings
) -> None:
    lesson = project_dir / "lessons" / "03-brain.md"
    app = create_app(project, live_reload=False, clock=lambda: NOW, reload_settings=lambda: reopened(settings))
    holder = app.state.web.holder
    with TestClient(app, base_url="http://127.0.0.1", client=THIS_MACHINE) as client:
        original = lesson.read_text(encoding="utf-8")
        break_file(lesson, "week = 3", 'week = "three"')
        holder.reload()
        page = client.get("/").text
        assert "The project does not load" in page
        line = lesson.read_text(encoding="utf-8").splitlines().index('week = "three"') + 1
        assert f"lessons/03-brain.md</code> line {line}" in page and "`week` must be an integer" in page
        assert f'<span class="line hit"><span class="number">{line}</span>week = &#34;three&#34;' in page
        assert "lessons/03-brain.md" in client.get("/preview/brain").text
        assert client.get("/subscribe").status_code == 200  # subscribers keep the last good project
        lesson.write_text(original.replace("Lesson 3:", "Lesson 3 (edited):"), encoding="utf-8")
        holder.reload()
        assert "Lesson 3 (edited):" in client.get("/").text
    assert holder.version == 2


def saved_until_reloaded(holder: ProjectHolder, path: Path, text: str, within: float = 10.0) -> float:
    """Save `text` to `path` (again every half second, in case the watcher was still starting) until a reload."""
    seen, started = holder.version, time.monotonic()
    while time.monotonic() - started < within:
        path.write_text(text, encoding="utf-8")
        saved = time.monotonic()
        while time.monotonic() - saved < 0.5:
            if holder.version != seen:
                return time.monotonic() - saved
            time.sleep(0.02)
    raise AssertionError(f"no reload within {within} seconds of saving {path.name}")


def test_live_reload_rebuilds_the_project_when_a_lesson_or_the_config_is_saved(
    project_dir: Path, project: Project, settings: Settings
) -> None:
    app = create_app(project, clock=lambda: NOW, reload_settings=lambda: reopened(settings))
    holder = app.state.web.holder
    lesson = project_dir / "lessons" / "05-sleep.md"
    with TestClient(app, base_url="http://127.0.0.1", client=THIS_MACHINE) as client:
        assert client.get("/").status_code == 200  # opens the database
        edited = lesson.read_text(encoding="utf-8").replace("title = ", 'title = "Sleep, revised" #', 1)
        assert saved_until_reloaded(holder, lesson, edited) < 2
        assert "Sleep, revised" in client.get("/preview/sleep").text
        assert holder.project is not project and holder.project.db is project.db  # the pool is kept

        config = project_dir / "config.toml"
        renamed = config.read_text(encoding="utf-8").replace('name = "', 'name = "Renamed · ', 1)
        saved_until_reloaded(holder, config, renamed)
        assert "Renamed · " in client.get("/").text

        seen = holder.version
        (project_dir / "notes.txt").write_text("other files in the project folder do not count")
        time.sleep(0.6)
        assert holder.version == seen


# --- the guard -------------------------------------------------------------------------------------------------------


def test_on_loopback_the_studio_answers_only_to_loopback_host_names(project: Project) -> None:
    app = create_app(project, live_reload=False, clock=lambda: NOW)
    with TestClient(app, base_url="http://127.0.0.1:8025", client=THIS_MACHINE) as client:
        assert client.get("/", headers={"Host": "localhost:8025"}).status_code == 200
        rebound = client.get("/", headers={"Host": "attacker.example:8025"})
        assert rebound.status_code == 403 and "on this machine only" in rebound.text
        assert client.get("/outbox", headers={"Host": "attacker.example"}).status_code == 403
        assert client.get("/subscribe", headers={"Host": "attacker.example"}).status_code == 200


def test_a_proxy_on_this_machine_does_not_make_the_internet_local(settings: Settings) -> None:
    """The Host header decides nothing: a reverse proxy sends `Host: 127.0.0.1:PORT` for anyone on the internet."""
    guarded = Project(settings.replace("web", admin_token="correct-horse-battery"))
    app = create_app(guarded, live_reload=False, clock=lambda: NOW)
    proxied = {"Host": "127.0.0.1:8025", "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    with TestClient(app, base_url="http://127.0.0.1:8025", client=THIS_MACHINE, follow_redirects=False) as client:
        assert client.get("/").status_code == 200  # a person at this machine
        refused = client.get("/outbox", headers=proxied)
        assert refused.status_code == 401 and 'name="token"' in refused.text
        assert client.get("/login", headers=proxied).status_code == 200  # the sign-in form, not a redirect into it
        bearer = {**proxied, "Authorization": "Bearer correct-horse-battery"}
        assert client.get("/outbox", headers=bearer).status_code == 200
    with TestClient(app, base_url="http://127.0.0.1:8025", client=("192.0.2.44", 4000)) as elsewhere:
        assert elsewhere.get("/", headers={"Host": "127.0.0.1:8025"}).status_code == 401
    guarded.db.dispose()

    behind_proxy = Project(settings.replace("web", trusted_proxies=("127.0.0.1",)))
    app = create_app(behind_proxy, live_reload=False, clock=lambda: NOW)
    with TestClient(app, base_url="http://127.0.0.1:8025", client=THIS_MACHINE) as client:
        for headers in ({}, proxied):  # from a declared proxy, a request is forwarded even without its headers
            response = client.get("/", headers=headers)
            assert response.status_code == 403 and "came through a proxy" in response.text
    behind_proxy.db.dispose()


def test_elsewhere_the_studio_needs_the_admin_token(settings: Settings) -> None:
    guarded = Project(settings.replace("web", admin_token="correct-horse-battery"))
    app = create_app(guarded, host="0.0.0.0", live_reload=False, clock=lambda: NOW)
    with TestClient(app, base_url="https://studio.example", follow_redirects=False) as client:
        refused = client.get("/preview/knees?name=Kim")
        assert refused.status_code == 401 and 'name="token"' in refused.text
        assert 'name="next" value="/preview/knees?name=Kim"' in refused.text
        assert client.get("/_studio/events").status_code == 401
        bearer = client.get("/", headers={"Authorization": "Bearer correct-horse-battery"})
        assert bearer.status_code == 200
        assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
        assert csrf is not None
        wrong = client.post("/login", data={"token": "guess", "next": "/", "csrf_token": csrf.group(1)})
        assert wrong.status_code == 401 and "not the studio token" in wrong.text
        no_csrf = client.post("/login", data={"token": "correct-horse-battery", "next": "/"})
        assert no_csrf.status_code == 403
        signed_in = client.post(
            "/login", data={"token": "correct-horse-battery", "next": "//evil.example/", "csrf_token": csrf.group(1)}
        )
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "correct-horse-battery" not in cookie and "SameSite=strict" in cookie
        assert client.get("/outbox").status_code == 200
    guarded.db.dispose()


def test_elsewhere_without_a_token_the_studio_refuses_everyone(project: Project) -> None:
    app = create_app(project, host="0.0.0.0", live_reload=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for path in ("/", "/preview/knees", "/outbox", "/login"):
            response = client.get(path)
            assert response.status_code == 403 and "NEWSLETTER_WEB_ADMIN_TOKEN" in response.text
        assert client.get("/subscribe").status_code == 200


def test_serve_refuses_a_public_host_without_the_token(
    project_dir: Path, settings: Settings, env: dict[str, str]
) -> None:
    with pytest.raises(ConfigError, match="NEWSLETTER_WEB_ADMIN_TOKEN"):
        check_exposure(settings, "0.0.0.0", studio=True)
    check_exposure(settings, "0.0.0.0", studio=False)
    check_exposure(settings, "127.0.0.1", studio=True)
    check_exposure(settings, "::1", studio=True)
    check_exposure(settings.replace("web", admin_token="t0ken"), "192.0.2.7", studio=True)
    result = CliRunner().invoke(main, ["--config", str(project_dir / "config.toml"), "serve", "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "NEWSLETTER_WEB_ADMIN_TOKEN" in result.output
    for command in ("serve", "preview"):
        help_text = CliRunner().invoke(main, [command, "--help"]).output
        assert "--host" in help_text and "--port" in help_text


def test_public_only_serves_no_studio(project: Project) -> None:
    app = create_app(project, studio=False, live_reload=False)
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as client:
        assert client.get("/").headers["location"] == "/subscribe"
        assert client.get("/preview/knees").status_code == 404
        assert client.get("/outbox").status_code == 404


# --- the outbox ------------------------------------------------------------------------------------------------------


def test_the_outbox_lists_and_opens_stored_messages(client: TestClient, project: Project) -> None:
    assert "Nothing here yet" in client.get("/outbox").text
    transport = OutboxTransport(project.settings.delivery.outbox)
    reader = project.sample_subscriber(email="kim@example.com", name="Kim")
    for lesson in ("confirmation", "muscle"):
        transport.send(project.envelope(reader, lesson, now=NOW))
    listing = client.get("/outbox").text
    names = re.findall(r'href="/outbox/([^"]+)"', listing)
    assert len(names) == 2
    assert listing.index("Lesson 1") < listing.index("Confirm your subscription")  # newest first
    opened = client.get(f"/outbox/{names[1]}")
    assert opened.status_code == 200
    page = opened.text
    assert "Confirm your subscription" in page and "kim@example.com" in page
    assert re.search(r'<a href="/confirm/[^"]+">', page)  # the link, as a path on this server
    assert '<th scope="row">List-Unsubscribe-Post</th><td>List-Unsubscribe=One-Click</td>' in page
    html = client.get(f"/outbox/{names[1]}/html")
    assert html.status_code == 200 and html.text.lower().startswith("<!doctype html>")
    raw = client.get(f"/outbox/{names[1]}/raw")
    assert raw.headers["content-type"] == "message/rfc822"
    assert raw.content == (project.settings.delivery.outbox / "new" / unquote(names[1])).read_bytes()
    for missing in ("nope", "..%2F..%2Fconfig.toml", names[0] + "x"):
        assert client.get(f"/outbox/{missing}").status_code == 404

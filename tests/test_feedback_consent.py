"""Consent records: the sign-up's and the confirmation's IP, user agent and time, and the form's wording version."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from pathlib import Path

from feedback_mail import CONFIRMED_AT
from sqlalchemy import select
from starlette.testclient import TestClient

from newsletter import tokens
from newsletter.csvio import export_subscribers, import_subscribers
from newsletter.feedback.consent import EXPORT_COLUMNS, SIGNUP_FORM, form_version, read_detail
from newsletter.models import Event, Subscriber
from newsletter.project import Project
from newsletter.subscribers import erase
from newsletter.web import create_app

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


def sign_up_and_confirm(project: Project, email: str = "ann@example.com") -> int:
    app = create_app(project, live_reload=False, clock=lambda: CONFIRMED_AT)
    with TestClient(app, base_url="http://127.0.0.1:8025") as client:
        page = client.get("/subscribe", headers={"User-Agent": BROWSER}).text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf is not None
        fields = {"email": email, "name": "Ann", "weekday": "Monday", "time": "07:00", "timezone": "UTC"}
        answer = client.post(
            "/subscribe", data={**fields, "csrf_token": csrf.group(1)}, headers={"User-Agent": BROWSER}
        )
        assert answer.status_code == 200
        with project.db.session() as session:
            subscriber_id = session.scalars(select(Subscriber.id).where(Subscriber.email == email)).one()
        token = tokens.issue(project.settings.secret_key, "confirm", subscriber_id, CONFIRMED_AT)
        assert client.post(f"/confirm/{token}", headers={"User-Agent": PHONE}).status_code == 200  # GET only shows
    return subscriber_id


def details(project: Project, subscriber_id: int | None) -> dict[str, dict[str, str]]:
    with project.db.session() as session:
        query = select(Event.kind, Event.detail).where(
            Event.subscriber_id.is_(None) if subscriber_id is None else Event.subscriber_id == subscriber_id
        )
        return {kind: read_detail(detail) for kind, detail in session.execute(query)}


def test_sign_up_and_confirmation_keep_who_agreed_from_where_to_which_wording(project: Project) -> None:
    subscriber_id = sign_up_and_confirm(project)
    kept = details(project, subscriber_id)
    assert kept["subscribed"] == {"ip": "testclient", "user_agent": BROWSER, "form_version": form_version()}
    assert kept["confirmed"] == {"ip": "testclient", "user_agent": PHONE}


def test_the_form_version_is_the_git_blob_id_of_the_form_template() -> None:
    """`git log --find-object=<version>` then shows when that wording was live."""
    blob = subprocess.run(["git", "hash-object", str(SIGNUP_FORM)], capture_output=True, text=True, check=True)
    assert form_version() == blob.stdout.strip()[:12]


def test_export_writes_the_evidence_and_the_file_imports_again_without_complaint(
    any_project: Project, tmp_path: Path
) -> None:
    sign_up_and_confirm(any_project)
    exported = io.StringIO()
    with any_project.db.session() as session:
        export_subscribers(session, exported)
    [row] = list(csv.DictReader(io.StringIO(exported.getvalue())))
    assert tuple(row)[-len(EXPORT_COLUMNS) :] == EXPORT_COLUMNS
    assert row["subscribed_at"] == row["confirmed_at"] == CONFIRMED_AT.isoformat()
    assert (row["subscribed_ip"], row["subscribed_user_agent"], row["form_version"]) == (
        "testclient",
        BROWSER,
        form_version(),
    )
    assert (row["confirmed_ip"], row["confirmed_user_agent"]) == ("testclient", PHONE)
    copy = tmp_path / "export.csv"
    copy.write_text(exported.getvalue().replace("ann@", "ann.copy@"), encoding="utf-8")
    report = import_subscribers(any_project, copy, confirmed=True, now=CONFIRMED_AT)
    assert (report.added, report.rejected, report.ignored_columns) == (1, [], [])


def test_erase_keeps_only_that_someone_agreed_and_when(any_project: Project) -> None:
    subscriber_id = sign_up_and_confirm(any_project)
    with any_project.db.session() as session:
        erase(session, any_project, session.get(Subscriber, subscriber_id), now=CONFIRMED_AT)  # type: ignore[arg-type]
    with any_project.db.session() as session:
        left = session.execute(select(Event.kind, Event.at, Event.detail, Event.source).order_by(Event.id)).all()
    assert [(kind, detail) for kind, _, detail, _ in left] == [("subscribed", ""), ("confirmed", ""), ("erased", "")]
    assert all(at == CONFIRMED_AT for _, at, _, _ in left)
    assert "testclient" not in json.dumps([list(map(str, row)) for row in left])

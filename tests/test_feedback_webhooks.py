"""The provider webhooks over HTTP, each request signed as the provider documents, on both backends."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from feedback_mail import Sent, readers, send_week, sent
from sqlalchemy import func, select
from starlette.testclient import TestClient

from newsletter.feedback.webhooks import ses
from newsletter.feedback.webhooks.sns import SnsVerifier, signing_string
from newsletter.models import Feedback, Subscriber
from newsletter.project import Project
from newsletter.web import create_app
from newsletter.web.security import MAX_BODY_BYTES, MAX_WEBHOOK_BYTES

NOW = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
POSTMARK = ("postmark", "hook-password")
MAILGUN_KEY = "key-0123456789abcdef0123456789abcdef"


def webhook_settings(project: Project, sendgrid_key: str) -> Project:
    settings = project.settings.replace(
        "webhooks",
        ses_topic_arns=f"arn:aws:sns:us-east-1:123456789012:other, {TOPIC}",
        postmark_username=POSTMARK[0],
        postmark_password=POSTMARK[1],
        sendgrid_public_key=sendgrid_key,
        mailgun_signing_key=MAILGUN_KEY,
    )
    return Project(settings)


@pytest.fixture(scope="module")
def sns_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    """A signing key and a certificate for it, standing in for SNS's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW + timedelta(days=300))
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class FakeSns:
    """Serves our certificate at SNS's URL and remembers what was fetched; the verifier itself is the real one."""

    def __init__(self, key: rsa.RSAPrivateKey, certificate: bytes) -> None:
        self.key, self.certificate = key, certificate
        self.fetched: list[str] = []

    def sign(self, kind: str, body: str, *, version: str = "1", **fields: str) -> dict[str, str]:
        return sns_message(self.key, kind, body, version=version, **fields)

    def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        return self.certificate if url == CERT_URL else b"subscribed"


@pytest.fixture
def fake_sns(sns_key: tuple[rsa.RSAPrivateKey, bytes], monkeypatch: pytest.MonkeyPatch) -> FakeSns:
    fake = FakeSns(*sns_key)
    monkeypatch.setattr(ses, "VERIFIER", SnsVerifier(fetch=fake))
    return fake


@pytest.fixture
def hooked(any_project: Project, sendgrid_key: ec.EllipticCurvePrivateKey) -> Iterator[Project]:
    public = sendgrid_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    project = webhook_settings(any_project, base64.b64encode(public).decode())
    yield project
    project.db.dispose()


@pytest.fixture
def client(hooked: Project) -> Iterator[TestClient]:
    with TestClient(create_app(hooked, live_reload=False, clock=lambda: NOW), base_url="https://127.0.0.1") as made:
        yield made


@pytest.fixture
def lesson_one(hooked: Project) -> dict[str, Sent]:
    readers(hooked, "ann@example.com", "bo@example.com")
    send_week(hooked, 1)
    return {email: sent(hooked, email) for email in ("ann@example.com", "bo@example.com")}


def status_of(project: Project, email: str) -> str:
    with project.db.session() as session:
        return session.scalars(select(Subscriber.status).where(Subscriber.email == email)).one()


def feedback_count(project: Project) -> int:
    with project.db.session() as session:
        return session.scalar(select(func.count()).select_from(Feedback)) or 0


# --- SES through SNS -------------------------------------------------------------------------------------------


def sns_message(key: rsa.RSAPrivateKey, kind: str, body: str, *, version: str = "1", **fields: str) -> dict[str, str]:
    message = {
        "Type": kind,
        "MessageId": fields.pop("MessageId", "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"),
        "TopicArn": fields.pop("TopicArn", TOPIC),
        "Message": body,
        "Timestamp": "2026-03-03T08:59:58.123Z",
        "SignatureVersion": version,
        "SigningCertURL": fields.pop("SigningCertURL", CERT_URL),
        **fields,
    }
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    message["Signature"] = base64.b64encode(key.sign(signing_string(message), padding.PKCS1v15(), algorithm)).decode()
    return message


def ses_bounce(about: Sent, *, permanent: bool = True, feedback_id: str = "0100018e1a2b3c4d") -> str:
    return json.dumps(
        {
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": "Permanent" if permanent else "Transient",
                "bounceSubType": "General" if permanent else "MailboxFull",
                "bouncedRecipients": [
                    {
                        "emailAddress": about.email,
                        "action": "failed",
                        "status": "5.1.1" if permanent else "4.2.2",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                ],
                "timestamp": "2026-03-03T08:59:57.000Z",
                "feedbackId": feedback_id,
                "reportingMTA": "dsn; a8-50.smtp-out.amazonses.com",
            },
            "mail": {
                "timestamp": "2026-03-02T07:00:01.000Z",
                "messageId": "0100018e0f1e2d3c-ses-id",
                "source": "lessons@running.example.com",
                "destination": [about.email],
                "headersTruncated": False,
                "headers": [
                    {"name": "Message-ID", "value": about.message_id},
                    {"name": "X-Newsletter-Delivery", "value": str(about.delivery_id)},
                ],
                "commonHeaders": {"messageId": about.message_id, "subject": "Week 1: Muscle"},
            },
        }
    )


def test_ses_records_a_signed_bounce_once(
    hooked: Project,
    client: TestClient,
    fake_sns: FakeSns,
    lesson_one: dict[str, Sent],
) -> None:
    message = fake_sns.sign("Notification", ses_bounce(lesson_one["ann@example.com"]))
    answer = client.post(
        "/webhooks/ses", content=json.dumps(message), headers={"x-amz-sns-message-type": "Notification"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"recorded": 1, "duplicates": 0, "unmatched": 0, "ignored": 0, "note": ""}
    assert status_of(hooked, "ann@example.com") == "bounced"
    again = client.post("/webhooks/ses", content=json.dumps(message))
    assert again.json()["duplicates"] == 1 and feedback_count(hooked) == 1
    assert fake_sns.fetched == [CERT_URL]  # the certificate is fetched once and cached


def test_ses_signature_version_2_and_a_transient_bounce(
    hooked: Project,
    client: TestClient,
    fake_sns: FakeSns,
    lesson_one: dict[str, Sent],
) -> None:
    body = ses_bounce(lesson_one["bo@example.com"], permanent=False, feedback_id="0100018e99")
    answer = client.post("/webhooks/ses", content=json.dumps(fake_sns.sign("Notification", body, version="2")))
    assert answer.status_code == 200 and answer.json()["recorded"] == 1
    assert status_of(hooked, "bo@example.com") == "active"  # one soft bounce only counts


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        ({"Message": "{}"}, 403, "does not verify"),  # altered after signing
        ({"TopicArn": "arn:aws:sns:eu-west-1:666666666666:anyones"}, 403, "is not allowed"),
        (
            {"SigningCertURL": "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem"},
            403,
            "not an https URL on an SNS host",
        ),
        ({"SigningCertURL": "http://sns.eu-west-1.amazonaws.com/cert.pem"}, 403, "not an https URL on an SNS host"),
        ({"SignatureVersion": "3"}, 403, "SignatureVersion must be 1 or 2"),
    ],
)
def test_ses_refuses_what_sns_did_not_sign_for_our_topic(
    client: TestClient,
    fake_sns: FakeSns,
    lesson_one: dict[str, Sent],
    change: dict[str, str],
    status: int,
    reason: str,
) -> None:
    message = fake_sns.sign("Notification", ses_bounce(lesson_one["ann@example.com"]))
    if "TopicArn" in change:  # signed correctly, but for someone else's topic
        message = fake_sns.sign("Notification", ses_bounce(lesson_one["ann@example.com"]), **change)
    else:
        message.update(change)
    answer = client.post("/webhooks/ses", content=json.dumps(message))
    assert answer.status_code == status and reason in answer.json()["error"]
    assert all(url == CERT_URL for url in fake_sns.fetched)  # nothing from another host was ever fetched


def test_ses_confirms_its_subscription_and_records_complaints(
    hooked: Project,
    client: TestClient,
    fake_sns: FakeSns,
    lesson_one: dict[str, Sent],
) -> None:
    subscribe = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=2336412f37"
    confirmation = fake_sns.sign(
        "SubscriptionConfirmation",
        "You have chosen to subscribe…",
        SubscribeURL=subscribe,
        Token="2336412f37",
    )
    answer = client.post("/webhooks/ses", content=json.dumps(confirmation))
    assert answer.status_code == 200 and answer.json()["note"] == "subscription confirmed"
    assert fake_sns.fetched == [CERT_URL, subscribe]
    bo = lesson_one["bo@example.com"]
    complaint = {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": bo.email}],
            "timestamp": "2026-03-03T08:00:00.000Z",
            "feedbackId": "0100018ecomplaint",
            "complaintFeedbackType": "abuse",
        },
        "mail": {"commonHeaders": {"messageId": bo.message_id}, "destination": [bo.email]},
    }
    message = fake_sns.sign("Notification", json.dumps(complaint), MessageId="c0ffee")
    assert client.post("/webhooks/ses", content=json.dumps(message)).json()["recorded"] == 1
    assert status_of(hooked, bo.email) == "unsubscribed"


def test_an_endpoint_that_is_not_configured_answers_404(project: Project) -> None:
    with TestClient(create_app(project, live_reload=False), base_url="https://127.0.0.1") as plain:
        for provider in ("ses", "postmark", "sendgrid", "mailgun"):
            answer = plain.post(f"/webhooks/{provider}", content=b"{}")
            assert answer.status_code == 404 and "not configured" in answer.json()["error"], provider


# --- Postmark ----------------------------------------------------------------------------------------------------


def postmark_bounce(about: Sent, kind: str = "HardBounce", record_id: int = 4323372036) -> dict[str, object]:
    return {
        "RecordType": "Bounce",
        "ID": record_id,
        "Type": kind,
        "TypeCode": 1,
        "Name": "Hard bounce",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": about.email,
        "From": "lessons@running.example.com",
        "BouncedAt": "2026-03-03T08:59:00Z",
        "Inactive": True,
        "MessageStream": "outbound",
    }


def test_postmark_needs_its_basic_auth_and_records_once(
    hooked: Project, client: TestClient, lesson_one: dict[str, Sent]
) -> None:
    body = json.dumps(postmark_bounce(lesson_one["ann@example.com"]))
    refused = client.post("/webhooks/postmark", content=body, auth=("postmark", "guess"))
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    assert client.post("/webhooks/postmark", content=body).status_code == 401
    assert status_of(hooked, "ann@example.com") == "active"
    answer = client.post("/webhooks/postmark", content=body, auth=POSTMARK)
    assert answer.status_code == 200 and answer.json()["recorded"] == 1
    assert client.post("/webhooks/postmark", content=body, auth=POSTMARK).json()["duplicates"] == 1
    assert status_of(hooked, "ann@example.com") == "bounced"
    spam = {"RecordType": "SpamComplaint", "ID": 42, "Type": "SpamComplaint", "Email": "bo@example.com"}
    assert client.post("/webhooks/postmark", content=json.dumps(spam), auth=POSTMARK).json()["recorded"] == 1
    assert status_of(hooked, "bo@example.com") == "unsubscribed"
    delivered = {"RecordType": "Delivery", "MessageID": "x", "Recipient": "bo@example.com"}
    assert client.post("/webhooks/postmark", content=json.dumps(delivered), auth=POSTMARK).json()["ignored"] == 1


# --- SendGrid ----------------------------------------------------------------------------------------------------


def sendgrid_post(
    client: TestClient,
    key: ec.EllipticCurvePrivateKey,
    events: list[dict[str, object]],
    *,
    timestamp: str = "1772528400",
) -> Any:
    body = json.dumps(events).encode()
    signature = base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }
    return client.post("/webhooks/sendgrid", content=body, headers=headers)


def test_sendgrid_verifies_the_batch_and_records_bounces_and_spam_reports(
    hooked: Project, client: TestClient, sendgrid_key: ec.EllipticCurvePrivateKey, lesson_one: dict[str, Sent]
) -> None:
    ann, bo = lesson_one["ann@example.com"], lesson_one["bo@example.com"]
    bounced = {"event": "bounce", "type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 unknown user"}
    events: list[dict[str, object]] = [
        {"email": ann.email, "timestamp": 1772528390, "smtp-id": ann.message_id, "sg_event_id": "YmNl-1", **bounced},
        {
            "email": bo.email,
            "timestamp": 1772528391,
            "smtp-id": bo.message_id,
            "event": "delivered",
            "sg_event_id": "2",
        },
        {
            "email": bo.email,
            "timestamp": 1772528392,
            "smtp-id": bo.message_id,
            "event": "spamreport",
            "sg_event_id": "3",
        },
    ]
    answer = sendgrid_post(client, sendgrid_key, events)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"recorded": 2, "duplicates": 0, "unmatched": 0, "ignored": 1, "note": ""}
    assert (status_of(hooked, ann.email), status_of(hooked, bo.email)) == ("bounced", "unsubscribed")
    assert sendgrid_post(client, sendgrid_key, events).json()["duplicates"] == 2
    other_key = ec.generate_private_key(ec.SECP256R1())
    forged = sendgrid_post(client, other_key, events)
    assert forged.status_code == 403
    unsigned = client.post("/webhooks/sendgrid", content=json.dumps(events))
    assert unsigned.status_code == 401 and feedback_count(hooked) == 2


def test_sendgrid_batches_up_to_its_768_kb_are_taken_and_larger_bodies_refused_before_they_are_read(
    hooked: Project, client: TestClient, sendgrid_key: ec.EllipticCurvePrivateKey, lesson_one: dict[str, Sent]
) -> None:
    ann = lesson_one["ann@example.com"]
    delivered = {"email": ann.email, "smtp-id": ann.message_id, "event": "delivered", "timestamp": 1772528390}
    events: list[dict[str, object]] = [{**delivered, "sg_event_id": f"delivered-{n:06}"} for n in range(3500)]
    bounced = {"event": "bounce", "type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 unknown user"}
    events.append({**delivered, **bounced, "sg_event_id": "the-last-one"})  # at the end of the batch
    assert MAX_BODY_BYTES < len(json.dumps(events)) < 768 * 1024  # more than a form may be: a full batch
    answer = sendgrid_post(client, sendgrid_key, events)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"recorded": 1, "duplicates": 0, "unmatched": 0, "ignored": 3500, "note": ""}
    assert status_of(hooked, ann.email) == "bounced"
    too_large = sendgrid_post(client, sendgrid_key, events * 2)
    assert len(json.dumps(events * 2)) > MAX_WEBHOOK_BYTES and too_large.status_code == 413
    assert client.post("/subscribe", content=b"x" * (MAX_BODY_BYTES + 1)).status_code == 413  # forms: as before


# --- Mailgun -----------------------------------------------------------------------------------------------------


def mailgun_payload(
    about: Sent, *, token: str, when: datetime = NOW, event: str = "failed", event_id: str = "CPgfbmQMTCKtHW6uIWtuVe"
) -> dict[str, object]:
    timestamp = str(int(when.timestamp()))
    signature = hmac.new(MAILGUN_KEY.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": {
            "id": event_id,
            "event": event,
            "severity": "permanent",
            "reason": "bounce",
            "timestamp": when.timestamp(),
            "recipient": about.email,
            "delivery-status": {
                "code": 550,
                "message": "5.1.1 The email account that you tried to reach does not exist",
            },
            "message": {"headers": {"message-id": about.message_id.strip("<>"), "to": about.email}},
        },
    }


def test_mailgun_checks_the_signature_and_uses_each_token_once(
    hooked: Project, client: TestClient, lesson_one: dict[str, Sent]
) -> None:
    ann, bo = lesson_one["ann@example.com"], lesson_one["bo@example.com"]
    token = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"
    first = mailgun_payload(ann, token=token)
    answer = client.post("/webhooks/mailgun", json=first)
    assert answer.status_code == 200 and answer.json()["recorded"] == 1
    assert status_of(hooked, ann.email) == "bounced"
    # The same signature with another body (Mailgun signs only timestamp + token) is refused as a replay.
    replayed = {
        **mailgun_payload(bo, token=token, event="complained", event_id="other"),
        "signature": first["signature"],
    }
    assert client.post("/webhooks/mailgun", json=replayed).json()["note"] == "already processed"
    assert status_of(hooked, bo.email) == "active" and feedback_count(hooked) == 1
    stale = mailgun_payload(bo, token="f" * 50, when=NOW - timedelta(days=1), event="complained", event_id="late")
    assert client.post("/webhooks/mailgun", json=stale).status_code == 406
    forged = mailgun_payload(bo, token="e" * 50, event="complained", event_id="forged")
    forged["signature"]["signature"] = "0" * 64  # type: ignore[index]
    assert client.post("/webhooks/mailgun", json=forged).status_code == 403
    fresh = mailgun_payload(bo, token="d" * 50, event="complained", event_id="complaint-1")
    assert client.post("/webhooks/mailgun", json=fresh).json()["recorded"] == 1
    assert status_of(hooked, bo.email) == "unsubscribed"

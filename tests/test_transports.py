"""Transports against real parts: an aiosmtpd server on 127.0.0.1, real Maildir folders, real processes."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import pytest
from conftest import assert_one_rate_limit, race
from hypothesis import given, settings
from hypothesis import strategies as st
from smtp_sink import (
    FaultPlan,
    SmtpSink,
    drop_after_data,
    permanent,
    self_signed_certificate,
    server_tls_context,
    stall,
    temporary,
)

from newsletter.config import settings_from_mapping
from newsletter.errors import PermanentSendError, SendError, TransientSendError, TransportError
from newsletter.transports import (
    RATE_STATE_FILENAME,
    Envelope,
    MemoryTransport,
    OutboxTransport,
    RateLimiter,
    SmtpTransport,
    read_outbox,
    transport_from_settings,
)
from newsletter.transports.smtp import _Connection, dot_stuffed

REPO = Path(__file__).resolve().parent.parent


def make_envelope(to: str = "reader@example.test", number: int = 1, body: bytes = b"Hello.\r\n") -> Envelope:
    message_id = f"<lesson-{number}@example.test>"
    data = (
        b"From: Lessons <lessons@example.test>\r\n"
        + f"To: {to}\r\nSubject: Lesson {number}\r\nDate: Mon, 02 Mar 2026 07:00:00 +0100\r\n".encode()
        + f"Message-ID: {message_id}\r\nMIME-Version: 1.0\r\n\r\n".encode()
        + body
    )
    return Envelope("bounces@example.test", (to,), data, message_id)


@pytest.fixture(params=[False, True], ids=["one-at-a-time", "pipelining"])
def pipelining(request: pytest.FixtureRequest) -> bool:
    """Every SMTP test runs against a relay without PIPELINING (aiosmtpd's own) and one that offers it."""
    return bool(request.param)


@pytest.fixture
def sink(pipelining: bool) -> Iterator[SmtpSink]:
    with SmtpSink(pipelining=pipelining) as running:
        yield running


class TransportFactory(Protocol):
    def __call__(self, sink: SmtpSink | int, **options: Any) -> SmtpTransport: ...


@pytest.fixture
def transport_for() -> Iterator[TransportFactory]:
    """Build SmtpTransports to 127.0.0.1 (a sink or a port) and close them after the test."""
    made: list[SmtpTransport] = []

    def build(sink: SmtpSink | int, **options: Any) -> SmtpTransport:
        port = sink if isinstance(sink, int) else sink.port
        made.append(SmtpTransport("127.0.0.1", port, **options))
        return made[-1]

    yield build
    for transport in made:
        transport.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- SMTP: delivery and the connection pool -------------------------------------------------------


def test_bytes_arrive_exactly_as_given(sink: SmtpSink, transport_for: TransportFactory) -> None:
    body = (
        b"Line one\r\n"
        + b"x" * 998
        + b"\r\n.a line starting with a dot\r\n.\r\nUTF-8: caf\xc3\xa9\r\n\r\n"
        + b"=3D quoted-printable soft break=\r\n"
    )
    envelope = make_envelope(body=body)
    transport = transport_for(sink)

    reply = transport.send(envelope)
    transport.close()

    assert reply.startswith("250 ")
    [received] = sink.messages
    assert received.data == envelope.data
    assert received.mail_from == "bounces@example.test"
    assert received.recipients == ("reader@example.test",)
    assert received.message_id == "<lesson-1@example.test>"


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"x", b".."]), max_size=12).map(b"".join))
def test_dot_stuffing_gives_smtplibs_bytes(message: bytes) -> None:
    """What `dot_stuffed` puts on the wire is byte for byte what smtplib's own DATA would: the reference below."""
    reference = re.sub(rb"(?m)^\.", b"..", message)
    reference += b"" if reference.endswith(b"\r\n") else b"\r\n"

    assert dot_stuffed(message) == reference + b".\r\n"


def test_data_given_a_str_makes_its_line_ends_crlf_as_smtplib_does(sink: SmtpSink) -> None:
    connection = _Connection("127.0.0.1", sink.port)
    try:
        connection.ehlo()
        connection.mail("bounces@example.test")
        connection.rcpt("reader@example.test")
        code, _ = connection.data("Subject: lone ends\n\n.a dot\rlast")
    finally:
        connection.quit()

    assert code == 250
    [received] = sink.messages
    assert received.data == b"Subject: lone ends\r\n\r\n.a dot\r\nlast\r\n"


def test_sequential_messages_share_one_connection(sink: SmtpSink, transport_for: TransportFactory) -> None:
    transport = transport_for(sink, connections=3)

    for number in range(10):
        transport.send(make_envelope(number=number))

    assert sink.count == 10
    assert sink.sessions == 1


def test_concurrent_senders_open_exactly_the_pool_size(pipelining: bool, transport_for: TransportFactory) -> None:
    # A slow server keeps every connection busy, so six threads compete for the three slots.
    with SmtpSink(pipelining=pipelining, faults=FaultPlan({"*": stall(0.03)})) as slow_sink:
        transport = transport_for(slow_sink, connections=3)
        start = threading.Barrier(6)

        def send_four(worker: int) -> None:
            start.wait()
            for number in range(4):
                transport.send(make_envelope(number=worker * 10 + number))

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(send_four, range(6)))
        transport.close()

        assert slow_sink.count == 24
        assert slow_sink.sessions == 3
        assert len({message.message_id for message in slow_sink.messages}) == 24


@pytest.mark.parametrize("goodbye", [None, "421 4.4.2 sink.localhost Error: timeout exceeded"])
def test_reconnects_when_the_server_dropped_an_idle_connection(
    sink: SmtpSink, goodbye: str | None, transport_for: TransportFactory
) -> None:
    transport = transport_for(sink)
    transport.send(make_envelope(number=1))

    sink.drop_connections(reply=goodbye)
    reply = transport.send(make_envelope(number=2))

    assert reply.startswith("250 ")
    assert [message.message_id for message in sink.messages] == ["<lesson-1@example.test>", "<lesson-2@example.test>"]
    assert sink.sessions == 2


def test_a_relay_that_offers_pipelining_gets_each_message_in_two_writes(
    sink: SmtpSink, pipelining: bool, transport_for: TransportFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 2920: MAIL FROM, RCPT TO and DATA in one write, then the message; without it a write per command."""
    transport = transport_for(sink)
    transport.check()
    writes: list[bytes] = []
    real_send = _Connection.send

    def counted(connection: _Connection, data: Any) -> None:
        writes.append(data.encode() if isinstance(data, str) else bytes(data))
        real_send(connection, data)

    monkeypatch.setattr(_Connection, "send", counted)
    for number in range(3):
        assert transport.send(make_envelope(number=number)).startswith("250 ")

    assert len(writes) == (2 if pipelining else 4) * 3
    if pipelining:
        assert writes[0].lower().startswith(b"mail from:<bounces@example.test>")
        assert writes[0].lower().endswith(b"\r\nrcpt to:<reader@example.test>\r\ndata\r\n")
    assert [message.message_id for message in sink.messages] == [f"<lesson-{n}@example.test>" for n in range(3)]
    assert sink.sessions == 1


def test_refusals_at_mail_from_leave_the_session_in_step(pipelining: bool, transport_for: TransportFactory) -> None:
    """Refused at MAIL FROM, the replies still owed (RCPT TO's, DATA's) are read: the next answer is the next's."""
    with SmtpSink(pipelining=pipelining, auth=("ada", "right")) as sink:
        transport = transport_for(sink)
        for _ in range(3):
            with pytest.raises(TransportError, match=r"530 5\.7\.0 Authentication required"):
                transport.send(make_envelope())

    assert sink.count == 0
    assert sink.sessions == 1


def test_a_relay_that_takes_data_for_nobody_gets_no_message(pipelining: bool, transport_for: TransportFactory) -> None:
    """A relay that answers the pipelined DATA with 354 though it refused the recipient: the session is dropped."""
    with SmtpSink(pipelining=pipelining, sloppy_data=True, faults=FaultPlan({"gone@*": permanent(550)})) as sink:
        transport = transport_for(sink)

        with pytest.raises(PermanentSendError) as failure:
            transport.send(make_envelope(to="gone@example.test"))
        transport.send(make_envelope(to="here@example.test", number=2))

    assert failure.value.code == 550
    assert [message.recipients for message in sink.messages] == [("here@example.test",)]
    # Without PIPELINING no DATA follows a refused recipient, so the session is kept.
    assert sink.sessions == (2 if pipelining else 1)


# --- SMTP: what each kind of failure becomes ---------------------------------------------------------


@pytest.mark.parametrize("code", [421, 451])
def test_4xx_is_transient_with_code_and_reply(pipelining: bool, code: int, transport_for: TransportFactory) -> None:
    with SmtpSink(pipelining=pipelining, faults=FaultPlan({"soft@example.test": temporary(code, times=1)})) as sink:
        transport = transport_for(sink)

        with pytest.raises(TransientSendError) as failure:
            transport.send(make_envelope(to="soft@example.test"))
        retried = transport.send(make_envelope(to="soft@example.test"))

    assert failure.value.code == code
    assert failure.value.reply.startswith(f"{code} ")
    assert "soft@example.test" in str(failure.value)
    assert retried.startswith("250 ")
    assert len(sink.messages) == 1


def test_5xx_is_permanent_and_the_connection_stays_usable(pipelining: bool, transport_for: TransportFactory) -> None:
    with SmtpSink(pipelining=pipelining, faults=FaultPlan({"gone@*": permanent(550)})) as sink:
        transport = transport_for(sink)

        with pytest.raises(PermanentSendError) as failure:
            transport.send(make_envelope(to="gone@example.test"))
        transport.send(make_envelope(to="here@example.test"))

    assert failure.value.code == 550
    assert failure.value.reply.startswith("550 ")
    assert [message.recipients for message in sink.messages] == [("here@example.test",)]
    assert sink.sessions == 1


def test_hang_up_after_data_is_transient_and_the_connection_is_replaced(
    pipelining: bool, transport_for: TransportFactory
) -> None:
    with SmtpSink(pipelining=pipelining, faults=FaultPlan({"flaky@*": drop_after_data(times=1)})) as sink:
        transport = transport_for(sink)

        with pytest.raises(TransientSendError) as failure:
            transport.send(make_envelope(to="flaky@example.test"))
        transport.send(make_envelope(to="flaky@example.test", number=2))

    assert "may have accepted it" in str(failure.value)
    assert [message.replied for message in sink.messages] == [False, True]
    assert sink.sessions == 2


def test_a_stalled_server_is_transient_within_the_timeout(pipelining: bool, transport_for: TransportFactory) -> None:
    with SmtpSink(pipelining=pipelining, faults=FaultPlan({"slow@*": stall(10)})) as sink:
        transport = transport_for(sink, timeout=0.5)
        started = time.monotonic()

        with pytest.raises(TransientSendError, match=r"no reply within 0\.5 s"):
            transport.send(make_envelope(to="slow@example.test"))

        assert time.monotonic() - started < 8
        assert transport.send(make_envelope(to="fast@example.test")).startswith("250 ")


# --- SMTP: check() explains what to fix ---------------------------------------------------------------


def assert_whole_transport_error(failure: pytest.ExceptionInfo[TransportError], where: str) -> None:
    assert not isinstance(failure.value, SendError)
    assert where in str(failure.value)


def test_check_reports_refused_authentication(pipelining: bool, transport_for: TransportFactory) -> None:
    with SmtpSink(pipelining=pipelining, auth=("ada", "right")) as sink:
        with pytest.raises(TransportError, match="authentication refused for user 'ada'") as failure:
            transport_for(sink, username="ada", password="wrong").check()
        assert_whole_transport_error(failure, f"127.0.0.1:{sink.port}")


def test_login_is_used_and_required(pipelining: bool, transport_for: TransportFactory) -> None:
    with SmtpSink(pipelining=pipelining, auth=("ada", "right")) as sink:
        transport_for(sink, username="ada", password="right").send(make_envelope())
        with pytest.raises(TransportError, match="will not take mail from this client") as failure:
            transport_for(sink).send(make_envelope())

    assert_whole_transport_error(failure, "530")
    assert len(sink.messages) == 1


def test_check_reports_an_unknown_host() -> None:
    with pytest.raises(TransportError, match=r"cannot resolve host 'no-such-host\.invalid'") as failure:
        SmtpTransport("no-such-host.invalid", 25).check()
    assert_whole_transport_error(failure, "no-such-host.invalid:25")


def test_check_reports_a_closed_port_but_send_calls_it_transient(transport_for: TransportFactory) -> None:
    port = closed_port()
    with pytest.raises(TransportError, match="connection refused") as failure:
        transport_for(port).check()
    assert_whole_transport_error(failure, f"127.0.0.1:{port}")

    with pytest.raises(TransientSendError, match="connection refused"):
        transport_for(port).send(make_envelope())


def test_check_reports_implicit_tls_against_a_plain_server(sink: SmtpSink, transport_for: TransportFactory) -> None:
    with pytest.raises(TransportError, match=r"TLS handshake failed.*security") as failure:
        transport_for(sink, security="tls", timeout=5).check()
    assert_whole_transport_error(failure, f"127.0.0.1:{sink.port}")


def test_check_reports_starttls_missing_on_the_server(sink: SmtpSink, transport_for: TransportFactory) -> None:
    with pytest.raises(TransportError, match="STARTTLS") as failure:
        transport_for(sink, security="starttls").check()
    assert_whole_transport_error(failure, f"127.0.0.1:{sink.port}")


def test_starttls_with_login(pipelining: bool, certificate: tuple[Path, Path], transport_for: TransportFactory) -> None:
    cert, key = certificate
    trusted = ssl.create_default_context(cafile=str(cert))
    with SmtpSink(pipelining=pipelining, auth=("ada", "right"), tls_context=server_tls_context(cert, key)) as sink:
        transport = transport_for(sink, security="starttls", ssl_context=trusted, username="ada", password="right")
        transport.check()
        transport.send(make_envelope())
        assert sink.sessions == 1

        with pytest.raises(TransportError, match="certificate is not trusted") as failure:
            transport_for(sink, security="starttls").check()

    assert_whole_transport_error(failure, f"127.0.0.1:{sink.port}")
    [received] = sink.messages
    assert received.secure


def test_implicit_tls(pipelining: bool, certificate: tuple[Path, Path], transport_for: TransportFactory) -> None:
    cert, key = certificate
    trusted = ssl.create_default_context(cafile=str(cert))
    with SmtpSink(pipelining=pipelining, tls_context=server_tls_context(cert, key), implicit_tls=True) as sink:
        transport_for(sink, security="tls", ssl_context=trusted).send(make_envelope())

        with pytest.raises(TransportError, match=r"no greeting within 0\.5 s.*security = 'tls'") as failure:
            transport_for(sink, timeout=0.5).check()

    assert_whole_transport_error(failure, f"127.0.0.1:{sink.port}")
    assert [message.secure for message in sink.messages] == [True]


# --- rate limit ------------------------------------------------------------------------------------------


def test_rate_limit_spaces_messages_across_threads(sink: SmtpSink, transport_for: TransportFactory) -> None:
    transport = transport_for(sink, connections=2, rate_per_second=50)
    started = time.monotonic()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda number: transport.send(make_envelope(number=number)), range(20)))

    assert time.monotonic() - started >= 0.37  # 19 gaps of 20 ms
    assert sink.count == 20


def test_rate_limit_is_shared_by_processes_through_its_state_file(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from newsletter.transports import RateLimiter\n"
        "limiter = RateLimiter(40, Path(sys.argv[1]))\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "stamps = []\n"
        "for _ in range(10):\n"
        "    limiter.acquire()\n"
        "    stamps.append(time.time())\n"
        "print(' '.join(map(repr, stamps)), flush=True)\n"
    )
    state = tmp_path / RATE_STATE_FILENAME
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(state)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(2)
    ]
    assert_one_rate_limit(race(workers, timeout=20), per_second=40)


def test_rate_limiter_refuses_a_rate_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


# --- outbox ------------------------------------------------------------------------------------------------


def test_outbox_stores_exact_bytes_and_reads_them_back_oldest_first(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path / "outbox")
    envelopes = [make_envelope(to=f"reader{n}@example.test", number=n) for n in range(3)]

    replies = [outbox.send(envelope) for envelope in envelopes]
    messages = read_outbox(tmp_path / "outbox")

    assert [message.raw for message in messages] == [envelope.data for envelope in envelopes]
    assert [message.subject for message in messages] == ["Lesson 0", "Lesson 1", "Lesson 2"]
    assert messages[1].to == "reader1@example.test"
    assert messages[1].message_id == "<lesson-1@example.test>"
    assert messages[1].date is not None and messages[1].date.utcoffset() is not None
    assert messages[1].parse().get_content().rstrip() == "Hello."
    assert replies[1] == f"250 stored {messages[1].path.name}"
    assert "lesson-1@example.test" in messages[1].path.name
    assert messages[1].path.parent == tmp_path / "outbox" / "new"
    assert list((tmp_path / "outbox" / "tmp").iterdir()) == []


def test_outbox_readers_never_see_half_a_message(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path / "outbox")
    outbox.check()
    # Big enough that writing one takes a while, so a file made visible too early gets caught.
    big = [make_envelope(number=n, body=(b"%02d" % n * 38 + b"\r\n") * 40_000) for n in range(24)]
    complete_sizes = {len(envelope.data) for envelope in big}
    seen_sizes: set[int] = set()
    done = threading.Event()

    def watch_new_folder() -> None:
        while not done.is_set():
            for entry in os.scandir(tmp_path / "outbox" / "new"):
                with contextlib.suppress(FileNotFoundError):
                    seen_sizes.add(entry.stat().st_size)

    watcher = threading.Thread(target=watch_new_folder)
    watcher.start()
    try:
        with ThreadPoolExecutor(3) as pool:
            replies = list(pool.map(outbox.send, big))
    finally:
        done.set()
        watcher.join()

    assert len(set(replies)) == 24
    assert seen_sizes and seen_sizes <= complete_sizes
    assert {message.raw for message in read_outbox(tmp_path / "outbox")} == {envelope.data for envelope in big}


def test_outbox_that_cannot_exist_is_reported(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(TransportError, match=r"outbox .*file/outbox: cannot create it"):
        OutboxTransport(tmp_path / "file" / "outbox").check()


def test_reading_a_missing_outbox_gives_nothing(tmp_path: Path) -> None:
    assert read_outbox(tmp_path / "nowhere") == []


# --- memory transport, envelope, factory --------------------------------------------------------------


def test_memory_transport_records_and_fails_on_cue() -> None:
    memory = MemoryTransport()
    memory.fail_transiently("soft@example.test", times=2)
    memory.fail_permanently("Gone@Example.test")

    for _ in range(2):
        with pytest.raises(TransientSendError) as transient:
            memory.send(make_envelope(to="soft@example.test"))
        assert transient.value.code == 451
    with pytest.raises(PermanentSendError) as hard:
        memory.send(make_envelope(to="gone@example.test"))
    memory.send(make_envelope(to="soft@example.test"))
    memory.close()

    assert hard.value.code == 550 and hard.value.reply.startswith("550 ")
    assert [envelope.recipients for envelope in memory.sent] == [("soft@example.test",)]
    assert memory.attempts == 4
    assert memory.closed


def test_an_envelope_needs_a_recipient() -> None:
    with pytest.raises(ValueError, match="recipient"):
        Envelope("bounces@example.test", (), b"")


def test_settings_choose_the_outbox(tmp_path: Path) -> None:
    settings = settings_from_mapping({}, tmp_path, env={"NEWSLETTER_SECRET_KEY": "k"})

    transport = transport_from_settings(settings)
    transport.send(make_envelope())

    assert isinstance(transport, OutboxTransport)
    assert len(read_outbox(tmp_path / "outbox")) == 1


def test_settings_choose_smtp_with_the_password_from_the_environment(tmp_path: Path) -> None:
    with SmtpSink(auth=("ada", "from-env")) as sink:
        document = {
            "delivery": {"transport": "smtp"},
            "smtp": {"host": "127.0.0.1", "port": sink.port, "username": "ada", "rate_per_second": 100},
        }
        env = {"NEWSLETTER_SECRET_KEY": "k", "NEWSLETTER_SMTP_PASSWORD": "from-env"}
        transport = transport_from_settings(settings_from_mapping(document, tmp_path, env=env))
        transport.check()
        transport.send(make_envelope())
        transport.close()

    assert isinstance(transport, SmtpTransport)
    assert sink.count == 1
    assert (tmp_path / RATE_STATE_FILENAME).is_file()

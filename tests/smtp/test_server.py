"""A fake MX host driven by real clients: every catalog mode, the grammar, ESMTP, bad input."""

from __future__ import annotations

import re
import smtplib
import socket
from collections.abc import Callable

import aiosmtplib
import pytest

from harness.journal import Kind
from harness.records import Recipient, SmtpClose, SmtpMessage, SmtpReply, TranscriptLine
from harness.smtp.catalog import CATALOG, FLAVOURS, Stage
from harness.smtp.server import MXHost
from harness.smtp.world import MailWorld

from .conftest import FakeClock, client, decisions, messages, sessions, wait_session

MSG = b"From: news@brand.test\r\nTo: a@example.com\r\nSubject: hello\r\n\r\nHi there.\r\n"

PER_RECIPIENT = [
    name
    for name, mode in CATALOG.items()
    if not mode.server_down and mode.code is not None and name != "accept"
]


def _reply(code: int, msg: bytes) -> str:
    return f"{code} {msg.decode()}"


@pytest.mark.parametrize("flavour", ["postfix", "gmail", "yahoo"])
@pytest.mark.parametrize("name", PER_RECIPIENT)
def test_every_catalog_mode_replies_exactly_at_its_stage(
    mx: Callable[..., MailWorld], name: str, flavour: str
) -> None:
    rcpt = "victim@example.com"
    world = mx({rcpt: {"mode": name, "flavour": flavour}})
    mode = CATALOG[name]
    expected = mode.reply(flavour, rcpt=rcpt, peer="127.0.0.1", host="mx1.example.com")
    assert expected is not None
    with client(world) as c:
        c.ehlo("client.test")
        assert c.mail("news@brand.test") == (250, b"2.1.0 Ok")
        code, msg = c.rcpt(rcpt)
        if mode.stage is Stage.RCPT:
            assert _reply(code, msg) == str(expected)
        else:
            assert (code, msg) == (250, b"2.1.5 Ok")
            assert _reply(*c.data(MSG)) == str(expected)
        if expected.code != 421:
            c.quit()
    (session,) = wait_session(world)
    # One decision, journaled when given: a recipient accepted at RCPT whose mode acts at DATA
    # or end of DATA gets no record for the 250 it was given first.
    (decision,) = decisions(world, session)
    assert decision == SmtpReply(
        host="mx1",
        session=session.session,
        recipient=rcpt,
        sender="news@brand.test",
        stage=str(mode.stage),
        code=expected.code,
        enhanced=expected.enhanced,
        reply=str(expected),
        mode=name,
        rule=rcpt,
        bounce_class=str(mode.bounce_class),
        attempt=1,
        transaction=1,
    )
    assert TranscriptLine(stage=str(mode.stage), reply=str(expected)) in session.replies
    assert messages(world) == []
    assert session.end == ("server_dropped" if expected.code == 421 else "quit")


def test_accepted_message_is_journaled_with_headers_and_dsn_params(
    mx: Callable[..., MailWorld],
) -> None:
    world = mx(None, body_cap=10)
    message = (
        b"From: news@brand.test\r\nTo: a@example.com\r\nSubject: Sale\r\n"
        b"Message-ID: <m1@brand.test>\r\nX-CleverTap_META: eyJ3enJrX2FjYyI6IjEyMyJ9\r\n"
        b"List-Unsubscribe: <mailto:u@brand.test>, <https://brand.test/u/tok>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n0123456789ABCDEF\r\n"
    )
    with client(world) as c:
        c.ehlo("client.test")
        assert c.mail("news@brand.test", ["RET=HDRS", "ENVID=q+2B1", "BODY=8BITMIME"]) == (
            250,
            b"2.1.0 Ok",
        )
        assert (
            c.rcpt("a@example.com", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;A@example.com"])[0]
            == 250
        )
        assert c.rcpt("b@example.com")[0] == 250
        code, msg = c.data(message)
        assert code == 250
    (entry,) = world.journal.entries(Kind.SMTP_MESSAGE)
    data = entry.data
    assert isinstance(data, SmtpMessage)
    # The queue id comes from the journal's seq (never given twice), so it is read, not known.
    assert data.id == f"MX1{entry.seq:06d}"
    assert msg == f"2.0.0 Ok: queued as {data.id}".encode()
    assert data.host == "mx1"
    assert data.sender == "news@brand.test"
    assert data.recipients == (
        Recipient(
            address="a@example.com",
            notify=("SUCCESS", "FAILURE"),
            orcpt="rfc822;A@example.com",
        ),
        Recipient(address="b@example.com", notify=None, orcpt=None),
    )
    assert (data.ret, data.envid, data.body_type) == ("HDRS", "q+1", "8BITMIME")
    assert data.x_clevertap_meta == "eyJ3enJrX2FjYyI6IjEyMyJ9"
    assert data.list_unsubscribe == "<mailto:u@brand.test>, <https://brand.test/u/tok>"
    assert data.list_unsubscribe_post == "List-Unsubscribe=One-Click"
    assert (data.subject, data.message_id) == ("Sale", "<m1@brand.test>")
    assert data.headers[0] == ("From", "news@brand.test")
    assert (data.body, data.body_truncated) == ("0123456789", True)
    assert data.size == len(message)
    (session,) = wait_session(world)
    assert data.session == session.session
    assert session.messages == (data.id,)
    assert session.commands[:2] == (
        "EHLO client.test",
        "MAIL FROM:<news@brand.test> RET=HDRS ENVID=q+2B1 BODY=8BITMIME",
    )
    # The RCPT replies are decisions; the acceptance after the dot is the message, not a reply.
    assert [(d.recipient, d.stage, d.code) for d in decisions(world, session)] == [
        ("a@example.com", "rcpt", 250),
        ("b@example.com", "rcpt", 250),
    ]


def test_ehlo_advertises_the_extensions(mx: Callable[..., MailWorld]) -> None:
    world = mx(None, size_limit=5000)
    with client(world) as c:
        code, _ = c.ehlo("client.test")
        assert code == 250
        for keyword in (
            "size",
            "8bitmime",
            "smtputf8",
            "pipelining",
            "dsn",
            "enhancedstatuscodes",
            "chunking",
        ):
            assert c.has_extn(keyword), keyword
        assert c.esmtp_features["size"] == "5000"
        assert not c.has_extn("auth")
        assert not c.has_extn("starttls")
    (session,) = wait_session(world)
    assert [r for r in session.replies if r.stage == "ehlo"] == [
        TranscriptLine(stage="ehlo", reply=line)
        for line in (
            "250-mx1.example.com",
            "250-SIZE 5000",
            "250-8BITMIME",
            "250-SMTPUTF8",
            "250-PIPELINING",
            "250-DSN",
            "250-ENHANCEDSTATUSCODES",
            "250-VRFY",
            "250 CHUNKING",
        )
    ]


def test_sequence_by_attempt_over_real_retries(mx: Callable[..., MailWorld]) -> None:
    world = mx({"grey@example.com": ["greylist", "accept"]})
    replies = []
    for _ in range(3):
        with client(world) as c:
            c.ehlo("client.test")
            c.mail("news@brand.test")
            replies.append(c.rcpt("grey@example.com")[0])
    assert replies == [450, 250, 250]
    attempts = [decisions(world, s)[0].attempt for s in wait_session(world, 3)]
    assert attempts == [1, 2, 3]


def test_time_window_uses_the_injected_clock(
    mx: Callable[..., MailWorld], clock: FakeClock
) -> None:
    world = mx({"full@example.com": {"mode": "mailbox_full", "for": "10m", "then": "accept"}})

    def attempt() -> int:
        with client(world) as c:
            c.ehlo("client.test")
            c.mail("news@brand.test")
            return c.rcpt("full@example.com")[0]

    assert attempt() == 452
    clock.advance(599)
    assert attempt() == 452
    clock.advance(1)
    assert attempt() == 250


def test_data_stage_and_end_of_data_rejections_cover_every_recipient(
    mx: Callable[..., MailWorld],
) -> None:
    world = mx(
        {
            "d@example.com": {"reply": "554 5.7.1 not now", "stage": "data", "class": "hard"},
            "e@example.com": {"reply": "550 5.7.1 content refused", "stage": "end_of_data"},
        }
    )
    with client(world) as c:
        c.ehlo("client.test")
        c.mail("news@brand.test")
        assert c.rcpt("ok@example.com")[0] == 250
        assert c.rcpt("d@example.com") == (250, b"2.1.5 Ok")
        assert c.docmd("DATA") == (554, b"5.7.1 not now")
        c.rset()
        c.mail("news@brand.test")
        assert c.rcpt("ok@example.com")[0] == 250
        assert c.rcpt("e@example.com")[0] == 250
        assert c.data(MSG) == (550, b"5.7.1 content refused")
    (session,) = wait_session(world)
    late = [d for d in decisions(world, session) if d.stage in ("data", "end_of_data")]
    assert [(d.recipient, d.stage, d.bounce_class, d.cause) for d in late] == [
        ("ok@example.com", "data", "hard", "d@example.com"),
        ("d@example.com", "data", "hard", None),
        ("ok@example.com", "end_of_data", "soft", "e@example.com"),
        ("e@example.com", "end_of_data", "soft", None),
    ]
    assert messages(world) == []


def test_transactions_on_one_connection_are_numbered(mx: Callable[..., MailWorld]) -> None:
    # A client that keeps its connection (Postfix's cache, the example) makes many attempts in
    # one session: the records say which transaction each decision and message belongs to.
    world = mx({"full@example.com": "mailbox_full"})
    with client(world) as c:
        c.ehlo("client.test")
        assert c.rcpt("early@example.com")[0] == 503  # before MAIL: no transaction
        c.mail("news@brand.test")
        assert c.rcpt("full@example.com")[0] == 452
        c.rset()
        c.mail("news@brand.test")
        assert c.rcpt("full@example.com")[0] == 452
        assert c.rcpt("ok@example.com")[0] == 250
        assert c.data(MSG)[0] == 250
        c.mail("news@brand.test")
        assert c.rcpt("ok@example.com")[0] == 250
        assert c.data(MSG)[0] == 250
        c.quit()
    (session,) = wait_session(world)
    assert [(d.recipient, d.code, d.transaction) for d in decisions(world, session)] == [
        ("early@example.com", 503, None),
        ("full@example.com", 452, 1),
        ("full@example.com", 452, 2),
        ("ok@example.com", 250, 2),
        ("ok@example.com", 250, 3),
    ]
    assert [(m.session, m.transaction) for m in messages(world)] == [
        (session.session, 2),
        (session.session, 3),
    ]


def test_mx_refuses_other_domains_and_relay_takes_every_domain(
    make_world: Callable[..., MailWorld],
) -> None:
    def setup(w: MailWorld) -> None:
        w.add_host("mx1", domains=["example.com"])
        w.add_relay(rules={"*@far.test": "invalid_address"})

    world = make_world(setup)
    with client(world) as c:
        c.ehlo("client.test")
        c.mail("news@brand.test")
        assert c.rcpt("a@elsewhere.test") == (554, b"5.7.1 <a@elsewhere.test>: Relay access denied")
    with client(world, "relay") as c:
        c.ehlo("client.test")
        c.mail("news@brand.test")
        assert c.rcpt("a@elsewhere.test")[0] == 250
        assert c.rcpt("b@far.test")[0] == 550
        assert c.data(MSG)[0] == 250
    (message,) = messages(world)
    assert (message.host, [r.address for r in message.recipients]) == (
        "relay",
        ["a@elsewhere.test"],
    )


def test_too_many_recipients_and_421_closes_the_channel(mx: Callable[..., MailWorld]) -> None:
    world = mx({"t@example.com": {"mode": "throttle", "flavour": "yahoo"}}, max_recipients=2)
    with client(world) as c:
        c.ehlo("client.test")
        c.mail("news@brand.test")
        assert c.rcpt("a@example.com")[0] == 250
        assert c.rcpt("b@example.com")[0] == 250
        assert c.rcpt("c@example.com") == (452, b"4.5.3 Error: too many recipients")
    with client(world) as c:
        c.ehlo("client.test")
        c.mail("news@brand.test")
        code, _ = c.rcpt("t@example.com")
        assert code == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            c.rcpt("a@example.com")
    first, second = wait_session(world, 2)
    assert decisions(world, first)[-1].mode == "too_many_recipients"
    assert second.end == "server_dropped"


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("MAIL FROM:<a@b.test> RET=ALL", (501, b"5.5.4 RET must be FULL or HDRS")),
        (
            "MAIL FROM:<a@b.test> ENVID=" + "x" * 101,
            (501, b"5.5.4 ENVID must be xtext of at most 100 characters"),
        ),
        (
            "MAIL FROM:<a@b.test> ENVID=a+zz",
            (501, b"5.5.4 ENVID must be xtext of at most 100 characters"),
        ),
        ("MAIL FROM:<a@b.test> FOO=1", (555, b"5.5.4 Unsupported option: FOO")),
        ("MAIL FROM:<a@b.test> RET=FULL RET=HDRS", (501, b"5.5.4 Duplicate parameter: RET")),
        ("MAIL FROM:<a@b.test> SIZE=abc", (501, b"5.5.4 Bad message size syntax")),
        ("MAIL FROM:a@b.test>", (501, b"5.5.4 Syntax: MAIL FROM:<address>")),
        ("MAIL FROM:<>", (250, b"2.1.0 Ok")),
        # A quoted local part may hold spaces and ">", as Postfix takes it; outside it, not.
        ('MAIL FROM:<"bounces+john doe=example.com"@b.test>', (250, b"2.1.0 Ok")),
        ('MAIL FROM:<"a>b"@b.test> RET=HDRS', (250, b"2.1.0 Ok")),
        ('MAIL FROM:<"a b"@b c.test>', (501, b"5.5.4 Syntax: MAIL FROM:<address>")),
        ("MAIL FROM:<a b@b.test>", (501, b"5.5.4 Syntax: MAIL FROM:<address>")),
    ],
)
def test_mail_parameters_are_validated(
    mx: Callable[..., MailWorld], command: str, reply: tuple[int, bytes]
) -> None:
    world = mx()
    with client(world) as c:
        c.ehlo("client.test")
        assert c.docmd(command) == reply


@pytest.mark.parametrize(
    ("params", "reply"),
    [
        ("NOTIFY=NEVER,SUCCESS", (501, b"5.5.4 NOTIFY must be NEVER or SUCCESS, FAILURE, DELAY")),
        ("NOTIFY=SOMETIMES", (501, b"5.5.4 NOTIFY must be NEVER or SUCCESS, FAILURE, DELAY")),
        ("ORCPT=a@example.com", (501, b"5.5.4 ORCPT must be addr-type;xtext (rfc822;a@x.test)")),
        ("XYZ", (555, b"5.5.4 Unsupported option: XYZ")),
        ("NOTIFY=NEVER ORCPT=rfc822;a+2Bb@example.com", (250, b"2.1.5 Ok")),
    ],
)
def test_rcpt_parameters_are_validated(
    mx: Callable[..., MailWorld], params: str, reply: tuple[int, bytes]
) -> None:
    world = mx()
    with client(world) as c:
        c.ehlo("client.test")
        c.mail("news@brand.test")
        assert c.docmd(f"RCPT TO:<a@example.com> {params}") == reply


def test_size_limit_at_mail_and_at_end_of_data_then_the_server_goes_on(
    mx: Callable[..., MailWorld],
) -> None:
    world = mx(None, size_limit=200)
    too_large = str(CATALOG["too_large"].reply("postfix"))
    with client(world) as c:
        c.ehlo("client.test")
        assert _reply(*c.docmd("MAIL FROM:<a@b.test> SIZE=201")) == too_large
        c.mail("news@brand.test")
        c.rcpt("a@example.com")
        assert _reply(*c.data(b"Subject: big\r\n\r\n" + b"x" * 300 + b"\r\n")) == too_large
        c.mail("news@brand.test")
        c.rcpt("a@example.com")
        assert c.data(MSG)[0] == 250
    (session,) = wait_session(world)
    assert TranscriptLine(stage="end_of_data", reply=too_large) in session.replies
    # The host's own size rejection after the dot is a decision like the rules' ones.
    late = [d for d in decisions(world, session) if d.stage == "end_of_data"]
    assert [(d.recipient, d.code, d.reply, d.mode, d.bounce_class) for d in late] == [
        ("a@example.com", 552, too_large, "too_large", "soft")
    ]
    assert len(messages(world)) == 1


def _raw_session(port: int, payload: bytes, *, close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        received = sock.recv(1024)
        sock.sendall(payload)
        if not close:
            return received
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_garbage_and_overlong_lines_get_errors_and_the_journal_says_so(
    mx: Callable[..., MailWorld],
) -> None:
    world = mx()
    port = world.host("mx1").port
    out = _raw_session(
        port,
        b"EHLO c.test\r\n\xff\xfe\x00junk\r\nBLAH\r\n" + b"NOOP " + b"a" * 5000 + b"\r\nQUIT\r\n",
    )
    lines = out.decode("ascii", "replace").split("\r\n")
    # As Postfix answers them: with enhanced status codes, the command not echoed.
    assert "500 5.5.2 Error: bad syntax" in lines
    assert "500 5.5.2 Error: command not recognized" in lines
    assert "500 5.5.2 Error: command line too long" in lines
    assert "221 2.0.0 Bye" in lines
    (session,) = wait_session(world)
    stages = [r.stage for r in session.replies if r.reply.startswith("500")]
    assert stages == ["unrecognised", "unrecognised", "unrecognised"]
    assert session.end == "quit"
    # ... and the host still serves the next client.
    with client(world) as c:
        assert c.noop() == (250, b"2.0.0 Ok")


def test_client_dropping_mid_command_is_journaled_and_others_are_served(
    mx: Callable[..., MailWorld],
) -> None:
    world = mx()
    port = world.host("mx1").port
    _raw_session(port, b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<half", close=True)
    (session,) = wait_session(world)
    assert session.end == "client_dropped"
    assert session.commands == ("EHLO c.test", "MAIL FROM:<a@b.test>")
    with client(world) as c:
        c.ehlo("client.test")
        assert c.mail("news@brand.test") == (250, b"2.1.0 Ok")


def test_idle_timeout_is_journaled(mx: Callable[..., MailWorld]) -> None:
    world = mx(None, timeout=0.2)
    with socket.create_connection(("127.0.0.1", world.host("mx1").port), timeout=10) as sock:
        assert sock.recv(1024).startswith(b"220 ")
        # The server says why (as Postfix does), then hangs up on the idle client.
        assert sock.recv(1024) == b"421 4.4.2 mx1.example.com Error: timeout exceeded\r\n"
        assert sock.recv(1024) == b""
    (session,) = wait_session(world)
    assert session.end == "timeout"


def test_stopping_the_world_journals_open_sessions(make_world: Callable[..., MailWorld]) -> None:
    world = make_world(lambda w: w.add_host("mx1", domains=["example.com"]))
    c = client(world)
    try:
        c.ehlo("client.test")
        world.stop_sync()
        (session,) = sessions(world)
        assert session.end == "server_stopped"
        assert session.commands == ("EHLO client.test",)
    finally:
        c.close()


def test_null_sender_and_smtputf8(mx: Callable[..., MailWorld]) -> None:
    world = mx()
    with client(world) as c:
        c.command_encoding = "utf-8"
        c.ehlo("client.test")
        assert c.docmd("MAIL FROM:<>") == (250, b"2.1.0 Ok")
        assert c.rcpt("a@example.com")[0] == 250
        assert c.data(MSG)[0] == 250
        assert c.docmd("MAIL FROM:<jörg@brand.test>")[0] == 553
        assert c.docmd("MAIL FROM:<jörg@brand.test> SMTPUTF8") == (250, b"2.1.0 Ok")
        assert c.rcpt("zoë@example.com")[0] == 250
    first = messages(world)[0]
    assert first.sender == ""


@pytest.mark.asyncio
async def test_async_host_with_aiosmtplib_and_pipelining() -> None:
    async with MXHost(
        "mx1", domains=["example.com"], rules={"full@example.com": "mailbox_full_permanent"}
    ) as host:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=host.port, start_tls=False)
        async with smtp:
            errors, reply = await smtp.sendmail(
                "news@brand.test", ["ok@example.com", "full@example.com"], MSG
            )
            full = errors["full@example.com"]
            text = "<full@example.com>: Recipient address rejected: Mailbox full, quota exceeded"
            assert (full.code, full.message) == (552, f"5.2.2 {text}")
        entry = await host.journal.wait_for_async(lambda e: e.kind is Kind.SMTP_SESSION, timeout=10)
        assert entry is not None
        assert isinstance(entry.data, SmtpClose)
        assert entry.data.end == "quit"
    (message,) = messages(host.journal)
    assert reply == f"2.0.0 Ok: queued as {message.id}"
    assert re.fullmatch(r"MX1\d{6}", message.id)
    assert [r.address for r in message.recipients] == ["ok@example.com"]


def test_flavour_list_is_what_the_tests_cover() -> None:
    assert set(FLAVOURS) >= {"postfix", "gmail", "yahoo"}

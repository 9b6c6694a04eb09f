"""The fake MX as Postfix behaves (issue 10): BDAT, drops that stop reading, long lines, tls_broken
against a client that falls back to plaintext, timeouts. Real sockets, real bytes; the journal
is read through the test helpers. ``tests/realmta`` compares the same replies with a real Postfix.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Callable

import pytest

from harness.smtp.world import MailWorld

from .conftest import decisions, messages, wait_session

MESSAGE = b"From: news@brand.test\r\nSubject: chunks\r\n\r\nHello in chunks.\r\n"


class Raw:
    """A client that writes exactly the bytes it is given and reads replies line by line."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        lines = []
        while True:
            line = self.file.readline().decode()
            if not line:
                return "\n".join(lines) if lines else ""
            lines.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                return "\n".join(lines)

    def command(self, line: bytes) -> str:
        self.send(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _envelope(raw: Raw, *recipients: str) -> None:
    assert raw.command(b"EHLO client.test").endswith("250 CHUNKING")
    assert raw.command(b"MAIL FROM:<news@brand.test>") == "250 2.1.0 Ok"
    for rcpt in recipients:
        assert raw.command(f"RCPT TO:<{rcpt}>".encode()).startswith("250")


def test_bdat_chunks_make_one_message(mx: Callable[..., MailWorld]) -> None:
    world = mx()
    raw = Raw(world.host("mx1").port)
    _envelope(raw, "a@example.com")
    first, second = MESSAGE[:20], MESSAGE[20:]
    # Chunk data is binary: a line "QUIT" inside it is data, not a command.
    raw.send(b"BDAT %d\r\n%s" % (len(first), first))
    assert raw.reply() == f"250 2.0.0 Ok: {len(first)} bytes"
    raw.send(b"BDAT %d LAST\r\n%s" % (len(second), second))
    reply = raw.reply()
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    assert raw.command(b"QUIT") == "221 2.0.0 Bye"
    raw.close()
    (message,) = messages(world)
    assert message.size == len(MESSAGE)
    assert message.subject == "chunks"
    assert reply.endswith(message.id)


def test_bdat_last_meets_the_end_of_data_rules_and_the_size_limit(
    mx: Callable[..., MailWorld],
) -> None:
    world = mx({"spam@example.com": "spam_content"}, size_limit=200)
    raw = Raw(world.host("mx1").port)
    _envelope(raw, "spam@example.com")
    raw.send(b"BDAT %d LAST\r\n%s" % (len(MESSAGE), MESSAGE))
    assert raw.reply() == "550 5.7.1 Message content rejected: looks like spam"
    assert raw.command(b"MAIL FROM:<news@brand.test>") == "250 2.1.0 Ok"
    assert raw.command(b"RCPT TO:<ok@example.com>") == "250 2.1.5 Ok"
    big = b"x" * 300
    raw.send(b"BDAT 150\r\n" + big[:150])
    assert raw.reply() == "250 2.0.0 Ok: 150 bytes"
    raw.send(b"BDAT 150 LAST\r\n" + big[150:])
    assert raw.reply() == "552 5.3.4 Message size exceeds fixed limit"
    assert raw.command(b"QUIT") == "221 2.0.0 Bye"
    raw.close()
    (session,) = wait_session(world)
    stages = [(d.recipient, d.stage, d.code, d.mode) for d in decisions(world, session)]
    assert ("spam@example.com", "end_of_data", 550, "spam_content") in stages
    # The size rejection is a decision like the rules' (the cross-checks see it).
    assert ("ok@example.com", "end_of_data", 552, "too_large") in stages
    assert messages(world) == []


def test_bdat_without_a_recipient_reads_the_chunk_and_refuses(
    mx: Callable[..., MailWorld],
) -> None:
    world = mx()
    raw = Raw(world.host("mx1").port)
    assert raw.command(b"EHLO client.test").endswith("250 CHUNKING")
    raw.send(b"BDAT 6 LAST\r\nNOOP\r\n")
    assert raw.reply() == "503 5.5.1 Error: need RCPT command"
    # The chunk ("NOOP\r\n") was read as data: the next reply answers QUIT.
    assert raw.command(b"QUIT") == "221 2.0.0 Bye"
    raw.close()


@pytest.mark.parametrize("via", ["DATA", "BDAT"])
@pytest.mark.parametrize("variant", ["drop_mid_data", "drop_after_dot"])
def test_drops_stop_reading_at_the_drop(
    mx: Callable[..., MailWorld], variant: str, via: str
) -> None:
    """Pipelined lines after the drop (Postfix sends QUIT right after the dot) are never run."""
    world = mx(server_down=variant)
    raw = Raw(world.host("mx1").port)
    _envelope(raw, "a@example.com")
    after = b"RSET\r\nMAIL FROM:<x@brand.test>\r\nRCPT TO:<victim@example.com>\r\nHELP\r\nQUIT\r\n"
    if via == "DATA":
        assert raw.command(b"DATA").startswith("354")
        raw.send(MESSAGE + b".\r\n" + after)
    else:
        raw.send(b"BDAT %d LAST\r\n%s%s" % (len(MESSAGE), MESSAGE, after))
    assert raw.reply() == ""  # no reply at all: the connection is gone
    raw.close()
    (session,) = wait_session(world)
    assert session.end == "server_dropped"
    assert session.commands[-1] == ("DATA" if via == "DATA" else f"BDAT {len(MESSAGE)} LAST")
    assert session.dropped_message is not None
    assert session.dropped_message.recipients == ("a@example.com",)
    assert [d.recipient for d in decisions(world, session)] == ["a@example.com"]


def test_long_lines_are_taken_by_default_and_refused_when_limited(
    mx: Callable[..., MailWorld],
) -> None:
    body = b"Subject: long\r\n\r\n" + b"y" * 5000 + b"\r\n"
    world = mx()
    with smtplib.SMTP("127.0.0.1", world.host("mx1").port, timeout=10) as c:
        c.ehlo("client.test")
        c.sendmail("news@brand.test", ["a@example.com"], body)
    (message,) = messages(world)
    assert message.size == len(body)

    strict = mx(line_length_limit=1000)
    with smtplib.SMTP("127.0.0.1", strict.host("mx1").port, timeout=10) as c:
        c.ehlo("client.test")
        c.mail("news@brand.test")
        c.rcpt("a@example.com")
        assert c.data(body) == (500, b"5.5.2 Error: line too long in message")
    (session,) = wait_session(strict)
    (decision,) = [d for d in decisions(strict, session) if d.stage == "end_of_data"]
    assert (decision.recipient, decision.code, decision.enhanced) == ("a@example.com", 500, "5.5.2")


def test_tls_broken_refuses_the_plaintext_retry(mx: Callable[..., MailWorld]) -> None:
    """A client that falls back to plaintext (as Postfix and Exim do) meets 530 5.7.0 at RCPT:
    a decision of the ``tls_broken`` mode, soft, so the mail does not get through."""
    world = mx(tls="starttls", server_down="tls_broken")
    port = world.host("mx1").port
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c, pytest.raises(ssl.SSLError):
        c.starttls(context=context)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.ehlo("client.test")
        assert c.mail("news@brand.test") == (250, b"2.1.0 Ok")
        assert c.rcpt("a@example.com") == (530, b"5.7.0 Must issue a STARTTLS command first")
    first, second = wait_session(world, 2)
    assert first.end == "server_dropped"
    (refusal,) = decisions(world, second)
    assert (refusal.mode, refusal.enhanced, refusal.bounce_class) == ("tls_broken", "5.7.0", "soft")


def test_vrfy_answers_by_the_rules_without_counting_an_attempt(
    mx: Callable[..., MailWorld],
) -> None:
    world = mx({"bad@example.com": "invalid_address", "grey@example.com": ["greylist", "accept"]})
    with smtplib.SMTP("127.0.0.1", world.host("mx1").port, timeout=10) as c:
        c.ehlo("client.test")
        assert c.verify("bad@example.com")[0] == 550
        assert c.verify("ok@example.com") == (252, b"2.0.0 ok@example.com")
        assert c.verify("grey@example.com")[0] == 252
        c.mail("news@brand.test")
        # Still the first attempt: VRFY did not use up the greylisting step.
        assert c.rcpt("grey@example.com")[0] == 450


def test_idle_and_session_timeouts_say_421_and_are_journaled(
    mx: Callable[..., MailWorld],
) -> None:
    world = mx(timeout=5, session_timeout=0.5)
    raw = Raw(world.host("mx1").port)
    started = time.monotonic()
    # Busy, never idle: only the total-session bound can end it.
    while (reply := raw.command(b"NOOP")) == "250 2.0.0 Ok":
        assert time.monotonic() - started < 5
        time.sleep(0.05)
    assert reply == "421 4.4.2 mx1.example.com Error: timeout exceeded"
    assert 0.5 <= time.monotonic() - started < 2
    raw.close()
    (session,) = wait_session(world)
    assert session.end == "timeout"


def test_tarpit_connections_are_closed_after_their_bound(mx: Callable[..., MailWorld]) -> None:
    world = mx(server_down="tarpit", tarpit_timeout=0.3)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", world.host("mx1").port), timeout=10) as sock:
        assert sock.recv(1024) == b""  # not a byte, then the close
    assert 0.3 <= time.monotonic() - started < 2
    (session,) = wait_session(world)
    assert session.end == "timeout"


def test_host_limits_are_checked(mx: Callable[..., MailWorld]) -> None:
    from harness.errors import ConfigError
    from harness.smtp.server import MXHost

    for options in (
        {"timeout": 0},
        {"session_timeout": -1},
        {"tarpit_timeout": "1"},
        {"slow_delay": -0.5},
        {"line_length_limit": 10},
    ):
        with pytest.raises(ConfigError, match=next(iter(options))):
            MXHost("mx", domains=["example.com"], **options)  # type: ignore[arg-type]


SCENARIO = """
name: limits
mx:
  example.com:
    idle_timeout: 30s
    session_timeout: 2m
    slow_delay: 250ms
    line_length_limit: 1000
    ok@example.com: accept
  down.test: {server_down: tarpit, tarpit_timeout: 5s}
campaign: {from: news@brand.test, to: [ok@example.com, a@down.test]}
expect: {within: 5s}
"""


def test_host_limits_come_from_the_scenario() -> None:
    from harness.scenario.loader import parse_scenario
    from harness.world import World

    world = World.from_scenario(parse_scenario(SCENARIO))
    host, down = world.mail.host("example.com"), world.mail.host("down.test")
    assert (host.timeout, host.session_timeout, host._slow_delay) == (30.0, 120.0, 0.25)
    assert host.line_length_limit == 1000
    assert down.tarpit_timeout == 5.0
    # Unset limits keep the host's documented defaults.
    assert (down.timeout, down.session_timeout, down.line_length_limit) == (300.0, 600.0, None)


def test_a_bad_limit_in_a_scenario_names_its_place() -> None:
    from harness.errors import ScenarioError
    from harness.scenario.loader import parse_scenario

    for bad in ("-3s", "0"):
        with pytest.raises(ScenarioError) as caught:
            parse_scenario(SCENARIO.replace("idle_timeout: 30s", f"idle_timeout: {bad}"))
        (problem,) = caught.value.problems
        assert problem.startswith('<scenario>:5:19: mx["example.com"].idle_timeout: '), problem

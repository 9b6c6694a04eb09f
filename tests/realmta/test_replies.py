"""The fake MX answers what Postfix answers: the same dialogue sent to both, reply by reply.

A private Postfix (its smtpd, configured like a fake MX host: same size limit, SMTPUTF8 on one
listener and off on another, STARTTLS offered) and fake MX hosts get the same bytes; the reply
codes and enhanced status codes must agree (the texts are each server's own). Known
disagreements are ``xfail(strict=True)``: they flip to failures once fixed, so the marks go.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.smtp.world import MailWorld
from tests.realmta.postfix import PrivatePostfix, postfix_missing
from tests.realmta.probe import TLS, Reply, converse

pytestmark = [
    pytest.mark.realmta,
    pytest.mark.skipif(postfix_missing() is not None, reason=str(postfix_missing())),
]

SIZE_LIMIT = 100_000
EHLO = b"EHLO client.test\r\n"
MAIL = b"MAIL FROM:<news@brand.test>\r\n"
RCPT = b"RCPT TO:<user@probe.test>\r\n"


def _data(body: bytes) -> list[bytes]:
    return [b"DATA\r\n", b"Subject: probe\r\n\r\n" + body + b"\r\n.\r\n"]


def _xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


# name -> (steps, without SMTPUTF8?, marks)
PROBES: dict[str, tuple[list[bytes], bool, tuple[pytest.MarkDecorator, ...]]] = {
    "ehlo": ([EHLO], False, ()),
    "mail_before_ehlo": ([MAIL], False, ()),
    "noop": ([EHLO, b"NOOP\r\n"], False, ()),
    "rset": ([EHLO, b"RSET\r\n"], False, ()),
    "quit": ([EHLO, b"QUIT\r\n"], False, ()),
    "unknown_command": ([EHLO, b"FROB\r\n"], False, ()),
    "help": ([EHLO, b"HELP\r\n"], False, ()),
    "vrfy": ([EHLO, b"VRFY <user@probe.test>\r\n"], False, ()),
    "ehlo_no_argument": ([b"EHLO\r\n"], False, ()),
    "rcpt_before_mail": ([EHLO, RCPT], False, ()),
    "nested_mail": ([EHLO, MAIL, MAIL], False, ()),
    "data_before_mail": ([EHLO, b"DATA\r\n"], False, ()),
    "data_without_rcpt": ([EHLO, MAIL, b"DATA\r\n"], False, ()),
    "auth_not_enabled": ([EHLO, b"AUTH PLAIN\r\n"], False, ()),
    "starttls": ([EHLO, b"STARTTLS\r\n"], False, ()),
    "second_starttls": (
        [EHLO, b"STARTTLS\r\n", TLS, EHLO, b"STARTTLS\r\n"],
        False,
        (),
    ),
    "smtputf8_unsupported": ([EHLO, b"MAIL FROM:<news@brand.test> SMTPUTF8\r\n"], True, ()),
    "utf8_sender_without_smtputf8_support": (
        [EHLO, "MAIL FROM:<jos\u00e9@brand.test> SMTPUTF8\r\n".encode()],
        True,
        (),
    ),
    "bad_utf8_sender": (
        [EHLO, b"MAIL FROM:<\xff\xfe@brand.test>\r\n"],
        False,
        (),
    ),
    "size_not_a_number": (
        [EHLO, "MAIL FROM:<news@brand.test> SIZE=\u00b2\r\n".encode()],
        False,
        (),
    ),
    "non_utf8_parameter": (
        [EHLO, b"MAIL FROM:<news@brand.test> ENVID=\xff\r\n"],
        False,
        (),
    ),
    "size_over_limit": ([EHLO, b"MAIL FROM:<news@brand.test> SIZE=999999999\r\n"], False, ()),
    "message_over_limit": (
        [EHLO, MAIL, RCPT, *_data((b"y" * 70 + b"\r\n") * (SIZE_LIMIT // 70 + 10))],
        False,
        (),
    ),
    "line_over_1000_octets": (
        [EHLO, MAIL, RCPT, *_data(b"x" * 1500)],
        False,
        (),
    ),
    "bdat": (
        [EHLO, MAIL, RCPT, b"BDAT 20 LAST\r\nSubject: bdat\r\n\r\nhi\r\n"],
        False,
        (),
    ),
}


class Servers:
    def __init__(self, postfix: PrivatePostfix, world: MailWorld) -> None:
        self.postfix = postfix
        self.world = world

    def ports(self, noutf8: bool) -> tuple[int, int]:
        if noutf8:
            return self.postfix.port_noutf8, self.world.host("probe-ascii").port
        return self.postfix.port, self.world.host("probe").port


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    world = MailWorld()
    options = {"size_limit": SIZE_LIMIT, "tls": "starttls"}
    world.add_host("probe", domains=["probe.test"], **options)
    world.add_host("probe-ascii", domains=["probe-ascii.test"], smtputf8=False, **options)
    with world:
        postfix = PrivatePostfix("probe.test discard:\n", size_limit=SIZE_LIMIT).start()
        try:
            yield Servers(postfix, world)
        finally:
            postfix.stop()
            postfix.cleanup()


def _keys(replies: list[Reply]) -> list[tuple[int | None, str | None]]:
    return [r.key for r in replies]


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=marks) for name, (_, _, marks) in PROBES.items()]
)
def test_fake_mx_replies_like_postfix(servers: Servers, name: str) -> None:
    steps, noutf8, _ = PROBES[name]
    postfix_port, fake_port = servers.ports(noutf8)
    postfix = converse(postfix_port, steps)
    fake = converse(fake_port, steps)
    # The greeting and EHLO are compared by code only: each server names itself.
    assert _keys(fake) == _keys(postfix), "\n".join(
        ["postfix:", *(r.text for r in postfix), "fake MX:", *(r.text for r in fake)]
    )


def test_chunking_is_advertised_like_postfix(servers: Servers) -> None:
    postfix_port, fake_port = servers.ports(False)
    keywords = {}
    for who, port in (("postfix", postfix_port), ("fake", fake_port)):
        ehlo = converse(port, [EHLO])[1]
        keywords[who] = {line[4:].split()[0] for line in ehlo.lines[1:]}
    assert "CHUNKING" in keywords["postfix"]
    assert "CHUNKING" in keywords["fake"]

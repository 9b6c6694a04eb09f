"""The example's quick reading of MAIL and RCPT addresses agrees with aiosmtpd's own parser.

examples/integration/listeners.py reads plain addresses with a regular expression and leaves
every other shape to aiosmtpd (``SMTP._getaddr``, the email package's RFC 5322 parser). Both
readings are compared here on hostile and international input, and on whatever hypothesis
makes of the characters that matter to the grammar; the end-to-end tests (SMTPUTF8 recipients,
every shipped scenario) run through the real listener.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from hypothesis import given, settings
from hypothesis import strategies as st

# The gateway runs as a script: its modules import each other by bare name.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "integration"))

from listeners import _SMTP

HOSTILE = [
    "<user100@example.com>",
    "<news@brand.test> SIZE=1000 BODY=8BITMIME",
    "<a@b.c>\tSMTPUTF8",
    "<a@b.c>   ",
    "<a@b.c>x",
    "<a@b.c><d@e.f>",
    "<a@b.c> (a comment) SIZE=1",
    "<a@b.c>(comment)",
    "<bounces+user=example.com@sut.test>",
    "<o'brien+tag/x=y?z^_`{|}~#$%&*!-@sub-1.example.com>",
    "<jürgen@bücher.example>",
    "<用户@例子.广告>",
    "<zoë@example.com> SMTPUTF8",
    '<"quoted local"@example.com>',
    '<"a\\"b"@example.com>',
    '<"a@b"@example.com>',
    "<a..b@example.com>",
    "<.a@example.com>",
    "<a.@example.com>",
    "<a@example..com>",
    "<a@.example.com>",
    "<a@example.com.>",
    "<a@[192.0.2.1]>",
    "<a@[IPv6:2001:db8::1]>",
    "<@relay.test:a@example.com>",
    "<@r1,@r2:a@example.com>",
    "<>",
    "<> SIZE=10",
    "<a>",
    "<@example.com>",
    "<a@>",
    "<a@b@c>",
    "<a@b.c",
    "a@b.c",
    "a@b.c SIZE=1",
    " <a@b.c>",
    "< a@b.c>",
    "<a @b.c>",
    "<a@b .c>",
    "<a(c)@b.c>",
    "<a@b.c\x00>",
    "<a\x7f@b.c>",
    "<a\xa0b@c.d>",
    "<a\u2028@b.c>",
    "<a@b\u3000c>",
    "<\udcff@b.c>",
    "<a@b.c>\udcff",
    "<a@b.c> \x0b",
    "<a@b.c>\x0bSIZE=1",
    "<" + "x" * 300 + "@example.com>",
    "",
    "<",
    ">",
    "<<a@b.c>>",
    '"',
    "\\",
]

# Everything the address grammar treats specially, and some of what it does not.
ALPHABET = "aZ09_-+=.@<>()[]\\\",:; \t\x00\x7f\xa0\u2028\u3000üß用\udcff'/!#$%&*?^`{|}~"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[SMTP, SMTP]]:
    loop = asyncio.new_event_loop()
    try:
        yield _SMTP(None, loop=loop), SMTP(None, loop=loop)
    finally:
        loop.close()


def agree(servers: tuple[SMTP, SMTP], arg: str) -> None:
    """The same reading, except where aiosmtpd's parser crashes: a malformed address then."""
    quick, stock = servers
    for limit in (0, 8):
        quick.local_part_limit = stock.local_part_limit = limit
        try:
            expected = stock._getaddr(arg)
        except Exception:
            expected = (None, None)
        assert quick._getaddr(arg) == expected, (arg, limit)


@pytest.mark.parametrize("arg", HOSTILE)
def test_hostile_and_international_addresses_read_as_aiosmtpd_reads_them(
    servers: tuple[SMTP, SMTP], arg: str
) -> None:
    agree(servers, arg)


def test_the_quick_reading_is_taken_for_plain_addresses(servers: tuple[SMTP, SMTP]) -> None:
    # Guards the point of the subclass: a plain address never reaches the email package.
    quick, _ = servers
    quick.local_part_limit = 0
    assert _SMTP.__mro__[1]._getaddr is SMTP._getaddr
    original = SMTP._getaddr
    try:
        SMTP._getaddr = lambda self, arg: pytest.fail(f"parsed {arg!r} the slow way")  # type: ignore[method-assign]
        assert quick._getaddr("<jürgen@bücher.example> SMTPUTF8") == (
            "jürgen@bücher.example",
            "SMTPUTF8",
        )
    finally:
        SMTP._getaddr = original  # type: ignore[method-assign]


_text = st.text(alphabet=ALPHABET, max_size=12)


@settings(max_examples=600, deadline=None, database=None)
@given(local=_text, domain=_text, rest=_text)
def test_any_angle_address_reads_as_aiosmtpd_reads_it(
    servers: tuple[SMTP, SMTP], local: str, domain: str, rest: str
) -> None:
    agree(servers, f"<{local}@{domain}>{rest}")


@settings(max_examples=300, deadline=None, database=None)
@given(arg=st.text(alphabet=ALPHABET, max_size=30))
def test_any_argument_reads_as_aiosmtpd_reads_it(servers: tuple[SMTP, SMTP], arg: str) -> None:
    agree(servers, arg)


class _Recorder:
    def __init__(self) -> None:
        self.envelopes: list[tuple[str | None, list[str]]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 2.0.0 Ok"


@pytest.mark.asyncio
async def test_a_real_listener_takes_plain_quoted_and_international_addresses() -> None:
    loop = asyncio.get_running_loop()
    handler = _Recorder()
    server = await loop.create_server(
        lambda: _SMTP(handler, loop=loop, enable_SMTPUTF8=True), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as client:
            await client.ehlo()
            replies = [
                await client.execute_command(*command)
                for command in (
                    [b"MAIL", b'FROM:<"'],  # the parser crashes on it: not a 500 with its text
                    [b"MAIL", b"FROM:<9@["],
                    [b"MAIL", b"FROM:<@[ "],
                    [b"MAIL", b"FROM:<bounces+user=example.com@sut.test>", b"SMTPUTF8"],
                    [b"RCPT", "TO:<jürgen@bücher.example>".encode()],
                    [b"RCPT", b'TO:<"quoted local"@example.com>'],
                    [b"RCPT", b"TO:<a..b@example.com> (comment)"],
                )
            ]
            replies.append(await client.data(b"Subject: x\r\n\r\nbody\r\n"))
    finally:
        server.close()
        await server.wait_closed()
    assert [(r.code, r.message) for r in replies] == [
        (553, "5.1.3 Error: malformed address"),
        (553, "5.1.3 Error: malformed address"),
        (553, "5.1.3 Error: malformed address"),
        (250, "OK"),
        (250, "OK"),
        (250, "OK"),
        (250, "OK"),
        (250, "2.0.0 Ok"),
    ]
    assert handler.envelopes == [
        (
            "bounces+user=example.com@sut.test",
            ["jürgen@bücher.example", '"quoted local"@example.com', "a..b@example.com"],
        )
    ]

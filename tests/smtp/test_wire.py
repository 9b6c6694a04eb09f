"""The fake MX's bulk DATA reader and header parser give what aiosmtpd and the stdlib give.

The same DATA sections (dot-stuffed lines, bare CR and LF, lines around the length limit,
sections around the size limit, odd header blocks), cut into random segments, go to a bare
aiosmtpd server and to a harness MX with the same limits: the replies, the content and the
header fields must agree. The session's hook lists (what aiosmtpd finds through ``dir()``) are
pinned against full introspection.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import random
import time
import weakref
from email.parser import HeaderParser
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from harness.journal import Kind, MemoryJournal
from harness.records import SmtpMessage
from harness.smtp.server import _HANDLER, _HOOKS, MXHost, _Session, _split_message
from harness.smtp.wire import parse_headers

SEED = 1529
SIZE_LIMIT = 3000
LINE_LIMIT = 200

_HEADER_LINES = [
    b"Subject: hello",
    b"subject: second of the name",
    b"X-CleverTap_META: eyJhIjoxfQ==",
    b"Message-ID: <a.1@x.test>",
    b"  folded continuation",
    b"\tfolded with a tab",
    b"To:",
    b"To:   spaced   ",
    b"Bad Line without colon",
    b":empty name",
    b"From someone@unix.test",
    "Subject: caf\u00e9".encode(),
    b"X-Odd: \x0cform feed",
    b"X-Odd: bare\rcr",
    b"X-Odd: bare\nlf",
    b"X-Bin: \xff\xfe",
]


def _header_block(rnd: random.Random) -> bytes:
    return b"".join(rnd.choice(_HEADER_LINES) + b"\r\n" for _ in range(rnd.randint(0, 6)))


def _line(rnd: random.Random, line_limit: int) -> bytes:
    # Lines over (or at) the limit are rare enough that most sections pass.
    kind = rnd.choices(range(9), weights=(3, 3, 2, 2, 0.4, 0.1, 2, 2, 6))[0]
    if kind == 0:
        return b"." + b"d" * rnd.randint(1, 20)
    if kind == 1:
        return b".." + b"e" * rnd.randint(0, 5)
    if kind == 2:
        return b"bare\nlf" + (b"\n." if rnd.random() < 0.5 else b"")
    if kind == 3:
        return b"bare\rcr\r"
    if kind == 4:
        return b"x" * rnd.randint(line_limit - 4, line_limit + 3)
    if kind == 5:
        return b"y" * rnd.randint(line_limit + 3, 3 * line_limit)
    if kind == 6:
        return b"ends with a dot."
    if kind == 7:
        return b""
    return b"text " * rnd.randint(1, 12)


def _section(rnd: random.Random, line_limit: int) -> bytes:
    lines = [_line(rnd, line_limit) for _ in range(rnd.randint(0, 25))]
    return _header_block(rnd) + b"\r\n" + b"".join(line + b"\r\n" for line in lines)


def _padded(data: bytes, total: int) -> bytes:
    """*data* with lines of padding added up to *total* bytes (when it is shorter)."""
    left = total - len(data)
    while left >= 102:
        data += b"p" * 98 + b"\r\n"
        left -= 100
    return data + (b"p" * (left - 2) + b"\r\n" if left >= 2 else b"")


def _cuts(data: bytes, rnd: random.Random) -> list[bytes]:
    points = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(0, 6))))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


class _Bare:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.contents.append(bytes(envelope.original_content or b""))
        return "250 OK"


async def _send(port: int, pieces: list[bytes]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:

        async def reply() -> bytes:
            line = await reader.readline()
            while line[3:4] == b"-":
                line = await reader.readline()
            return line

        await reply()
        for command in (b"EHLO c.test", b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>"):
            writer.write(command + b"\r\n")
            assert (await reply())[:1] == b"2", command
        writer.write(b"DATA\r\n")
        assert (await reply())[:3] == b"354"
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(b".\r\n")
        code = int((await reply())[:3])
        writer.write(b"QUIT\r\n")
        await reply()
        return code
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.asyncio
@pytest.mark.parametrize("line_limit", [LINE_LIMIT, None])
async def test_data_sections_read_as_aiosmtpd_reads_them(line_limit: int | None) -> None:
    rnd = random.Random(SEED)
    journal = MemoryJournal()
    host = MXHost(
        "mx1",
        domains=["example.com"],
        journal=journal,
        size_limit=SIZE_LIMIT,
        line_length_limit=line_limit,
        body_cap=1 << 20,
    )
    handler = _Bare()
    reader_limit = line_limit or max(SIZE_LIMIT, 1 << 20) + 2

    class Bare(SMTP):
        line_length_limit = reader_limit

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Bare(handler, data_size_limit=SIZE_LIMIT, enable_SMTPUTF8=True, hostname="b"),
        "127.0.0.1",
        0,
    )
    bare_port = server.sockets[0].getsockname()[1]
    outcomes: dict[int, int] = {}
    try:
        async with host:
            for case in range(150):
                data = _section(rnd, line_limit or LINE_LIMIT)
                if case % 5 == 0:  # well over or under the size limit
                    data += (b"z" * 98 + b"\r\n") * rnd.randint(20, 40)
                elif case % 5 == 1:  # at the size limit, to the byte
                    data = _padded(data, SIZE_LIMIT + rnd.choice((-1, 0, 1)))
                pieces = _cuts(data, rnd)
                expected = await _send(bare_port, pieces)
                got = await _send(host.port, pieces)
                outcomes[expected] = outcomes.get(expected, 0) + 1
                assert got == expected, (case, data)
                if expected != 250:
                    continue
                content = handler.contents[-1]
                message = journal.entries(Kind.SMTP_MESSAGE)[-1].data
                assert isinstance(message, SmtpMessage)
                head, body = _split_message(content)
                parsed = HeaderParser().parsestr(head.decode("utf-8", "replace"), True)
                assert message.size == len(content), case
                assert message.body == body.decode("utf-8", "replace"), case
                assert list(message.headers) == [(k, str(v)) for k, v in parsed.items()], case
                assert message.subject == (
                    None if parsed.get("Subject") is None else str(parsed.get("Subject"))
                )
    finally:
        server.close()
        await server.wait_closed()
    # Every verdict was met, so the comparison covered each path.
    assert set(outcomes) == ({250, 500, 552} if line_limit else {250, 552}), outcomes


def test_header_blocks_parse_as_the_stdlib_parses_them() -> None:
    rnd = random.Random(SEED)
    for _ in range(3000):
        head = _header_block(rnd)
        if rnd.random() < 0.2 and head:
            head = head[: rnd.randrange(len(head))]  # a block cut short, even mid-CRLF
        parsed = HeaderParser().parsestr(head.decode("utf-8", "replace"), headersonly=True)
        assert parse_headers(head) == [(k, str(v)) for k, v in parsed.items()], head


@pytest.mark.asyncio
async def test_session_hooks_are_those_full_introspection_finds() -> None:
    """aiosmtpd's tables for a session (commands, AUTH mechanisms, handler hooks, the EHLO
    hook's form) are what its introspection would find over the full dir(), for the first
    session of the class (which aiosmtpd introspects) and for later ones (which get the
    first one's tables, bound to themselves)."""
    async with MXHost("mx1", auth={"u": "p"}) as host:
        handler: Any = _HANDLER
        hooks = {n[7:] for n in object.__dir__(handler) if n.startswith("handle_")}
        assert set(_HOOKS) == hooks
        assert all(_HOOKS[name] == getattr(handler, f"handle_{name}") for name in hooks)
        # aiosmtpd's "new" EHLO hook form: server, session, envelope, hostname, lines.
        assert len(inspect.signature(handler.handle_EHLO).parameters) == 5
        for session in (_Session(host, None), _Session(host, None)):
            names = object.__dir__(session)
            smtp = {n[5:]: getattr(session, n) for n in names if n.startswith("smtp_")}
            auth = {n[5:]: getattr(session, n) for n in names if n.startswith("auth_")}
            assert session._smtp_methods == smtp
            assert {k: v.method for k, v in session._auth_methods.items()} == auth
            assert all(v.is_builtin for v in session._auth_methods.values())
            assert all(m.__self__ is session for m in session._smtp_methods.values())
            assert session._handle_hooks == _HOOKS
            assert session._ehlo_hook_ver == "new"
            assert set(dir(session)) == {f"smtp_{n}" for n in smtp} | {f"auth_{n}" for n in auth}


async def _session_then(port: int, ending: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await reader.readline()).startswith(b"220")
    writer.write(b"HELO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.com>\r\n" + ending)
    await writer.drain()
    for _ in range(3):
        assert (await reader.readline())[:1] == b"2"
    if ending.startswith(b"QUIT"):
        assert (await reader.readline()).startswith(b"221")
    writer.close()
    await writer.wait_closed()


@pytest.mark.asyncio
@pytest.mark.parametrize("ending", [b"QUIT\r\n", b"", b"DATA\r\nSubject: cut short\r\n"])
async def test_a_finished_session_is_freed_without_the_cycle_collector(ending: bytes) -> None:
    """Once a connection is over (QUIT, the client hanging up, or hanging up mid-DATA), its
    session is freed by reference counting alone: no reference cycle is left for the cyclic
    collector, whose full collections walk the whole heap (issue 15)."""
    host = MXHost("mx1", domains=["example.com"])
    made: list[weakref.ref[asyncio.Protocol]] = []
    factory = host._factory

    def recording() -> asyncio.Protocol:
        session = factory()
        made.append(weakref.ref(session))
        return session

    host._factory = recording  # type: ignore[method-assign]
    async with host:
        await _session_then(host.port, b"QUIT\r\n")  # the class's first session, introspected
        gc.collect()
        gc.disable()
        try:
            await _session_then(host.port, ending)
            for _ in range(500):  # the server notices the hang-up a few loop turns later
                if made[-1]() is None:
                    break
                await asyncio.sleep(0.01)
            assert len(made) == 2
            assert made[-1]() is None, gc.get_referrers(made[-1]())
        finally:
            gc.enable()


@pytest.mark.asyncio
async def test_idle_timer_moves_with_each_command_and_fires_on_time() -> None:
    """The lazily re-armed idle timer (_Session._reset_timeout, over aiosmtpd's private one):
    commands 0.6 s apart keep a 1 s idle timeout away; after the last one, 421 comes 1 s
    later, not earlier."""
    async with MXHost("mx1", domains=["example.com"], timeout=1.0) as host:
        reader, writer = await asyncio.open_connection("127.0.0.1", host.port)
        try:
            assert (await reader.readline()).startswith(b"220")
            for _ in range(3):
                await asyncio.sleep(0.6)
                writer.write(b"NOOP\r\n")
                assert (await reader.readline()).startswith(b"250"), "closed too early"
            last = time.monotonic()
            line = await asyncio.wait_for(reader.readline(), 5)
            waited = time.monotonic() - last
            assert line.startswith(b"421 4.4.2"), line
            assert 0.9 <= waited <= 2.0, waited
        finally:
            writer.close()
            await writer.wait_closed()

"""The fake MX says the same on uvloop as on asyncio's own loop.

``harness run`` and ``harness serve`` run the hosts on uvloop (harness._loop.run_main), whose
transports write like asyncio's but are not ``asyncio.WriteTransport`` subclasses: the lines a
host writes just before it hangs up (a 421 greeting, a timeout, a failed TLS handshake's alert)
must reach the client there too. Replies are held until the end of the loop turn
(harness._turn) on both: pipelined replies, the close after QUIT and STARTTLS keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from harness.smtp.server import MXHost

LOOPS = ["asyncio", "uvloop"]


def _run(loop: str, main: Callable[[], Coroutine[Any, Any, bytes]]) -> bytes:
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


Client = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def _client(host: MXHost) -> AsyncIterator[Client]:
    """*host* started, and a connection to it (closed, then the host stopped, at the end)."""
    async with host:
        reader, writer = await asyncio.open_connection("127.0.0.1", host.port)
        try:
            yield reader, writer
        finally:
            writer.close()


async def _greeting(host: MXHost) -> bytes:
    async with _client(host) as (reader, _):
        return await asyncio.wait_for(reader.read(1000), 5)


async def _ehlo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"EHLO c.test\r\n")
    while (await reader.readline())[3:4] == b"-":
        pass


async def _starttls_ready(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> ssl.SSLContext:
    """Greeting, EHLO, STARTTLS and its 220; a client context that trusts the host's certificate."""
    assert (await reader.readline()).startswith(b"220")
    await _ehlo(reader, writer)
    writer.write(b"STARTTLS\r\n")
    assert (await reader.readline()).startswith(b"220 2.0.0")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.mark.parametrize("loop", LOOPS)
def test_greeting_421_reaches_the_client(loop: str) -> None:
    host = MXHost("mx1", domains=["example.com"], server_down="greeting_421")
    line = _run(loop, lambda: _greeting(host))
    assert line.startswith(b"421 4.3.2 mx1.example.com "), line
    assert line.endswith(b"\r\n"), line


@pytest.mark.parametrize("loop", LOOPS)
def test_idle_timeout_421_reaches_the_client(loop: str) -> None:
    async def main() -> bytes:
        host = MXHost("mx1", domains=["example.com"], timeout=0.2)
        async with _client(host) as (reader, _):
            assert (await reader.readline()).startswith(b"220")
            return await asyncio.wait_for(reader.read(1000), 5)

    assert _run(loop, main) == b"421 4.4.2 mx1.example.com Error: timeout exceeded\r\n"


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_broken_alert_reaches_the_client(loop: str) -> None:
    async def main() -> bytes:
        host = MXHost("mx1", domains=["example.com"], server_down="tls_broken")
        async with _client(host) as (reader, writer):
            context = await _starttls_ready(reader, writer)
            with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
                await writer.start_tls(context)
            return b"failed"

    assert _run(loop, main) == b"failed"


@pytest.mark.parametrize("loop", LOOPS)
def test_pipelined_commands_get_every_reply_in_order_then_the_close(loop: str) -> None:
    # A host holds its replies until the end of the loop turn (harness._turn); a pipelined
    # group's replies, the QUIT after the final dot (as Postfix sends it) and the close that
    # follows must still come in order.
    async def main() -> bytes:
        host = MXHost("mx1", domains=["example.com"])
        async with _client(host) as (reader, writer):
            assert (await reader.readline()).startswith(b"220")
            await _ehlo(reader, writer)
            writer.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n")
            assert [(await reader.readline())[:3] for _ in range(3)] == [
                b"250",
                b"250",
                b"354",
            ]
            writer.write(b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n")
            return await asyncio.wait_for(reader.read(), 5)  # up to the close

    replies = _run(loop, main).split(b"\r\n")
    assert [line[:3] for line in replies] == [b"250", b"221", b""], replies


@pytest.mark.parametrize("loop", LOOPS)
def test_starttls_ready_comes_before_the_handshake_and_the_session_goes_on(loop: str) -> None:
    async def main() -> bytes:
        host = MXHost("mx1", domains=["example.com"], tls="starttls")
        async with _client(host) as (reader, writer):
            await writer.start_tls(await _starttls_ready(reader, writer))
            await _ehlo(reader, writer)
            writer.write(b"MAIL FROM:<a@b.test>\r\n")
            return await asyncio.wait_for(reader.readline(), 5)

    assert _run(loop, main).startswith(b"250 ")

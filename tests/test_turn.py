"""Writes held until the end of the loop turn (harness/_turn.py), over real loopback sockets, on
asyncio's loop and on uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from harness._turn import HeldWrites, Turn

Check = Callable[[HeldWrites, asyncio.StreamReader, Turn], Awaitable[None]]


class _Server(asyncio.Protocol):
    def __init__(self, made: asyncio.Queue[asyncio.Transport]) -> None:
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.put_nowait(transport)  # type: ignore[arg-type]


def _run(check: Check, loop_name: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        made: asyncio.Queue[asyncio.Transport] = asyncio.Queue()
        server = await loop.create_server(lambda: _Server(made), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        turn = Turn()
        held = HeldWrites(await made.get(), turn, loop)
        try:
            await check(held, reader, turn)
        finally:
            writer.close()
            held.close()
            server.close()
            await server.wait_closed()

    if loop_name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(main())
    else:
        asyncio.run(main())


async def _nothing_yet(reader: asyncio.StreamReader) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(100), 0.05)


LOOPS = pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])


@LOOPS
def test_held_bytes_go_out_at_the_end_of_the_turn(loop_name: str) -> None:
    async def check(held: HeldWrites, reader: asyncio.StreamReader, turn: Turn) -> None:
        held.hold(b"250 one\r\n")
        held.hold(b"250 two\r\n")
        assert turn.waiting == [held]  # once, however many pieces
        assert not reader._buffer  # type: ignore[attr-defined]
        assert await reader.readexactly(18) == b"250 one\r\n250 two\r\n"
        assert turn.waiting == []
        assert not turn.scheduled

    _run(check, loop_name)


@LOOPS
def test_a_write_now_sends_what_is_held_first(loop_name: str) -> None:
    async def check(held: HeldWrites, reader: asyncio.StreamReader, turn: Turn) -> None:
        held.hold(b"first ")
        held.write(b"second")
        assert await reader.readexactly(12) == b"first second"
        turn.end()  # the end of the turn finds nothing left to send
        await _nothing_yet(reader)

    _run(check, loop_name)


@LOOPS
def test_closing_sends_what_is_held_then_ends_the_connection(loop_name: str) -> None:
    async def check(held: HeldWrites, reader: asyncio.StreamReader, turn: Turn) -> None:
        held.hold(b"221 Bye\r\n")
        held.close()
        assert await reader.read() == b"221 Bye\r\n"  # then EOF

    _run(check, loop_name)


@LOOPS
def test_what_is_held_for_a_connection_closed_meanwhile_is_let_go(loop_name: str) -> None:
    async def check(held: HeldWrites, reader: asyncio.StreamReader, turn: Turn) -> None:
        held.hold(b"never sent")
        # Closed under the wrapper (as the peer's reset would): the end of the turn skips it.
        held._transport.abort()
        turn.end()
        assert await reader.read() == b""

    _run(check, loop_name)


@LOOPS
def test_the_rest_of_the_transport_is_the_wrapped_ones(loop_name: str) -> None:
    async def check(held: HeldWrites, reader: asyncio.StreamReader, turn: Turn) -> None:
        inner = held._transport
        assert held.get_extra_info("peername") == inner.get_extra_info("peername")
        assert held.get_protocol() is inner.get_protocol()
        assert held.is_reading()
        assert not held.is_closing()
        # Beyond the Transport API (asyncio's TLS layer calls _force_close on a fatal error).
        assert held._force_close == inner._force_close  # type: ignore[attr-defined]

    _run(check, loop_name)

"""Messages per second through a harness MX against a bare aiosmtpd server, side by side.

    python bench/bench_smtp.py [--messages 2000] [--rounds 3]

The harness MX has 20 rules (exact addresses, patterns, domains) and journals every session and
message in memory; the bare server is aiosmtpd with a handler that only counts. Each server runs
in its own process (so the client does not steal its CPU); one client process drives it with a
lean asyncio SMTP client (MAIL, RCPT, DATA, 1 KB body), over 1 and 20 concurrent connections,
reusing connections or opening one per message. Each cell is the best of ``--rounds`` runs,
alternating between the two servers.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from multiprocessing.connection import Connection
from typing import Any

BODY = (
    b"From: news@brand.test\r\nTo: user@example.com\r\nSubject: bench\r\n"
    b"X-CleverTap_META: eyJhY2MiOiIxMjMifQ==\r\n\r\n" + (b"x" * 70 + b"\r\n") * 13
)
BODY = BODY + b"y" * (1024 - len(BODY) - 2) + b"\r\n"
RULES: dict[str, Any] = {
    **{f"full{i}@example.com": "mailbox_full" for i in range(8)},
    **{f"bounce-{i}-*@example.com": "invalid_address" for i in range(6)},
    "grey@example.com": ["greylist", "accept"],
    "win@example.com": {"mode": "mailbox_full", "for": "10m", "then": "accept"},
    "*@spam.test": "spam_content",
    "blocked.test": "dnsbl_blocked",
    "other.test": {"probability": 0.3, "mode": "throttle", "seed": 7},
    "user@example.com": "accept",
}
assert len(RULES) == 20  # a bench script: checked by eye


def _serve(kind: str, pipe: Connection) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        if kind == "bare":
            from aiosmtpd.smtp import SMTP

            class Counter:
                count = 0

                async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                    self.count += 1
                    return "250 OK"

            handler = Counter()
            server = await loop.create_server(
                lambda: SMTP(handler, hostname="bare.test", ident="ESMTP", loop=loop),
                "127.0.0.1",
                0,
            )
            pipe.send(server.sockets[0].getsockname()[1])
            await loop.run_in_executor(None, pipe.recv)
            server.close()
            await server.wait_closed()
            pipe.send(handler.count)
        else:
            from harness.journal import Kind, MemoryJournal
            from harness.smtp.server import MXHost

            journal = MemoryJournal()
            host = MXHost("mx1", domains=["example.com"], rules=RULES, journal=journal)
            await host.start()
            pipe.send(host.port)
            await loop.run_in_executor(None, pipe.recv)
            await host.stop()
            pipe.send(len(journal.entries(Kind.SMTP_MESSAGE)))

    asyncio.run(main())


async def _reply(reader: asyncio.StreamReader, expect: bytes) -> None:
    line = await reader.readline()
    while line[3:4] == b"-":
        line = await reader.readline()
    if not line.startswith(expect):
        raise RuntimeError(f"expected {expect!r}, got {line!r}")


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _reply(reader, b"220")
    writer.write(b"EHLO bench.test\r\n")
    await _reply(reader, b"250")
    return reader, writer


async def _close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"QUIT\r\n")
    await _reply(reader, b"221")
    writer.close()
    await writer.wait_closed()


async def _message(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"MAIL FROM:<news@brand.test>\r\n")
    await _reply(reader, b"250")
    writer.write(b"RCPT TO:<user@example.com>\r\n")
    await _reply(reader, b"250")
    writer.write(b"DATA\r\n")
    await _reply(reader, b"354")
    writer.write(BODY + b".\r\n")
    await _reply(reader, b"250")


async def _worker(port: int, count: int, reuse: bool) -> None:
    if reuse:
        reader, writer = await _open(port)
        for _ in range(count):
            await _message(reader, writer)
        await _close(reader, writer)
        return
    for _ in range(count):
        reader, writer = await _open(port)
        await _message(reader, writer)
        await _close(reader, writer)


async def _drive(port: int, messages: int, connections: int, reuse: bool) -> float:
    share = messages // connections
    start = time.perf_counter()
    await asyncio.gather(*(_worker(port, share, reuse) for _ in range(connections)))
    return share * connections / (time.perf_counter() - start)


class Server:
    """One server process of *kind* ("bare" or "harness")."""

    def __init__(self, kind: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.kind = kind
        self.pipe, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(kind, child), daemon=True)
        self.process.start()
        self.port: int = self.pipe.recv()
        self.sent = 0

    def run(self, messages: int, connections: int, reuse: bool) -> float:
        rate = asyncio.run(_drive(self.port, messages, connections, reuse))
        self.sent += messages // connections * connections
        return rate

    def close(self) -> None:
        try:
            self.pipe.send("stop")
            received = self.pipe.recv()
            if received != self.sent:
                raise RuntimeError(f"{self.kind}: {received} messages arrived, {self.sent} sent")
        finally:
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs per cell (best is kept)")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"SMTP throughput, 1 KB messages (best of {args.rounds})")
    for column in ("connections", "mode", "bare aiosmtpd msg/s", "harness MX msg/s", "ratio"):
        table.add_column(column, justify="right")
    bare, harness = Server("bare"), Server("harness")
    try:
        for connections in (1, 20):
            for reuse in (True, False):
                messages = args.messages if reuse else args.messages // 2
                best = {"bare": 0.0, "harness": 0.0}
                # Rounds alternate between the two servers so that drift in the machine's load
                # (other processes) hits both alike.
                for _ in range(args.rounds):
                    for server in (bare, harness):
                        rate = server.run(messages, connections, reuse)
                        best[server.kind] = max(best[server.kind], rate)
                table.add_row(
                    str(connections),
                    "reuse" if reuse else "new per message",
                    f"{best['bare']:,.0f}",
                    f"{best['harness']:,.0f}",
                    f"{best['harness'] / best['bare']:.2f}x",
                )
    finally:
        bare.close()
        harness.close()
    Console().print(table)


if __name__ == "__main__":
    main()

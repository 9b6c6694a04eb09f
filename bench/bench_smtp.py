"""Messages per second through a harness MX against a bare aiosmtpd server, side by side.

    python bench/bench_smtp.py [--messages 2000] [--rounds 5] [--loop asyncio|uvloop] [--json OUT]

The harness MX has 20 rules (exact addresses, patterns, domains) and journals every session and
message in memory; the bare server is aiosmtpd with a handler that only counts. Each server runs
in its own process, and so does the load generator (uvloop and a small protocol-level SMTP
client, so that the client is cheaper than either server): MAIL, RCPT, DATA with a 1 KB message,
one command at a time, over 1 and 20 concurrent connections, reusing connections or opening one
per message. Rounds alternate between the two servers, so that drift in the machine's load hits
both alike; each cell shows the median msg/s with min..max, and each server's CPU time per
message (its own process time, which holds steady when throughput swings on a shared machine).
The ratio is the harness's median over the bare server's. ``--loop`` is the servers' event loop,
the same for both: asyncio's own (the default, as in a test session's fixtures), or uvloop (what
``harness run`` and ``harness serve`` serve on).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import _report as report

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
if len(RULES) != 20:
    raise SystemExit(f"the bench is meant to run 20 rules, not {len(RULES)}")

# -- the servers (each in its own process) -------------------------------------------------


def _serve(kind: str, loop_name: str, pipe: Connection) -> None:
    """Serve until told to stop; answer "cpu" with the process's CPU seconds so far."""

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
            port = server.sockets[0].getsockname()[1]

            async def stop() -> int:
                server.close()
                await server.wait_closed()
                return handler.count
        else:
            from harness.journal import Kind, MemoryJournal
            from harness.smtp.server import MXHost

            journal = MemoryJournal()
            host = MXHost("mx1", domains=["example.com"], rules=RULES, journal=journal)
            await host.start()
            port = host.port

            async def stop() -> int:
                await host.stop()
                return len(journal.entries(Kind.SMTP_MESSAGE))

        pipe.send(port)
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "cpu":
                pipe.send(time.process_time())
                continue
            pipe.send(await stop())
            return

    if loop_name == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


# -- the load generator (its own process) ---------------------------------------------------


class _Client(asyncio.Protocol):
    """One connection playing a fixed script: each reply checked, then the next line sent."""

    def __init__(self, messages: int, done: asyncio.Future[None]) -> None:
        script = [b"EHLO bench.test\r\n"]
        expect = [b"220", b"250"]
        for _ in range(messages):
            script += [
                b"MAIL FROM:<news@brand.test>\r\n",
                b"RCPT TO:<user@example.com>\r\n",
                b"DATA\r\n",
                BODY + b".\r\n",
            ]
            expect += [b"250", b"250", b"354", b"250"]
        script.append(b"QUIT\r\n")
        expect.append(b"221")
        self.script, self.expect, self.done = script, expect, done
        self.step = 0
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no asyncio.Transport subclasses: no isinstance() here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            if line[3:4] == b"-":
                continue  # a continued multi-line reply
            expected = self.expect[self.step]
            if not line.startswith(expected) and not self.done.done():
                self.done.set_exception(RuntimeError(f"expected {expected!r}, got {line!r}"))
                return
            if self.step < len(self.script) and self.transport is not None:
                self.transport.write(self.script[self.step])
            self.step += 1
            if self.step == len(self.expect):
                if self.transport is not None:
                    self.transport.close()
                if not self.done.done():
                    self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(f"connection lost at step {self.step}: {exc}"))


async def _drive(port: int, messages: int, connections: int, reuse: bool) -> None:
    loop = asyncio.get_running_loop()

    async def session(count: int) -> None:
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(lambda: _Client(count, done), "127.0.0.1", port)
        await done

    async def worker(share: int) -> None:
        if reuse:
            await session(share)
        else:
            for _ in range(share):
                await session(1)

    await asyncio.gather(*(worker(messages // connections) for _ in range(connections)))


def _load(pipe: Connection) -> None:
    """Run the load the pipe asks for: (port, messages, connections, reuse) -> seconds."""
    try:
        import uvloop

        new_loop: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop comes with the base install
        new_loop = asyncio.new_event_loop
    while True:
        job = pipe.recv()
        if job is None:
            return
        port, messages, connections, reuse = job
        with asyncio.Runner(loop_factory=new_loop) as runner:
            start = time.perf_counter()
            runner.run(_drive(port, messages, connections, reuse))
            pipe.send(time.perf_counter() - start)


# -- the orchestration ----------------------------------------------------------------------


class _Process:
    def __init__(self, target: Any, *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.process = ctx.Process(target=target, args=(*args, child), daemon=True)
        self.process.start()

    def join(self) -> None:
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


class Server(_Process):
    """One server process of *kind* ("bare" or "harness")."""

    def __init__(self, kind: str, loop: str) -> None:
        super().__init__(_serve, kind, loop)
        self.kind = kind
        self.port: int = self.pipe.recv()
        self.sent = 0

    def cpu(self) -> float:
        self.pipe.send("cpu")
        return float(self.pipe.recv())

    def close(self) -> None:
        try:
            self.pipe.send("stop")
            received = self.pipe.recv()
            if received != self.sent:
                raise RuntimeError(f"{self.kind}: {received} messages arrived, {self.sent} sent")
        finally:
            self.join()


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(messages: int, rounds: int, loop: str = "asyncio") -> dict[str, Any]:
    """Every cell, both servers, interleaved rounds; the figures as a JSON-ready dict."""
    load_before = os.getloadavg()
    servers = [Server("bare", loop), Server("harness", loop)]
    loadgen = _Process(_load)
    rows: list[dict[str, Any]] = []
    try:
        for connections in (1, 20):
            for reuse in (True, False):
                count = messages if reuse else messages // 2
                sent = count // connections * connections
                rates: dict[str, list[float]] = {s.kind: [] for s in servers}
                cpu: dict[str, list[float]] = {s.kind: [] for s in servers}
                loadgen.pipe.send((servers[0].port, 50, 1, reuse))  # warm-up, not counted
                loadgen.pipe.recv()
                servers[0].sent += 50
                loadgen.pipe.send((servers[1].port, 50, 1, reuse))
                loadgen.pipe.recv()
                servers[1].sent += 50
                for _ in range(rounds):
                    for server in servers:
                        before = server.cpu()
                        loadgen.pipe.send((server.port, count, connections, reuse))
                        seconds = float(loadgen.pipe.recv())
                        used = server.cpu() - before
                        server.sent += sent
                        rates[server.kind].append(sent / seconds)
                        cpu[server.kind].append(used / sent * 1e6)
                bare, harness = _stats(rates["bare"]), _stats(rates["harness"])
                rows.append(
                    {
                        "connections": connections,
                        "mode": "reuse" if reuse else "new per message",
                        "bare": {**bare, "cpu_us": statistics.median(cpu["bare"])},
                        "harness": {**harness, "cpu_us": statistics.median(cpu["harness"])},
                        "ratio": harness["median"] / bare["median"],
                    }
                )
    finally:
        loadgen.pipe.send(None)
        loadgen.join()
        for server in servers:
            server.close()
    return {
        "messages": messages,
        "rounds": rounds,
        "rows": rows,
        "load": [load_before, os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    title = f"SMTP, 1 KB messages: median msg/s (min..max) of {result['rounds']} rounds"
    out = Table(title=title)
    for column in ("conns", "mode", "bare aiosmtpd", "harness MX", "ratio", "CPU us/msg b | h"):
        out.add_column(column, justify="right")
    for row in result["rows"]:
        b, h = row["bare"], row["harness"]
        out.add_row(
            str(row["connections"]),
            row["mode"],
            f"{b['median']:,.0f} ({b['min']:,.0f}..{b['max']:,.0f})",
            f"{h['median']:,.0f} ({h['min']:,.0f}..{h['max']:,.0f})",
            f"{row['ratio']:.2f}x",
            f"{b['cpu_us']:.0f} | {h['cpu_us']:.0f}",
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per run (reuse)")
    parser.add_argument("--rounds", type=int, default=5, help="runs per cell and server")
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="the servers' event loop"
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    result = measure(args.messages, args.rounds, args.loop)
    from rich.console import Console

    console = Console()
    console.print(table(result))
    before, after = result["load"]
    console.print(
        f"load average {before[0]:.2f} before, {after[0]:.2f} after ({result['cpus']} CPUs)"
    )
    report.write(
        args.json, "smtp", result["rows"], load=result["load"], rounds=args.rounds, loop=args.loop
    )


if __name__ == "__main__":
    main()

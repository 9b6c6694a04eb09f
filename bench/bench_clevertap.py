"""Callbacks per second through the fake CleverTap, next to a bare FastAPI + pydantic endpoint,
and the memory a journaled callback takes.

The figures the docs quote for throughput come from bench_callbacks.py (three servers, the
limit included, interleaved rounds, CPU per callback); this one is kept for its quick look at
several client counts and for the memory figure (``--memory-callbacks``).

    python bench/bench_clevertap.py                 # about 20 s
    python bench/bench_clevertap.py --seconds 10 --clients 1,20,50 --memory-callbacks 100000

Both servers run under uvicorn on 127.0.0.1, each in its own process (so that the load generator
in this process does not share a GIL with them):

- ``harness``: :class:`harness.clevertap.server.CleverTapServer`, strict, every check on, every
  request journaled in memory;
- ``bare``: a FastAPI endpoint whose only work is parsing the same body into pydantic models
  (the body parameter) and returning a small JSON object.

Every request carries two addresses never seen before: the worst case for the harness, whose
address check (email-validator, cached per address) then runs in full for both, about 25 us each
on a 2-core CI machine; addresses already seen cost almost nothing.

The load generator is a minimal HTTP/1.1 keep-alive client on asyncio streams, one connection per
client, each sending its next request as soon as the previous answer is in (closed loop). httpx
would be the bottleneck here: at about 1,500 requests per second per core it measures itself,
not the servers (``--httpx`` runs the same load with httpx.AsyncClient to show it).

Memory per 100,000 journaled callbacks is measured with tracemalloc in this process: the app's
ASGI handler is called directly with the same payloads and the traced memory still allocated
afterwards (the journal and everything it keeps alive) is scaled to 100,000.
"""

# No `from __future__ import annotations`: FastAPI reads the bare endpoint's annotations.
import argparse
import asyncio
import gc
import multiprocessing as mp
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, RootModel

from harness._rawhttp import post

PATH = "/callbacks/bounce"


def payload(i: int, now: int) -> bytes:
    """A legacy bounce body with two events; addresses differ per request (no duplicates)."""
    return (
        f'[{{"event":"softbounce","data":[{{"e":"user{i}@example.com","ts":{now}}}]}},'
        f'{{"event":"hardbounce","data":[{{"e":"gone{i}@example.org","ts":{now}}}]}}]'
    ).encode()


# -- servers (child processes) ---------------------------------------------------------------------


class Item(BaseModel):
    e: str
    ts: int


class Event(BaseModel):
    event: Literal["softbounce", "hardbounce", "unsubscribe"]
    data: list[Item]


class Payload(RootModel[list[Event]]):
    pass


def _bare_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.post(PATH)
    async def bounce(body: Payload) -> dict[str, Any]:
        return {"status": "success", "accepted": sum(len(e.data) for e in body.root)}

    return app


def _serve(kind: str, ports: Any) -> None:
    import socket

    import uvicorn

    if kind == "harness":
        from harness.clevertap.server import CleverTapServer

        async def main() -> None:
            async with CleverTapServer() as server:
                ports.put(server.port)
                await asyncio.Event().wait()  # until the parent terminates us

        asyncio.run(main())
    else:
        # IPPROTO_TCP so that asyncio sets TCP_NODELAY (see CleverTapServer._listen).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(2048)
        ports.put(sock.getsockname()[1])
        config = uvicorn.Config(_bare_app(), lifespan="off", log_config=None, access_log=False)
        uvicorn.Server(config).run(sockets=[sock])


# -- load generator --------------------------------------------------------------------------------


async def _client(
    port: int, until: float, warmup_until: float, make: Callable[[int], bytes], start: int
) -> tuple[list[float], int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies: list[float] = []
    errors = 0
    i = start
    try:
        while True:
            now = time.perf_counter()
            if now >= until:
                break
            body = make(i)
            i += 1
            status, _ = await post(reader, writer, PATH, body)
            if status != 200:
                errors += 1
            if now >= warmup_until:
                latencies.append(time.perf_counter() - now)
    finally:
        writer.close()
        await writer.wait_closed()
    return latencies, errors


async def _httpx_client(
    port: int, until: float, warmup_until: float, make: Callable[[int], bytes], start: int
) -> tuple[list[float], int]:
    import httpx

    latencies: list[float] = []
    errors = 0
    i = start
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        while (now := time.perf_counter()) < until:
            response = await client.post(PATH, content=make(i), headers=headers)
            i += 1
            errors += response.status_code != 200
            if now >= warmup_until:
                latencies.append(time.perf_counter() - now)
    return latencies, errors


async def _load(
    port: int, clients: int, seconds: float, warmup: float, use_httpx: bool
) -> dict[str, float]:
    now_s = int(time.time())

    def make(i: int) -> bytes:
        return payload(i, now_s)

    begin = time.perf_counter()
    warmup_until, until = begin + warmup, begin + warmup + seconds
    run = _httpx_client if use_httpx else _client
    results = await asyncio.gather(
        *(run(port, until, warmup_until, make, n * 10_000_000) for n in range(clients))
    )
    latencies = sorted(x for lat, _ in results for x in lat)
    errors = sum(e for _, e in results)
    if not latencies:
        raise SystemExit("no request completed: is the server up?")
    return {
        "rps": len(latencies) / seconds,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": errors,
    }


# -- memory ----------------------------------------------------------------------------------------


def _memory_per_100k(n: int) -> tuple[float, float, float]:
    """Bytes per 100,000 callbacks (with, without the duplicate index), mean body bytes."""
    from harness.clevertap.app import create_app
    from harness.journal import Kind, MemoryJournal

    journal = MemoryJournal()
    app = create_app(journal=journal)
    now_s = int(time.time())
    bodies = [payload(i, now_s) for i in range(n)]
    scope_base = {
        "type": "http",
        "method": "POST",
        "path": PATH,
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
    }

    async def drive() -> None:
        async def send(message: Any) -> None:
            return None

        for body in bodies:
            message = {"type": "http.request", "body": body, "more_body": False}

            async def receive(m: Any = message) -> Any:
                return m

            await app(dict(scope_base), receive, send)

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    asyncio.run(drive())
    after = tracemalloc.get_traced_memory()[0]
    # The duplicate index remembers every distinct (event, address) pair; every address here is
    # new, its worst case. Clearing it leaves what the journal alone keeps.
    app.duplicates.clear()
    gc.collect()
    journal_only = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    if len(journal.entries(Kind.CALLBACK)) != n:
        raise SystemExit("the journal lost callbacks")
    scale = 100_000 / n
    mean_body = statistics.mean(len(b) for b in bodies)
    return (after - before) * scale, (journal_only - before) * scale, mean_body


# -- main ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first")
    parser.add_argument("--clients", default="1,20", help="comma-separated client counts")
    parser.add_argument(
        "--memory-callbacks",
        type=int,
        default=20_000,
        metavar="N",
        help="callbacks journaled for the memory figure (0: skip)",
    )
    parser.add_argument("--httpx", action="store_true", help="load with httpx.AsyncClient")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]

    ctx = mp.get_context("spawn")
    procs: dict[str, tuple[Any, int]] = {}
    try:
        for kind in ("bare", "harness"):
            ports = ctx.Queue()
            proc = ctx.Process(target=_serve, args=(kind, ports), daemon=True)
            proc.start()
            procs[kind] = (proc, ports.get(timeout=30))

        rows = []
        for clients in counts:
            measured = {}
            for kind in ("bare", "harness"):
                port = procs[kind][1]
                measured[kind] = asyncio.run(
                    _load(port, clients, args.seconds, args.warmup, args.httpx)
                )
            rows.append((clients, measured))
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.join(5)

    from rich.console import Console
    from rich.table import Table

    load = "httpx.AsyncClient" if args.httpx else "raw asyncio keep-alive"
    table = Table(title=f"POST {PATH}, {args.seconds:g} s per run, {load} clients")
    for column in ("clients", "server", "req/s", "p50 ms", "p99 ms", "non-200", "ratio"):
        table.add_column(column, justify="right")
    for clients, measured in rows:
        ratio = measured["harness"]["rps"] / measured["bare"]["rps"]
        for kind in ("bare", "harness"):
            m = measured[kind]
            table.add_row(
                str(clients),
                kind,
                f"{m['rps']:,.0f}",
                f"{m['p50']:.2f}",
                f"{m['p99']:.2f}",
                str(int(m["errors"])),
                f"{ratio:.2f}x" if kind == "harness" else "",
            )
    console = Console()
    console.print(table)

    if args.memory_callbacks:
        total, journal_only, mean_body = _memory_per_100k(args.memory_callbacks)
        console.print(
            f"memory per 100,000 journaled callbacks (tracemalloc, {args.memory_callbacks:,} "
            f"measured and scaled, bodies of {mean_body:.0f} bytes with 2 events each):\n"
            f"  journal entries:                     {journal_only / 1e6:6.1f} MB "
            f"({journal_only / 100_000:.0f} B per callback)\n"
            f"  plus duplicate index, all addresses new: {total / 1e6:6.1f} MB "
            f"({total / 100_000:.0f} B per callback)"
        )


if __name__ == "__main__":
    main()

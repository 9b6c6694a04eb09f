"""The journal at scale: memory, pauses, reads at 1M entries, and SQLite ingest next to memory.

    python bench/bench_journal.py                                  # 1,000,000 entries, minutes
    python bench/bench_journal.py --entries 200000 --rounds 3      # quicker

Two parts, every measurement in its own process:

1. **Scale**, once per store (memory, SQLite file): a child process feeds N callbacks through
   ``process_callback`` (the fake CleverTap's own path, every check on) inside a running event
   loop, 20 per loop turn as 20 concurrent clients would arrive (so the SQLite store groups its
   commits as it does under load). It reports the RSS growth per entry (duplicate index
   included: it is an index of the journal), CPU time per callback, the longest garbage
   collection (``gc.callbacks``) and the longest stall of the event loop (a 5 ms ticker's
   lateness) during ingestion. Then it serves that journal under uvicorn and a reader process
   times the control API at N entries (``limit=10`` with each filter, ``/wait`` that matches,
   ``/health``), while the ticker keeps measuring stalls. The SQLite file is then reopened and
   the open timed.
2. **Ingest over HTTP**, interleaved rounds: a server process per store, and a load process of
   20 keep-alive clients (a raw HTTP/1.1 client on asyncio streams: httpx would measure itself)
   sending R requests. Callbacks/s and server CPU per callback; the SQLite/memory ratio of the
   medians.

Figures are medians with min..max over rounds; the load average is printed, since the machine is
shared and throughput swings while CPU per operation holds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import multiprocessing as mp
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _report as report

from harness._rawhttp import post

PATH = "/callbacks/bounce"
CLIENTS = 20


def body(i: int, now: int) -> bytes:
    """A legacy hardbounce for a new address every time (the worst case for every index)."""
    event = f'{{"event":"hardbounce","data":[{{"e":"user{i}@example.com","ts":{now}}}]}}'
    return f"[{event}]".encode()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Pauses:
    """The longest garbage collection, and the longest lateness of a 5 ms ticker."""

    def __init__(self) -> None:
        self.gc_max = 0.0
        self.stall_max = 0.0
        self.busy_max = 0.0
        self._gc_start = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_max = max(self.gc_max, time.perf_counter() - self._gc_start)

    async def tick(self, stop: asyncio.Event) -> None:
        """Wall-clock lateness includes time the OS gave to other processes (a shared machine);
        the loop thread's CPU time between two ticks is the part the harness itself spent."""
        while not stop.is_set():
            before, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.005)
            self.stall_max = max(self.stall_max, time.perf_counter() - before - 0.005)
            self.busy_max = max(self.busy_max, time.thread_time() - cpu)


# -- part 1: scale ---------------------------------------------------------------------------------


def _reads(port: int, n: int, out: Any) -> None:
    """The reader process: time each control query (median, min, max in ms)."""
    queries = {
        "event=hardbounce&limit=10": (
            f"/_harness/callbacks?event=hardbounce&since={n // 2}&limit=10"
        ),
        "address=...&limit=10": f"/_harness/callbacks?address=user{n // 2}@example.com&limit=10",
        "address (none)&limit=10": "/_harness/callbacks?address=nobody@example.com&limit=10",
        "code=CT402&limit=10": "/_harness/callbacks?code=CT402&limit=10",
        "endpoint=v2&limit=10": "/_harness/callbacks?endpoint=v2&limit=10",
        "status=rejected&limit=10": "/_harness/callbacks?status=rejected&limit=10",
        "violations&limit=10": "/_harness/violations?limit=10",
        "wait (matches)": f"/_harness/wait?address=user{n - 1}@example.com&timeout=1",
        "health": "/_harness/health",
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    # One request each first: the first use of a route builds its models and plans its query,
    # once per process, which is not what a read at 1M costs.
    for url in queries.values():
        conn.request("GET", url)
        conn.getresponse().read()
    out.put("warm")
    results: dict[str, tuple[float, float, float]] = {}
    for name, url in queries.items():
        times = []
        for _ in range(25):
            start = time.perf_counter()
            conn.request("GET", url)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"{url} answered {response.status}")
            times.append((time.perf_counter() - start) * 1000)
        results[name] = (statistics.median(times), min(times), max(times))
    out.put(results)


def _scale(store: str, n: int, out: Any) -> None:
    from harness._loop import freeze_startup_objects
    from harness.clevertap.app import process_callback
    from harness.clevertap.server import CleverTapServer
    from harness.journal import open_journal
    from harness.vocab import Endpoint

    tmp = tempfile.mkdtemp()
    path = Path(tmp) / "journal.sqlite"
    journal = open_journal(None if store == "memory" else path)
    now = int(time.time())
    pauses = Pauses()

    async def run() -> dict[str, Any]:
        # As `harness serve` does: the server runs, startup objects are frozen, then the
        # callbacks come in, in the serving loop, 20 per loop turn (one group commit each).
        server = CleverTapServer(journal=journal)
        await server.start()
        freeze_startup_objects()
        app = server.app
        stop = asyncio.Event()
        ticker = asyncio.create_task(pauses.tick(stop))
        await asyncio.sleep(0.05)
        pauses.stall_max = pauses.gc_max = pauses.busy_max = 0.0  # startup is not ingestion
        rss_before = _rss()
        cpu = _cpu()
        start = time.perf_counter()
        for i in range(n):
            process_callback(
                app,
                Endpoint.BOUNCE,
                PATH,
                body(i, now),
                size=0,
                content_type="application/json",
                peer="127.0.0.1:40000",
                received=time.time(),
            )
            if i % CLIENTS == CLIENTS - 1:
                await asyncio.sleep(0)
        journal.commit()
        elapsed = time.perf_counter() - start
        cpu = _cpu() - cpu
        rss_after = _rss()
        ingest = {"stall": pauses.stall_max, "gc": pauses.gc_max, "busy": pauses.busy_max}
        if journal.count() != n:
            raise SystemExit(f"{store}: the journal holds {journal.count()} of {n} callbacks")
        pauses.stall_max = pauses.gc_max = pauses.busy_max = 0.0
        queue: Any = mp.get_context("spawn").Queue()
        reader = mp.get_context("spawn").Process(target=_reads, args=(server.port, n, queue))
        reader.start()
        await asyncio.to_thread(queue.get)  # "warm"
        pauses.stall_max = pauses.gc_max = pauses.busy_max = 0.0
        reads = await asyncio.to_thread(queue.get)
        await asyncio.to_thread(reader.join)
        stop.set()
        await ticker
        await server.stop()
        return {
            "bytes_per_entry": (rss_after - rss_before) / n,
            "rss_mb": rss_after / 1e6,
            "rate": n / elapsed,
            "cpu_us": cpu / n * 1e6,
            "gc_ms": ingest["gc"] * 1000,
            "stall_ms": ingest["stall"] * 1000,
            "busy_ms": ingest["busy"] * 1000,
            "read_busy_ms": pauses.busy_max * 1000,
            "read_stall_ms": pauses.stall_max * 1000,
            "read_gc_ms": pauses.gc_max * 1000,
            "reads": reads,
        }

    result = asyncio.run(run())
    journal.close()
    reopen = None
    if store != "memory":
        start = time.perf_counter()
        again = open_journal(path)
        reopen = time.perf_counter() - start
        again.close()
    out.put({"store": store, "n": n, **result, "reopen_s": reopen})


# -- part 2: ingest over HTTP ----------------------------------------------------------------------


def _server(store: str, ports: Any, stop: Any) -> None:
    from harness.clevertap.server import CleverTapServer
    from harness.journal import open_journal

    tmp = tempfile.mkdtemp()
    journal = open_journal(None if store == "memory" else Path(tmp) / "journal.sqlite")

    async def run() -> None:
        server = CleverTapServer(journal=journal)
        await server.start()
        ports.put((os.getpid(), server.port))
        await asyncio.to_thread(stop.wait)
        await server.stop()

    asyncio.run(run())
    journal.close()


async def _client(port: int, first: int, count: int, now: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(first, first + count):
            _, answer = await post(reader, writer, PATH, body(i, now))
            if b'"success"' not in answer:
                raise SystemExit(f"unexpected answer: {answer[:200]!r}")
    finally:
        writer.close()


def _load(port: int, requests: int, base: int, out: Any) -> None:
    async def run() -> float:
        now = int(time.time())
        per = requests // CLIENTS
        start = time.perf_counter()
        await asyncio.gather(*(_client(port, base + c * per, per, now) for c in range(CLIENTS)))
        return time.perf_counter() - start

    out.put(asyncio.run(run()))


def _http_round(store: str, requests: int, base: int) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    ports, stop, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    server = ctx.Process(target=_server, args=(store, ports, stop))
    server.start()
    pid, port = ports.get(timeout=60)
    cpu = _proc_cpu(pid)
    load = ctx.Process(target=_load, args=(port, requests, base, out))
    load.start()
    elapsed = out.get(timeout=600)
    load.join()
    cpu = _proc_cpu(pid) - cpu
    stop.set()
    server.join(60)
    done = requests // CLIENTS * CLIENTS
    return done / elapsed, cpu / done * 1e6


def _spread(values: list[float], fmt: str) -> str:
    return (
        f"{format(statistics.median(values), fmt)} "
        f"({format(min(values), fmt)}..{format(max(values), fmt)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="callbacks for part 1")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of part 2")
    parser.add_argument("--requests", type=int, default=20_000, help="callbacks per round")
    parser.add_argument("--skip-scale", action="store_true", help="part 2 only")
    parser.add_argument("--skip-http", action="store_true", help="part 1 only")
    parser.add_argument(
        "--stores", default="memory,sqlite", help="part 1's stores, comma-separated"
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    ctx = mp.get_context("spawn")
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")

    if not args.skip_scale:
        print(f"\n== part 1: {args.entries:,} callbacks through process_callback, per store")
        for store in args.stores.split(","):
            out = ctx.Queue()
            child = ctx.Process(target=_scale, args=(store, args.entries, out))
            child.start()
            r = out.get()
            child.join()
            print(
                f"{store:>6}: {r['bytes_per_entry']:,.0f} B/entry (RSS {r['rss_mb']:,.0f} MB), "
                f"{r['rate']:,.0f}/s, {r['cpu_us']:.1f} us CPU/callback; ingestion: longest GC "
                f"{r['gc_ms']:.1f} ms, longest loop stall {r['busy_ms']:.1f} ms CPU "
                f"({r['stall_ms']:.1f} ms wall)"
            )
            print(
                f"        reads at {r['n']:,} (ms, median min..max of 25; loop stall during "
                f"reads {r['read_busy_ms']:.1f} ms CPU ({r['read_stall_ms']:.1f} ms wall), "
                f"GC {r['read_gc_ms']:.1f} ms):"
            )
            for name, (med, low, high) in r["reads"].items():
                print(f"          {name:<28} {med:7.2f}  ({low:.2f}..{high:.2f})")
            if r["reopen_s"] is not None:
                print(f"        reopening the {r['n']:,}-entry file: {r['reopen_s']:.3f} s")
            rows.append(
                {
                    "part": f"scale, {store}, {r['n']:,} entries",
                    "B/entry": r["bytes_per_entry"],
                    "CPU us/callback": r["cpu_us"],
                    "longest GC ms": r["gc_ms"],
                    "longest stall ms": r["stall_ms"],
                }
            )

    if args.skip_http:
        report.write(args.json, "journal", rows)
        return
    print(f"\n== part 2: {CLIENTS} clients over HTTP, {args.requests:,} callbacks per round")
    rates: dict[str, list[float]] = {"memory": [], "sqlite": []}
    cpus: dict[str, list[float]] = {"memory": [], "sqlite": []}
    for r in range(args.rounds):
        for store in ("memory", "sqlite") if r % 2 == 0 else ("sqlite", "memory"):
            rate, cpu = _http_round(store, args.requests, r * args.requests)
            rates[store].append(rate)
            cpus[store].append(cpu)
            print(f"  round {r + 1} {store:>6}: {rate:,.0f}/s, {cpu:.0f} us CPU/callback")
    for store in ("memory", "sqlite"):
        print(
            f"{store:>6}: {_spread(rates[store], ',.0f')} callbacks/s, "
            f"{_spread(cpus[store], '.0f')} us CPU/callback"
        )
    ratio = statistics.median(rates["sqlite"]) / statistics.median(rates["memory"])
    ratios = [s / m for s, m in zip(rates["sqlite"], rates["memory"], strict=True)]
    print(f"SQLite/memory ingest: {ratio:.2f}x (per round {min(ratios):.2f}..{max(ratios):.2f})")
    for store in ("memory", "sqlite"):
        rows.append(
            {
                "part": f"HTTP ingest, {store}",
                "callbacks/s": report.spread(rates[store]),
                "CPU us/callback": report.spread(cpus[store]),
            }
        )
    report.write(args.json, "journal", rows, sqlite_over_memory=ratio)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

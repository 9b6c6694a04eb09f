"""Callbacks per second: the harness next to bare FastAPI + pydantic and the practical limit.

    python bench/bench_callbacks.py                       # 5 rounds of 3 s, 20 clients
    python bench/bench_callbacks.py --rounds 7 --seconds 4 --clients 20 --json out.json

Three servers, each in its own process, each on 127.0.0.1 with uvloop + httptools:

- ``harness``: ``python -m harness serve`` as shipped: strict, every check on, every callback
  journaled (in memory);
- ``bare``: bench/bare_fastapi.py, a FastAPI endpoint that parses the body into pydantic models;
- ``limit``: bench/limit_asgi.py, a raw ASGI endpoint that parses it into msgspec structs.

The load comes from another process: ``--clients`` keep-alive connections (harness._rawhttp), each
posting its next callback as soon as the previous answer is in. Every callback is a legacy bounce
with two events and two addresses never seen before (the worst case for the harness, whose
address check then runs in full). Rounds are interleaved (harness, bare, limit, harness, ...) so
that the machine's other work falls on all three alike; each figure is the median over rounds
with min..max. CPU per callback is the server process's user + system time (/proc/PID/stat) over
the measured seconds divided by the callbacks answered then: it holds steady on a shared machine
when throughput does not. The ratios are taken within each round, then their median.

``--json OUT`` writes bench/_report.py's shape for bench/run_all.py: ``{"bench": "callbacks",
"command", "rows": [...], "ratios": {...}, "ratio_spreads": {...}, "load", "load_before",
"cpus"}``; one row per server: name, rps, rps_min, rps_max, p50_ms, p99_ms, cpu_us, errors,
loadgen_busy (the load generator's share of a core: near 1.0 it, not the server, set the pace);
ratios "harness/limit", "harness/bare" (callbacks/s) and "... per CPU" (callbacks per CPU
second) as medians over the rounds, with {"median", "min", "max"} in ratio_spreads.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _report as report

HERE = Path(__file__).resolve().parent
PATH = "/callbacks/bounce"
SERVERS = ("harness", "bare", "limit")
_TICK = os.sysconf("SC_CLK_TCK")


def payload(i: int, now: int) -> bytes:
    """A legacy bounce body with two events; addresses differ per request (no duplicates)."""
    return (
        f'[{{"event":"softbounce","data":[{{"e":"user{i}@example.com","ts":{now}}}]}},'
        f'{{"event":"hardbounce","data":[{{"e":"gone{i}@example.org","ts":{now}}}]}}]'
    ).encode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


# -- servers ---------------------------------------------------------------------------------------


def start_server(name: str) -> tuple[subprocess.Popen[str], int]:
    """Start server *name* in a process of its own; (process, port)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if name == "harness":
        argv = [sys.executable, "-m", "harness", "serve"]
        pattern = re.compile(r"fake CleverTap on http://127\.0\.0\.1:(\d+)")
    else:
        script = "bare_fastapi.py" if name == "bare" else "limit_asgi.py"
        argv = [sys.executable, str(HERE / script)]
        pattern = re.compile(r"port (\d+)")
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if found := pattern.search(line):
            return proc, int(found.group(1))
    proc.kill()
    raise SystemExit(f"the {name} server did not start (exit status {proc.wait()})")


# -- load generator (its own process) --------------------------------------------------------------


async def _client(
    port: int, start: int, now: int, until: float, window: list[float], out: list[float]
) -> int:
    from harness._rawhttp import post

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors = 0
    i = start
    try:
        while (sent := time.perf_counter()) < until:
            status, _ = await post(reader, writer, PATH, payload(i, now))
            i += 1
            done = time.perf_counter()
            if status != 200:
                errors += 1
            if window[0] <= done <= until:
                out.append(done - sent)
    finally:
        writer.close()
    return errors


async def _load(
    port: int, pid: int, clients: int, seconds: float, warmup: float, offset: int
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    begin = time.perf_counter()
    until = begin + warmup + seconds
    window = [begin + warmup]  # when the measured seconds start (perf_counter)
    cpu: list[float] = []

    own: list[float] = []

    def mark() -> None:
        window[0] = time.perf_counter()
        cpu.append(cpu_seconds(pid))
        own.append(time.process_time())

    loop.call_later(warmup, mark)
    latencies: list[float] = []
    now = int(time.time())
    errors = await asyncio.gather(
        *(
            _client(port, offset + n * 10_000_000, now, until, window, latencies)
            for n in range(clients)
        )
    )
    cpu.append(cpu_seconds(pid))
    own.append(time.process_time())
    measured = until - window[0]
    latencies.sort()
    count = len(latencies)
    if not count or len(cpu) != 2:
        raise SystemExit("no callback was answered in the measured seconds: is the server up?")
    return {
        "rps": count / measured,
        "p50_ms": latencies[count // 2] * 1000,
        "p99_ms": latencies[min(count - 1, int(count * 0.99))] * 1000,
        "cpu_us": (cpu[1] - cpu[0]) / count * 1e6,
        "errors": sum(errors),
        # The load generator's share of a core: near 100% it, not the server, sets the pace.
        "loadgen_busy": (own[1] - own[0]) / measured,
    }


def _loadgen(args: tuple[int, int, int, float, float, int], results: Any) -> None:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        results.put(runner.run(_load(*args)))


def measure(port: int, pid: int, clients: int, seconds: float, offset: int) -> dict[str, float]:
    """One run of the load against the server on *port* (process *pid*), from a new process."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_loadgen, args=((port, pid, clients, seconds, 0.5, offset), results))
    proc.start()
    try:
        result: dict[str, float] = results.get(timeout=seconds + 60)
    finally:
        proc.join(10)
    return result


# -- report ----------------------------------------------------------------------------------------


def _spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--clients", type=int, default=20, help="keep-alive connections")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures here")
    args = parser.parse_args()

    servers: dict[str, tuple[subprocess.Popen[str], int]] = {}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in SERVERS}
    load_before = os.getloadavg()
    try:
        for name in SERVERS:
            servers[name] = start_server(name)
        offset = 0
        for round_no in range(args.rounds):
            for name in SERVERS:
                proc, port = servers[name]
                runs[name].append(measure(port, proc.pid, args.clients, args.seconds, offset))
                offset += 1_000_000_000  # addresses stay new from round to round
            print(
                f"round {round_no + 1}/{args.rounds}: "
                + ", ".join(f"{n} {runs[n][-1]['rps']:,.0f}/s" for n in SERVERS),
                file=sys.stderr,
            )
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    load = os.getloadavg()

    rows = []
    for name in SERVERS:
        rps, rps_min, rps_max = _spread([r["rps"] for r in runs[name]])
        rows.append(
            {
                "name": name,
                "rps": round(rps),
                "rps_min": round(rps_min),
                "rps_max": round(rps_max),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in runs[name]), 2),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in runs[name]), 2),
                "cpu_us": round(statistics.median(r["cpu_us"] for r in runs[name]), 1),
                "errors": int(sum(r["errors"] for r in runs[name])),
                "loadgen_busy": round(statistics.median(r["loadgen_busy"] for r in runs[name]), 2),
            }
        )
    ratios = {}
    for peer in ("limit", "bare"):
        pairs = list(zip(runs["harness"], runs[peer], strict=True))
        # Callbacks per second, and callbacks per CPU second (the peer's CPU per callback over
        # the harness's): the second holds steady when other work takes the cores.
        for key, per_round in (
            (f"harness/{peer}", [h["rps"] / p["rps"] for h, p in pairs]),
            (f"harness/{peer} per CPU", [p["cpu_us"] / h["cpu_us"] for h, p in pairs]),
        ):
            mid, low, high = _spread(per_round)
            ratios[key] = {"median": round(mid, 2), "min": round(low, 2), "max": round(high, 2)}

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"POST {PATH}: {args.clients} keep-alive clients, {args.rounds} interleaved rounds "
        f"of {args.seconds:g} s, medians (min..max)"
    )
    columns = ("server", "callbacks/s", "p50 ms", "p99 ms", "CPU us/callback", "non-200", "loadgen")
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["name"]),
            f"{row['rps']:,} ({row['rps_min']:,}..{row['rps_max']:,})",
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['cpu_us']:.0f}",
            str(row["errors"]),
            f"{row['loadgen_busy']:.0%}",
        )
    console = Console(width=120)
    console.print(table)
    for key, value in ratios.items():
        console.print(f"{key}: {value['median']:.2f}x ({value['min']:.2f}..{value['max']:.2f})")
    before, after = (" ".join(f"{x:.2f}" for x in avg) for avg in (load_before, load))
    console.print(f"load average (1, 5, 15 min): before {before}, after {after}")
    # run_all.py's shape (bench/_report.py): ratios as medians, their spread apart.
    report.write(
        args.json,
        "callbacks",
        rows,
        ratios={key: value["median"] for key, value in ratios.items()},
        ratio_spreads=ratios,
        load_before=list(load_before),
    )


if __name__ == "__main__":
    main()

"""Callbacks per second with the journal on PostgreSQL, 1 and 2 harness processes, against one
process journaling in memory; same run, interleaved rounds.

    python bench/bench_scaleout.py                       # about 1 minute
    python bench/bench_scaleout.py --rounds 5 --seconds 5 --clients 50

Setups, each fake CleverTap (:class:`harness.clevertap.server.CleverTapServer`, strict, every
check on) in its own process:

- ``memory x1``: one process, the journal in memory (the default; the practical limit);
- ``postgres x1``: one process, the journal in a throwaway PostgreSQL server
  (:class:`harness.pgcluster.Cluster`, started here from the installed binaries);
- ``postgres x2``: two processes on the same PostgreSQL journal, the clients split between them.

The load generator runs in its own process: raw asyncio HTTP/1.1 keep-alive clients, closed loop
(each sends its next request when the previous answer is in); every request a legacy bounce for
two addresses never seen before. Rounds interleave the setups so that the shared machine's load
hits them alike; each figure is the median over rounds with min..max. CPU per callback: user +
system time of the harness processes and, for PostgreSQL, of the server's processes (from
/proc), divided by callbacks answered; it holds steadier than throughput on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path
from typing import Any

import _report as report

from harness._rawhttp import post

PATH = "/callbacks/bounce"
_TICK = os.sysconf("SC_CLK_TCK")


def payload(i: int, now: int) -> bytes:
    return (
        f'[{{"event":"softbounce","data":[{{"e":"user{i}@example.com","ts":{now}}}]}},'
        f'{{"event":"hardbounce","data":[{{"e":"gone{i}@example.org","ts":{now}}}]}}]'
    ).encode()


# -- servers (child processes) ---------------------------------------------------------------------


def _serve(journal_url: str | None, ports: Any) -> None:
    from harness.clevertap.server import CleverTapServer
    from harness.journal import open_journal

    async def main() -> None:
        journal = open_journal(journal_url)
        async with CleverTapServer(journal=journal) as server:
            ports.put(server.port)
            await asyncio.Event().wait()  # until the parent terminates us

    asyncio.run(main())


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a backend that ended meanwhile
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def _postgres_pids(data_dir: Path) -> list[int]:
    """The postmaster and its children (backends, writers) of the bench's cluster."""
    master = int((data_dir / "postmaster.pid").read_text().split()[0])
    pids = [master]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == master:
                pids.append(int(entry.name))
    return pids


# -- load generator (its own process) --------------------------------------------------------------


async def _client(port: int, until: float, start: int, now_s: int) -> tuple[int, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = errors = 0
    i = start
    try:
        while time.perf_counter() < until:
            body = payload(i, now_s)
            i += 1
            status, _ = await post(reader, writer, PATH, body)
            done += 1
            errors += status != 200
    finally:
        writer.close()
        await writer.wait_closed()
    return done, errors


def _load(ports: list[int], clients: int, seconds: float, first: int, out: Any) -> None:
    async def run() -> tuple[int, int]:
        until = time.perf_counter() + seconds
        now_s = int(time.time())
        results = await asyncio.gather(
            *(
                _client(ports[n % len(ports)], until, first + n * 10_000_000, now_s)
                for n in range(clients)
            )
        )
        return sum(d for d, _ in results), sum(e for _, e in results)

    out.put(asyncio.run(run()))


# -- main ------------------------------------------------------------------------------------------


def main() -> None:
    from harness.pgcluster import Cluster

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per run")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--fsync",
        choices=("on", "off"),
        default="on",
        help="the PostgreSQL server's fsync (off: commits do not wait for the disk)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    with Cluster(settings={"fsync": args.fsync, "full_page_writes": args.fsync}) as pg:
        url = pg.create_database("bench")
        pg_pids = _postgres_pids(pg.data)

        def start(journal: str | None) -> tuple[int, int]:
            ports = ctx.Queue()
            proc = ctx.Process(target=_serve, args=(journal, ports), daemon=True)
            proc.start()
            procs.append(proc)
            return proc.pid or 0, ports.get(timeout=60)

        try:
            setups: dict[str, list[tuple[int, int]]] = {
                "memory x1": [start(None)],
                "postgres x1": [start(url)],
                "postgres x2": [start(url), start(url)],
            }
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
            first = 0
            for _ in range(args.rounds):
                for name, servers in setups.items():
                    watched = [pid for pid, _ in servers]
                    if name.startswith("postgres"):
                        watched += _postgres_pids(pg.data)
                    out = ctx.Queue()
                    loader = ctx.Process(
                        target=_load,
                        args=([p for _, p in servers], args.clients, args.seconds, first, out),
                    )
                    cpu0 = _cpu_seconds(watched)
                    loader.start()
                    done, errors = out.get(timeout=args.seconds + 120)
                    loader.join()
                    cpu = _cpu_seconds(watched) - cpu0
                    first += args.clients * 10_000_000
                    if errors:
                        raise SystemExit(f"{name}: {errors} answers were not 200")
                    results[name].append((done / args.seconds, cpu / max(done, 1) * 1e6))
        finally:
            for proc in procs:
                proc.terminate()
                proc.join(5)
        del pg_pids

    def spread(values: list[float], fmt: str) -> str:
        return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}..{max(values):{fmt}})"

    base = statistics.median(r for r, _ in results["memory x1"])
    print(
        f"POST {PATH}, {args.clients} clients, {args.seconds:g} s x {args.rounds} interleaved "
        f"rounds; PostgreSQL fsync {args.fsync}; load average {os.getloadavg()[0]:.2f} on "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'setup':<13} {'callbacks/s median (min..max)':>32} {'vs memory':>10} "
        f"{'CPU us/callback (harness+pg)':>30}"
    )
    for name, rows in results.items():
        rps = [r for r, _ in rows]
        cpus = [c for _, c in rows]
        print(
            f"{name:<13} {spread(rps, ',.0f'):>32} {statistics.median(rps) / base:>9.2f}x "
            f"{spread(cpus, '.0f'):>30}"
        )
    report.write(
        args.json,
        "scaleout",
        [
            {
                "setup": name,
                "callbacks/s": report.spread(r for r, _ in rows),
                "vs memory": statistics.median(r for r, _ in rows) / base,
                "CPU us/callback": report.spread(c for _, c in rows),
            }
            for name, rows in results.items()
        ],
        clients=args.clients,
        fsync=args.fsync,
    )


if __name__ == "__main__":
    main()

"""Several processes, one journal: order, duplicates, load and kill -9, on a real PostgreSQL.

The harness processes are real ``harness serve`` processes (or real processes appending to the
journal); the clients are real HTTP clients on loopback.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from harness._rawhttp import post
from harness.journal import Kind, open_journal
from harness.journal_pg import PostgresJournal
from harness.records import Callback, Note

pytestmark = pytest.mark.postgres

JSON = {"content-type": "application/json"}


def bounce(address: str) -> bytes:
    return json.dumps(
        [{"event": "hardbounce", "data": [{"e": address, "ts": int(time.time())}]}]
    ).encode()


@contextmanager
def serving(url: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``harness serve --journal URL`` in its own process; yields it and its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "serve", "--port", "0", "--journal", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    failed = True
    try:
        assert proc.stdout is not None
        base = None
        deadline = time.monotonic() + 30
        while base is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("fake CleverTap on "):
                base = line.split()[3]
        if base is None:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"harness serve did not start: {err}")
        yield proc, base
        failed = False
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hung server
                proc.kill()
                _, err = proc.communicate()
        else:
            _, err = proc.communicate()
        if failed and err.strip():
            print(f"--- stderr of harness serve (pid {proc.pid}) ---\n{err}")


# -- two processes appending, one reader polling ---------------------------------------------------


def _appender(url: str, name: str, count: int) -> None:
    """A process appending *count* notes in groups of varying size, as a server would."""

    async def run() -> None:
        journal = PostgresJournal(url)
        try:
            i = 0
            while i < count:
                group = [
                    journal.append(Note(source=name, what=str(i + k)))
                    for k in range(min(1 + i % 7, count - i))
                ]
                i += len(group)
                await journal.committed(group[-1])
        finally:
            journal.close()

    asyncio.run(run())


def test_two_processes_appending_make_one_order_with_no_gap_a_poller_can_see(pg_url: str) -> None:
    count = 1500
    journal = open_journal(pg_url)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_appender, args=(pg_url, n, count)) for n in ("p1", "p2")]
    for p in procs:
        p.start()
    seen: list[tuple[int, str, int]] = []
    polls = 0
    since = 0
    try:
        while len(seen) < 2 * count:
            batch = journal.entries(since=since)
            polls += 1
            for entry in batch:
                # The next entry a poller sees is always the next number: nothing committed
                # later can show up before something committed earlier.
                assert entry.seq == since + 1, f"poll {polls}: saw {entry.seq} after {since}"
                assert isinstance(entry.data, Note)
                seen.append((entry.seq, entry.data.source, int(entry.data.what)))
                since = entry.seq
            if not batch:
                journal.wait_for(lambda e: True, 5, since=since)
    finally:
        for p in procs:
            p.join(60)
        journal.close()
    assert [p.exitcode for p in procs] == [0, 0]
    assert polls > 10  # the poller really read while both were writing
    for name in ("p1", "p2"):
        assert [i for _, source, i in seen if source == name] == list(range(count))


# -- CT402 across servers --------------------------------------------------------------------------


def test_the_same_bounce_posted_to_two_servers_is_still_a_duplicate(pg_url: str) -> None:
    with serving(pg_url) as (_, one), serving(pg_url) as (_, two):
        body = bounce("twice@example.com")
        first = httpx.post(one + "/callbacks/bounce", content=body, headers=JSON)
        second = httpx.post(two + "/callbacks/bounce", content=body, headers=JSON)
        assert first.status_code == 200
        # CT402 is a warning: answered like the real endpoint, and recorded.
        page = httpx.get(two + "/_harness/violations").json()
    codes = [v["violation"]["code"] for v in page["violations"]]
    assert codes == ["CT402"], page
    assert second.status_code == 200
    with open_journal(pg_url) as journal:
        entries = journal.callbacks(code="CT402")
        assert len(entries) == 1
        assert isinstance(entries[0].data, Callback)
        assert entries[0].data.violations[0].evidence == (1,)


# -- load ------------------------------------------------------------------------------------------


async def _post_all(bases: list[str], total: int, clients: int) -> list[list[str]]:
    """*clients* concurrent keep-alive clients posting *total* distinct bounces, client n to
    server n % len(bases); returns what each client had acknowledged, in its order.

    Each client is one HTTP/1.1 connection on asyncio streams, sending its next request when
    the answer to the last is in (httpx would be the bottleneck at this rate).
    """
    acked: list[list[str]] = [[] for _ in range(clients)]

    async def client(n: int) -> None:
        host, port = httpx.URL(bases[n % len(bases)]).host, httpx.URL(bases[n % len(bases)]).port
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in range(n, total, clients):
                address = f"u{i}@example.com"
                body = bounce(address)
                status, answer = await post(reader, writer, "/callbacks/bounce", body)
                assert status == 200, answer
                acked[n].append(address)
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(client(n) for n in range(clients)))
    return acked


def _check_load(pg_url: str, acked: list[list[str]], total: int) -> None:
    with open_journal(pg_url) as journal:
        entries = journal.entries(Kind.CALLBACK)
    addresses = []
    for entry in entries:
        assert isinstance(entry.data, Callback)
        addresses.append(entry.data.events[0].email)
    assert len(addresses) == total, "lost or extra callbacks"
    assert len(set(addresses)) == total, "duplicated callbacks"
    seqs = [e.seq for e in entries]
    assert seqs == sorted(seqs)
    order = dict(zip(addresses, seqs, strict=True))
    for mine in acked:
        # A client posted its next bounce only after the last one was answered: the journal's
        # one order must agree.
        assert [order[a] for a in mine] == sorted(order[a] for a in mine)


@pytest.mark.parametrize(
    "total",
    [
        pytest.param(2_000, id="2k"),
        pytest.param(20_000, id="20k", marks=[pytest.mark.slow, pytest.mark.timeout(600)]),
    ],
)
def test_load_two_servers_fifty_clients_lose_and_duplicate_nothing(pg_url: str, total: int) -> None:
    with serving(pg_url) as (_, one), serving(pg_url) as (_, two):
        started = time.monotonic()
        acked = asyncio.run(_post_all([one, two], total, 50))
        elapsed = time.monotonic() - started
    assert sum(len(a) for a in acked) == total
    _check_load(pg_url, acked, total)
    print(f"{total} callbacks through 2 servers in {elapsed:.1f}s ({total / elapsed:.0f}/s)")


# -- kill -9 ---------------------------------------------------------------------------------------


def test_kill_9_of_one_server_loses_nothing_it_acknowledged(pg_url: str) -> None:
    acked: set[str] = set()

    async def hammer(base: str, proc: subprocess.Popen[str]) -> None:
        stop = asyncio.Event()
        enough = asyncio.Event()

        async def client(n: int, http: httpx.AsyncClient) -> None:
            i = 0
            while not stop.is_set():
                address = f"k{n}-{i}@example.com"
                i += 1
                try:
                    response = await http.post(base + "/callbacks/bounce", content=bounce(address))
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code == 200:
                    acked.add(address)
                    if len(acked) >= 300:
                        enough.set()

        async def killer() -> None:
            await enough.wait()
            proc.send_signal(signal.SIGKILL)
            stop.set()

        async with httpx.AsyncClient(headers=JSON, timeout=30) as http:
            await asyncio.gather(killer(), *(client(n, http) for n in range(20)))

    with serving(pg_url) as (proc, base):
        asyncio.run(hammer(base, proc))
        assert proc.wait(10) == -signal.SIGKILL
    with open_journal(pg_url) as journal:
        recorded = set()
        for entry in journal.iter_entries(Kind.CALLBACK):
            assert isinstance(entry.data, Callback)
            recorded.add(entry.data.events[0].email)
    assert len(acked) >= 300
    assert acked <= recorded, f"acknowledged but lost: {sorted(acked - recorded)[:5]}"


def test_a_wait_on_one_server_wakes_for_a_callback_posted_to_the_other(pg_url: str) -> None:
    with serving(pg_url) as (_, one), serving(pg_url) as (_, two):

        async def run() -> httpx.Response:
            async with httpx.AsyncClient(timeout=30) as http:
                waiting = asyncio.create_task(
                    http.get(
                        two + "/_harness/wait",
                        params={"event": "hardbounce", "address": "w@example.com", "timeout": 20},
                    )
                )
                await asyncio.sleep(0.5)
                assert not waiting.done()
                posted = await http.post(
                    one + "/callbacks/bounce", content=bounce("w@example.com"), headers=JSON
                )
                assert posted.status_code == 200
                return await waiting

        started = time.monotonic()
        response = asyncio.run(run())
    assert response.status_code == 200, response.text
    assert response.json()["seq"] == 1
    assert time.monotonic() - started < 15

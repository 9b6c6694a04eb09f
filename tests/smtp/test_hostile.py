"""Hostile SMTP clients are closed within the host's bounds while normal clients are served fast.

Hundreds of connections that never speak (idle), that meet a tarpit, that keep a session busy
with slow commands, or that drip a command a byte at a time; meanwhile normal clients send mail.
Each hostile connection must be closed by the server within its bound (idle timeout, total
session timeout, tarpit bound) plus slack; normal sessions keep p99 under 50 ms; file
descriptors come back to where they were.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.smtp.world import MailWorld
from tests.smtp.journal_reads import opened, session_peers, sessions_without_quit

IDLE, SESSION, TARPIT = 1.0, 3.0, 1.5
SLACK = 2.0
COUNTS = {"idle": 150, "tarpit": 100, "slow_commands": 100, "drip": 50}
NORMAL_SESSIONS = 200
NORMAL_FROM = "127.0.0.2"


def _line(process: subprocess.Popen[str], timeout: float) -> str:
    """The next line *process* prints, waiting at most *timeout* seconds for it."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"the hostile clients said nothing for {timeout} s"
    return process.stdout.readline().strip()


def _host(kind: str) -> str:
    return "pit" if kind == "tarpit" else "mx"


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _normal(port: int, n: int) -> float:
    started = time.monotonic()
    # From another loopback address: hostile and normal peers never share a host:port.
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(NORMAL_FROM, 0))

    async def say(line: bytes) -> bytes:
        if line:
            writer.write(line)
        reply = b""
        while True:
            got = await reader.readline()
            reply += got
            if got[3:4] != b"-":
                return reply

    await say(b"")
    await say(b"EHLO normal.test\r\n")
    await say(b"MAIL FROM:<news@brand.test>\r\n")
    await say(f"RCPT TO:<user{n}@example.com>\r\n".encode())
    await say(b"DATA\r\n")
    reply = await say(b"Subject: hi\r\n\r\nhello\r\n.\r\n")
    assert reply.startswith(b"250 "), reply
    await say(b"QUIT\r\n")
    writer.close()
    await writer.wait_closed()
    return time.monotonic() - started


def _round() -> tuple[float, float, int]:
    """One attack: every bound checked; returns (p99 under attack, p99 without, sessions)."""
    world = MailWorld()
    world.add_host("mx", domains=["example.com"], timeout=IDLE, session_timeout=SESSION)
    world.add_host("pit", domains=["pit.test"], server_down="tarpit", tarpit_timeout=TARPIT)
    before = _fds()

    async def normal(port: int) -> list[float]:
        return [await _normal(port, n) for n in range(NORMAL_SESSIONS)]

    async def during_attack(port: int, attack: subprocess.Popen[str]) -> tuple[list[float], str]:
        report = asyncio.get_running_loop().run_in_executor(None, _line, attack, 30)
        latencies = []
        while not report.done():
            latencies.append(await _normal(port, len(latencies)))
        return latencies, await report

    with world:
        ports = {name: host.port for name, host in world.hosts.items()}
        # The same clients before the attack: what this machine gives right now.
        quiet = asyncio.run(normal(ports["mx"]))
        spec = [f"{kind}={n}" for kind, n in COUNTS.items()]
        attack = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.smtp.hostile_clients",
                str(ports["mx"]),
                str(ports["pit"]),
                *spec,
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        try:
            assert _line(attack, 30) == "ready"
            # Connected is not yet accepted: wait until the hosts hold every hostile session,
            # so that what is measured is the service under a standing attack.
            accepted_by = time.monotonic() + 30
            while opened(world.journal) < len(quiet) + sum(COUNTS.values()):
                assert time.monotonic() < accepted_by, "the hosts never accepted every connection"
                time.sleep(0.01)
            held = _fds()
            # Normal clients all along, until the last hostile connection was closed: the
            # measurement spans every burst of timeouts.
            latencies, report = asyncio.run(during_attack(ports["mx"], attack))
            closed = [tuple(c) for c in json.loads(report)]
        finally:
            attack.kill() if attack.poll() is None else None
            attack.wait(timeout=10)
            if attack.stdout is not None:
                attack.stdout.close()
        deadline = time.monotonic() + 5
        while len(session_peers(world.journal)) < len(closed) + len(quiet) + len(latencies):
            assert time.monotonic() < deadline, "not every session was journaled"
            time.sleep(0.05)
        hostile = sessions_without_quit(world.journal)
    bounds = {"idle": IDLE, "tarpit": TARPIT, "slow_commands": SESSION, "drip": IDLE}
    # The server's view: each one held at least its bound and closed soon after it (slack for
    # a loaded machine); the clients saw every one closed (they returned).
    served = {(k, p): hostile[_host(k), p].duration for k, _, p in closed}
    late = [(k, round(d, 2)) for (k, _), d in served.items() if d > bounds[k] + SLACK]
    # (The idle timer starts a moment before the record of the session does.)
    early = [(k, round(d, 3)) for (k, _), d in served.items() if d < bounds[k] - 0.05]
    assert late == [], late
    assert early == [], early
    assert {hostile[_host(kind), local].end for kind, _, local in closed} == {"timeout"}
    # One descriptor per hostile connection while held, and all of them back afterwards.
    assert held <= before + sum(COUNTS.values()) + 20, (before, held)
    assert _fds() <= before + 5, (before, held, _fds())
    p99 = statistics.quantiles(latencies, n=100)[98]
    return p99, statistics.quantiles(quiet, n=100)[98], len(latencies)


@pytest.mark.timeout(120)
def test_hostile_connections_are_closed_within_bounds_and_normal_clients_stay_fast() -> None:
    # The closing bounds hold in every round; the latency is measured on a shared machine, so
    # it gets up to three rounds to show p99 under 50 ms (or, where even without an attack the
    # clients do not get that, no worse than half as much again as without one).
    seen = []
    for _ in range(3):
        p99, quiet_p99, n = _round()
        seen.append(
            f"{p99 * 1000:.1f} ms under attack ({n} sessions), {quiet_p99 * 1000:.1f} without"
        )
        if p99 < max(0.050, 1.5 * quiet_p99):
            break
    else:
        pytest.fail("normal sessions p99: " + "; ".join(seen))
    print("normal sessions p99:", "; ".join(seen), f"; {sum(COUNTS.values())} hostile closed")

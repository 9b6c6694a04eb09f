"""Hundreds of hostile connections of each kind against `harness serve`, while normal clients
are timed: they keep their latency, the hostile ones are closed within their bounds, and the
server's open file descriptors stay bounded.

Three processes: the server, the hostile clients (hostile_clients.py) and this test (the normal
clients and the file-descriptor sampling), so that no client's work is timed as the server's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

N = 200
"""Hostile connections of each kind (slowloris head, slow body, idle keep-alive)."""
TIMEOUT = 2.0
"""header, body and keep-alive timeouts of the server under siege."""
TRICKLE = 0.5
DURATION = 5.0
"""Seconds the siege lasts: each hostile connection closed is replaced at once."""
SLACK = 1.5
"""Timers fire late, never early, on a loaded 2-core machine: 600 connections expire at once."""
HOSTILE = Path(__file__).with_name("hostile_clients.py")


@dataclass
class Served:
    pid: int
    base: str

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu(self) -> float:
        """CPU seconds the server has used (user + system): steady on a shared machine."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(*options: str) -> Iterator[Served]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "harness", "serve", *options]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # "fake CleverTap on http://127.0.0.1:PORT (...)"
            yield Served(proc.pid, first.split()[3])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
    assert proc.returncode == 0


@pytest.fixture
def served() -> Iterator[Served]:
    limits = ("--header-timeout", "--body-timeout", "--keep-alive-timeout")
    yield from _serve(*(a for option in limits for a in (option, str(TIMEOUT))), "--lenient")


def _post_on_a_new_connection(served: Served, path: str, payload: object) -> int:
    """POST *payload* as JSON over a new connection; the status. A bare socket: building an
    httpx client (its TLS context) costs more than the request we time."""
    body = json.dumps(payload).encode()
    host, port = served.base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def _disconnected(callback: dict[str, object]) -> bool:
    """Whether a control-API callback entry is a request whose client left mid-body."""
    data = callback["data"]
    return isinstance(data, dict) and data.get("disconnected") is True


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count descriptors")
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_600_hostile_connections_are_closed_in_bounds_and_normal_clients_keep_p99(
    served: Served, tmp_path: Path
) -> None:
    bounce = served.base + "/callbacks/bounce"
    with httpx.Client(timeout=10) as warm:
        warm.get(served.base + "/_harness/health")
    time.sleep(0.2)
    baseline = served.fds()

    port = served.base.rsplit(":", 1)[1]
    now = int(time.time())
    posted = 0
    peak = baseline

    def normal_clients(latencies: list[float], until: Callable[[], bool]) -> None:
        nonlocal posted, peak
        with httpx.Client(timeout=10) as keep_alive:
            while not until():
                for client in (keep_alive, None):  # a pooled connection, then a fresh one
                    item = {"e": f"n{posted}@example.com", "ts": now}
                    body = [{"event": "softbounce", "data": [item]}]
                    started = time.perf_counter()
                    if client is None:
                        status = _post_on_a_new_connection(served, "/callbacks/bounce", body)
                    else:
                        status = client.post(bounce, json=body).status_code
                    latencies.append(time.perf_counter() - started)
                    assert status == 200
                    posted += 1
                peak = max(peak, served.fds())
                time.sleep(0.01)

    # The same clients first without an attack: what the machine itself gives them now.
    calm: list[float] = []
    calm_until = time.monotonic() + 1.5
    normal_clients(calm, lambda: time.monotonic() >= calm_until)

    # Arrivals spread over one timeout: the server sees a steady stream of hostile connections
    # opening and expiring, not one synchronised wave (that is the cap's job, tested below).
    args = [port, N, TRICKLE, 10, DURATION, TIMEOUT, tmp_path / "hostile.json"]
    cpu_before, siege_started = served.cpu(), time.monotonic()
    hostile = subprocess.Popen([sys.executable, str(HOSTILE), *map(str, args)])
    latencies: list[float] = []
    normal_clients(latencies, lambda: hostile.poll() is not None)
    cpu_used, siege_took = served.cpu() - cpu_before, time.monotonic() - siege_started
    assert hostile.wait(timeout=30) == 0
    results = json.loads((tmp_path / "hostile.json").read_text())

    spans = {
        k: (min(r["closed_after"] for r in v), max(r["closed_after"] for r in v))
        for k, v in results.items()
        if all(r["closed_after"] is not None for r in v)
    }
    timed_out = "HTTP/1.1 408 Request Timeout"
    for kind, status in (("head", timed_out), ("body", timed_out), ("idle", None)):
        closed = [r["closed_after"] for r in results[kind]]
        assert len(closed) > N  # the siege outlasts the timeouts: closed ones were replaced
        assert None not in closed, f"{closed.count(None)} {kind} connections were never closed"
        assert {r["status"] for r in results[kind]} == {status}
        # Never much early. The server's clock starts before the client's: at the first byte
        # received (the client takes its time after its write returns), and for an idle
        # connection when the answer was sent (a busy client reads it later), hence the margins.
        assert min(closed) >= TIMEOUT - (0.5 if kind == "idle" else 0.1), (kind, min(closed))
        assert max(closed) <= TIMEOUT + SLACK, (kind, max(closed))

    quantiles = statistics.quantiles(latencies, n=100)
    p50, p99 = quantiles[49] * 1000, quantiles[98] * 1000
    calm_p99 = statistics.quantiles(calm, n=100)[98] * 1000
    hostile_made = sum(len(r) for r in results.values())
    print(  # the figures, for -s runs and the report
        f"\n{hostile_made} hostile connections; normal requests {len(latencies)}: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (without the attack {calm_p99:.1f} ms); "
        f"server fds baseline {baseline}, peak {peak}; "
        "closed after (s): "
        + ", ".join(f"{k} {lo:.2f}..{hi:.2f}" for k, (lo, hi) in spans.items())
        + f"; server CPU {cpu_used:.2f} s in {siege_took:.1f} s (normal clients included); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    # Every hostile connection held a descriptor at most; all are released afterwards.
    assert peak <= baseline + 3 * N + 10
    deadline = time.monotonic() + 5
    while served.fds() > baseline + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.fds() <= baseline + 2

    # Nothing lost: the slow bodies are journaled (as disconnected), the normal posts too.
    slow_bodies = len(results["body"])
    callbacks = httpx.get(served.base + "/_harness/callbacks", timeout=30).json()["callbacks"]
    assert sum(_disconnected(c) for c in callbacks) == slow_bodies
    assert len(callbacks) == slow_bodies + posted

    # Latency last: everything above holds whatever the machine does. 50 ms on a machine of
    # our own; on one loaded by other work the p99 the same clients got just before the attack
    # says how much is the machine's, and the attack may cost no more than four times that.
    # Past twice as many runnable processes as cores, timing says nothing about the server.
    assert len(latencies) >= 50
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 2 * cores:
        pytest.skip(
            f"p99 {p99:.1f} ms not judged: load average {load:.1f} on {cores} cores (all the "
            "other checks passed)"
        )
    assert p99 < max(50.0, 4 * calm_p99), (p99, calm_p99)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count descriptors")
@pytest.mark.timeout(60)
def test_the_connection_cap_bounds_descriptors_whatever_the_number_of_clients() -> None:
    for served in _serve("--max-connections", "50", "--keep-alive-timeout", "30"):
        baseline = served.fds()
        port = int(served.base.rsplit(":", 1)[1])
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
        try:
            time.sleep(0.5)
            peak = served.fds()
            refused = 0
            for sock in socks[50:]:
                sock.settimeout(5)
                if sock.recv(200).startswith(b"HTTP/1.1 503 "):
                    refused += 1
            assert refused == 250
            assert peak <= baseline + 50 + 2
        finally:
            for sock in socks:
                sock.close()


@pytest.mark.timeout(60)
def test_harness_serve_scenario_takes_the_limits_too() -> None:
    scenario = Path(__file__).resolve().parents[2] / "scenarios" / "mailbox-full.yaml"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "harness", "serve", str(scenario), "--header-timeout", "0.5"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            line = ""
            while not line.startswith("fake CleverTap on "):
                line = proc.stdout.readline()
                assert line, "harness serve ended before printing its URL"
            host, port = line.split()[3].removeprefix("http://").rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                started = time.monotonic()
                sock.sendall(b"POST /callbacks/bounce HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
                elapsed = time.monotonic() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"not received within 0.5 s" in answer
    assert 0.4 <= elapsed < 0.5 + SLACK

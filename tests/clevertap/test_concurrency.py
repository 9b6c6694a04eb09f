"""Many concurrent keep-alive clients: every request is journaled exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

CLIENTS = 50
POSTS = 200
JSON = {"content-type": "application/json"}


@pytest.fixture
def serve() -> Iterator[dict[str, str]]:
    """`harness serve` in a process of its own, so that it does not share a GIL with the 50
    clients (each request costs httpx about a millisecond of CPU; 10,000 of them would otherwise
    take twice as long). Yields the URLs it prints."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "harness", "serve"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(5)]
            yield dict(line.split()[:2] for line in lines[1:5])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=15)
    assert proc.returncode == 0


@pytest.mark.slow
def test_50_clients_200_posts_each_every_request_journaled_once(serve: dict[str, str]) -> None:
    now = int(time.time())

    def client(n: int) -> list[int]:
        codes = []
        with httpx.Client(timeout=30) as http:  # one keep-alive connection per client
            for i in range(POSTS):
                item = {"e": f"c{n}-{i}@example.com", "ts": now}
                body = json.dumps([{"event": "softbounce", "data": [item]}])
                codes.append(http.post(serve["bounce"], content=body, headers=JSON).status_code)
        return codes

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(client, range(CLIENTS)))
    assert Counter(code for codes in results for code in codes) == {200: CLIENTS * POSTS}

    entries = httpx.get(serve["control"] + "/callbacks", timeout=30).json()["callbacks"]
    seen = Counter(e["data"]["events"][0][1] for e in entries)
    expected = {f"c{n}-{i}@example.com" for n in range(CLIENTS) for i in range(POSTS)}
    assert seen.keys() == expected
    assert set(seen.values()) == {1}
    assert len(entries) == CLIENTS * POSTS
    seqs = [e["seq"] for e in entries]
    assert seqs == list(range(seqs[0], seqs[0] + CLIENTS * POSTS))
    assert all(e["data"]["status"] == 200 and e["data"]["violations"] == [] for e in entries)

"""Hostile HTTP clients, run as a process of their own by test_http_siege.py.

``python hostile_clients.py PORT N TRICKLE GIVE_UP DURATION SPREAD OUT`` keeps N connections
of each kind open against 127.0.0.1:PORT for DURATION seconds (their first opening spread over
SPREAD seconds, as clients arrive; each one closed by the server is replaced at once) and writes
one JSON object to the file OUT: for each kind, per connection made, the seconds from the start
of its hostile phase to the server closing it (null if still open after GIVE_UP seconds) and the
status line the server answered, if any.

- ``head``: a slowloris: a request line, then one header line every TRICKLE seconds;
- ``body``: a complete head announcing 1000 bytes, then one body byte every TRICKLE seconds;
- ``idle``: one quick request, then nothing (an idle keep-alive connection).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


async def _until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bytes, every: float
) -> bytes:
    """Send *trickle* every *every* seconds (if not empty) until the server closes."""
    received = b""
    while True:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), timeout=every)
        except TimeoutError:
            if trickle:
                try:
                    writer.write(trickle)
                    await writer.drain()
                except (ConnectionError, OSError):
                    return received
            continue
        except (ConnectionError, OSError):
            return received
        if not chunk:
            return received
        received += chunk


async def _one(kind: str, port: int, every: float, give_up: float) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if kind == "head":
            writer.write(b"POST /callbacks/bounce HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            trickle = b"X-Pad: x\r\n"
        elif kind == "body":
            writer.write(
                b"POST /callbacks/bounce HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n["
            )
            trickle = b" "
        else:
            writer.write(b"GET /_harness/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            trickle = b""
        await writer.drain()
        started = time.monotonic()
        try:
            received = await asyncio.wait_for(
                _until_closed(reader, writer, trickle, every), timeout=give_up
            )
            closed_after: float | None = time.monotonic() - started
        except TimeoutError:
            received, closed_after = b"", None
        return {
            "closed_after": closed_after,
            "status": received.split(b"\r\n", 1)[0].decode("latin-1") if received else None,
        }
    finally:
        writer.close()


async def _slot(
    kind: str, port: int, every: float, give_up: float, until: float, delay: float
) -> list[dict[str, Any]]:
    await asyncio.sleep(delay)
    results = [await _one(kind, port, every, give_up)]
    while time.monotonic() < until and results[-1]["closed_after"] is not None:
        results.append(await _one(kind, port, every, give_up))
    return results


async def main(
    port: int, n: int, every: float, give_up: float, duration: float, spread: float
) -> dict[str, list[Any]]:
    until = time.monotonic() + duration
    kinds = ("head", "body", "idle")
    tasks = {
        k: [
            asyncio.create_task(_slot(k, port, every, give_up, until, spread * i / n))
            for i in range(n)
        ]
        for k in kinds
    }
    return {k: [r for rs in await asyncio.gather(*tasks[k]) for r in rs] for k in kinds}


if __name__ == "__main__":
    port, n = int(sys.argv[1]), int(sys.argv[2])
    every, give_up, duration, spread = map(float, sys.argv[3:7])
    results = asyncio.run(main(port, n, every, give_up, duration, spread))
    with open(sys.argv[7], "w", encoding="utf-8") as out:
        json.dump(results, out)

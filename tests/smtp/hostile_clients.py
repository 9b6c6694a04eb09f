"""Hostile SMTP clients, run in a process of their own by ``test_hostile.py``.

``python -m tests.smtp.hostile_clients MX_PORT PIT_PORT idle=150 tarpit=100 ...`` opens the
connections, prints ``ready`` once all are connected, and when every one has been closed by the
server prints one JSON line: ``[[kind, seconds until closed, "host:port"], ...]``. A process of
its own, so that the normal clients' latency measures the server, not this load's event loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def _hostile(
    kind: str, ports: dict[str, int], connected: asyncio.Semaphore
) -> tuple[str, float, str]:
    """Connect as *kind*; return (kind, seconds until the server closed, local host:port)."""
    port = ports["pit"] if kind == "tarpit" else ports["mx"]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return f"could not connect: {exc}", 0.0, ""
    finally:
        connected.release()
    local = "{}:{}".format(*writer.get_extra_info("sockname")[:2])
    started = time.monotonic()
    try:
        if kind == "tarpit":
            await reader.read()  # never a byte, until the server lets go
        elif kind == "idle":
            await reader.readline()  # the greeting, then silence
            await reader.read()
        elif kind == "slow_commands":
            await reader.readline()
            while not reader.at_eof():
                writer.write(b"NOOP\r\n")
                await writer.drain()
                await asyncio.sleep(0.3)
                await reader.readline()
            await reader.read()
        else:  # drip: one command, a byte every 0.3 s, never finished
            await reader.readline()
            for byte in b"MAIL FROM:<slow@brand.test>" * 10:
                if reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    await asyncio.wait_for(reader.read(1024), 0.3)
                except TimeoutError:
                    continue
            await reader.read()
    except ConnectionError:
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
    return kind, time.monotonic() - started, local


async def _main(ports: dict[str, int], counts: dict[str, int]) -> None:
    kinds = [k for k, n in counts.items() for _ in range(n)]
    connected = asyncio.Semaphore(0)
    tasks = [asyncio.create_task(_hostile(k, ports, connected)) for k in kinds]
    for _ in kinds:
        await connected.acquire()
    print("ready", flush=True)
    print(json.dumps(await asyncio.gather(*tasks)), flush=True)


if __name__ == "__main__":
    mx, pit, *spec = sys.argv[1:]
    counts = {k: int(v) for k, v in (item.split("=") for item in spec)}
    asyncio.run(_main({"mx": int(mx), "pit": int(pit)}, counts))

"""A bare HTTP/1.1 keep-alive POST over asyncio streams, for load generators.

The benches and the load tests send tens of thousands of callbacks a second from one process;
httpx would spend more CPU than the servers it measures (about 1,500 requests a second per core),
so they speak the protocol themselves. One home for that code; not part of the public API.
"""

from __future__ import annotations

import asyncio

__all__ = ["post"]


async def post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes
) -> tuple[int, bytes]:
    """POST *body* (JSON) to *path* on an open keep-alive connection; (status, answer body).

    The answer must carry Content-Length (the fake CleverTap's always do).
    """
    writer.write(
        b"POST " + path.encode() + b" HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    answer = await reader.readexactly(length)
    return int(head[9:12]), answer

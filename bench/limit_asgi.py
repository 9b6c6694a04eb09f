"""The practical limit for a callback endpoint in Python: raw ASGI + msgspec on uvicorn with uvloop
and httptools. Parses the same legacy bounce body into typed structs and answers like the
harness, with no checks and no journal. Run by bench_callbacks.py in a process of its own::

    python bench/limit_asgi.py          # prints "port N", serves until killed
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec
import uvicorn


class Item(msgspec.Struct):
    e: str
    ts: int


class Event(msgspec.Struct):
    event: str
    data: list[Item]


_DECODER = msgspec.json.Decoder(list[Event])

Message = MutableMapping[str, Any]


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    try:
        accepted = sum(len(event.data) for event in _DECODER.decode(body))
        status, answer = 200, b'{"status":"success","accepted":%d}' % accepted
    except msgspec.ValidationError:
        status, answer = 400, b'{"status":"error","message":"invalid payload"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def serve(target: Any) -> None:
    """Serve *target* on a free loopback port with uvloop + httptools; print the port first."""
    # IPPROTO_TCP so that asyncio sets TCP_NODELAY (see CleverTapServer._listen).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    print(f"port {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        target, loop="uvloop", http="httptools", lifespan="off", log_config=None, access_log=False
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    serve(app)

"""HTTP limits of the fake CleverTap, one hostile client at a time, over real sockets.

The many-clients version (hundreds of each kind while normal clients are timed) is in
test_http_siege.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from harness.clevertap.deadlines import close_after_answer, raw_response
from harness.clevertap.server import CleverTapServer
from harness.clevertap.settings import ServerSettings
from harness.errors import ConfigError
from harness.journal import Kind
from harness.records import Callback
from tests.clevertap.parsers import PARSERS

LIMITS = {"header_timeout": 0.6, "body_timeout": 0.6, "keep_alive_timeout": 0.6}
SLACK = 2.0
"""Timers fire late on a loaded machine; never early."""

BOUNCE = json.dumps(
    [{"event": "hardbounce", "data": [{"e": "gone@example.com", "ts": int(time.time())}]}]
).encode()


@pytest.fixture(scope="module", params=PARSERS)
def limited(request: pytest.FixtureRequest) -> Iterator[CleverTapServer]:
    settings = ServerSettings(max_connections=20, http_parser=request.param, **LIMITS)
    with CleverTapServer(settings) as ct:
        yield ct


@pytest.fixture
def ct(limited: CleverTapServer) -> CleverTapServer:
    limited.reset()
    return limited


def _connect(ct: CleverTapServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", ct.port), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _status_and_body(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_slowloris_head_gets_408_after_header_timeout(ct: CleverTapServer) -> None:
    with _connect(ct) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /callbacks/bounce HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.settimeout(0.15)
        raw = b""
        for i in range(100):  # a header line every 0.15 s: each byte would reset an idle timer
            try:
                sock.sendall(f"X-Pad-{i}: x\r\n".encode())
                raw = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if raw:
                break
        sock.settimeout(5)
        raw += _read_until_closed(sock)
        elapsed = time.monotonic() - started
    status, body = _status_and_body(raw)
    assert status == 408
    assert body == {
        "status": "error",
        "message": "request line and headers not received within 0.6 s",
    }
    assert LIMITS["header_timeout"] <= elapsed < LIMITS["header_timeout"] + SLACK


def test_a_client_still_sending_when_its_head_times_out_reads_the_408(
    ct: CleverTapServer,
) -> None:
    # Closing a socket with unread bytes in it sends a reset, which can destroy the 408 before
    # the client reads it; the server shuts its side after the answer and discards the rest.
    with _connect(ct) as sock:
        sock.sendall(b"POST /callbacks/bounce HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        until = time.monotonic() + LIMITS["header_timeout"] + 0.9
        while time.monotonic() < until:
            try:
                sock.sendall(b"X-Pad: x\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.02)
        raw = _read_until_closed(sock)
    status, body = _status_and_body(raw)
    assert (status, body["message"]) == (408, "request line and headers not received within 0.6 s")


def test_a_slow_body_gets_408_and_the_callback_is_still_journaled(ct: CleverTapServer) -> None:
    with _connect(ct) as sock:
        sock.sendall(
            b"POST /callbacks/bounce HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BOUNCE)
        )
        started = time.monotonic()
        sock.settimeout(0.15)
        raw = b""
        for byte in BOUNCE[:-1]:
            try:
                sock.sendall(bytes([byte]))
                raw = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if raw:
                break
        sock.settimeout(5)
        raw += _read_until_closed(sock)
        elapsed = time.monotonic() - started
    status, body = _status_and_body(raw)
    assert (status, body["message"]) == (408, "request body not received within 0.6 s")
    assert LIMITS["body_timeout"] <= elapsed < LIMITS["body_timeout"] + SLACK
    entry = ct.journal.wait_for(lambda e: e.kind is Kind.CALLBACK, timeout=5)
    assert entry is not None
    assert isinstance(entry.data, Callback)
    assert entry.data.disconnected is True
    assert entry.data.status is None


@pytest.mark.parametrize("after_a_request", [False, True])
def test_an_idle_connection_is_closed_after_keep_alive_timeout(
    ct: CleverTapServer, after_a_request: bool
) -> None:
    with _connect(ct) as sock:
        if after_a_request:
            sock.sendall(b"GET /_harness/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = _read_response(sock)
            assert first.startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        rest = _read_until_closed(sock)
        elapsed = time.monotonic() - started
    assert rest == b""  # idle connections are closed without an answer: nothing was asked
    assert LIMITS["keep_alive_timeout"] - 0.3 <= elapsed < LIMITS["keep_alive_timeout"] + SLACK


def test_a_busy_keep_alive_client_and_a_long_poll_outlive_every_timeout(
    ct: CleverTapServer,
) -> None:
    with httpx.Client(timeout=10) as http:
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 3 * LIMITS["header_timeout"]:
            response = http.get(ct.urls.control + "/health")
            assert response.status_code == 200
            sent += 1
            time.sleep(0.05)
        waited = http.get(ct.urls.control + "/wait", params={"timeout": 1.5})
    # A long poll longer than every read deadline: the request is in, the app holds it.
    assert waited.status_code == 408
    assert waited.json()["detail"].startswith("no callback matching")
    assert sent > 10


@pytest.mark.parametrize("parser", PARSERS)
def test_a_head_growing_past_max_header_size_gets_400(parser: str) -> None:
    # What a server buffers of an incomplete head is bounded: the memory a slowloris can pin.
    settings = ServerSettings(max_header_size=1024, http_parser=parser)
    with CleverTapServer(settings) as ct, _connect(ct) as sock:
        sock.sendall(b"GET /_harness/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for _ in range(10):
                sock.sendall(b"X-Big: " + b"x" * 500 + b"\r\n")
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = _read_until_closed(sock)
        assert raw.startswith(b"HTTP/1.1 400 ")
        assert httpx.get(ct.urls.control + "/health").status_code == 200


def test_connections_over_the_cap_get_503_and_are_closed(ct: CleverTapServer) -> None:
    held = [_connect(ct) for _ in range(20)]
    try:
        time.sleep(0.1)
        with _connect(ct) as extra:
            raw = _read_until_closed(extra)
        status, body = _status_and_body(raw)
        assert (status, body["message"]) == (503, "too many connections (limit 20)")
    finally:
        for sock in held:
            sock.close()
    # The slots come back once the held connections are gone.
    deadline = time.monotonic() + 5
    while True:
        try:
            assert httpx.get(ct.urls.control + "/health").status_code == 200
            break
        except (httpx.TransportError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("header_timeout", 0),
        ("body_timeout", -1.0),
        ("keep_alive_timeout", float("inf")),
        ("max_connections", 0),
        ("max_header_size", 100),
    ],
)
def test_bad_limits_are_config_errors(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        ServerSettings(**{field: value})


def test_forwarded_headers_do_not_change_the_journaled_peer(ct: CleverTapServer) -> None:
    # uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told not to: any local client could
    # then record another peer.
    headers = {"content-type": "application/json", "x-forwarded-for": "203.0.113.9"}
    with httpx.Client(timeout=10) as http:
        assert http.post(ct.urls.bounce, content=BOUNCE, headers=headers).status_code == 200
    (entry,) = ct.journal.entries(Kind.CALLBACK)
    assert isinstance(entry.data, Callback)
    assert str(entry.data.peer).startswith("127.0.0.1:")


@pytest.mark.parametrize("parser", PARSERS)
def test_a_client_that_never_reads_its_answer_is_dropped_after_send_timeout(parser: str) -> None:
    # Eight callbacks with ~900 KB bodies make GET /callbacks answer about 7 MB: more than the
    # loopback socket buffers hold (they grow to about 4 MB), so the server's writes stall.
    big = json.dumps(
        [{"event": "hardbounce", "data": [{"e": "a@example.com", "ts": 1, "pad": "x" * 900_000}]}]
    ).encode()
    with CleverTapServer(ServerSettings(send_timeout=0.5, strict=False, http_parser=parser)) as ct:
        headers = {"content-type": "application/json"}
        for _ in range(8):
            assert httpx.post(ct.urls.bounce, content=big, headers=headers).status_code == 200
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with sock:
            sock.connect(("127.0.0.1", ct.port))
            sock.sendall(b"GET /_harness/callbacks HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            time.sleep(0.5 + SLACK)  # not reading: the server is stuck writing, then gives up
            received, reset = b"", False
            sock.settimeout(5)
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except ConnectionResetError:
                reset = True
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        assert length > 7 * len(big)
        assert reset or len(body) < length  # aborted: the answer never arrived whole
        # and the server is fine for everyone else
        assert httpx.get(ct.urls.control + "/health").status_code == 200


@pytest.mark.asyncio
@pytest.mark.parametrize("lingering", [True, False])
async def test_an_error_answer_survives_unread_client_bytes(lingering: bool) -> None:
    # What close_after_answer() is for, made certain: the server has not read the client's last
    # bytes when it answers and ends the connection. A plain close() then sends a reset, which
    # destroys the answer on its way (the False case shows the failure the helper prevents).
    loop = asyncio.get_running_loop()
    answered = asyncio.Event()
    lost = asyncio.Event()
    linger: list[asyncio.TimerHandle | None] = []

    class Server(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            for timer in linger:
                if timer is not None:
                    timer.cancel()
            lost.set()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            transport.pause_reading()  # the client's bytes stay unread in the kernel
            loop.call_later(0.2, self.answer, transport)

        def answer(self, transport: asyncio.Transport) -> None:
            transport.write(raw_response(408, "Request Timeout", "too slow"))
            if lingering:
                linger.append(close_after_answer(transport, loop))
            else:
                transport.close()
            answered.set()

    server = await loop.create_server(Server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"X-Pad: x\r\n" * 100)
        await answered.wait()
        await asyncio.sleep(0.1)
        if lingering:
            raw = await asyncio.wait_for(reader.read(), 5)
            assert raw.startswith(b"HTTP/1.1 408 ")
        else:
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await asyncio.wait_for(lost.wait(), 5)  # the client's close ends the lingering too
        server.close()
        await server.wait_closed()

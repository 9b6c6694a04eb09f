"""The httptools protocol that answers callbacks itself (harness/clevertap/fastpath.py), over real
sockets: what it does that the ASGI path did for it (pipelining, 100-continue, HEAD, HTTP/1.0,
chunked bodies, durable journals, drops) and the uvicorn internals it relies on.

The limits (deadlines, caps) run against both protocols in test_http_limits.py, the fuzz in
test_http_fuzz.py, the callback semantics in test_server.py and test_faults.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.clevertap.fastpath import FastProtocol
from harness.clevertap.faults import parse_fault
from harness.clevertap.server import CleverTapServer
from harness.clevertap.settings import ServerSettings
from harness.errors import ServerError
from harness.journal import Kind, SQLiteJournal
from harness.records import Callback

NOW = int(time.time())


def bounce(address: str) -> bytes:
    return json.dumps(
        [{"event": "hardbounce", "data": [{"e": address, "ts": NOW}]}], separators=(",", ":")
    ).encode()


def post(path: str, body: bytes, *extra: str, version: str = "1.1") -> bytes:
    head = [f"POST {path} HTTP/{version}", "Host: 127.0.0.1", "Content-Type: application/json"]
    head += [*extra, f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(head).encode() + body


def responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """*count* whole responses (each with a Content-Length) read from *sock*."""
    data = b""
    out: list[tuple[int, dict[str, str], bytes]] = []
    while len(out) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"closed after {len(out)} responses; left: {data!r}")
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(data) < length:
            data += sock.recv(65536)
        out.append((int(lines[0].split()[1]), headers, data[:length]))
        data = data[length:]
    return out


def closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def callbacks(ct: CleverTapServer) -> list[Callback]:
    found = [e.data for e in ct.journal.entries(Kind.CALLBACK)]
    assert all(isinstance(c, Callback) for c in found)
    return found  # type: ignore[return-value]


@pytest.fixture(scope="module")
def fast() -> Iterator[CleverTapServer]:
    with CleverTapServer(ServerSettings(http_parser="httptools", max_body=1024)) as ct:
        yield ct


@pytest.fixture
def ct(fast: CleverTapServer) -> CleverTapServer:
    fast.set_faults()
    fast.reset()
    return fast


def connect(ct: CleverTapServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", ct.port), timeout=10)


def test_callbacks_are_answered_by_the_protocol_itself(ct: CleverTapServer) -> None:
    # The uvicorn internals FastProtocol relies on (module docstring), on a live connection.
    with connect(ct) as sock:
        sock.sendall(post(ct.settings.bounce_path, bounce("a@example.com")))
        ((status, headers, body),) = responses(sock, 1)
        protocol = protocol_of(ct, sock)
        assert isinstance(protocol, FastProtocol)
        for name in ("cycle", "pipeline", "flow", "tasks", "url", "headers", "server_state"):
            assert hasattr(protocol, name), name
        assert protocol.phase() == "idle"
    assert (status, json.loads(body)) == (200, {"status": "success", "accepted": 1})
    assert headers["content-type"] == "application/json"
    assert "date" in headers
    assert "connection" not in headers


def protocol_of(ct: CleverTapServer, sock: socket.socket) -> object:
    """The server's protocol instance serving the connection of *sock*."""
    server = ct._uvicorn  # the running uvicorn.Server, which lists the connections
    assert server is not None
    host, port = sock.getsockname()[:2]
    for protocol in server.server_state.connections:
        if getattr(protocol, "client", None) == (host, port):
            return protocol
    raise AssertionError(f"no connection from {host}:{port}")


def test_pipelined_requests_are_answered_in_order_whatever_serves_them(
    ct: CleverTapServer,
) -> None:
    ct.set_faults(parse_fault("delay=300ms,first=1"))  # the first callback waits: the rest queue
    path = ct.settings.bounce_path
    with connect(ct) as sock:
        sock.sendall(
            post(path, bounce("one@example.com"))
            + b"GET /_harness/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            + post(path, bounce("two@example.com"))
            + post(path, b"not json")
        )
        answers = responses(sock, 4)
    assert [status for status, _, _ in answers] == [200, 200, 200, 400]
    assert json.loads(answers[1][2])["callbacks"] == 1  # health ran after the first callback
    journaled = callbacks(ct)
    assert [c.events[0].email if c.events else None for c in journaled] == [
        "one@example.com",
        "two@example.com",
        None,
    ]


def test_many_pipelined_callbacks_in_one_write(ct: CleverTapServer) -> None:
    ct.set_faults(parse_fault("delay=100ms,first=1"))
    path = ct.settings.bounce_path
    with connect(ct) as sock:
        sock.sendall(b"".join(post(path, bounce(f"u{i}@example.com")) for i in range(300)))
        answers = responses(sock, 300)
    assert {status for status, _, _ in answers} == {200}
    assert [c.events[0].email for c in callbacks(ct)] == [f"u{i}@example.com" for i in range(300)]


def test_answers_wait_for_the_end_of_the_turn_and_nothing_overtakes_them(
    ct: CleverTapServer,
) -> None:
    # A turn's answers go out together at its end (_Answers). What uvicorn writes itself on the
    # same connection in that turn (here the 400 of a request it cannot parse, then the close)
    # goes after them.
    with connect(ct) as sock:
        sock.sendall(
            post(ct.settings.bounce_path, bounce("first@example.com")) + b"NOT HTTP\r\n\r\n"
        )
        received = b""
        sock.settimeout(5)
        while chunk := sock.recv(65536):  # until the server closes
            received += chunk
    first, _, rest = received.partition(b"HTTP/1.1 400 ")
    assert first.startswith(b"HTTP/1.1 200 ")
    assert first.endswith(b'{"status":"success","accepted":1}')
    assert rest  # the 400 came, after the answer
    # Many connections answered in one turn: each gets its own answer.
    socks = [connect(ct) for _ in range(20)]
    try:
        for n, sock in enumerate(socks):
            events = [{"e": f"c{n}-{k}@example.com", "ts": NOW} for k in range(n % 3 + 1)]
            body = json.dumps([{"event": "softbounce", "data": events}]).encode()
            sock.sendall(post(ct.settings.bounce_path, body))
        for n, sock in enumerate(socks):
            ((status, _, body),) = responses(sock, 1)
            assert (status, json.loads(body)["accepted"]) == (200, n % 3 + 1)
    finally:
        for sock in socks:
            sock.close()


def test_expect_100_continue_gets_its_interim_answer(ct: CleverTapServer) -> None:
    body = bounce("wait@example.com")
    with connect(ct) as sock:
        request = post(ct.settings.bounce_path, body, "Expect: 100-continue")
        sock.sendall(request[: -len(body)])
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        ((status, _, _),) = responses(sock, 1)
    assert status == 200
    assert callbacks(ct)[0].body == body.decode()


def test_head_and_get_get_405_and_head_no_body(ct: CleverTapServer) -> None:
    with connect(ct) as sock:
        sock.sendall(b"HEAD /callbacks/bounce HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 405 ")
        assert b"allow: POST" in head
        assert rest == b""
        sock.sendall(b"GET /callbacks/bounce HTTP/1.1\r\nHost: x\r\n\r\n")
        ((status, headers, body),) = responses(sock, 1)
    assert (status, headers["allow"]) == (405, "POST")
    assert "callbacks are POSTed" in json.loads(body)["message"]
    assert [c.method for c in callbacks(ct)] == ["HEAD", "GET"]


def test_http_1_0_and_connection_close_end_the_connection(ct: CleverTapServer) -> None:
    for request in (
        post(ct.settings.bounce_path, bounce("old@example.com"), version="1.0"),
        post(ct.settings.bounce_path, bounce("bye@example.com"), "Connection: close"),
    ):
        with connect(ct) as sock:
            sock.sendall(request)
            ((status, headers, _),) = responses(sock, 1)
            assert status == 200
            assert headers["connection"] == "close"
            assert closed(sock)
    assert len(callbacks(ct)) == 2


def test_a_chunked_body_is_journaled_decoded(ct: CleverTapServer) -> None:
    body = bounce("chunks@example.com")
    with connect(ct) as sock:
        sock.sendall(
            b"POST /callbacks/bounce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7])
                for i in range(0, len(body), 7)
            )
            + b"0\r\n\r\n"
        )
        ((status, _, _),) = responses(sock, 1)
    assert status == 200
    (entry,) = callbacks(ct)
    assert (entry.body, entry.size) == (body.decode(), len(body))


def test_a_body_over_the_cap_in_pieces_gets_413_with_its_real_size(ct: CleverTapServer) -> None:
    body = b"[" + b" " * 5000 + b"]"
    with connect(ct) as sock:
        request = post(ct.settings.bounce_path, body)
        for i in range(0, len(request), 1000):  # several reads, most past the cap
            sock.sendall(request[i : i + 1000])
            time.sleep(0.01)
        ((status, _, answer),) = responses(sock, 1)
    assert (status, json.loads(answer)["size"]) == (413, len(body))
    (entry,) = callbacks(ct)
    assert (entry.size, entry.truncated, len(entry.body)) == (len(body), True, 1024)


def test_a_client_gone_mid_body_is_journaled_as_disconnected(ct: CleverTapServer) -> None:
    body = bounce("gone@example.com")
    with connect(ct) as sock:
        sock.sendall(post(ct.settings.bounce_path, body)[:-5])
    entry = ct.journal.wait_for(lambda e: e.kind is Kind.CALLBACK, timeout=5)
    assert entry is not None
    assert isinstance(entry.data, Callback)
    assert (entry.data.disconnected, entry.data.status) == (True, None)
    assert entry.data.body == body[:-5].decode()


def test_a_whole_callback_from_a_client_gone_at_once_counts_as_received(
    ct: CleverTapServer,
) -> None:
    # Callbacks are processed at the end of the loop turn that read them (_Turn): a client that
    # resets the connection right after its request still had it received whole, so it is
    # checked and journaled as any other, not as a disconnected one.
    with connect(ct) as sock:
        sock.sendall(post(ct.settings.bounce_path, bounce("hasty@example.com")))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    entry = ct.journal.wait_for(lambda e: e.kind is Kind.CALLBACK, timeout=5)
    assert entry is not None
    assert isinstance(entry.data, Callback)
    assert (entry.data.disconnected, entry.data.status, entry.data.accepted) == (False, 200, True)
    assert [e.email for e in entry.data.events] == ["hasty@example.com"]


def test_a_request_line_without_version_is_refused_and_not_journaled(ct: CleverTapServer) -> None:
    with connect(ct) as sock:
        sock.sendall(b"POST /callbacks/bounce\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    assert callbacks(ct) == []


@pytest.mark.parametrize("action", ["close", "reset"])
def test_drop_faults_drop_the_connection(ct: CleverTapServer, action: str) -> None:
    ct.set_faults(parse_fault(f"{action},first=1"))
    with connect(ct) as sock:
        sock.sendall(post(ct.settings.bounce_path, bounce("drop@example.com")))
        assert closed(sock)
    (entry,) = callbacks(ct)
    assert entry.fault is not None
    assert entry.fault.action == action


def test_a_file_journal_answers_only_what_it_committed(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    settings = ServerSettings(http_parser="httptools", journal_path=path)
    with CleverTapServer(settings) as ct, httpx.Client(timeout=10) as client:
        for i in range(20):
            answer = client.post(
                ct.urls.bounce,
                content=bounce(f"f{i}@example.com"),
                headers={"content-type": "application/json"},
            )
            assert answer.status_code == 200
            # Answered, so in the file: another connection to it sees the entry.
            with SQLiteJournal(path) as other:
                assert other.count(Kind.CALLBACK) == i + 1


def test_stopping_lets_a_delayed_callback_finish() -> None:
    settings = ServerSettings(http_parser="httptools", faults=(parse_fault("delay=500ms"),))
    ct = CleverTapServer(settings)
    ct.start_sync()
    try:
        with connect(ct) as sock:
            sock.sendall(post(settings.bounce_path, bounce("late@example.com")))
            time.sleep(0.1)
            stopping = time.monotonic()
            ct.stop_sync()
            ((status, _, _),) = responses(sock, 1)
    finally:
        if ct.running:
            ct.stop_sync()
    assert status == 200
    assert time.monotonic() - stopping >= 0.3


def test_http_parser_h11_serves_through_asgi_and_httptools_missing_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with CleverTapServer(ServerSettings(http_parser="h11")) as ct, connect(ct) as sock:
        sock.sendall(post(ct.settings.bounce_path, bounce("h11@example.com")))
        ((status, _, _),) = responses(sock, 1)
        assert status == 200
        assert not isinstance(protocol_of(ct, sock), FastProtocol)
    # Without httptools: "auto" falls back to h11, "httptools" is an error that says so.
    monkeypatch.setitem(sys.modules, "harness.clevertap.fastpath", None)
    with CleverTapServer() as ct:
        assert httpx.get(ct.urls.control + "/health").status_code == 200
    with pytest.raises(ServerError, match="http_parser='httptools' but httptools cannot"):
        CleverTapServer(ServerSettings(http_parser="httptools")).start_sync()


def test_a_bug_in_processing_is_a_500_with_a_json_body_and_a_logged_trace(
    ct: CleverTapServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from harness.clevertap import fastpath

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(fastpath, "process_callback", broken)
    with caplog.at_level("ERROR", "harness.clevertap"), connect(ct) as sock:
        sock.sendall(post(ct.settings.bounce_path, bounce("bug@example.com")))
        ((status, _, body),) = responses(sock, 1)
        monkeypatch.undo()
        sock.sendall(post(ct.settings.bounce_path, bounce("fine@example.com")))
        ((after, _, _),) = responses(sock, 1)  # the connection goes on
    assert (status, json.loads(body)["status"], after) == (500, "error", 200)
    assert b"a bug" not in body
    assert "RuntimeError: a bug" in caplog.text


def test_serve_http_parser_h11_says_so_and_serves() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "harness", "serve", "--http-parser", "h11"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first.rstrip().endswith("+ h11)"), first
            base = first.split()[3]
            answer = httpx.post(
                base + "/callbacks/bounce",
                content=bounce("cli@example.com"),
                headers={"content-type": "application/json"},
            )
            assert answer.status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err

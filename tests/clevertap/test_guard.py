"""The control API guard: web pages on the same machine cannot reach the loopback server's
control API (cross-site requests, DNS rebinding), while callbacks stay open to every client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from harness.clevertap.guard import ControlGuard
from harness.clevertap.server import CleverTapServer
from harness.journal import Kind
from harness.records import Callback

JSON = {"content-type": "application/json"}
BOUNCE = b'[{"event": "hardbounce", "data": [{"e": "gone@example.com", "ts": 1735689600}]}]'


@pytest.fixture
def journaled(ct: CleverTapServer) -> CleverTapServer:
    """The module's server with one callback journaled, so that a reset would show."""
    assert httpx.post(ct.urls.bounce, content=BOUNCE, headers=JSON).status_code == 200
    return ct


@pytest.fixture
def http(ct: CleverTapServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ct.url, timeout=10) as client:
        yield client


def _refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "error"
    assert reason in body["message"], body["message"]


def test_the_cross_site_reset_of_issue_14_is_refused_and_nothing_is_cleared(
    journaled: CleverTapServer, http: httpx.Client
) -> None:
    response = http.post(
        "/_harness/reset",
        content=b"x",
        headers={"origin": "http://evil.example", "content-type": "text/plain"},
    )
    _refused(
        response,
        f"Origin 'http://evil.example' is not this server's (http://127.0.0.1:{journaled.port})",
    )
    assert len(journaled.journal.entries(Kind.CALLBACK)) == 1


@pytest.mark.parametrize(
    ("method", "path", "content_type"),
    [
        ("POST", "/_harness/reset", None),
        ("POST", "/_harness/reset", "text/plain"),
        ("POST", "/_harness/reset", "application/x-www-form-urlencoded"),
        ("PUT", "/_harness/faults", "multipart/form-data; boundary=x"),
        ("DELETE", "/_harness/faults", None),
    ],
)
def test_state_changing_control_requests_must_be_json(
    journaled: CleverTapServer,
    http: httpx.Client,
    method: str,
    path: str,
    content_type: str | None,
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = http.request(method, path, content=b'{"rules": []}', headers=headers)
    seen = repr(content_type) if content_type else "none"
    _refused(response, f"{method} {path} needs Content-Type: application/json (seen {seen})")
    assert len(journaled.journal.entries(Kind.CALLBACK)) == 1


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
def test_json_control_requests_without_origin_pass(
    journaled: CleverTapServer, http: httpx.Client, content_type: str
) -> None:
    response = http.post("/_harness/reset", content=b"{}", headers={"content-type": content_type})
    assert response.status_code == 200
    assert journaled.journal.entries(Kind.CALLBACK) == []


@pytest.mark.parametrize(
    "origin", ["http://127.0.0.1:{port}", "http://localhost:{port}", "http://[::1]:{port}"]
)
def test_the_servers_own_origin_passes(
    ct: CleverTapServer, http: httpx.Client, origin: str
) -> None:
    response = http.get("/_harness/callbacks", headers={"origin": origin.format(port=ct.port)})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "origin",
    [
        "null",  # sandboxed frames, file: pages
        "http://127.0.0.1:1",  # another local port: another local web app
        "https://127.0.0.1:{port}",
        "http://evil.example:{port}",
        "http://127.0.0.1.evil.example:{port}",
    ],
)
def test_foreign_origins_are_refused_even_for_reads(
    ct: CleverTapServer, http: httpx.Client, origin: str
) -> None:
    shown = origin.format(port=ct.port)
    _refused(
        http.get("/_harness/callbacks", headers={"origin": shown}),
        f"Origin {shown!r} is not this server's",
    )


@pytest.mark.parametrize(
    "host", ["localhost:{port}", "127.0.0.1:{port}", "localhost", "[::1]:{port}"]
)
def test_loopback_host_headers_pass(ct: CleverTapServer, http: httpx.Client, host: str) -> None:
    response = http.get("/_harness/callbacks", headers={"host": host.format(port=ct.port)})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("path", "host"),
    [
        ("/_harness/callbacks", "evil.example:{port}"),  # DNS rebinding: a name, our address
        ("/_harness/health", "evil.example"),
        ("/docs", "localhost.evil.example:{port}"),
        ("/openapi.json", "127.0.0.1:1"),
        ("/_harness/callbacks", "user@127.0.0.1:{port}"),
    ],
)
def test_other_host_headers_are_refused_everywhere_but_callbacks(
    ct: CleverTapServer, http: httpx.Client, path: str, host: str
) -> None:
    shown = host.format(port=ct.port)
    _refused(
        http.get(path, headers={"host": shown}),
        f"Host {shown!r} is not this server (expected 127.0.0.1:{ct.port} or localhost:",
    )


@pytest.mark.parametrize("endpoint", ["bounce", "unsubscribe", "v2"])
def test_callbacks_stay_open_to_any_client_and_are_journaled(
    ct: CleverTapServer, http: httpx.Client, endpoint: str
) -> None:
    url = getattr(ct.urls, endpoint).removeprefix(ct.url)
    response = http.post(
        url,
        content=BOUNCE,
        headers={
            "host": "evil.example",
            "origin": "http://evil.example",
            "content-type": "text/plain",
        },
    )
    assert response.status_code != 403
    (entry,) = ct.journal.entries(Kind.CALLBACK)
    assert isinstance(entry.data, Callback)
    assert entry.data.content_type == "text/plain"


def test_a_server_bound_elsewhere_skips_the_host_check_only() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called")

    guard = ControlGuard(
        app, host="192.0.2.7", port=8080, control_prefix="/_harness", callback_paths=["/cb"]
    )

    def scope(method: str, headers: dict[str, str]) -> dict[str, object]:
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        return {"type": "http", "method": method, "path": "/_harness/reset", "headers": raw}

    assert guard.refusal(scope("GET", {"host": "harness.internal:8080"})) is None
    assert guard.refusal(scope("GET", {"origin": "http://192.0.2.7:8080"})) is None
    assert "Origin" in (guard.refusal(scope("GET", {"origin": "http://evil.example"})) or "")
    assert "Content-Type" in (guard.refusal(scope("POST", {"content-type": "text/plain"})) or "")

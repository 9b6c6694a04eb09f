"""The respx mock gives the verdicts of the real fake CleverTap, without a socket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx

from harness.clevertap.faults import parse_fault
from harness.clevertap.server import CleverTapServer
from harness.clevertap.settings import ServerSettings
from harness.errors import ConfigError, ExpectationError
from harness.journal import Journal, Kind
from harness.records import Callback, record_json
from harness.respx_mock import CleverTapMock

NOW = int(time.time())
JSON = "application/json"


def legacy(event: str, *items: dict[str, Any]) -> bytes:
    return json.dumps([{"event": event, "data": list(items)}]).encode()


def item(email: str, ts: Any = NOW) -> dict[str, Any]:
    return {"e": email, "ts": ts}


def v2(*items: dict[str, Any], version: Any = "v2") -> bytes:
    return json.dumps({"version": version, "events": {"failed": list(items)}}).encode()


def v2_item(email: str, kind: str = "hard_bounce", meta: Any = "m|1|") -> dict[str, Any]:
    return {"type": kind, "email": email, "meta": meta}


@dataclass(frozen=True)
class Req:
    name: str
    endpoint: str  # bounce | unsubscribe | v2 | a path
    body: bytes
    content_type: str | None = JSON
    method: str = "POST"


BIG_V2 = v2(*(v2_item(f"user{i}@example.com") for i in range(1001)))

# Sent in this order to one server and to one mock: the CT402 request repeats the first one.
SHARED = [
    Req("valid legacy bounce", "bounce", legacy("hardbounce", item("gone@example.com"))),
    Req("valid unsubscribe", "unsubscribe", legacy("unsubscribe", item("bye@example.com"))),
    Req("valid v2", "v2", v2(v2_item("b@example.com"))),
    Req("CT101 not JSON", "bounce", b'[{"event": "hardbounce",'),
    Req("CT101 empty", "bounce", b""),
    Req(
        "CT102 UTF-16",
        "bounce",
        legacy("hardbounce", item("u@example.com")).decode().encode("utf-16"),
    ),
    Req("CT103 text/plain", "bounce", legacy("hardbounce", item("t@example.com")), "text/plain"),
    Req("CT103 none", "bounce", legacy("softbounce", item("n@example.com")), None),
    Req(
        "CT104 charset",
        "bounce",
        legacy("softbounce", item("c@example.com")),
        JSON + "; charset=latin1",
    ),
    Req(
        "CT201 shape",
        "bounce",
        json.dumps({"event": "hardbounce", "data": [item("s@example.com")]}).encode(),
    ),
    Req("CT202 unknown event", "bounce", legacy("bounce", item("x@example.com"))),
    Req("CT203 wrong endpoint", "bounce", legacy("unsubscribe", item("w@example.com"))),
    Req("CT204 empty", "bounce", b"[]"),
    Req("CT205 missing ts", "bounce", legacy("hardbounce", {"e": "m@example.com"})),
    Req("CT205 v2 missing email", "v2", v2({"type": "hard_bounce", "meta": "m"})),
    Req("CT206 extra key", "bounce", legacy("hardbounce", {**item("k@example.com"), "why": 1})),
    Req("CT207 version", "v2", v2(v2_item("v@example.com"), version="2")),
    Req("CT301 address", "bounce", legacy("hardbounce", item("a@@example.com"))),
    Req("CT302 ts string", "bounce", legacy("hardbounce", item("s1@example.com", str(NOW)))),
    Req("CT303 ts ms", "bounce", legacy("hardbounce", item("ms@example.com", NOW * 1000))),
    Req("CT304 ts future", "bounce", legacy("hardbounce", item("f@example.com", NOW + 86400))),
    Req("CT305 ts old", "bounce", legacy("softbounce", item("o@example.com", NOW - 90 * 86400))),
    Req(
        "CT401 duplicate",
        "bounce",
        legacy("hardbounce", item("d@example.com"), item("D@example.com")),
    ),
    Req("CT402 resent", "bounce", legacy("hardbounce", item("gone@example.com"))),
    Req("CT403 v2 over 1000", "v2", BIG_V2),
    Req("CT404 meta", "v2", v2(v2_item("e@example.com", meta=""))),
    Req("GET is 405", "bounce", b"", method="GET"),
    Req("over the cap is 413", "bounce", b"[" + b" " * (1024 * 1024) + b"]"),
    Req("unknown path is 404", "/callbacks/bounc", legacy("hardbounce", item("p@example.com"))),
]

TIME_DEPENDENT = {"CT304", "CT305", "CT402"}
"""Their message, expected, seen and extra name seconds relative to the receive time."""


def normalise_violation(v: dict[str, Any]) -> dict[str, Any]:
    if v["code"] in TIME_DEPENDENT:
        return {k: v[k] for k in ("code", "severity", "path", "evidence") if k in v}
    return v


def normalise_body(text: str) -> Any:
    try:
        body = json.loads(text)
    except ValueError:
        return text
    if isinstance(body, dict) and "violations" in body:
        body["violations"] = [normalise_violation(v) for v in body["violations"]]
    return body


def normalise_entry(data: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k != "peer"}
    out["violations"] = [normalise_violation(v) for v in data["violations"]]
    return out


Url = Callable[[str], str]


def send_all(client: httpx.Client, url: Url, requests: list[Req]) -> list[tuple[int, Any]]:
    answers = []
    for req in requests:
        headers = {"content-type": req.content_type} if req.content_type is not None else {}
        answer = client.request(req.method, url(req.endpoint), content=req.body, headers=headers)
        answers.append((answer.status_code, normalise_body(answer.text)))
    return answers


def callbacks(journal: Journal) -> list[Callback]:
    records: list[Callback] = []
    for entry in journal.entries(Kind.CALLBACK):
        assert isinstance(entry.data, Callback)
        records.append(entry.data)
    return records


def journaled(journal: Journal) -> list[dict[str, Any]]:
    """The callback records in their JSON form (every field), for a field-by-field diff."""
    return [normalise_entry(record_json(r)) for r in callbacks(journal)]


def endpoint_url(base: str, urls: Any) -> Url:
    def url(endpoint: str) -> str:
        return getattr(urls, endpoint) if not endpoint.startswith("/") else base + endpoint

    return url


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
def test_same_payloads_same_verdicts_as_the_real_server(strict: bool) -> None:
    settings = ServerSettings(strict=strict)
    with CleverTapServer(settings) as server, httpx.Client(timeout=30) as client:
        by_server = send_all(client, endpoint_url(server.url, server.urls), SHARED)
        server_entries = journaled(server.journal)

    mock = CleverTapMock(settings=settings)
    by_mock: list[tuple[int, Any]] = []

    def through_the_mock() -> None:
        with mock, httpx.Client() as client:
            by_mock.extend(send_all(client, endpoint_url(mock.urls.base, mock.urls), SHARED))

    # The request to an unknown path is answered 404, and then fails the block.
    with pytest.raises(ExpectationError, match=r"^1 request to https://callbacks\.clevertap\.test"):
        through_the_mock()
    mock_entries = journaled(mock.journal)

    for req, a, b in zip(SHARED, by_server, by_mock, strict=True):
        assert a == b, req.name
    # Every request is journaled, the one to a wrong path too (endpoint None, 404).
    assert len(server_entries) == len(SHARED)
    for req, a, b in zip(SHARED, server_entries, mock_entries, strict=True):
        assert a == b, req.name
    stray = server_entries[-1]
    assert (stray["endpoint"], stray["path"], stray["status"]) == (None, "/callbacks/bounc", 404)
    assert by_server[-1][1]["did_you_mean"] == "/callbacks/bounce"
    # The shared set is worth something only if it covers every verdict.
    statuses = {status for status, _ in by_server}
    assert statuses == ({200, 400, 404, 405, 413} if strict else {200, 404, 405, 413})
    codes = {v["code"] for entry in server_entries for v in entry["violations"]}
    assert codes == {f"CT{n}" for n in (101, 102, 103, 104, 201, 202, 203, 204, 205, 206, 207)} | {
        f"CT{n}" for n in (301, 302, 303, 304, 305, 401, 402, 403, 404)
    }


def test_same_faults_same_outcomes_as_the_real_server() -> None:
    rules = [
        parse_fault("close,first=1"),
        parse_fault("503,retry_after=7,first=1"),
        parse_fault("reset,first=1,endpoints=v2"),
    ]
    bodies = [("bounce", legacy("hardbounce", item(f"r{i}@example.com"))) for i in range(3)]
    bodies += [("v2", v2(v2_item("v@example.com"))), ("v2", v2(v2_item("v@example.com")))]

    def run(client: httpx.Client, url: Url) -> list[Any]:
        outcomes: list[Any] = []
        for endpoint, body in bodies:
            try:
                answer = client.post(url(endpoint), content=body, headers={"content-type": JSON})
            except httpx.HTTPError as exc:
                outcomes.append(type(exc))
            else:
                outcomes.append(
                    (answer.status_code, answer.headers.get("retry-after"), answer.text)
                )
        return outcomes

    with CleverTapServer(ServerSettings(faults=tuple(rules))) as server, httpx.Client() as c:
        by_server = run(c, endpoint_url(server.url, server.urls))
        server_entries = journaled(server.journal)
    with CleverTapMock(settings=ServerSettings(faults=tuple(rules))) as mock, httpx.Client() as c:
        by_mock = run(c, endpoint_url(mock.urls.base, mock.urls))
    assert by_server == by_mock
    assert by_mock[:2] == [httpx.RemoteProtocolError, (503, "7", by_mock[1][2])]
    assert by_mock[3] is httpx.ReadError
    assert [o[0] for o in by_mock if isinstance(o, tuple)] == [503, 200, 200]
    assert server_entries == journaled(mock.journal)
    assert [r.fault.action if r.fault else None for r in callbacks(mock.journal)] == [
        "close",
        "status",
        None,
        "reset",
        None,
    ]


def test_expect_helpers_on_the_mock() -> None:
    with CleverTapMock() as ct:
        httpx.post(ct.urls.bounce, json=[{"event": "hardbounce", "data": [item("g@example.com")]}])
        entry = ct.expect_callback("hardbounce", "g@example.com", within=0)
        assert isinstance(entry.data, Callback)
        assert entry.data.peer is None
        assert entry.data.status == 200
        ct.expect_no_callbacks(email="other@example.com")
        ct.expect_no_violations()
        with pytest.raises(ExpectationError, match="same address, other event"):
            ct.expect_callback("softbounce", "g@example.com", within=0)
        httpx.post(ct.urls.bounce, json=[{"event": "hardbounce", "data": [item("g@example.com")]}])
        assert [v.code for v in ct.violations()] == ["CT402"]


def test_decorator_sync_and_async() -> None:
    ct = CleverTapMock(strict=False, allow_violations=True)

    @ct
    def send() -> int:
        return httpx.post(ct.urls.bounce, json=[{"event": "bounce", "data": []}]).status_code

    @ct
    async def send_async() -> int:
        async with httpx.AsyncClient() as client:
            answer = await client.post(ct.urls.v2, json={"version": "v2", "events": {}})
        return answer.status_code

    assert send() == 200  # lenient: errors are journaled, not refused
    assert asyncio.run(send_async()) == 200
    assert [r.endpoint for r in callbacks(ct.journal)] == ["bounce", "v2"]


def test_a_delayed_answer_does_not_block_the_event_loop() -> None:
    async def main() -> list[str]:
        done: list[str] = []
        async with CleverTapMock() as ct, httpx.AsyncClient() as client:
            ct.set_faults(parse_fault("delay=0.5,first=1"))

            async def post(name: str, email: str) -> None:
                body = [{"event": "hardbounce", "data": [item(email)]}]
                answer = await client.post(ct.urls.bounce, json=body)
                assert answer.status_code == 200
                done.append(name)

            first = asyncio.ensure_future(post("delayed", "slow@example.com"))
            await asyncio.sleep(0)
            await post("prompt", "fast@example.com")
            await first
        return done

    # The delayed request was sent first and journaled first, yet answered last.
    assert asyncio.run(main()) == ["prompt", "delayed"]


def test_a_path_prefix_and_custom_paths() -> None:
    settings = ServerSettings(bounce_path="/hooks/b", unsubscribe_path="/hooks/u", v2_path="/v2")
    with CleverTapMock("http://ct.test:8080/tenant/", settings=settings) as ct:
        assert ct.urls.bounce == "http://ct.test:8080/tenant/hooks/b"
        assert ct.urls.v2 == "http://ct.test:8080/tenant/v2"
        answer = httpx.post(
            ct.urls.bounce, json=[{"event": "hardbounce", "data": [item("a@x.io")]}]
        )
        assert answer.json() == {"status": "success", "accepted": 1}
        assert callbacks(ct.journal)[0].path == "/tenant/hooks/b"


def test_a_router_of_your_own_keeps_its_routes() -> None:
    with respx.mock(assert_all_called=False) as router:
        router.get("https://api.example.test/ping").respond(204)
        ct = CleverTapMock(router=router)
        with ct:
            assert httpx.get("https://api.example.test/ping").status_code == 204
            answer = httpx.post(ct.urls.unsubscribe, json=[{"event": "unsubscribe", "data": []}])
            assert answer.status_code == 200
        assert callbacks(ct.journal)[0].codes == ("CT204",)


def test_the_block_own_error_wins_over_unmatched_requests() -> None:
    def failing_block() -> None:
        with CleverTapMock() as ct:
            httpx.post(ct.urls.base + "/nope", json=[])
            raise KeyError("the test's own failure")

    with pytest.raises(KeyError):
        failing_block()


def test_unmatched_requests_are_listed_with_a_suggestion() -> None:
    ct = CleverTapMock()

    def block() -> None:
        with ct:
            assert httpx.post(ct.urls.base + "/callbacks/v3", json={}).status_code == 404
            assert httpx.get(ct.urls.base + "/_harness/health").status_code == 404

    with pytest.raises(ExpectationError) as info:
        block()
    assert str(info.value).splitlines() == [
        "2 requests to https://callbacks.clevertap.test matched no callback URL (answered 404):",
        "  POST https://callbacks.clevertap.test/callbacks/v3; did you mean '/callbacks/v2' or "
        "'/callbacks/bounce'?",
        "  GET https://callbacks.clevertap.test/_harness/health",
        "the callback URLs: https://callbacks.clevertap.test/callbacks/bounce, "
        "https://callbacks.clevertap.test/callbacks/unsubscribe, "
        "https://callbacks.clevertap.test/callbacks/v2",
    ]
    assert ct.unmatched == []
    # The wrong callback path is journaled as the server journals it; the control prefix is not.
    assert [(r.endpoint, r.path, r.status) for r in callbacks(ct.journal)] == [
        (None, "/callbacks/v3", 404)
    ]


def test_a_wrong_path_under_a_base_path_names_the_prefixed_callback_path() -> None:
    ct = CleverTapMock("http://ct.test/tenant")
    ct.start()
    answer = httpx.post(ct.urls.base + "/callbacks/bounce/", json=[])
    assert answer.status_code == 404
    assert answer.json()["did_you_mean"] == "/tenant/callbacks/bounce"
    with pytest.raises(ExpectationError, match="did you mean '/tenant/callbacks/bounce'"):
        ct.stop()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "ftp://x.test"}, "base_url must be an http:// or https:// URL with a host"),
        ({"base_url": "https://x.test/?a=1"}, "base_url must have no query or fragment"),
        ({"strict": "yes"}, "strict must be True, False or None, got 'yes'"),
        ({"settings": {"strict": True}}, "settings must be a ServerSettings"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CleverTapMock(**kwargs)


def test_strict_overrides_the_settings_and_reset_clears_everything() -> None:
    ct = CleverTapMock(strict=False, settings=ServerSettings(faults=(parse_fault("503,first=1"),)))
    assert ct.settings.strict is False
    with ct:
        assert httpx.post(ct.urls.bounce, json=[]).status_code == 503
        ct.reset()
        assert ct.journal.entries() == []
        assert httpx.post(ct.urls.bounce, json=[]).status_code == 503  # counters start again
        assert httpx.post(ct.urls.bounce, json=[]).status_code == 200


def test_error_violations_fail_the_block_on_exit_unless_allowed() -> None:
    ms = [{"event": "hardbounce", "data": [{"e": "a@example.com", "ts": 1_700_000_000_000}]}]

    def block(**options: Any) -> CleverTapMock:
        with CleverTapMock(strict=False, **options) as ct:
            assert httpx.post(ct.urls.bounce, json=ms).status_code == 200  # lenient
        return ct

    with pytest.raises(ExpectationError) as info:
        block()
    lines = str(info.value).splitlines()
    assert lines[0] == "error-level check violations were recorded while the mock ran:"
    assert "CT303" in info.value.args[0]
    assert lines[-1] == "(opt out with CleverTapMock(allow=[...]) or allow_violations=True)"
    assert block(allow=["CT303"]).violations()[0].code == "CT303"
    assert block(allow="CT303").allow == {"CT303"}
    block(allow_violations=True)


def test_the_exit_check_reads_only_what_came_after_the_block_started() -> None:
    ms = [{"event": "hardbounce", "data": [{"e": "a@example.com", "ts": 1_700_000_000_000}]}]
    ct = CleverTapMock(strict=False, allow=["CT303"])
    with ct:
        httpx.post(ct.urls.bounce, json=ms)
    ct.allow = frozenset()
    with ct:  # the earlier violation is not this block's
        pass

"""The control API (/_harness) of the fake CleverTap, over real HTTP."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from harness.clevertap.faults import parse_fault
from harness.clevertap.server import CleverTapServer
from harness.clevertap.settings import ServerSettings
from harness.journal import Kind
from harness.records import Callback, FaultsChanged, record_json

NOW = int(time.time())
JSON = {"content-type": "application/json"}


def legacy(event: str, *emails: str) -> bytes:
    return json.dumps([{"event": event, "data": [{"e": e, "ts": NOW} for e in emails]}]).encode()


@pytest.fixture
def client(ct: CleverTapServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ct.urls.control, timeout=10) as c:
        yield c


def post(ct: CleverTapServer, url: str, body: bytes) -> int:
    return httpx.post(url, content=body, headers=JSON).status_code


@pytest.fixture
def three(ct: CleverTapServer) -> list[int]:
    """A soft bounce, an unsubscribe and a non-JSON body; returns their journal seqs."""
    assert post(ct, ct.urls.bounce, legacy("softbounce", "Full@Example.com")) == 200
    assert post(ct, ct.urls.unsubscribe, legacy("unsubscribe", "bye@example.com")) == 200
    assert post(ct, ct.urls.bounce, b"nope") == 400
    return [e.seq for e in ct.journal.entries(Kind.CALLBACK)]


def seqs(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [c["seq"] for c in response.json()["callbacks"]]


def test_health(ct: CleverTapServer, client: httpx.Client, three: list[int]) -> None:
    assert client.get("/health").json() == {
        "status": "ok",
        "callbacks": 3,
        "last_seq": ct.journal.last_seq,
        "strict": True,
        "paths": {
            "bounce": "/callbacks/bounce",
            "unsubscribe": "/callbacks/unsubscribe",
            "v2": "/callbacks/v2",
        },
        "journal_write_failures": 0,
    }


def test_list_callbacks_with_filters(client: httpx.Client, three: list[int]) -> None:
    bounce, unsub, garbage = three
    assert seqs(client.get("/callbacks")) == [bounce, unsub, garbage]
    assert seqs(client.get("/callbacks", params={"event": "softbounce"})) == [bounce]
    assert seqs(client.get("/callbacks", params={"address": "full@example.COM"})) == [bounce]
    assert seqs(client.get("/callbacks", params={"address": "nobody@example.com"})) == []
    assert seqs(client.get("/callbacks", params={"code": "CT101"})) == [garbage]
    assert seqs(client.get("/callbacks", params={"endpoint": "unsubscribe"})) == [unsub]
    assert seqs(client.get("/callbacks", params={"since": bounce})) == [unsub, garbage]
    assert seqs(client.get("/callbacks", params={"limit": 1})) == [bounce]
    assert seqs(client.get("/callbacks", params={"status": "accepted"})) == [bounce, unsub]
    assert seqs(client.get("/callbacks", params={"status": "rejected"})) == [garbage]
    assert seqs(client.get("/callbacks", params={"status": "any"})) == [bounce, unsub, garbage]
    # event and address must match the same event
    both = {"event": "unsubscribe", "address": "full@example.com"}
    assert seqs(client.get("/callbacks", params=both)) == []


def test_listed_callback_is_the_journal_entry(
    ct: CleverTapServer, client: httpx.Client, three: list[int]
) -> None:
    page = client.get("/callbacks", params={"since": three[0] - 1, "limit": 1}).json()
    assert page["last_seq"] == ct.journal.last_seq
    entry = ct.journal.entries(Kind.CALLBACK)[0]
    assert isinstance(entry.data, Callback)
    assert page["callbacks"] == [
        {"seq": entry.seq, "at": entry.at, "data": record_json(entry.data)}
    ]
    # The documented JSON form: field names, events as [event, email, ts, meta] arrays.
    data = page["callbacks"][0]["data"]
    assert (data["endpoint"], data["status"], data["format"]) == ("bounce", 200, "legacy")
    assert data["events"] == [["softbounce", "Full@Example.com", NOW, None]]


def test_bad_filter_values_get_422(client: httpx.Client) -> None:
    response = client.get("/callbacks", params={"endpoint": "bounces"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "endpoint"]
    assert client.get("/callbacks", params={"since": -1}).status_code == 422


def test_list_violations_with_filters(client: httpx.Client, three: list[int]) -> None:
    garbage = three[2]
    listed = client.get("/violations", params={"code": "CT101"}).json()["violations"]
    assert len(listed) == 1
    assert listed[0]["seq"] == garbage
    assert listed[0]["endpoint"] == "bounce"
    assert listed[0]["violation"]["code"] == "CT101"
    assert listed[0]["violation"]["severity"] == "error"
    errors = client.get("/violations", params={"severity": "error"}).json()["violations"]
    assert {v["seq"] for v in errors} == {garbage}
    on_unsub = client.get("/violations", params={"endpoint": "unsubscribe"}).json()
    assert on_unsub["violations"] == []
    # The refused garbage is the only flagged one: none was accepted.
    refused = client.get("/violations", params={"status": "rejected"}).json()["violations"]
    assert {v["seq"] for v in refused} == {garbage}
    assert client.get("/violations", params={"status": "accepted"}).json()["violations"] == []


def test_wait_returns_a_callback_already_there(client: httpx.Client, three: list[int]) -> None:
    response = client.get("/wait", params={"event": "unsubscribe", "address": "bye@example.com"})
    assert response.status_code == 200
    assert response.json()["seq"] == three[1]


def test_wait_returns_a_callback_that_arrives_during_the_wait(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    # The callback is sent once the long poll is known to be waiting: the journal subscription
    # made by wait_for_async shows up as a listener.
    def send_when_waiting() -> None:
        deadline = time.monotonic() + 10
        while not ct.journal._listeners and time.monotonic() < deadline:
            time.sleep(0.005)
        post(ct, ct.urls.bounce, legacy("hardbounce", "late@example.com"))

    sender = threading.Thread(target=send_when_waiting)
    sender.start()
    params = {"event": "hardbounce", "address": "late@example.com", "timeout": 20}
    response = client.get("/wait", params=params)
    sender.join()
    assert response.status_code == 200
    assert response.json()["data"]["events"] == [["hardbounce", "late@example.com", NOW, None]]


def test_wait_times_out_with_408_and_a_reason(ct: CleverTapServer, client: httpx.Client) -> None:
    params = {"event": "softbounce", "address": "x@example.com", "timeout": 0.05}
    response = client.get("/wait", params=params)
    assert response.status_code == 408
    assert response.json() == {
        "detail": "no callback matching event='softbounce', address='x@example.com', "
        "status='accepted' after seq 0 within 0.05 s",
        "last_seq": ct.journal.last_seq,
    }


def test_wait_counts_only_accepted_callbacks_unless_told(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    ct.set_faults(parse_fault("503,first=1"))
    assert post(ct, ct.urls.bounce, legacy("hardbounce", "h@example.com")) == 503
    (refused,) = ct.journal.entries(Kind.CALLBACK)
    params: dict[str, str | float] = {"event": "hardbounce", "timeout": 0.05}
    assert client.get("/wait", params=params).status_code == 408
    response = client.get("/wait", params={**params, "status": "rejected"})
    assert (response.status_code, response.json()["seq"]) == (200, refused.seq)
    assert client.get("/wait", params={**params, "status": "any"}).json()["seq"] == refused.seq
    # The resend that is accepted is what the default wait returns.
    assert post(ct, ct.urls.bounce, legacy("hardbounce", "h@example.com")) == 200
    accepted = client.get("/wait", params=params).json()
    assert (accepted["seq"], accepted["data"]["status"]) == (ct.journal.last_seq, 200)


def test_wait_since_skips_older_callbacks(client: httpx.Client, three: list[int]) -> None:
    params = {"event": "softbounce", "since": three[0], "timeout": 0.05}
    assert client.get("/wait", params=params).status_code == 408


def test_stopping_ends_a_long_poll_with_503() -> None:
    ct = CleverTapServer()
    ct.start_sync()
    result: list[httpx.Response] = []

    def poll() -> None:
        result.append(httpx.get(ct.urls.control + "/wait", params={"timeout": 60}, timeout=30))

    poller = threading.Thread(target=poll)
    poller.start()
    deadline = time.monotonic() + 10
    while not ct.journal._listeners and time.monotonic() < deadline:
        time.sleep(0.005)
    ct.stop_sync()
    poller.join(10)
    assert result[0].status_code == 503
    assert result[0].json()["detail"] == "the server is stopping"


def test_reset_clears_journal_duplicates_and_fault_counters(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    body = legacy("hardbounce", "twice@example.com")
    assert post(ct, ct.urls.bounce, body) == 200
    assert post(ct, ct.urls.bounce, body) == 200
    first, again = ct.journal.entries(Kind.CALLBACK)
    assert isinstance(first.data, Callback)
    assert isinstance(again.data, Callback)
    assert first.data.violations == ()
    assert again.data.codes == ("CT402",)  # resent: a duplicate
    ct.set_faults(parse_fault("503,first=1"))
    assert post(ct, ct.urls.v2, b"{}") == 503
    assert client.get("/faults").json()["rules"][0]["applied"] == 1

    response = client.post("/reset", json={})  # JSON: see the guard (test_guard.py)
    assert response.json() == {"status": "reset", "last_seq": ct.journal.last_seq}
    assert client.get("/callbacks").json()["callbacks"] == []
    assert client.get("/faults").json()["rules"][0]["applied"] == 0
    assert post(ct, ct.urls.v2, b"{}") == 503  # the rule is armed again
    assert post(ct, ct.urls.bounce, body) == 200
    (_, after) = ct.journal.entries(Kind.CALLBACK)
    assert isinstance(after.data, Callback)
    assert after.data.violations == ()  # not a duplicate any more


def test_faults_can_be_read_set_and_removed(ct: CleverTapServer, client: httpx.Client) -> None:
    rules = [{"action": "status", "status": 429, "retry_after": 5, "first": 1}]
    response = client.put("/faults", json={"rules": rules})
    assert response.status_code == 200
    assert response.json() == {
        "rules": [
            {
                "action": "status",
                "status": 429,
                "retry_after": 5,
                "delay": 0.0,
                "first": 1,
                "probability": None,
                "seed": 0,
                "endpoints": None,
                "seen": 0,
                "applied": 0,
            }
        ]
    }
    answer = httpx.post(ct.urls.bounce, content=legacy("softbounce", "a@example.com"))
    assert (answer.status_code, answer.headers["retry-after"]) == (429, "5")
    assert client.get("/faults").json()["rules"][0]["applied"] == 1
    assert client.request("DELETE", "/faults", headers=JSON).json() == {"rules": []}
    assert ct.faults.rules == []
    changes = [e.data for e in ct.journal.entries(Kind.FAULTS)]
    assert changes == [
        FaultsChanged(rules=("429,retry_after=5,first=1",)),
        FaultsChanged(rules=()),
    ]


def test_invalid_fault_rules_get_422_naming_the_field(client: httpx.Client) -> None:
    response = client.put("/faults", json={"rules": [{"action": "status"}]})
    assert response.status_code == 422
    assert "action 'status' needs a status" in response.json()["detail"][0]["msg"]
    response = client.put("/faults", json={"rules": [{"action": "status", "status": 200}]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "rules", 0, "status"]


def test_a_bad_body_with_a_lone_surrogate_gets_422_not_500(client: httpx.Client) -> None:
    # Found by the HTTP fuzz: FastAPI echoes the bad input in its 422 and could not encode it.
    body = b'{"rules": [{"action": "\\ud800"}]}'
    response = client.put("/faults", content=body, headers=JSON)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"][:3] == ["body", "rules", 0]
    assert "\\ud800" in json.dumps(error)


def test_openapi_docs_list_the_control_api(ct: CleverTapServer) -> None:
    assert httpx.get(ct.url + "/docs").status_code == 200
    paths = httpx.get(ct.url + "/openapi.json").json()["paths"]
    assert {"/_harness/callbacks", "/_harness/wait", "/_harness/faults"} <= paths.keys()
    assert "408" in paths["/_harness/wait"]["get"]["responses"]


def test_openapi_lists_the_callback_endpoints_with_both_formats(ct: CleverTapServer) -> None:
    doc = httpx.get(ct.url + "/openapi.json").json()
    schemas = doc["components"]["schemas"]
    bodies = {}
    for path in ("/callbacks/bounce", "/callbacks/unsubscribe", "/callbacks/v2"):
        post = doc["paths"][path]["post"]
        content = post["requestBody"]["content"]["application/json"]
        bodies[path] = content["schema"]["$ref"].rsplit("/", 1)[1]
        assert {"200", "400", "405", "413", "503"} <= post["responses"].keys()
        # The documented example is a payload the server accepts (a real request).
        answer = httpx.post(ct.url + path, json=content["example"])
        assert answer.status_code == 200, answer.text
    assert bodies == {
        "/callbacks/bounce": "LegacyPayload",
        "/callbacks/unsubscribe": "LegacyPayload",
        "/callbacks/v2": "V2Payload",
    }
    # The payload models' own schemas, with every reference resolvable in the document.
    assert schemas["V2Item"]["properties"]["meta"]["minLength"] == 1
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs <= schemas.keys()
    # Still served on the fast path: the callbacks are not FastAPI routes.
    assert not any(getattr(r, "path", "") == "/callbacks/v2" for r in ct.app.routes)


def test_swagger_ui_and_redoc_load_only_local_assets(ct: CleverTapServer) -> None:
    with httpx.Client(base_url=ct.url, timeout=10) as http:
        for page in ("/docs", "/redoc"):
            html = http.get(page)
            assert html.status_code == 200
            urls = re.findall(r'(?:src|href)="([^"]+)"', html.text)
            assert urls, page
            # Nothing from a CDN or Google Fonts: every asset is the server's own.
            assert all(u.startswith("/static/docs/") for u in urls), urls
            for url in urls:
                asset = http.get(url)
                assert asset.status_code == 200, url
                assert len(asset.content) > 1000 or url.endswith(".png"), url
            assert "https://" not in html.text
            # And the browser is told to fetch nothing from elsewhere (ReDoc's CDN logo).
            assert "default-src 'self'" in html.headers["content-security-policy"]


def test_a_token_guards_everything_but_health() -> None:
    with CleverTapServer(ServerSettings(token="s3cret")) as ct:
        base = ct.urls.control
        assert httpx.get(base + "/health").status_code == 200
        refused = httpx.get(base + "/callbacks")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        wrong = httpx.get(base + "/callbacks", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = httpx.post(base + "/reset", headers={"authorization": "Bearer s3cret", **JSON})
        assert right.status_code == 200
        # callbacks themselves never need the token (CleverTap's callback auth is not public)
        body = legacy("softbounce", "a@example.com")
        assert httpx.post(ct.urls.bounce, content=body, headers=JSON).status_code == 200

"""The fake CleverTap's callback endpoints, over real HTTP to uvicorn on 127.0.0.1."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner

from harness.checks import Violation
from harness.clevertap.inspect import CheckConfig
from harness.clevertap.server import CleverTapServer
from harness.clevertap.settings import ServerSettings
from harness.cli import main
from harness.errors import ConfigError, ServerError
from harness.journal import Kind
from harness.records import Callback, CallbackEvent, record_from_json

NOW = int(time.time())
JSON = {"content-type": "application/json"}


def legacy(event: str, *emails: str) -> bytes:
    data = [{"e": e, "ts": NOW} for e in emails]
    return json.dumps([{"event": event, "data": data}]).encode()


def v2(*items: tuple[str, str]) -> bytes:
    success = [{"type": t, "email": e, "meta": f"{e}|1|2|"} for t, e in items]
    return json.dumps({"version": "v2", "events": {"success": success}}).encode()


def callbacks(ct: CleverTapServer) -> list[Callback]:
    records: list[Callback] = []
    for entry in ct.journal.entries(Kind.CALLBACK):
        assert isinstance(entry.data, Callback)
        records.append(entry.data)
    return records


def only_callback(ct: CleverTapServer) -> Callback:
    records = callbacks(ct)
    assert len(records) == 1, records
    return records[0]


def test_binds_loopback_on_a_real_port(ct: CleverTapServer) -> None:
    assert ct.port > 0
    assert ct.url == f"http://127.0.0.1:{ct.port}"
    assert ct.urls.bounce == f"{ct.url}/callbacks/bounce"
    assert ct.urls.unsubscribe == f"{ct.url}/callbacks/unsubscribe"
    assert ct.urls.v2 == f"{ct.url}/callbacks/v2"
    assert ct.urls.control == f"{ct.url}/_harness"


def test_legacy_bounce_is_accepted_and_journaled_once(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    body = legacy("softbounce", "full@example.com", "other@example.com")
    response = client.post(ct.urls.bounce, content=body, headers=JSON)
    assert response.status_code == 200
    assert response.content == b'{"status":"success","accepted":2}'
    record = only_callback(ct)
    peer = record.peer
    assert peer is not None
    assert peer.startswith("127.0.0.1:")
    # Every field: the ones not listed keep their defaults (method POST, no fault, ...).
    assert record == record_from_json(
        Kind.CALLBACK,
        {
            "endpoint": "bounce",
            "path": "/callbacks/bounce",
            "peer": peer,
            "content_type": "application/json",
            "size": len(body),
            "body": body.decode(),
            "format": "legacy",
            "events": [
                ["softbounce", "full@example.com", NOW, None],
                ["softbounce", "other@example.com", NOW, None],
            ],
            "violations": [],
            "status": 200,
        },
    )
    assert record.accepted
    assert record.remembered


def test_unsubscribe_endpoint(ct: CleverTapServer, client: httpx.Client) -> None:
    body = legacy("unsubscribe", "bye@example.com")
    response = client.post(ct.urls.unsubscribe, content=body, headers=JSON)
    assert response.json() == {"status": "success", "accepted": 1}
    record = only_callback(ct)
    assert record.endpoint == "unsubscribe"
    assert record.events == (CallbackEvent("unsubscribe", "bye@example.com", NOW, None),)


def test_v2_success_body(ct: CleverTapServer, client: httpx.Client) -> None:
    response = client.post(ct.urls.v2, content=v2(("delivered", "ok@example.com")), headers=JSON)
    assert response.status_code == 200
    assert response.json() == {"status": "success", "message": "Callback processed successfully"}
    record = only_callback(ct)
    assert record.format == "v2"
    assert record.events == (
        CallbackEvent("delivered", "ok@example.com", None, "ok@example.com|1|2|"),
    )


def test_non_json_body_is_rejected_with_ct101(ct: CleverTapServer, client: httpx.Client) -> None:
    response = client.post(ct.urls.bounce, content=b"not json", headers=JSON)
    assert response.status_code == 400
    answer = response.json()
    assert answer["status"] == "error"
    assert answer["message"] == "invalid payload"
    assert "CT101" in {v["code"] for v in answer["violations"]}
    record = only_callback(ct)
    assert record.status == 400
    assert not record.accepted
    assert record.format is None
    assert record.body == "not json"
    assert list(record.violations) == [Violation.from_json(v) for v in answer["violations"]]
    assert [v.to_json() for v in record.violations] == answer["violations"]


def test_v2_invalid_json_uses_the_documented_message(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    response = client.post(ct.urls.v2, content=b"{", headers=JSON)
    assert (response.status_code, response.json()["message"]) == (400, "invalid payload")


def test_v2_without_version_is_mandatory_parameter_missing(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    body = json.dumps({"events": {"success": []}}).encode()
    response = client.post(ct.urls.v2, content=body, headers=JSON)
    assert response.status_code == 400
    assert response.json()["message"] == "Mandatory parameter missing"
    assert only_callback(ct).status == 400


def test_v2_over_the_event_limit(client: httpx.Client) -> None:
    settings = ServerSettings(checks=CheckConfig(max_v2_events=2))
    with CleverTapServer(settings) as ct:
        three = v2(*(("delivered", f"u{i}@example.com") for i in range(3)))
        response = client.post(ct.urls.v2, content=three, headers=JSON)
        assert response.status_code == 400
        assert response.json()["message"] == "More than allowed events were sent"
        two = v2(*(("delivered", f"u{i}@example.com") for i in range(2)))
        assert client.post(ct.urls.v2, content=two, headers=JSON).status_code == 200


def test_lenient_answers_200_and_still_records_violations(client: httpx.Client) -> None:
    with CleverTapServer(ServerSettings(strict=False)) as ct:
        response = client.post(ct.urls.bounce, content=b"not json", headers=JSON)
        assert response.status_code == 200
        assert response.json() == {"status": "success", "accepted": 0}
        record = only_callback(ct)
        assert record.status == 200
        assert "CT101" in record.codes


def test_undecodable_body_is_journaled_as_base64(ct: CleverTapServer, client: httpx.Client) -> None:
    raw = b"\xff\xfe[garbage\x00"
    response = client.post(ct.urls.bounce, content=raw, headers=JSON)
    assert response.status_code == 400
    record = only_callback(ct)
    assert record.body_base64 is True
    assert base64.b64decode(record.body) == raw
    assert record.size == len(raw)


def test_body_over_the_cap_gets_413_and_is_journaled_truncated(client: httpx.Client) -> None:
    with CleverTapServer(ServerSettings(max_body=100)) as ct:
        body = legacy("softbounce", *(f"user{i}@example.com" for i in range(10)))
        response = client.post(ct.urls.bounce, content=body, headers=JSON)
        assert response.status_code == 413
        assert response.json() == {
            "status": "error",
            "message": "payload too large",
            "limit": 100,
            "size": len(body),
        }

        # The same body streamed in chunks (no Content-Length): the real size is still counted.
        def chunks() -> Iterator[bytes]:
            for start in range(0, len(body), 10):
                yield body[start : start + 10]

        streamed = client.post(ct.urls.bounce, content=chunks(), headers=JSON)
        assert streamed.status_code == 413
        # The connection stays usable: the whole body was read.
        ok = client.post(
            ct.urls.bounce, content=legacy("softbounce", "a@example.com"), headers=JSON
        )
        assert ok.status_code == 200

        first, second, third = callbacks(ct)
        for record in (first, second):
            assert record.status == 413
            assert record.truncated is True
            assert record.size == len(body)
            assert record.body == body[:100].decode()
            assert record.violations == ()
            assert not record.remembered  # to be resent: the resend is no duplicate
        assert third.truncated is False
        assert third.body == legacy("softbounce", "a@example.com").decode()


def test_wrong_method_gets_405_and_is_journaled(ct: CleverTapServer, client: httpx.Client) -> None:
    response = client.get(ct.urls.bounce)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    record = only_callback(ct)
    assert (record.method, record.status) == ("GET", 405)


@pytest.mark.parametrize(
    ("path", "meant"),
    [
        ("/callbacks/bounc", "/callbacks/bounce"),
        ("/callbacks/bounce/", "/callbacks/bounce"),
        ("/callbacks/V2", "/callbacks/v2"),
        ("/hooks/clevertap", None),
    ],
)
def test_a_wrong_path_is_journaled_and_answered_404_with_the_nearest_path(
    ct: CleverTapServer, client: httpx.Client, path: str, meant: str | None
) -> None:
    # Staging must see a callback posted to a mistyped URL: journaled, never accepted.
    body = legacy("hardbounce", "gone@example.com")
    answer = client.post(ct.url + path, content=body, headers=JSON)
    assert answer.status_code == 404
    found = answer.json()
    assert (found["status"], found["path"], found["did_you_mean"]) == ("error", path, meant)
    assert found["callback_paths"] == {
        "bounce": "/callbacks/bounce",
        "unsubscribe": "/callbacks/unsubscribe",
        "v2": "/callbacks/v2",
    }
    hint = f"did you mean {meant}?" if meant else "the callback paths are /callbacks/bounce, "
    assert hint in found["message"]
    record = only_callback(ct)
    assert (record.endpoint, record.path, record.status, record.method) == (None, path, 404, "POST")
    assert (record.body, record.content_type, record.size) == (
        body.decode(),
        JSON["content-type"],
        len(body),
    )
    assert not record.accepted
    assert (record.events, record.format) == ((), None)
    # Not a callback of any endpoint: nothing waits for it, the listing shows it as refused.
    listed = client.get(ct.urls.control + "/callbacks", params={"status": "rejected"}).json()
    assert [c["data"]["path"] for c in listed["callbacks"]] == [path]
    assert (
        client.get(ct.urls.control + "/callbacks", params={"status": "accepted"}).json()[
            "callbacks"
        ]
        == []
    )


def test_every_method_on_a_wrong_path_is_journaled_but_the_control_api_is_not(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    assert client.get(ct.url + "/callback/bounce").status_code == 404
    assert client.put(ct.url + "/callbacks/bounce/", content=b"x").status_code == 404
    # The control API's own unknown paths stay plain 404s; its pages and the docs are served.
    nope = client.post(ct.urls.control + "/nope", json={})
    assert (nope.status_code, nope.json()) == (404, {"detail": "Not Found"})
    assert client.get(ct.url + "/docs").status_code == 200
    assert [(r.method, r.path) for r in callbacks(ct)] == [
        ("GET", "/callback/bounce"),
        ("PUT", "/callbacks/bounce/"),
    ]


def test_a_wrong_path_from_a_web_page_is_journaled_like_a_callback(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    # The guard refuses foreign origins on the control API and the pages, not where a
    # mistyped callback URL lands (as for the callback endpoints themselves).
    foreign = {"origin": "http://evil.example", **JSON}
    assert (
        client.post(ct.url + "/callbacks/bounc", content=b"[]", headers=foreign).status_code == 404
    )
    assert client.get(ct.url + "/checks", headers=foreign).status_code == 403
    assert [r.path for r in callbacks(ct)] == ["/callbacks/bounc"]


def test_custom_paths(client: httpx.Client) -> None:
    settings = ServerSettings(bounce_path="/ct/b", unsubscribe_path="/ct/u", v2_path="/ct/v2")
    with CleverTapServer(settings) as ct:
        assert ct.urls.bounce.endswith("/ct/b")
        body = legacy("hardbounce", "gone@example.com")
        assert client.post(ct.url + "/ct/b", content=body, headers=JSON).status_code == 200
        assert client.post(ct.url + "/callbacks/bounce", content=body).status_code == 404


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"host": "0.0.0.0"}, "not a loopback address: set a token"),
        ({"bounce_path": "bounce"}, "bounce_path must start with '/'"),
        ({"v2_path": "/callbacks/bounce"}, "callback paths must differ"),
        ({"bounce_path": "/_harness/b"}, "lies under control_prefix"),
        ({"max_body": 0}, "max_body must be at least 1 byte, got 0"),
        ({"port": 70000}, "port must be between 0 and 65535, got 70000"),
    ],
)
def test_bad_settings_are_named(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerSettings(**changes)  # type: ignore[arg-type]


def test_non_loopback_host_is_allowed_with_a_token() -> None:
    assert ServerSettings(host="0.0.0.0", token="s3cret").token == "s3cret"


def test_port_before_start_is_an_error() -> None:
    with pytest.raises(ServerError, match="not running: start it first"):
        _ = CleverTapServer().port


def test_a_port_in_use_is_a_server_error_with_its_cause() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = CleverTapServer(ServerSettings(port=port))
        with pytest.raises(ServerError, match=f"cannot listen on 127.0.0.1:{port}") as info:
            server.start_sync()
        assert isinstance(info.value.__cause__, OSError)
        assert not server.running


def test_starting_twice_is_an_error(server: CleverTapServer) -> None:
    with pytest.raises(ServerError, match="already running"):
        server.start_sync()


@pytest.mark.asyncio
async def test_async_start_stop_leaves_signals_alone() -> None:
    before = signal.getsignal(signal.SIGINT)
    async with CleverTapServer() as ct:
        assert signal.getsignal(signal.SIGINT) is before
        async with httpx.AsyncClient() as client:
            body = legacy("softbounce", "a@example.com")
            response = await client.post(ct.urls.bounce, content=body, headers=JSON)
        assert response.status_code == 200
        assert len(ct.journal.entries(Kind.CALLBACK)) == 1
    assert not ct.running
    with pytest.raises(ServerError):
        _ = ct.url


def test_restart_of_the_same_object_keeps_the_memory_journal(client: httpx.Client) -> None:
    ct = CleverTapServer()
    with ct:
        client.post(ct.urls.bounce, content=legacy("softbounce", "a@example.com"), headers=JSON)
    with ct:
        client.post(ct.urls.bounce, content=legacy("softbounce", "b@example.com"), headers=JSON)
    assert [r.events[0].email for r in callbacks(ct)] == ["a@example.com", "b@example.com"]


# -- harness serve ---------------------------------------------------------------------------------


def test_serve_refuses_a_public_host_without_token() -> None:
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "host '0.0.0.0' is not a loopback address: set a token" in result.output


def test_serve_rejects_a_bad_fault() -> None:
    result = CliRunner().invoke(main, ["serve", "--fault", "teapot"])
    assert result.exit_code == 2
    assert "fault 'teapot': unknown action 'teapot'" in result.output


def test_serve_prints_its_urls_serves_and_stops_on_sigterm(client: httpx.Client) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "harness", "serve", "--lenient", "--fault", "503,first=1"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(8)]
            assert lines[0].startswith("fake CleverTap on http://127.0.0.1:")
            # uvloop and httptools come with the base install (uvicorn[standard]); the server
            # must really run on them, not on asyncio + h11 inside a loop of its own making.
            loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
            http = "httptools" if importlib.util.find_spec("httptools") else "h11"
            assert f"(lenient, journal in memory, {loop} + {http})" in lines[0]
            urls = dict(line.split()[:2] for line in lines[1:6])
            assert urls["bounce"].endswith("/callbacks/bounce")
            assert urls["dashboard"] == lines[0].split()[3] + "/"
            assert lines[6].split() == ["fault", "503,first=1"]
            assert lines[7] == "Ctrl-C to stop\n"
            body = legacy("softbounce", "a@example.com")
            assert client.post(urls["bounce"], content=body, headers=JSON).status_code == 503
            assert client.post(urls["bounce"], content=body, headers=JSON).status_code == 200
            listed = client.get(urls["control"] + "/callbacks").json()
            assert [c["data"]["status"] for c in listed["callbacks"]] == [503, 200]
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert out == "stopping\n"

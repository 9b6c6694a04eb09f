"""Callback-side faults: each one as an integration's HTTP client sees it, and as journaled."""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import pytest

from harness.clevertap.faults import FaultPlan, FaultRule, parse_fault
from harness.clevertap.inspect import Endpoint
from harness.clevertap.server import CleverTapServer
from harness.clevertap.settings import ServerSettings
from harness.errors import ConfigError
from harness.journal import Kind
from harness.records import Callback, CallbackEvent, FaultHit

NOW = int(time.time())
JSON = {"content-type": "application/json"}
BODY = json.dumps([{"event": "softbounce", "data": [{"e": "a@example.com", "ts": NOW}]}]).encode()


def callbacks(ct: CleverTapServer) -> list[Callback]:
    records: list[Callback] = []
    for entry in ct.journal.entries(Kind.CALLBACK):
        assert isinstance(entry.data, Callback)
        records.append(entry.data)
    return records


def statuses(ct: CleverTapServer) -> list[int | None]:
    return [r.status for r in callbacks(ct)]


def test_status_for_the_first_k_requests(ct: CleverTapServer, client: httpx.Client) -> None:
    ct.set_faults(parse_fault("503,first=2"))
    answers = [client.post(ct.urls.bounce, content=BODY, headers=JSON) for _ in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 200]
    assert answers[0].json() == {
        "status": "error",
        "message": "fault injected by the harness: 503,first=2",
    }
    assert "retry-after" not in answers[0].headers
    records = callbacks(ct)
    assert statuses(ct) == [503, 503, 200]
    assert [r.fault for r in records] == [
        FaultHit(rule=0, action="status", spec="503,first=2"),
        FaultHit(rule=0, action="status", spec="503,first=2"),
        None,
    ]
    # faulted requests are still inspected and journaled in full
    assert records[0].events == (CallbackEvent("softbounce", "a@example.com", NOW, None),)


def test_429_with_retry_after(ct: CleverTapServer, client: httpx.Client) -> None:
    ct.set_faults(FaultRule(action="status", status=429, retry_after=30, first=1))
    answer = client.post(ct.urls.v2, content=b"{}", headers=JSON)
    assert (answer.status_code, answer.headers["retry-after"]) == (429, "30")


def test_rules_apply_in_order_and_count_only_what_they_see(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    ct.set_faults(parse_fault("500,first=1"), parse_fault("503,first=2"))
    codes = [client.post(ct.urls.bounce, content=BODY, headers=JSON).status_code for _ in range(5)]
    assert codes == [500, 503, 503, 200, 200]
    assert [(r["seen"], r["applied"]) for r in ct.faults.snapshot()] == [(5, 1), (4, 2)]


def test_endpoint_filter(ct: CleverTapServer, client: httpx.Client) -> None:
    ct.set_faults(parse_fault("500,endpoints=v2"))
    assert client.post(ct.urls.bounce, content=BODY, headers=JSON).status_code == 200
    assert client.post(ct.urls.v2, content=b"{}", headers=JSON).status_code == 500


def test_seeded_probability_is_reproducible(ct: CleverTapServer, client: httpx.Client) -> None:
    rule = parse_fault("503,p=0.5,seed=42")
    # The documented semantics: one draw of random.Random(seed) per request the rule sees.
    draws = random.Random(42)
    expected = [503 if draws.random() < 0.5 else 200 for _ in range(20)]
    assert 503 in expected
    assert 200 in expected

    ct.set_faults(rule)
    first = [client.post(ct.urls.bounce, content=BODY, headers=JSON).status_code for _ in range(20)]
    ct.reset()  # counters and draws start again
    second = [
        client.post(ct.urls.bounce, content=BODY, headers=JSON).status_code for _ in range(20)
    ]
    assert first == second == expected


def test_delay_answers_normally_but_late(ct: CleverTapServer, client: httpx.Client) -> None:
    ct.set_faults(parse_fault("delay=1,first=1"))
    # A client that waits 0.1 s gives up on the delayed answer (a 10x margin) ...
    with pytest.raises(httpx.ReadTimeout):
        client.post(ct.urls.bounce, content=BODY, headers=JSON, timeout=0.1)
    # ... the request was journaled with the fault and the answer it was going to get.
    (record,) = callbacks(ct)
    assert record.fault == FaultHit(rule=0, action="delay", spec="delay=1,first=1")
    assert record.status == 200
    assert client.post(ct.urls.bounce, content=BODY, headers=JSON).status_code == 200


def test_close_drops_the_connection_without_an_answer(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    ct.set_faults(parse_fault("close,first=1"))
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        client.post(ct.urls.bounce, content=BODY, headers=JSON)
    assert client.post(ct.urls.bounce, content=BODY, headers=JSON).status_code == 200
    closed, ok = callbacks(ct)
    assert closed.status is None
    assert closed.fault == FaultHit(rule=0, action="close", spec="close,first=1")
    assert closed.events == ok.events
    assert ok.events == (CallbackEvent("softbounce", "a@example.com", NOW, None),)


def test_reset_aborts_the_connection_with_rst(ct: CleverTapServer, client: httpx.Client) -> None:
    ct.set_faults(parse_fault("reset,first=1"))
    with pytest.raises(httpx.ReadError, match="Connection reset by peer"):
        client.post(ct.urls.bounce, content=BODY, headers=JSON)
    (record,) = callbacks(ct)
    assert record.fault is not None
    assert (record.status, record.fault.action) == (None, "reset")


def test_a_faulted_request_resent_is_not_a_duplicate(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    ct.set_faults(parse_fault("503,first=1"))
    assert client.post(ct.urls.bounce, content=BODY, headers=JSON).status_code == 503
    assert client.post(ct.urls.bounce, content=BODY, headers=JSON).status_code == 200
    assert client.post(ct.urls.bounce, content=BODY, headers=JSON).status_code == 200
    codes = [r.codes for r in callbacks(ct)]
    assert codes == [(), (), ("CT402",)]  # only the second accepted copy is a resend


def test_faults_given_at_start() -> None:
    settings = ServerSettings(faults=(parse_fault("500,first=1"),))
    with CleverTapServer(settings) as ct, httpx.Client() as client:
        assert client.post(ct.urls.bounce, content=BODY, headers=JSON).status_code == 500
        assert client.post(ct.urls.bounce, content=BODY, headers=JSON).status_code == 200


# -- the rules themselves (no server) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("503", FaultRule(action="status", status=503)),
        ("503,first=3", FaultRule(action="status", status=503, first=3)),
        (
            "429,retry-after=10,p=0.25,seed=7",
            FaultRule(action="status", status=429, retry_after=10, probability=0.25, seed=7),
        ),
        (
            "close,first=1,endpoints=v2+bounce",
            FaultRule(action="close", first=1, endpoints=frozenset({Endpoint.V2, Endpoint.BOUNCE})),
        ),
        ("reset", FaultRule(action="reset")),
        ("delay=0.5", FaultRule(action="delay", delay=0.5)),
        ("500,delay=0.2", FaultRule(action="status", status=500, delay=0.2)),
    ],
)
def test_parse_fault(text: str, rule: FaultRule) -> None:
    assert parse_fault(text) == rule
    assert parse_fault(rule.describe()) == rule


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty fault"),
        ("teapot", "unknown action 'teapot'"),
        ("503,first", "expected key=value, got 'first'"),
        ("200", "status: Input should be greater than or equal to 400"),
        ("503,first=0", "first: Input should be greater than or equal to 1"),
        ("503,p=2", "probability: Input should be less than or equal to 1"),
        ("503,first=1,p=0.5", "give either first or probability, not both"),
        ("close,retry_after=3", "only apply to action 'status', not 'close'"),
        ("delay", "action 'delay' needs a delay"),
        ("503,endpoints=sms", "endpoints.0: Input should be 'bounce', 'unsubscribe' or 'v2'"),
        ("503,colour=red", "colour: Extra inputs are not permitted"),
    ],
)
def test_parse_fault_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="fault") as info:
        parse_fault(text)
    assert message in str(info.value)


def test_plan_without_rules_decides_nothing() -> None:
    plan = FaultPlan()
    assert not plan
    assert plan.decide(Endpoint.BOUNCE) is None


@pytest.mark.parametrize("parser", ["httptools", "h11"])
@pytest.mark.parametrize("action", ["close", "reset"])
def test_drop_faults_drop_the_connection_on_uvloop(parser: str, action: str) -> None:
    # `harness serve` and `harness run` serve on uvloop, whose transports are no
    # asyncio.Transport subclasses: a drop must still drop there, never answer 500.
    uvloop = pytest.importorskip("uvloop")
    if parser == "httptools":
        pytest.importorskip("httptools")

    async def main() -> str:
        server = CleverTapServer(ServerSettings(http_parser=parser))  # type: ignore[arg-type]
        server.set_faults(parse_fault(f"{action},first=1"))
        await server.start()
        try:
            async with httpx.AsyncClient() as client:
                try:
                    answer = await client.post(server.urls.bounce, content=BODY, headers=JSON)
                except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                    dropped = type(exc).__name__
                else:
                    dropped = f"answered {answer.status_code}"
                again = await client.post(server.urls.bounce, content=BODY, headers=JSON)
                assert again.status_code == 200
            return dropped
        finally:
            await server.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        dropped = runner.run(main())
    assert dropped == ("RemoteProtocolError" if action == "close" else "ReadError")

"""quick_inspect(), the typed decoding of a clean callback, against inspect(), the full walk.

The contract: quick_inspect() answers only for a callback in which inspect() finds no violation
at all, with the same format and events; for anything else it answers None and the walk
explains. And process_callback() journals the same record whichever of the two answered.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
from hypothesis import given

from harness import strategies as hs
from harness.clevertap.app import create_app, process_callback
from harness.clevertap.inspect import (
    CheckConfig,
    DuplicateIndex,
    Endpoint,
    inspect,
    quick_inspect,
)
from harness.records import Callback, CallbackEvent
from tests.clevertap import test_http_fuzz as fuzz

NOW = 1_700_000_000
CONFIG = CheckConfig()


def quick(
    body: bytes,
    endpoint: Endpoint = Endpoint.BOUNCE,
    content_type: str | None = "application/json",
    history: Any = None,
    now: float = NOW,
) -> Any:
    return quick_inspect(
        body,
        endpoint=endpoint,
        content_type=content_type,
        config=CONFIG,
        history=history,
        now=now,
    )


def walked(inspection: Any) -> tuple[Any, tuple[CallbackEvent, ...]]:
    return inspection.format, tuple(
        CallbackEvent(e.event, e.email, e.ts, e.meta) for e in inspection.events
    )


def agree(
    body: bytes,
    endpoint: Endpoint,
    content_type: str | None = "application/json",
    now: float = NOW,
) -> Any:
    """quick_inspect() of *body* after checking it against inspect(); its answer."""
    answer = quick(body, endpoint, content_type, now=now)
    full = inspect(body, endpoint=endpoint, content_type=content_type, config=CONFIG, now=now)
    if answer is not None:
        assert full.violations == [], (body, full.violations)
        assert answer == walked(full)
    return answer


def legacy(*items: dict[str, Any], event: str = "hardbounce") -> bytes:
    return json.dumps([{"event": event, "data": list(items)}]).encode()


def v2(*items: dict[str, Any], **top: Any) -> bytes:
    return json.dumps({"version": "v2", "events": {"failed": list(items)}, **top}).encode()


ITEM = {"e": "a@example.com", "ts": NOW}
V2_ITEM = {"type": "hard_bounce", "email": "a@example.com", "meta": "m1"}


# -- the same verdicts -----------------------------------------------------------------------------


@given(hs.payloads(now=NOW))
def test_every_valid_payload_is_answered_quickly_with_the_walks_events(
    case: hs.CallbackRequest,
) -> None:
    # Both ways: a clean payload never needs the walk (else the fast path would be dead code).
    answer = agree(case.body, case.endpoint, case.content_type)
    assert answer is not None


@given(hs.mutated_payloads(now=NOW))
def test_every_mutation_goes_to_the_walk(case: hs.CallbackRequest) -> None:
    history = DuplicateIndex()
    for earlier in case.before:
        quick(earlier, case.endpoint, case.content_type, history, case.now)
    assert quick(case.body, case.endpoint, case.content_type, history, case.now) is None, (
        case.mutation
    )


def test_the_fuzz_corpus_never_gets_a_quick_answer_the_walk_disagrees_with() -> None:
    # The HTTP fuzz's bodies (malformed, deep, huge, near-valid) at every endpoint.
    rng = random.Random(fuzz.SEED)
    now = time.time()  # the fuzz's timestamps are the current time
    answered = 0
    for sent in fuzz._cases(rng):
        body = sent.raw.partition(b"\r\n\r\n")[2]
        if len(body) > 64 * 1024:
            continue
        for endpoint in Endpoint:
            answered += agree(body, endpoint, now=now) is not None
    assert answered > 0


@pytest.mark.parametrize(
    ("body", "endpoint"),
    [
        # Duplicate keys: the last one counts, for msgspec as for orjson.
        (
            b'[{"event":"hardbounce","data":[{"e":"x@y.com","e":"a@example.com","ts":1700000000}]}]',
            Endpoint.BOUNCE,
        ),
        (
            b'{"version":"v2","events":{"failed":[{"type":"spam","email":"a@example.com",'
            b'"meta":"m","meta":"n"}]},"events":{"success":[{"type":"delivered",'
            b'"email":"b@example.com","meta":"m2"}]}}',
            Endpoint.V2,
        ),
        # Unknown keys a v2 item and the top level may carry (ignored), escapes, whitespace.
        (v2({**V2_ITEM, "x": [1, {"y": None}], "description": None}, account_id=7), Endpoint.V2),
        (
            b' \n[{"event":"unsubscribe","data":[{"e":"\\u0061@example.com","ts":1700000000}]}]\n',
            Endpoint.UNSUBSCRIBE,
        ),
    ],
)
def test_quick_answers_match_the_walk(body: bytes, endpoint: Endpoint) -> None:
    assert agree(body, endpoint) is not None


@pytest.mark.parametrize(
    ("body", "endpoint"),
    [
        (legacy({"e": "a@example.com", "ts": 1700000000.0}), Endpoint.BOUNCE),  # CT302
        (legacy({"e": "a@example.com", "ts": True}), Endpoint.BOUNCE),  # CT302
        (legacy({"e": "a@example.com", "ts": 2**70}), Endpoint.BOUNCE),  # beyond 64 bits
        (legacy({"e": "a@example.com", "ts": NOW * 1000}), Endpoint.BOUNCE),  # CT303
        (legacy({"e": "a@example.com", "ts": NOW - 40 * 86400}), Endpoint.BOUNCE),  # CT305
        (legacy({"e": "a@example.com", "ts": NOW, "reason": "x"}), Endpoint.BOUNCE),  # CT206
        (legacy(ITEM, ITEM), Endpoint.BOUNCE),  # CT401
        (legacy(ITEM, {"e": "A@Example.com", "ts": NOW}), Endpoint.BOUNCE),  # CT401, case
        (legacy(ITEM, event="unsubscribe"), Endpoint.BOUNCE),  # CT203
        (legacy(ITEM), Endpoint.V2),  # CT203
        (legacy(), Endpoint.BOUNCE),  # CT204
        (b"[]", Endpoint.BOUNCE),  # CT204
        (v2(), Endpoint.V2),  # CT204
        (v2({**V2_ITEM, "meta": ""}), Endpoint.V2),  # CT404
        (v2({**V2_ITEM, "description": 3}), Endpoint.V2),  # CT201
        (json.dumps({"version": "v2", "events": {"failure": [V2_ITEM]}}).encode(), Endpoint.V2),
        (json.dumps({"version": "v2", "event": {"failed": [V2_ITEM]}}).encode(), Endpoint.V2),
        (json.dumps({"version": 2, "events": {"failed": [V2_ITEM]}}).encode(), Endpoint.V2),
        (
            b'{"version":"v2","events":{"failed":[' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"]}}",
            Endpoint.V2,
        ),  # nested past msgspec's depth limit, in a skipped key
        (b"\xef\xbb\xbf" + legacy(ITEM), Endpoint.BOUNCE),  # CT101 (a byte order mark)
    ],
)
def test_anything_the_walk_reports_is_left_to_it(body: bytes, endpoint: Endpoint) -> None:
    assert quick(body, endpoint) is None
    full = inspect(body, endpoint=endpoint, config=CONFIG, now=NOW)
    assert full.violations


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json; charset=latin1"])
def test_a_content_type_problem_is_left_to_the_walk(content_type: str | None) -> None:
    assert quick(legacy(ITEM), content_type=content_type) is None


def test_the_history_is_asked_and_told_as_the_walk_does() -> None:
    history = DuplicateIndex()
    assert quick(legacy(ITEM), history=history, now=NOW) is not None
    # The resend within the window is left to the walk (CT402 with its evidence)...
    assert quick(legacy(ITEM), history=history, now=NOW + 10) is None
    codes = [
        v.code
        for v in inspect(
            legacy(ITEM), endpoint=Endpoint.BOUNCE, config=CONFIG, history=history, now=NOW + 10
        ).violations
    ]
    assert codes == ["CT402"]
    # ...and after the window it is clean again.
    assert quick(legacy(ITEM), history=history, now=NOW + 7200) is not None


# -- the same journal entry ------------------------------------------------------------------------


def journaled(body: bytes, endpoint: Endpoint, now: float) -> list[tuple[int, float, Any]]:
    """The entries process_callback() journals for *body* sent twice (the second a resend)."""
    app = create_app()
    for at in (now, now + 1):
        process_callback(
            app,
            endpoint,
            f"/callbacks/{endpoint}",
            body,
            size=len(body),
            content_type="application/json",
            peer="127.0.0.1:4000",
            received=at,
        )
    return [(e.seq, e.at, e.data) for e in app.journal.entries()]


@pytest.mark.parametrize("endpoint", [Endpoint.BOUNCE, Endpoint.V2])
def test_process_callback_journals_the_same_records_either_way(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    if endpoint is Endpoint.BOUNCE:
        body = legacy({**ITEM, "ts": int(now)}, {"e": "b@example.com", "ts": int(now)})
    else:
        body = v2(V2_ITEM, {**V2_ITEM, "email": "b@example.com", "type": "spam"})
    assert quick(body, endpoint, now=now) is not None
    quick_entries = journaled(body, endpoint, now)
    monkeypatch.setattr("harness.clevertap.app.quick_inspect", lambda *a, **k: None)
    full_entries = journaled(body, endpoint, now)
    assert quick_entries == full_entries
    first, resend = (data for _, _, data in quick_entries)
    assert isinstance(first, Callback)
    assert isinstance(resend, Callback)
    assert first.status == 200
    assert first.violations == ()
    assert len(first.events) == 2
    assert [v.code for v in resend.violations] == ["CT402", "CT402"]

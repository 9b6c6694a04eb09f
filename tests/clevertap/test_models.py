"""The pydantic models of both callback formats: what they accept and what they refuse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from harness.clevertap.models import LegacyItem, LegacyPayload, V2Payload
from harness.vocab import (
    LEGACY_BOUNCE_EVENTS,
    LEGACY_EVENTS,
    LEGACY_UNSUBSCRIBE_EVENTS,
    MAX_V2_EVENTS,
    V2_TYPES,
)

DATA = Path(__file__).parent / "data"


def _errors(model: Any, payload: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(json.dumps(payload))
    return [(tuple(e["loc"]), e["type"]) for e in info.value.errors()]


def test_event_name_sets_match_the_docs() -> None:
    assert sorted(LEGACY_EVENTS) == ["hardbounce", "softbounce", "unsubscribe"]
    assert set(LEGACY_EVENTS) == LEGACY_BOUNCE_EVENTS | LEGACY_UNSUBSCRIBE_EVENTS
    assert not LEGACY_BOUNCE_EVENTS & LEGACY_UNSUBSCRIBE_EVENTS
    assert sorted(V2_TYPES) == ["delivered", "hard_bounce", "soft_bounce", "spam", "unsubscribed"]
    assert MAX_V2_EVENTS == 1000


def test_legacy_doc_bounce_example_parses() -> None:
    payload = LegacyPayload.model_validate_json((DATA / "generic_smtp_bounce.json").read_bytes())
    assert [(ev.event, [(i.e, i.ts) for i in ev.data]) for ev in payload.root] == [
        ("softbounce", [("a@x.com", 1435322805), ("c@x.com", 1435322805)]),
        ("hardbounce", [("b@y.com", 1435322805)]),
    ]


def test_legacy_doc_unsubscribe_example_parses() -> None:
    raw = (DATA / "generic_smtp_unsubscribe.json").read_bytes()
    payload = LegacyPayload.model_validate_json(raw)
    assert payload.root[0].event == "unsubscribe"
    assert payload.root[0].data == [LegacyItem(e="a@x.com", ts=1504632929)]


def test_v2_doc_example_parses() -> None:
    payload = V2Payload.model_validate_json((DATA / "generic_smtp_v2.json").read_bytes())
    assert payload.version == "v2"
    assert [(i.type, i.email, i.description) for i in payload.events.success] == [
        ("delivered", "a@x.com", None)
    ]
    (failed,) = payload.events.failed
    assert (failed.type, failed.email, failed.description) == (
        "hard_bounce",
        "b@y.com",
        "550 5.1.1 user unknown",
    )
    assert (
        failed.meta == "user1@example.com|1568798080|1730714617|20241104|0|wzrk_default|-17005904|"
    )


@pytest.mark.parametrize(
    ("ts", "error_type"),
    [
        ("1435322805", "int_type"),
        (1435322805.0, "int_type"),
        (1435322805.5, "int_type"),
        (True, "int_type"),
        (None, "int_type"),
    ],
)
def test_legacy_ts_must_be_a_json_integer(ts: Any, error_type: str) -> None:
    payload = [{"event": "hardbounce", "data": [{"e": "a@x.com", "ts": ts}]}]
    assert _errors(LegacyPayload, payload) == [((0, "data", 0, "ts"), error_type)]


def test_legacy_missing_keys_and_unknown_event_are_located() -> None:
    payload = [{"event": "bounce", "data": [{"e": "a@x.com"}, {"ts": 1}]}]
    assert _errors(LegacyPayload, payload) == [
        ((0, "event"), "literal_error"),
        ((0, "data", 0, "ts"), "missing"),
        ((0, "data", 1, "e"), "missing"),
    ]


def test_legacy_extra_keys_are_tolerated_and_dropped() -> None:
    payload = LegacyPayload.model_validate_json(
        '[{"event": "hardbounce", "x": 1, "data": [{"e": "a@x.com", "ts": 1, "why": "550"}]}]'
    )
    assert payload.model_dump() == [{"event": "hardbounce", "data": [{"e": "a@x.com", "ts": 1}]}]


def test_legacy_top_level_must_be_an_array() -> None:
    assert _errors(LegacyPayload, {"event": "hardbounce", "data": []}) == [((), "list_type")]


def test_v2_unknown_keys_are_ignored() -> None:
    payload = V2Payload.model_validate_json(
        '{"version": "v2", "account": 7, "events": {"success": [{"type": "spam", '
        '"email": "a@x.com", "meta": "m", "campaign": "c1"}]}}'
    )
    assert payload.model_dump() == {
        "version": "v2",
        "events": {
            "success": [{"type": "spam", "email": "a@x.com", "meta": "m", "description": None}],
            "failed": [],
        },
    }


def test_v2_required_and_typed_fields() -> None:
    payload = {
        "version": "v1",
        "events": {"failed": [{"type": "bounce", "meta": ""}, {"email": 5, "type": "spam"}]},
    }
    assert _errors(V2Payload, payload) == [
        (("version",), "literal_error"),
        (("events", "failed", 0, "type"), "literal_error"),
        (("events", "failed", 0, "email"), "missing"),
        (("events", "failed", 0, "meta"), "string_too_short"),
        (("events", "failed", 1, "email"), "string_type"),
        (("events", "failed", 1, "meta"), "missing"),
    ]


def _v2_items(n: int) -> list[dict[str, str]]:
    return [{"type": "delivered", "email": f"u{i}@x.com", "meta": f"m{i}"} for i in range(n)]


def test_v2_batch_limit_counts_both_lists_together() -> None:
    at_limit = {"version": "v2", "events": {"success": _v2_items(500), "failed": _v2_items(500)}}
    assert len(V2Payload.model_validate(at_limit).events.success) == 500
    over = {"version": "v2", "events": {"success": _v2_items(500), "failed": _v2_items(501)}}
    errors = _errors(V2Payload, over)
    assert errors == [(("events",), "value_error")]


def test_v2_one_list_over_the_limit() -> None:
    over = {"version": "v2", "events": {"success": _v2_items(MAX_V2_EVENTS + 1)}}
    assert _errors(V2Payload, over) == [(("events", "success"), "too_long")]

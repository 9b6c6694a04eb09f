"""The payload checks: each fires on a payload built for it, with its exact code and path."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.checks import Severity, all_checks, get_check
from harness.clevertap.addresses import address_problem
from harness.clevertap.inspect import (
    CheckConfig,
    DuplicateIndex,
    Endpoint,
    EventRecord,
    Inspection,
    inspect,
)

NOW = 1_700_000_000
DATA = Path(__file__).parent / "data"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "checks.md"
B, U, V2 = Endpoint.BOUNCE, Endpoint.UNSUBSCRIBE, Endpoint.V2


def run(
    payload: Any,
    endpoint: Endpoint = B,
    *,
    content_type: str | None = "application/json",
    **kw: Any,
) -> Inspection:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    kw.setdefault("now", NOW)
    return inspect(body, endpoint=endpoint, content_type=content_type, **kw)


def found(inspection: Inspection) -> list[tuple[str, str]]:
    return [(v.code, v.path) for v in inspection.violations]


def legacy(event: str = "hardbounce", *items: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"event": event, "data": list(items) or [item()]}]


def item(e: Any = "a@example.com", ts: Any = NOW, **extra: Any) -> dict[str, Any]:
    return {"e": e, "ts": ts, **extra}


def v2(*failed: dict[str, Any], success: list[Any] | None = None, **top: Any) -> dict[str, Any]:
    events: dict[str, Any] = {"failed": list(failed)}
    if success is not None:
        events["success"] = success
    return {"version": "v2", "events": events, **top}


def v2item(**kw: Any) -> dict[str, Any]:
    return {"type": "hard_bounce", "email": "a@example.com", "meta": "m|1|", **kw}


# --- valid payloads ----------------------------------------------------------------------------

DOC_EXAMPLES = [
    ("generic_smtp_bounce.json", B, 1435322805),
    ("generic_smtp_unsubscribe.json", U, 1504632929),
    ("generic_smtp_v2.json", V2, NOW),
]


@pytest.mark.parametrize(("name", "endpoint", "now"), DOC_EXAMPLES)
def test_clevertap_doc_examples_are_clean(name: str, endpoint: Endpoint, now: int) -> None:
    result = inspect((DATA / name).read_bytes(), endpoint=endpoint, now=now)
    assert result.violations == []
    assert result.ok


@pytest.mark.parametrize(
    ("payload", "endpoint", "content_type"),
    [
        pytest.param(legacy(), B, "application/json", id="hardbounce"),
        pytest.param(
            legacy("softbounce", item(), item("b@example.com")), B, "application/json", id="two"
        ),
        pytest.param(legacy("unsubscribe"), U, "application/json; charset=utf-8", id="unsub-utf8"),
        pytest.param(legacy(), B, 'Application/JSON; charset="UTF-8"', id="case-quoted"),
        pytest.param(legacy(), B, "application/json;charset=utf8", id="utf8-alias"),
        pytest.param(
            legacy("hardbounce", item("δοκιμή@παράδειγμα.δοκιμή")), B, "application/json", id="eai"
        ),
        pytest.param(legacy("hardbounce", item("user@bücher.de")), B, "application/json", id="idn"),
        pytest.param(
            legacy("hardbounce", item('"a b"@example.com')), B, "application/json", id="quoted"
        ),
        pytest.param(
            legacy("hardbounce", item("x@brand.test")), B, "application/json", id="test-tld"
        ),
        pytest.param(
            legacy("hardbounce", item(ts=NOW + 300)), B, "application/json", id="skew-edge"
        ),
        pytest.param(
            legacy("hardbounce", item(ts=NOW - 30 * 86400)), B, "application/json", id="age-edge"
        ),
        pytest.param(
            [*legacy("hardbounce"), *legacy("softbounce")],
            B,
            "application/json",
            id="same-address-two-events",
        ),
        pytest.param(
            v2(v2item(), success=[v2item(type="delivered")]), V2, "application/json", id="v2"
        ),
        pytest.param(
            v2(v2item(description=None, extra=[1], x="y")),
            V2,
            "application/json",
            id="v2-unknown-keys",
        ),
        pytest.param(
            v2(*[v2item(email=f"u{i}@example.com") for i in range(1000)]),
            V2,
            "application/json",
            id="v2-1000",
        ),
        pytest.param(
            {"version": "v2", "events": {"success": [v2item(type="spam")]}},
            V2,
            "application/json",
            id="v2-no-failed",
        ),
    ],
)
def test_valid_payloads_have_no_violations(
    payload: Any, endpoint: Endpoint, content_type: str
) -> None:
    result = run(payload, endpoint, content_type=content_type)
    assert result.violations == []


# --- every check fires ---------------------------------------------------------------------

CASES: list[Any] = [
    # transport
    pytest.param(b"[{]", B, "application/json", [("CT101", "$")], id="CT101-syntax"),
    pytest.param(b"", B, "application/json", [("CT101", "$")], id="CT101-empty"),
    pytest.param(b"  \n", B, "application/json", [("CT101", "$")], id="CT101-blank"),
    pytest.param(b"[NaN]", B, "application/json", [("CT101", "$")], id="CT101-nan"),
    pytest.param(b"\xef\xbb\xbf[]", B, "application/json", [("CT101", "$")], id="CT101-bom"),
    pytest.param(b"[] []", B, "application/json", [("CT101", "$")], id="CT101-trailing"),
    pytest.param(
        b"[" * 5000 + b"]" * 5000, B, "application/json", [("CT101", "$")], id="CT101-deep"
    ),
    pytest.param(
        '[{"event": "hardbounce", "data": [{"e": "josé@example.com", "ts": 1700000000}]}]'.encode(
            "latin-1"
        ),
        B,
        "application/json",
        [("CT102", "$")],
        id="CT102-latin1",
    ),
    pytest.param("[]".encode("utf-16"), B, "application/json", [("CT102", "$")], id="CT102-utf16"),
    pytest.param(legacy(), B, "text/plain", [("CT103", "$")], id="CT103-text"),
    pytest.param(legacy(), B, None, [("CT103", "$")], id="CT103-missing"),
    pytest.param(legacy(), B, "", [("CT103", "$")], id="CT103-empty"),
    pytest.param(legacy(), B, "application/json-patch+json", [("CT103", "$")], id="CT103-suffix"),
    pytest.param(legacy(), B, "application/json; charset=latin-1", [("CT104", "$")], id="CT104"),
    pytest.param(
        legacy(), B, "text/json; charset=utf-16", [("CT103", "$"), ("CT104", "$")], id="CT103+CT104"
    ),
    # shape
    pytest.param(
        {"event": "hardbounce", "data": [item()]},
        B,
        "application/json",
        [("CT201", "$")],
        id="CT201-object",
    ),
    pytest.param("hardbounce", B, "application/json", [("CT201", "$")], id="CT201-string"),
    pytest.param(None, V2, "application/json", [("CT201", "$")], id="CT201-null-v2"),
    pytest.param(
        [1, None, "x"],
        B,
        "application/json",
        [("CT201", "$[0]"), ("CT201", "$[1]"), ("CT201", "$[2]")],
        id="CT201-items",
    ),
    pytest.param(
        [{"event": "hardbounce", "data": {"e": "a@example.com"}}],
        B,
        "application/json",
        [("CT201", "$[0].data")],
        id="CT201-data",
    ),
    pytest.param(
        [{"event": "hardbounce", "data": [["a@example.com", NOW]]}],
        B,
        "application/json",
        [("CT201", "$[0].data[0]")],
        id="CT201-data-item",
    ),
    pytest.param(
        {"version": "v2", "events": []},
        V2,
        "application/json",
        [("CT201", "$.events")],
        id="CT201-v2-events",
    ),
    pytest.param(
        {"version": "v2", "events": {"failed": {}}},
        V2,
        "application/json",
        [("CT201", "$.events.failed"), ("CT204", "$.events")],
        id="CT201-v2-list",
    ),
    pytest.param(
        v2("a@example.com"),
        V2,
        "application/json",
        [("CT201", "$.events.failed[0]")],
        id="CT201-v2-item",
    ),
    pytest.param(
        v2(v2item(description=550)),
        V2,
        "application/json",
        [("CT201", "$.events.failed[0].description")],
        id="CT201-v2-description",
    ),
    pytest.param(
        legacy("bounce"), B, "application/json", [("CT202", "$[0].event")], id="CT202-legacy"
    ),
    pytest.param(
        legacy("hard_bounce"), B, "application/json", [("CT202", "$[0].event")], id="CT202-v2-name"
    ),
    pytest.param(
        [{"event": 3, "data": [item()]}],
        B,
        "application/json",
        [("CT202", "$[0].event")],
        id="CT202-number",
    ),
    pytest.param(
        v2(v2item(type="hardbounce")),
        V2,
        "application/json",
        [("CT202", "$.events.failed[0].type")],
        id="CT202-v2",
    ),
    pytest.param(
        legacy("unsubscribe"),
        B,
        "application/json",
        [("CT203", "$[0].event")],
        id="CT203-unsub-on-bounce",
    ),
    pytest.param(
        legacy("softbounce"),
        U,
        "application/json",
        [("CT203", "$[0].event")],
        id="CT203-bounce-on-unsub",
    ),
    pytest.param(
        legacy("hardbounce"), V2, "application/json", [("CT203", "$")], id="CT203-legacy-on-v2"
    ),
    pytest.param(v2(v2item()), B, "application/json", [("CT203", "$")], id="CT203-v2-on-bounce"),
    pytest.param(v2(v2item()), U, "application/json", [("CT203", "$")], id="CT203-v2-on-unsub"),
    pytest.param([], B, "application/json", [("CT204", "$")], id="CT204-top"),
    pytest.param(
        [{"event": "hardbounce", "data": []}],
        B,
        "application/json",
        [("CT204", "$[0].data")],
        id="CT204-data",
    ),
    pytest.param(
        {"version": "v2", "events": {}},
        V2,
        "application/json",
        [("CT204", "$.events")],
        id="CT204-v2",
    ),
    pytest.param(
        v2(success=[]), V2, "application/json", [("CT204", "$.events")], id="CT204-v2-lists"
    ),
    pytest.param(
        [{"data": [item()]}], B, "application/json", [("CT205", "$[0].event")], id="CT205-event"
    ),
    pytest.param(
        [{"event": "hardbounce"}], B, "application/json", [("CT205", "$[0].data")], id="CT205-data"
    ),
    pytest.param(
        legacy("hardbounce", {"ts": NOW}),
        B,
        "application/json",
        [("CT205", "$[0].data[0].e")],
        id="CT205-e",
    ),
    pytest.param(
        legacy("hardbounce", {"e": "a@example.com"}),
        B,
        "application/json",
        [("CT205", "$[0].data[0].ts")],
        id="CT205-ts",
    ),
    pytest.param(
        {"events": {"failed": [v2item()]}},
        V2,
        "application/json",
        [("CT205", "$.version")],
        id="CT205-version",
    ),
    pytest.param(
        {"version": "v2"}, V2, "application/json", [("CT205", "$.events")], id="CT205-events"
    ),
    pytest.param(
        {"version": "v2", "event": {"failed": [v2item()]}},
        V2,
        "application/json",
        [("CT205", "$.events")],
        id="CT205-event-erratum",
    ),
    pytest.param(
        v2({"email": "a@example.com", "meta": "m"}),
        V2,
        "application/json",
        [("CT205", "$.events.failed[0].type")],
        id="CT205-type",
    ),
    pytest.param(
        v2({"type": "spam", "meta": "m"}),
        V2,
        "application/json",
        [("CT205", "$.events.failed[0].email")],
        id="CT205-email",
    ),
    pytest.param(
        legacy("hardbounce", item(reason="550")),
        B,
        "application/json",
        [("CT206", "$[0].data[0].reason")],
        id="CT206-item",
    ),
    pytest.param(
        [{"event": "hardbounce", "data": [item()], "n": 1}],
        B,
        "application/json",
        [("CT206", "$[0].n")],
        id="CT206-event",
    ),
    pytest.param(
        legacy("hardbounce", {"email": "a@example.com", "ts": NOW}),
        B,
        "application/json",
        [("CT206", "$[0].data[0].email"), ("CT205", "$[0].data[0].e")],
        id="CT206-misspelt",
    ),
    pytest.param(
        legacy("hardbounce", item(**{"odd key": 1})),
        B,
        "application/json",
        [("CT206", "$[0].data[0]['odd key']")],
        id="CT206-bracket-path",
    ),
    pytest.param(
        {"version": "v2", "events": {"failed": [v2item()], "failure": [v2item()]}},
        V2,
        "application/json",
        [("CT206", "$.events.failure")],
        id="CT206-v2-list",
    ),
    pytest.param(
        v2(v2item(), version="2"),
        V2,
        "application/json",
        [("CT207", "$.version")],
        id="CT207-string",
    ),
    pytest.param(
        v2(v2item(), version=2), V2, "application/json", [("CT207", "$.version")], id="CT207-number"
    ),
    # values
    pytest.param(
        legacy("hardbounce", item("a@@example.com")),
        B,
        "application/json",
        [("CT301", "$[0].data[0].e")],
        id="CT301-at",
    ),
    pytest.param(
        legacy("hardbounce", item("Ann <a@example.com>")),
        B,
        "application/json",
        [("CT301", "$[0].data[0].e")],
        id="CT301-display-name",
    ),
    pytest.param(
        legacy("hardbounce", item(" a@example.com")),
        B,
        "application/json",
        [("CT301", "$[0].data[0].e")],
        id="CT301-space",
    ),
    pytest.param(
        legacy("hardbounce", item("a@localhost")),
        B,
        "application/json",
        [("CT301", "$[0].data[0].e")],
        id="CT301-no-dot",
    ),
    pytest.param(
        legacy("hardbounce", item("")),
        B,
        "application/json",
        [("CT301", "$[0].data[0].e")],
        id="CT301-empty",
    ),
    pytest.param(
        legacy("hardbounce", item(None)),
        B,
        "application/json",
        [("CT301", "$[0].data[0].e")],
        id="CT301-null",
    ),
    pytest.param(
        v2(v2item(email="a.example.com")),
        V2,
        "application/json",
        [("CT301", "$.events.failed[0].email")],
        id="CT301-v2",
    ),
    pytest.param(
        legacy("hardbounce", item(ts=str(NOW))),
        B,
        "application/json",
        [("CT302", "$[0].data[0].ts")],
        id="CT302-string",
    ),
    pytest.param(
        legacy("hardbounce", item(ts=NOW + 0.5)),
        B,
        "application/json",
        [("CT302", "$[0].data[0].ts")],
        id="CT302-float",
    ),
    pytest.param(
        legacy("hardbounce", item(ts=float(NOW))),
        B,
        "application/json",
        [("CT302", "$[0].data[0].ts")],
        id="CT302-whole-float",
    ),
    pytest.param(
        legacy("hardbounce", item(ts=True)),
        B,
        "application/json",
        [("CT302", "$[0].data[0].ts")],
        id="CT302-bool",
    ),
    pytest.param(
        legacy("hardbounce", item(ts=None)),
        B,
        "application/json",
        [("CT302", "$[0].data[0].ts")],
        id="CT302-null",
    ),
    pytest.param(
        legacy("hardbounce", item(ts=[NOW])),
        B,
        "application/json",
        [("CT302", "$[0].data[0].ts")],
        id="CT302-array",
    ),
    pytest.param(
        legacy("hardbounce", item(ts=NOW * 1000)),
        B,
        "application/json",
        [("CT303", "$[0].data[0].ts")],
        id="CT303-ms",
    ),
    pytest.param(
        legacy("hardbounce", item(ts=NOW * 10**6)),
        B,
        "application/json",
        [("CT303", "$[0].data[0].ts")],
        id="CT303-us",
    ),
    pytest.param(
        legacy("hardbounce", item(ts=NOW * 10**9)),
        B,
        "application/json",
        [("CT303", "$[0].data[0].ts")],
        id="CT303-ns",
    ),
    pytest.param(
        legacy("hardbounce", item(ts=NOW + 301)),
        B,
        "application/json",
        [("CT304", "$[0].data[0].ts")],
        id="CT304",
    ),
    pytest.param(
        legacy("hardbounce", item(ts=10**30)),
        B,
        "application/json",
        [("CT302", "$[0].data[0].ts")],
        id="CT302-huge",
    ),
    pytest.param(
        legacy("hardbounce", item(ts=10**19)),
        B,
        "application/json",
        [("CT303", "$[0].data[0].ts")],
        id="CT303-u64-max",
    ),
    pytest.param(
        legacy("hardbounce", item(ts=NOW - 30 * 86400 - 1)),
        B,
        "application/json",
        [("CT305", "$[0].data[0].ts")],
        id="CT305",
    ),
    pytest.param(
        legacy("hardbounce", item(ts=0)),
        B,
        "application/json",
        [("CT305", "$[0].data[0].ts")],
        id="CT305-zero",
    ),
    pytest.param(
        legacy("hardbounce", item(ts=-1)),
        B,
        "application/json",
        [("CT305", "$[0].data[0].ts")],
        id="CT305-negative",
    ),
    # batch
    pytest.param(
        legacy("hardbounce", item(), item()),
        B,
        "application/json",
        [("CT401", "$[0].data[1]")],
        id="CT401",
    ),
    pytest.param(
        [*legacy("hardbounce", item()), *legacy("hardbounce", item("A@Example.COM"))],
        B,
        "application/json",
        [("CT401", "$[1].data[0]")],
        id="CT401-case",
    ),
    pytest.param(
        v2(v2item(), v2item(meta="other")),
        V2,
        "application/json",
        [("CT401", "$.events.failed[1]")],
        id="CT401-v2",
    ),
    pytest.param(
        v2(*[v2item(email=f"u{i}@example.com") for i in range(1001)]),
        V2,
        "application/json",
        [("CT403", "$.events")],
        id="CT403",
    ),
    pytest.param(
        v2(
            *[v2item(email=f"u{i}@example.com") for i in range(501)],
            success=[v2item(type="delivered", email=f"s{i}@example.com") for i in range(500)],
        ),
        V2,
        "application/json",
        [("CT403", "$.events")],
        id="CT403-sum",
    ),
    pytest.param(
        v2({"type": "spam", "email": "a@example.com"}),
        V2,
        "application/json",
        [("CT404", "$.events.failed[0].meta")],
        id="CT404-missing",
    ),
    pytest.param(
        v2(v2item(meta="")),
        V2,
        "application/json",
        [("CT404", "$.events.failed[0].meta")],
        id="CT404-empty",
    ),
    pytest.param(
        v2(v2item(meta=None)),
        V2,
        "application/json",
        [("CT404", "$.events.failed[0].meta")],
        id="CT404-null",
    ),
    pytest.param(
        v2(v2item(meta={"id": 1})),
        V2,
        "application/json",
        [("CT404", "$.events.failed[0].meta")],
        id="CT404-object",
    ),
]


@pytest.mark.parametrize(("payload", "endpoint", "content_type", "expected"), CASES)
def test_check_fires_with_exact_code_and_path(
    payload: Any, endpoint: Endpoint, content_type: str | None, expected: list[tuple[str, str]]
) -> None:
    result = run(payload, endpoint, content_type=content_type)
    assert found(result) == expected
    for violation in result.violations:
        assert violation.severity is get_check(violation.code).severity


def test_every_registered_payload_check_has_a_case() -> None:
    ids = {p.id.split("-")[0].split("+")[0] for p in CASES}
    payload_codes = {c.code for c in all_checks() if c.family not in RUN_FAMILIES}
    assert payload_codes - {"CT402"} <= ids  # CT402 needs two payloads: see its own tests


# --- messages, expected/seen and extra ---------------------------------------------------------


def one(result: Inspection) -> Any:
    (violation,) = result.violations
    return violation


def test_ts_in_milliseconds_shows_seconds() -> None:
    v = one(run(legacy("hardbounce", item(ts=1435322805123))))
    assert v.format() == (
        "CT303  $[0].data[0].ts  ts looks like milliseconds: 1435322805123 is 1435322805 s "
        "(2015-06-26T12:46:45Z) (expected epoch seconds, seen 1435322805123)"
    )
    assert v.severity is Severity.ERROR
    assert dict(v.extra) == {"unit": "milliseconds", "seconds": 1435322805}


def test_ts_in_microseconds_shows_seconds() -> None:
    v = one(run(legacy("hardbounce", item(ts=1435322805_000_000))))
    assert dict(v.extra) == {"unit": "microseconds", "seconds": 1435322805}


def test_ts_in_the_future_says_by_how_much() -> None:
    v = one(run(legacy("hardbounce", item(ts=NOW + 3600))))
    assert v.message == "ts is 3600 s after the receive time (2023-11-14T23:13:20Z)"
    assert (v.expected, v.seen) == ("at most 2023-11-14T22:18:20Z", str(NOW + 3600))
    assert dict(v.extra) == {"ahead": 3600, "received": NOW}


def test_ts_old_is_a_warning_with_its_age() -> None:
    v = one(run(legacy("hardbounce", item(ts=NOW - 40 * 86400))))
    assert (v.code, v.severity) == ("CT305", Severity.WARNING)
    assert v.message == "ts is 40.0 days before the receive time (2023-10-05T22:13:20Z)"
    assert run(legacy("hardbounce", item(ts=NOW - 40 * 86400))).ok


def test_skew_and_age_are_configurable() -> None:
    config = CheckConfig(max_future_skew=0, max_age=60)
    assert found(run(legacy("hardbounce", item(ts=NOW + 1)), config=config)) == [
        ("CT304", "$[0].data[0].ts")
    ]
    assert found(run(legacy("hardbounce", item(ts=NOW - 61)), config=config)) == [
        ("CT305", "$[0].data[0].ts")
    ]
    assert found(run(legacy("hardbounce", item(ts=NOW - 60)), config=config)) == []


@pytest.mark.parametrize(
    ("ts", "message", "seen"),
    [
        (str(NOW), "ts is a string; send the number unquoted", '"1700000000"'),
        ("yesterday", "ts is a string", '"yesterday"'),
        (True, "ts is a boolean", "true"),
        (1.5, "ts is a number with a fraction or exponent", "1.5"),
        (None, "ts is null", "null"),
        (10**20, "ts is a number beyond the 64-bit integer range", "1e+20"),
        ({}, "ts is an object", "an object"),
    ],
)
def test_ts_not_integer_says_what_it_is(ts: Any, message: str, seen: str) -> None:
    v = one(run(legacy("hardbounce", item(ts=ts))))
    assert (v.code, v.message, v.expected, v.seen) == (
        "CT302",
        message,
        "an integer (epoch seconds)",
        seen,
    )


def test_not_utf8_gives_the_offset() -> None:
    v = one(run(b'[{"e": "\xe9"}]'))
    assert v.format() == (
        "CT102  $  body is not UTF-8: byte 0xe9 at offset 8 "
        '(expected UTF-8, seen b\'[{"e": "\\xe9"}]\')'
    )
    assert dict(v.extra) == {"offset": 8}


def test_not_json_message_names_the_position() -> None:
    v = one(run(b'[{"event": }]'))
    assert v.message == "body is not JSON: Expecting value: line 1 column 12 (char 11)"
    assert (v.expected, v.seen) == ("JSON", "'[{\"event\": }]'")


def test_content_type_messages() -> None:
    v = one(run(legacy(), content_type="text/plain"))
    assert v.format() == (
        "CT103  $  Content-Type is not application/json "
        "(expected application/json, seen 'text/plain')"
    )
    v = one(run(legacy(), content_type=None))
    assert v.format() == "CT103  $  no Content-Type header (expected application/json)"
    v = one(run(legacy(), content_type="application/json; charset=latin-1"))
    assert (v.severity, v.seen) == (Severity.WARNING, "'latin-1'")


def test_unknown_event_suggests_the_right_spelling() -> None:
    v = one(run(legacy("hard_bounce")))
    assert v.message == "unknown event \"hard_bounce\"; did you mean 'hardbounce'?"
    assert v.expected == "one of hardbounce, softbounce, unsubscribe"
    v = one(run(v2(v2item(type="softbounce")), V2))
    assert v.message == "unknown type \"softbounce\"; did you mean 'soft_bounce'?"


def test_address_message_quotes_email_validator() -> None:
    v = one(run(legacy("hardbounce", item("a..b@example.com"))))
    assert v.message == f"not a valid email address: {address_problem('a..b@example.com')}"
    assert address_problem("a..b@example.com") is not None
    assert v.seen == '"a..b@example.com"'


def test_v2_erratum_event_key_is_reported_and_read() -> None:
    result = run({"version": "v2", "event": {"failed": [v2item()]}}, V2)
    assert one(result).message.startswith("required key 'events' is missing; found 'event'")
    assert result.events == [
        EventRecord("hard_bounce", "a@example.com", None, "m|1|", "$.event.failed[0]")
    ]


def test_too_many_events_reports_the_count() -> None:
    payload = v2(*[v2item(email=f"u{i}@example.com") for i in range(1001)])
    v = one(run(payload, V2))
    assert v.message == (
        '1001 events in one call; CleverTap rejects more than 1000 with 400 "More than allowed '
        'events were sent"'
    )
    assert dict(v.extra) == {"events": 1001, "limit": 1000}
    assert len(run(payload, V2).events) == 1001


def test_v2_limit_is_configurable() -> None:
    result = run(
        v2(v2item(), v2item(email="b@example.com")), V2, config=CheckConfig(max_v2_events=1)
    )
    assert found(result) == [("CT403", "$.events")]


# --- events are all recorded -------------------------------------------------------------------


def test_events_recorded_in_order_even_when_invalid() -> None:
    payload = [
        {"event": "softbounce", "data": [item(), item("bad", "x"), 5, {"ts": NOW}]},
        {"event": 7, "data": [item(None, NOW * 1000)]},
        {"event": "unsubscribe"},
    ]
    assert run(payload, B).events == [
        EventRecord("softbounce", "a@example.com", NOW, None, "$[0].data[0]"),
        EventRecord("softbounce", "bad", None, None, "$[0].data[1]"),
        EventRecord("softbounce", "", NOW, None, "$[0].data[3]"),
        EventRecord("", "", NOW * 1000, None, "$[1].data[0]"),
    ]


def test_v2_events_recorded_from_both_lists() -> None:
    payload = v2(v2item(meta=None), {"email": 1}, success=[v2item(type="delivered")])
    result = run(payload, V2)
    assert result.format == "v2"
    assert result.events == [
        EventRecord("delivered", "a@example.com", None, "m|1|", "$.events.success[0]"),
        EventRecord("hard_bounce", "a@example.com", None, None, "$.events.failed[0]"),
        EventRecord("", "", None, None, "$.events.failed[1]"),
    ]


def test_single_unwrapped_event_is_still_read() -> None:
    result = run({"event": "hardbounce", "data": [item()]}, B)
    assert result.format == "legacy"
    assert result.events == [EventRecord("hardbounce", "a@example.com", NOW, None, "$.data[0]")]


def test_v2_payload_on_legacy_url_is_read_as_v2() -> None:
    result = run(v2(v2item()), B)
    assert result.format == "v2"
    assert [e.path for e in result.events] == ["$.events.failed[0]"]


def test_unparseable_body_has_no_format_and_no_payload() -> None:
    result = run(b"{", B)
    assert (result.format, result.payload, result.events) == (None, None, [])
    assert not result.ok


# --- duplicates across payloads ----------------------------------------------------------------


def test_resend_within_window_is_a_warning_with_evidence() -> None:
    history = DuplicateIndex()
    first = run(legacy(), history=history, seq=41)
    assert first.violations == []
    again = run(legacy("hardbounce", item("A@example.com")), history=history, now=NOW + 60, seq=42)
    v = one(again)
    assert v.format() == (
        "CT402  $[0].data[0]  hardbounce for a@example.com already received 60 s earlier; "
        "CleverTap does not deduplicate, so it counts twice "
        "(expected no resend within 3600 s, seen received 60 s earlier)"
    )
    assert (v.severity, v.evidence, dict(v.extra)) == (
        Severity.WARNING,
        (41,),
        {"previous_at": NOW, "previous_seq": 41},
    )
    assert again.ok


def test_resend_after_window_is_not_a_duplicate() -> None:
    history = DuplicateIndex()
    run(legacy(), history=history)
    assert run(legacy(), history=history, now=NOW + 3601).violations == []
    assert found(run(legacy(), history=history, now=NOW + 3602)) == [("CT402", "$[0].data[0]")]


def test_other_event_or_address_is_not_a_duplicate() -> None:
    history = DuplicateIndex()
    run(legacy(), history=history)
    assert run(legacy("softbounce"), history=history).violations == []
    assert run(legacy("hardbounce", item("b@example.com")), history=history).violations == []


def test_rejected_payload_is_not_remembered() -> None:
    history = DuplicateIndex()
    rejected = run(legacy("hardbounce", item(), item(ts="now")), history=history)
    assert not rejected.ok
    assert run(legacy(), history=history).violations == []
    assert found(run(legacy(), history=history)) == [("CT402", "$[0].data[0]")]


def test_duplicate_in_a_rejected_payload_is_still_reported() -> None:
    history = DuplicateIndex()
    run(legacy(), history=history)
    result = run(legacy("hardbounce", item(), item("b@example.com", "x")), history=history)
    assert found(result) == [("CT302", "$[0].data[1].ts"), ("CT402", "$[0].data[0]")]


def test_duplicate_window_is_configurable_and_index_clears() -> None:
    history = DuplicateIndex()
    config = CheckConfig(duplicate_window=10)
    run(legacy(), history=history, config=config)
    assert run(legacy(), history=history, config=config, now=NOW + 11).violations == []
    history.clear()
    assert run(legacy(), history=history, config=config, now=NOW + 12).violations == []


def test_duplicate_index_seen_keeps_its_contract() -> None:
    index = DuplicateIndex()
    assert index.seen(("hardbounce", "a@x.com"), 100.0, 10.0, seq=1) is None
    assert index.seen(("hardbounce", "a@x.com"), 105.0, 10.0, seq=2) == (100.0, 1)
    assert index.seen(("hardbounce", "a@x.com"), 200.0, 10.0) is None


# --- never raises -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["hardbounce", "unsubscribe", "hard_bounce", "v2", "a@example.com", "e"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "event",
                    "data",
                    "e",
                    "ts",
                    "version",
                    "events",
                    "success",
                    "failed",
                    "type",
                    "email",
                    "meta",
                    "description",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)
KNOWN_CODES = {c.code for c in all_checks()}


@settings(max_examples=300, deadline=None)
@given(payload=json_values, endpoint=st.sampled_from(list(Endpoint)))
def test_inspect_never_raises_on_odd_json(payload: Any, endpoint: Endpoint) -> None:
    result = run(payload, endpoint, history=DuplicateIndex())
    assert {v.code for v in result.violations} <= KNOWN_CODES
    assert all(v.path.startswith("$") for v in result.violations)
    assert all(e.path.startswith("$") for e in result.events)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=64), content_type=st.none() | st.text(max_size=30))
def test_inspect_never_raises_on_odd_bytes(body: bytes, content_type: str | None) -> None:
    result = run(body, B, content_type=content_type)
    assert {v.code for v in result.violations} <= KNOWN_CODES


@pytest.mark.parametrize(
    "body",
    [
        b"[1e400]",
        b"[123456789012345678901234567890]",
        b'[{"e": "\\ud800", "ts": 1}]',
        b"-0",
        b'"\\u0000"',
    ],
)
def test_inspect_never_raises_on_edge_tokens(body: bytes) -> None:
    assert run(body, B).violations


# --- the registry and its examples -------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    endpoint: Endpoint
    content_type: str | None
    now: float
    body: bytes


def parse_example(text: str) -> tuple[CheckConfig, list[Request]]:
    """Read a check's example: ``.http`` requests separated by ``###``, ``# config:`` lines."""
    config = CheckConfig()
    requests = []
    for chunk in re.split(r"^###$", text, flags=re.M):
        lines = chunk.strip("\n").split("\n")
        while lines and lines[0].startswith("#"):
            comment = lines.pop(0)
            if comment.startswith("# config:"):
                key, value = comment.removeprefix("# config:").strip().split("=")
                config = replace(config, **{key: type(getattr(config, key))(value)})
        method, path, _ = lines[0].split(" ")
        assert method == "POST"
        blank = lines.index("")
        headers = dict(line.split(": ", 1) for line in lines[1:blank])
        content_type = headers.get("Content-Type")
        charset = re.search(r"charset=([\w-]+)", content_type or "")
        body = "\n".join(lines[blank + 1 :]).encode(charset.group(1) if charset else "utf-8")
        now = parsedate_to_datetime(headers["Date"]).timestamp()
        requests.append(Request(Endpoint(path.rsplit("/", 1)[-1]), content_type, now, body))
    return config, requests


def replay(text: str) -> Inspection:
    config, requests = parse_example(text)
    history = DuplicateIndex()
    results = [
        inspect(
            r.body,
            endpoint=r.endpoint,
            content_type=r.content_type,
            now=r.now,
            config=config,
            history=history,
        )
        for r in requests
    ]
    return results[-1]


PAYLOAD_CHECKS = [c for c in all_checks() if c.family in {"transport", "shape", "values", "batch"}]
RUN_FAMILIES = {"cross", "integration"}
"""Checks of a whole run (the judge's), not of one request: their examples are journal excerpts,
replayed in tests/scenario/test_crosschecks.py."""


def test_registered_checks_are_well_formed() -> None:
    assert [c.code for c in PAYLOAD_CHECKS] == [
        "CT101", "CT102", "CT103", "CT104",
        "CT201", "CT202", "CT203", "CT204", "CT205", "CT206", "CT207",
        "CT301", "CT302", "CT303", "CT304", "CT305",
        "CT401", "CT402", "CT403", "CT404",
    ]  # fmt: skip
    for check in PAYLOAD_CHECKS:
        family = {"1": "transport", "2": "shape", "3": "values", "4": "batch"}[check.code[2]]
        assert check.family == family, check.code
        assert check.title
        assert "\n" not in check.title
        assert check.explanation
    warnings = {c.code for c in PAYLOAD_CHECKS if c.severity is Severity.WARNING}
    assert warnings == {"CT104", "CT204", "CT206", "CT305", "CT402"}


@pytest.mark.parametrize("check", PAYLOAD_CHECKS, ids=lambda c: c.code)
def test_registered_example_triggers_its_code(check: Any) -> None:
    result = replay(check.example)
    assert check.code in {v.code for v in result.violations}, [
        v.format() for v in result.violations
    ]


# --- docs/checks.md ---------------------------------------------------------------------------


@dataclass
class DocEntry:
    code: str
    title: str
    severity: str
    family: str
    examples: list[str]


def parse_docs() -> list[DocEntry]:
    entries = []
    sections = re.split(r"^## ", DOCS.read_text(encoding="utf-8"), flags=re.M)[1:]
    for section in sections:
        heading, _, body = section.partition("\n")
        match = re.fullmatch(r"(CT\d{3}): (.+)", heading.strip())
        if match is None:
            continue
        severity = re.search(r"^- Severity: (\w+)$", body, flags=re.M)
        family = re.search(r"^- Family: (\w+)$", body, flags=re.M)
        assert severity, f"{match.group(1)}: no Severity line"
        assert family, f"{match.group(1)}: no Family line"
        examples = re.findall(r"^```http\n(.*?)^```$", body, flags=re.M | re.S)
        entries.append(DocEntry(match[1], match[2], severity[1], family[1], examples))
    return entries


def test_docs_list_exactly_the_registered_codes() -> None:
    documented = [(e.code, e.title, e.severity, e.family) for e in parse_docs()]
    registered = [(c.code, c.title, str(c.severity), c.family) for c in all_checks()]
    assert documented == registered


@pytest.mark.parametrize(
    "entry",
    [e for e in parse_docs() if e.family not in RUN_FAMILIES],
    ids=lambda e: e.code,
)
def test_documented_example_triggers_its_code(entry: DocEntry) -> None:
    (example,) = entry.examples
    assert example.rstrip("\n") == get_check(entry.code).example.rstrip("\n")
    result = replay(example)
    assert entry.code in {v.code for v in result.violations}


@settings(max_examples=300, deadline=None)
@given(
    e=st.sampled_from(["a@example.com", "A@example.com", "a@@x", "", "δ@δ.δοκιμή"])
    | st.integers()
    | st.none(),
    ts=st.integers(min_value=NOW - 31 * 86400, max_value=NOW + 400)
    | st.sampled_from([NOW * 1000, 10**11 - 1, 10**11, -1, 0, True, 1.0, "1"]),
)
def test_fast_path_agrees_with_the_full_walk(e: Any, ts: Any) -> None:
    # inspect() takes a shortcut for two-key items; an extra key forces the full walk, which
    # must then report the same violations plus the CT206 for the extra key.
    plain = run(legacy("hardbounce", item(e, ts), item(e, ts)))
    forced = run(legacy("hardbounce", item(e, ts, x=1), item(e, ts, x=1)))
    assert [v for v in forced.violations if v.code != "CT206"] == plain.violations
    assert forced.events == plain.events

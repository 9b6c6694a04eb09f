"""The exported JSON Schemas and the models agree on what is a valid callback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from harness.clevertap.models import LegacyPayload, V2Payload
from harness.clevertap.schema import DIALECT, json_schema
from harness.cli import main
from harness.errors import ConfigError

DATA = Path(__file__).parent / "data"
MODELS: dict[str, type[BaseModel]] = {"legacy": LegacyPayload, "v2": V2Payload}


def _item(**kw: Any) -> dict[str, Any]:
    return {"e": "a@x.com", "ts": 1700000000, **kw}


def _v2(success: Any = None, failed: Any = None, **top: Any) -> dict[str, Any]:
    events: dict[str, Any] = {}
    if success is not None:
        events["success"] = success
    if failed is not None:
        events["failed"] = failed
    return {"version": "v2", "events": events, **top}


def _v2_item(**kw: Any) -> dict[str, Any]:
    return {"type": "hard_bounce", "email": "a@x.com", "meta": "m|1|", **kw}


def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


VALID: dict[str, list[Any]] = {
    "legacy": [
        _load("generic_smtp_bounce.json"),
        _load("generic_smtp_unsubscribe.json"),
        [],
        [{"event": "hardbounce", "data": []}],
        [{"event": "softbounce", "data": [_item(), _item(e="b@y.com", ts=0)]}],
        [{"event": "unsubscribe", "data": [_item(extra="tolerated")], "note": 1}],
        [{"event": "hardbounce", "data": [_item(ts=-5)]}],
        [{"event": "hardbounce", "data": [_item(e="not checked here")]}],
    ],
    "v2": [
        _load("generic_smtp_v2.json"),
        _v2(),
        _v2(success=[_v2_item(type="delivered")]),
        _v2(failed=[_v2_item(description=None)]),
        _v2(failed=[_v2_item(type=t) for t in ("soft_bounce", "spam", "unsubscribed")]),
        _v2(success=[_v2_item(unknown_key=[1, 2])], account="ignored"),
        _v2(failed=[_v2_item()] * 1000),
    ],
}

INVALID: dict[str, list[Any]] = {
    "legacy": [
        {"event": "hardbounce", "data": [_item()]},
        "hardbounce",
        None,
        [1],
        [[{"event": "hardbounce", "data": [_item()]}]],
        [{"event": "bounce", "data": [_item()]}],
        [{"event": "hard_bounce", "data": [_item()]}],
        [{"event": None, "data": [_item()]}],
        [{"data": [_item()]}],
        [{"event": "hardbounce"}],
        [{"event": "hardbounce", "data": {"e": "a@x.com", "ts": 1}}],
        [{"event": "hardbounce", "data": ["a@x.com"]}],
        [{"event": "hardbounce", "data": [{"e": "a@x.com"}]}],
        [{"event": "hardbounce", "data": [{"ts": 1700000000}]}],
        [{"event": "hardbounce", "data": [_item(ts="1700000000")]}],
        [{"event": "hardbounce", "data": [_item(ts=1700000000.5)]}],
        [{"event": "hardbounce", "data": [_item(ts=True)]}],
        [{"event": "hardbounce", "data": [_item(ts=None)]}],
        [{"event": "hardbounce", "data": [_item(e=None)]}],
        [{"event": "hardbounce", "data": [_item(e=["a@x.com"])]}],
    ],
    "v2": [
        [],
        [_v2_item()],
        {"events": {"failed": [_v2_item()]}},
        {"version": "v2"},
        {"version": "v2", "event": {"failed": [_v2_item()]}},
        _v2(failed=[_v2_item()], version="2"),
        _v2(failed=[_v2_item()], version=2),
        {"version": "v2", "events": [_v2_item()]},
        _v2(failed=_v2_item()),
        _v2(failed=[_v2_item(type="hardbounce")]),
        _v2(failed=[_v2_item(type="bounced")]),
        _v2(failed=[{"email": "a@x.com", "meta": "m"}]),
        _v2(failed=[{"type": "spam", "meta": "m"}]),
        _v2(failed=[{"type": "spam", "email": "a@x.com"}]),
        _v2(failed=[_v2_item(meta="")]),
        _v2(failed=[_v2_item(meta=None)]),
        _v2(failed=[_v2_item(meta=7)]),
        _v2(failed=[_v2_item(email=None)]),
        _v2(failed=[_v2_item(description=550)]),
        _v2(failed=["a@x.com"]),
        _v2(success=[_v2_item()] * 1001),
    ],
}

# Where a JSON Schema cannot say what the models say; each is named in the schema's $comment.
SCHEMA_LAXER: dict[str, list[Any]] = {
    "legacy": [[{"event": "hardbounce", "data": [_item(ts=1700000000.0)]}]],
    "v2": [_v2(success=[_v2_item()] * 600, failed=[_v2_item()] * 600)],
}


def _model_accepts(fmt: str, payload: Any) -> bool:
    try:
        MODELS[fmt].model_validate_json(json.dumps(payload))
    except ValidationError:
        return False
    return True


def _cases(table: dict[str, list[Any]]) -> list[Any]:
    return [
        pytest.param(fmt, payload, id=f"{fmt}-{i}")
        for fmt, payloads in table.items()
        for i, payload in enumerate(payloads)
    ]


@pytest.fixture(scope="module")
def validators() -> dict[str, Draft202012Validator]:
    return {fmt: Draft202012Validator(json_schema(fmt)) for fmt in MODELS}  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["legacy", "v2"])
def test_schema_is_a_valid_draft_2020_12_document(fmt: str) -> None:
    schema = json_schema(fmt)  # type: ignore[arg-type]
    assert next(iter(schema)) == "$schema"
    assert schema["$schema"] == DIALECT == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:clevertap-harness:callback:{fmt}"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(("fmt", "payload"), _cases(VALID))
def test_valid_examples_pass_schema_and_model(
    validators: dict[str, Draft202012Validator], fmt: str, payload: Any
) -> None:
    assert list(validators[fmt].iter_errors(payload)) == []
    assert _model_accepts(fmt, payload)


@pytest.mark.parametrize(("fmt", "payload"), _cases(INVALID))
def test_invalid_examples_fail_schema_and_model(
    validators: dict[str, Draft202012Validator], fmt: str, payload: Any
) -> None:
    assert not validators[fmt].is_valid(payload)
    assert not _model_accepts(fmt, payload)


@pytest.mark.parametrize(("fmt", "payload"), _cases(SCHEMA_LAXER))
def test_documented_divergences_are_exactly_where_the_comment_says(
    validators: dict[str, Draft202012Validator], fmt: str, payload: Any
) -> None:
    assert validators[fmt].is_valid(payload)
    assert not _model_accepts(fmt, payload)
    assert "Stricter than this schema" in json_schema(fmt)["$comment"]  # type: ignore[arg-type]


def test_unknown_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"fmt must be 'legacy' or 'v2', got 'v3'"):
        json_schema("v3")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "fmt"),
    [([], "legacy"), (["--format", "legacy"], "legacy"), (["--format", "v2"], "v2")],
)
def test_schema_command_prints_the_schema(args: list[str], fmt: str) -> None:
    result = CliRunner().invoke(main, ["schema", *args])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json_schema(fmt)  # type: ignore[arg-type]


def test_schema_command_rejects_an_unknown_format() -> None:
    result = CliRunner().invoke(main, ["schema", "--format", "v3"])
    assert result.exit_code == 2
    assert "Invalid value for '--format': 'v3' is not one of 'legacy', 'v2'." in result.output

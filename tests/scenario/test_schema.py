"""The exported JSON Schema: valid draft 2020-12, complete for editors, agrees with the loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from harness.errors import ScenarioError
from harness.scenario.loader import load_scenario
from harness.scenario.model import SERVER_DOWN_MODES, Scenario
from harness.scenario.schema import DIALECT, scenario_json_schema
from harness.smtp.catalog import CATALOG, Stage

DATA = Path(__file__).parent / "data"

# Fixtures the schema can judge, with the data paths where it must object (the loader's paths).
SCHEMA_CATCHES: dict[str, list[list[Any]]] = {
    "not-a-mapping": [[]],
    "missing-campaign": [[]],
    "wrong-type": [["campaign", "per_connection"], ["campaign", "to"], ["expect", "nothing_else"]],
    "unknown-key": [["clevertap"], ["mx", "example.com"]],
    "bad-duration": [["expect", "within"]],
    "unknown-mode": [
        ["mx", "down.test", "server_down"],
        ["mx", "example.com", "a@example.com"],
        ["mx", "example.com", "b@example.com"],
        ["mx", "example.com", "c@example.com"],
    ],
}
# Cross-field rules a JSON Schema cannot state; only the loader catches these.
LOADER_ONLY = ("v2-event-in-legacy", "outside-campaign")
# Not YAML the schema could even see.
NOT_YAML = ("syntax-error", "duplicate-key")


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = scenario_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _data(stem: str) -> Any:
    return YAML(typ="safe").load((DATA / f"{stem}.yaml").read_text())


def test_every_fixture_is_classified() -> None:
    classified = {*SCHEMA_CATCHES, *LOADER_ONLY, *NOT_YAML}
    assert classified == {p.stem for p in DATA.glob("*.yaml")}


def test_document_header() -> None:
    schema = scenario_json_schema()
    assert schema["$schema"] == DIALECT == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "urn:clevertap-harness:scenario"
    assert schema["required"] == ["campaign"]
    assert schema["additionalProperties"] is False


def test_fresh_copy_every_call() -> None:
    first = scenario_json_schema()
    first["$defs"].clear()
    assert scenario_json_schema()["$defs"]


def test_modes_are_enums_for_completion() -> None:
    defs = scenario_json_schema()["$defs"]
    mode = defs["Behaviour"]["anyOf"][2]["properties"]["mode"]
    assert set(mode["enum"]) == {
        n for n, m in CATALOG.items() if not m.server_down and m.stage is not Stage.LATER
    }
    assert "mailbox_full" in mode["enum"]
    assert "queue_expiry" not in mode["enum"]  # only ever in a DSN
    bounce = defs["Behaviour"]["anyOf"][2]["properties"]["accept_then_bounce"]["anyOf"][0]
    assert "queue_expiry" in bounce["enum"]
    assert "accept" not in bounce["enum"]
    down = defs["MxHost"]["properties"]["server_down"]["anyOf"][0]["enum"]
    assert down == list(SERVER_DOWN_MODES)
    assert {"refused", "greeting_421", "tarpit", "drop_mid_data", "slow", "tls_broken"} <= set(down)


def test_fields_have_descriptions() -> None:
    defs = scenario_json_schema()["$defs"]
    for name in ("Campaign", "CleverTapSettings", "Integration", "Expect", "CallbackFault"):
        for field, spec in defs[name]["properties"].items():
            described = "description" in spec or "$ref" in spec
            assert described, f"{name}.{field} has no description"


@pytest.mark.parametrize("stem", sorted(SCHEMA_CATCHES))
def test_schema_and_loader_both_reject(
    stem: str, validator: jsonschema.Draft202012Validator
) -> None:
    paths = sorted(list(e.absolute_path) for e in validator.iter_errors(_data(stem)))
    assert paths == SCHEMA_CATCHES[stem]
    with pytest.raises(ScenarioError):
        load_scenario(DATA / f"{stem}.yaml")


@pytest.mark.parametrize("stem", LOADER_ONLY)
def test_cross_field_rules_are_the_loaders(
    stem: str, validator: jsonschema.Draft202012Validator
) -> None:
    assert list(validator.iter_errors(_data(stem))) == []
    with pytest.raises(ScenarioError):
        load_scenario(DATA / f"{stem}.yaml")


@pytest.mark.parametrize(
    ("behaviour", "valid"),
    [
        ("mailbox_full", True),
        ("550 5.7.1 go away", True),
        (["greylist", "accept"], True),
        ({"mode": "mailbox_full", "flavour": "yahoo", "for": "10m", "then": "accept"}, True),
        ({"probability": 0.3, "mode": "throttle", "else": "accept", "seed": 7}, True),
        ({"accept_then_bounce": "invalid_address", "after": "2s", "dsn": "postfix"}, True),
        ({"accept_then_bounce": "invalid_address", "dsn": "qmail"}, True),
        ("mailbox_fll", False),
        ([], False),
        ({"mode": "mailbox_full", "flavor": "yahoo"}, False),
        ({"flavour": "yahoo"}, False),
        ({"accept_then_bounce": "invalid_address", "dsn": "courier"}, False),
    ],
)
def test_behaviour_grammar(
    behaviour: Any, valid: bool, validator: jsonschema.Draft202012Validator
) -> None:
    doc = {
        "campaign": {"from": "s@brand.test", "to": ["a@example.com"]},
        "mx": {"example.com": {"a@example.com": behaviour}},
    }
    assert validator.is_valid(doc) is valid
    if not valid:
        with pytest.raises(ValueError, match=r"a@example\.com"):
            Scenario.model_validate({"name": "x", **doc})

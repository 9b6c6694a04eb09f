"""Every shipped scenario loads, validates against the exported schema and says what it proves."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from harness.scenario.loader import load_scenario, load_scenarios
from harness.scenario.model import SERVER_DOWN_MODES
from harness.scenario.schema import scenario_json_schema

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
FILES = sorted(SCENARIOS.glob("*.yaml"))


def test_scenarios_are_shipped() -> None:
    assert len(FILES) >= 18


def test_the_readme_counts_the_shipped_scenarios() -> None:
    readme = (SCENARIOS.parent / "README.md").read_text(encoding="utf-8")
    assert f"The {len(FILES)} shipped scenarios" in readme, (
        f"README.md should say 'The {len(FILES)} shipped scenarios' and what the new ones prove"
    )


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_shipped_scenario(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# Proves: "), "a shipped scenario starts by saying what it proves"
    jsonschema.Draft202012Validator(scenario_json_schema()).validate(YAML(typ="safe").load(text))
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.description
    # The example integration is the runner's default target (tuned through env only).
    assert scenario.integration is None or (
        scenario.integration.command is None and scenario.integration.addresses is None
    )
    assert scenario.expect.callbacks or scenario.expect.absent
    for plan in scenario.hosts():
        plan.parsed_rules()  # the mail world accepts every rule as the runner will pass it


def test_directory_loads_with_unique_names() -> None:
    scenarios = load_scenarios([SCENARIOS])
    assert [s.name for s in scenarios] == [p.stem for p in FILES]


def test_every_server_down_variant_is_covered() -> None:
    down = {
        host.server_down
        for path in FILES
        for host in load_scenario(path).mx.values()
        if host.server_down
    }
    assert down == set(SERVER_DOWN_MODES)


def test_mixed_campaign_has_100_recipients_and_a_short_file() -> None:
    path = SCENARIOS / "mixed-campaign-100.yaml"
    scenario = load_scenario(path)
    assert len(scenario.recipients) == 100
    assert len(path.read_text().splitlines()) < 40
    (plan,) = scenario.hosts()
    assert len(plan.rules) == 10

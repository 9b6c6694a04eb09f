"""The scenario side of reports: ``clevertap.complaint_as``, the DSN defaults applied to the new
behaviours, the schema, and precise errors for bad input."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from harness.errors import ScenarioError
from harness.scenario.loader import parse_scenario
from harness.scenario.schema import scenario_json_schema
from harness.vocab import MailReport

BASE = """
name: s
{clevertap}
dsn: {{dialect: exim, delay: 3s}}
mx:
  example.com:
    angry@example.com: complaint
    away@example.com: auto_reply
    ok@example.com: {{accept_then_report: relayed}}
    user@example.com: {{accept_then_bounce: invalid_address, final_recipient: old@forward.test}}
campaign:
  from: news@brand.test
  to: [angry@example.com, away@example.com, ok@example.com, user@example.com]
expect:
  callbacks:
    - {{event: {event}, e: angry@example.com}}
"""


def scenario_text(*, clevertap: str = "", event: str = "unsubscribe") -> str:
    return BASE.format(clevertap=clevertap, event=event)


def test_complaint_as_defaults_by_format_and_can_be_set() -> None:
    legacy = parse_scenario(scenario_text())
    assert legacy.clevertap.complaint_as is None
    assert legacy.clevertap.complaint_event == "unsubscribe"
    v2 = parse_scenario(scenario_text(clevertap="clevertap: {format: v2}", event="spam"))
    assert v2.clevertap.complaint_event == "spam"
    mapped = parse_scenario(
        scenario_text(
            clevertap="clevertap: {format: v2, complaint_as: unsubscribe}", event="unsubscribed"
        )
    )
    assert mapped.clevertap.complaint_event == "unsubscribed"


def test_an_unsubscribe_without_a_click_may_be_expected_for_a_complainer_only() -> None:
    # angry@ complains: its unsubscribe needs no click (the complaint is the real event).
    assert parse_scenario(scenario_text()).complainers() == {"angry@example.com"}
    text = scenario_text().replace(
        "e: angry@example.com}",
        "e: angry@example.com}\n    - {event: unsubscribe, e: away@example.com}",
    )
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text)
    (problem,) = info.value.problems
    assert (
        "expect.callbacks[1].e: an unsubscribe is expected for away@example.com but nobody "
        in problem
    )
    # With v2 mapping complaints to spam, an unsubscribed for the complainer needs a click.
    with pytest.raises(ScenarioError, match=r"angry@example\.com but nobody clicks"):
        parse_scenario(scenario_text(clevertap="clevertap: {format: v2}", event="unsubscribed"))


def test_legacy_has_no_spam_mapping() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(scenario_text(clevertap="clevertap: {complaint_as: spam}"))
    (problem,) = [p for p in info.value.problems if "complaint_as" in p]
    assert "clevertap.complaint_as: the legacy format has no spam event" in problem
    assert "seen 'spam'" in problem
    with pytest.raises(ScenarioError, match="complaint_as"):
        parse_scenario(scenario_text(clevertap="clevertap: {complaint_as: bounce}"))


def test_dsn_defaults_apply_to_the_new_behaviours() -> None:
    (plan,) = parse_scenario(scenario_text()).hosts()
    assert plan.rules["angry@example.com"] == {"complaint": None, "after": 3.0}
    assert plan.rules["away@example.com"] == {"auto_reply": None, "after": 3.0}
    assert plan.rules["ok@example.com"] == {
        "accept_then_report": "relayed",
        "dsn": "exim",
        "after": 3.0,
    }
    rules = plan.parsed_rules()
    outcome = rules.decide("s@brand.test", "user@example.com", now=0.0)
    assert outcome.bounce is not None
    assert (outcome.bounce.final_recipient, outcome.bounce.dialect) == ("old@forward.test", "exim")
    assert rules.match("angry@example.com")[1].reports() == {MailReport.COMPLAINT}


def test_a_default_dialect_that_sends_no_success_dsn_is_an_error_at_the_rule() -> None:
    text = scenario_text().replace("dialect: exim", "dialect: gmail")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text)
    assert any("the gmail dialect sends no success DSNs" in p for p in info.value.problems)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{complaint: spam}", "unknown feedback type"),
        ("{auto_reply: holiday}", "unknown auto-reply style"),
        ("{accept_then_report: expanded, dsn: exim}", "never reports alias or list expansion"),
        ("{accept_then_bounce: invalid_address, final_recipient: nobody}", "not an address"),
    ],
)
def test_bad_rules_are_located_in_the_file(rule: str, message: str) -> None:
    text = scenario_text().replace("complaint\n", rule + "\n", 1)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text)
    (problem,) = info.value.problems
    assert problem.startswith("<scenario>:7:")  # the line of angry@example.com's rule
    assert 'mx["example.com"]["angry@example.com"]' in problem
    assert message in problem


def test_the_schema_knows_the_new_behaviours() -> None:
    validator = jsonschema.Draft202012Validator(scenario_json_schema())
    good = YAML(typ="safe").load(
        scenario_text(clevertap="clevertap: {format: v2, complaint_as: spam}", event="spam")
    )
    validator.validate(good)
    bad = YAML(typ="safe").load(scenario_text())
    bad["mx"]["example.com"]["angry@example.com"] = {"complaint": "not-spam"}
    assert not validator.is_valid(bad)
    bad["mx"]["example.com"]["angry@example.com"] = {"accept_then_report": "failed"}
    assert not validator.is_valid(bad)
    bad["clevertap"] = {"complaint_as": "bounce"}
    bad["mx"]["example.com"]["angry@example.com"] = "complaint"
    assert not validator.is_valid(bad)


def test_the_clevertap_block_of_the_docs_is_valid() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "scenarios.md").read_text("utf-8")
    (block,) = [
        b
        for b in re.findall(r"```yaml\n(.*?)```", docs, re.S)
        if "complaint_as" in b and "faults" in b
    ]
    text = f"name: s\n{block}campaign: {{from: news@brand.test, to: [a@example.com]}}\n"
    scenario = parse_scenario(text)
    assert scenario.clevertap.complaint_as == "unsubscribe"
    assert scenario.clevertap.complaint_event == "unsubscribe"

"""Property tests of harness.strategies, and through them of the checks, schema, DSNs and loader.

Example counts come from the hypothesis profile (``HARNESS_HYPOTHESIS_PROFILE``: ``ci`` by
default, ``thorough`` for more), registered in the root conftest.
"""

from __future__ import annotations

import email
import email.policy
import time
from typing import Any

import pytest
from flufl.bounce import all_failures
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from harness import strategies as hs
from harness.clevertap.addresses import address_problem
from harness.clevertap.inspect import Endpoint
from harness.clevertap.models import LegacyPayload, V2Payload
from harness.clevertap.schema import json_schema
from harness.errors import ConfigError, UnknownNameError
from harness.scenario.loader import parse_scenario
from harness.smtp.catalog import CATALOG, BounceClass
from harness.smtp.dialects import PLAIN_TEXT_DIALECTS
from harness.smtp.dsn import recipients_of

NOW = 1_700_000_000


# -- addresses -------------------------------------------------------------------------------------


@given(hs.addresses())
def test_every_address_is_valid(address: str) -> None:
    assert address_problem(address) is None
    assert len(address.rpartition("@")[0].encode()) <= 64


@given(hs.addresses(smtputf8=False, idn=False, quoted=False, plus_tags=False))
def test_without_the_hard_cases_addresses_are_plain(address: str) -> None:
    assert address.isascii()
    assert '"' not in address
    assert "+" not in address
    assert address_problem(address) is None


# Stop at the first example found: shrinking it would only cost time.
FIND = settings(max_examples=2000, database=None, phases=[Phase.generate])


@pytest.mark.parametrize(
    "condition",
    [
        lambda a: a.startswith('"') and " " in a.rpartition("@")[0],
        lambda a: "+" in a and not a.startswith('"'),
        lambda a: not a.rpartition("@")[0].isascii(),
        lambda a: not a.rpartition("@")[2].isascii(),
        lambda a: any(c in a.rpartition("@")[0] for c in "'/=?^`{|}~"),
    ],
    ids=["quoted with a space", "plus tag", "SMTPUTF8 local part", "IDN domain", "atext special"],
)
def test_each_hard_case_is_generated(condition: Any) -> None:
    found = find(hs.addresses(), condition, settings=FIND)
    assert address_problem(found) is None


# -- valid payloads --------------------------------------------------------------------------------


@given(hs.payloads(now=NOW))
def test_every_valid_payload_passes_every_check(case: hs.CallbackRequest) -> None:
    inspection = case.inspect()
    assert inspection.violations == []
    assert inspection.format == ("v2" if case.endpoint is Endpoint.V2 else "legacy")
    if case.endpoint is Endpoint.V2:
        lists = case.payload["events"].values()
        assert len(inspection.events) == sum(len(items) for items in lists)
    else:
        assert len(inspection.events) == sum(len(event["data"]) for event in case.payload)


@given(hs.legacy_payloads(events=["unsubscribe"], min_events=3, max_events=3, now=NOW))
def test_legacy_payload_options(payload: list[dict[str, Any]]) -> None:
    assert [event["event"] for event in payload] == ["unsubscribe"]
    items = payload[0]["data"]
    assert len(items) == 3
    assert all(NOW - 30 * 86400 + 3600 <= item["ts"] <= NOW for item in items)


@given(hs.v2_payloads(types=["delivered"], max_events=4))
def test_v2_payload_options(payload: dict[str, Any]) -> None:
    assert payload["version"] == "v2"
    assert 1 <= len(payload["events"]["success"]) <= 4
    assert not payload["events"].get("failed")
    assert all(item["meta"] for item in payload["events"]["success"])


# -- mutated payloads ------------------------------------------------------------------------------


@given(hs.mutated_payloads(now=NOW))
def test_every_mutation_triggers_exactly_its_code(case: hs.CallbackRequest) -> None:
    codes = {v.code for v in case.inspect().violations}
    assert codes == {case.code}, case.mutation


@pytest.mark.parametrize("code", hs.MUTATION_CODES)
def test_every_code_has_a_mutation(code: str) -> None:
    # A fifth of the profile's examples per code: the test above covers the mix.
    @settings(max_examples=max(5, settings.default.max_examples // 5))
    @given(hs.mutated_payloads(codes=[code], now=NOW))
    def check(case: hs.CallbackRequest) -> None:
        assert case.code == code
        assert {v.code for v in case.inspect().violations} == {code}, case.mutation

    check()


@given(hs.mutated_payloads(format="legacy", now=NOW))
def test_format_limits_the_mutations(case: hs.CallbackRequest) -> None:
    assert case.code not in ("CT207", "CT403", "CT404")


def test_default_now_is_the_current_time() -> None:
    @given(hs.mutated_payloads(codes=["CT304"]))
    def check(case: hs.CallbackRequest) -> None:
        assert case.now == pytest.approx(time.time(), abs=600)
        assert {v.code for v in case.inspect().violations} == {"CT304"}

    check()


# -- the JSON Schema and the models agree (differential) -------------------------------------------

VALIDATORS = {
    "legacy": (Draft202012Validator(json_schema("legacy")), LegacyPayload),
    "v2": (Draft202012Validator(json_schema("v2")), V2Payload),
}


def _model_accepts(model: type[BaseModel], payload: Any) -> bool:
    try:
        model.model_validate(payload, strict=True)
    except ValidationError:
        return False
    return True


def _documented_divergence(fmt: str, payload: Any) -> bool:
    """Where a JSON Schema cannot say what the models say (see harness/clevertap/schema.py)."""
    if fmt == "legacy" and isinstance(payload, list):
        return any(
            isinstance(item, dict) and isinstance(item.get("ts"), float) and item["ts"].is_integer()
            for event in payload
            if isinstance(event, dict) and isinstance(event.get("data"), list)
            for item in event["data"]
        )
    if fmt == "v2" and isinstance(payload, dict) and isinstance(payload.get("events"), dict):
        lists = [v for v in payload["events"].values() if isinstance(v, list)]
        return sum(map(len, lists)) > 1000 and all(len(v) <= 1000 for v in lists)
    return False


@given(st.one_of(hs.payloads(now=NOW), hs.mutated_payloads(now=NOW)))
def test_schema_and_models_agree(case: hs.CallbackRequest) -> None:
    if case.payload is None:
        return  # not JSON: nothing for either to validate
    for fmt, (validator, model) in VALIDATORS.items():
        by_schema = validator.is_valid(case.payload)
        by_model = _model_accepts(model, case.payload)
        if by_schema != by_model:
            assert _documented_divergence(fmt, case.payload), (fmt, case.mutation)
    if case.code is None:
        fmt = "v2" if case.endpoint is Endpoint.V2 else "legacy"
        validator, model = VALIDATORS[fmt]
        assert validator.is_valid(case.payload)
        assert _model_accepts(model, case.payload)


# -- SMTP replies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("klass", list(BounceClass))
def test_replies_come_from_modes_of_the_class(klass: BounceClass) -> None:
    codes = {
        code
        for m in CATALOG.values()
        if m.bounce_class is klass and m.code is not None
        for code in [m.code, *(c for c, _ in m.codes.values())]
    }

    @given(hs.smtp_replies(bounce_class=klass))
    def check(reply: Any) -> None:
        assert reply.code in codes
        assert str(reply).startswith(f"{reply.code} ")
        assert "{rcpt}" not in reply.text

    check()


# -- DSNs ------------------------------------------------------------------------------------------


def _status_digit(action: str) -> set[str]:
    return {"failed": {"4", "5"}, "delayed": {"4"}}.get(action, {"2"})


@given(hs.dsn_messages())
def test_dsns_round_trip_through_the_parser_and_flufl_bounce(sample: hs.DsnSample) -> None:
    parsed = email.message_from_bytes(sample.data, policy=email.policy.default)
    # Plain-text bounces (qmail, legacy Exim, Yahoo) carry no delivery-status part to parse
    # back; recipients_of() knows what a DSN built in memory reported.
    plain = sample.dialect in PLAIN_TEXT_DIALECTS
    for message in (sample.message,) if plain else (sample.message, parsed):
        (report,) = recipients_of(message)
        assert report["recipient"] == sample.recipient
        assert report["action"] == sample.action
        assert report["status"][0] in _status_digit(sample.action)
    if sample.dialect not in ("generic", "postfix", "exim"):
        return  # flufl.bounce on the other dialects: tests/smtp/test_dsn_oracles.py
    temporary, permanent = all_failures(parsed)
    rcpt = {sample.recipient.encode()}
    if sample.action in ("delivered", "relayed", "expanded"):
        assert (temporary, permanent) == (frozenset(), frozenset())
    elif not sample.recipient.isascii():
        # flufl.bounce does not read the RFC 6533 variant (message/global-delivery-status) that
        # a non-ASCII recipient needs: it finds nothing. recipients_of() above does.
        assert (temporary, permanent) == (frozenset(), frozenset())
    elif "=" in sample.recipient:
        # flufl.bounce cuts a recipient at "=" (an RFC 5322 atext character, valid in a local
        # part): "a=b@x.com" comes out as b"a". Found by this test; a bounce handler built on
        # flufl.bounce would lose such recipients.
        cut = {sample.recipient.partition("=")[0].encode()}
        assert (temporary | permanent) == cut
    elif sample.action == "failed":
        assert (temporary, permanent) == (frozenset(), rcpt)
    else:
        assert (temporary, permanent) == (rcpt, frozenset())


@given(hs.dsn_messages(dialect="exim", action="failed"))
def test_dsn_options_and_class(sample: hs.DsnSample) -> None:
    assert sample.dialect == "exim"
    assert sample.bounce_class is CATALOG[sample.mode].bounce_class
    assert sample.message["X-Failed-Recipients"] == sample.recipient


# -- scenarios -------------------------------------------------------------------------------------


@given(hs.scenarios())
def test_generated_scenarios_load(text: str) -> None:
    scenario = parse_scenario(text, source="<generated>")
    assert scenario.recipients
    assert scenario.name.startswith("generated-")


@given(hs.scenarios(format="v2", max_recipients=2))
def test_scenario_options(text: str) -> None:
    scenario = parse_scenario(text)
    assert scenario.clevertap.format == "v2"
    assert 1 <= len(scenario.recipients) <= 2


# -- bad options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: hs.addresses(idn="yes"), ConfigError, "idn must be True or False, got 'yes'"),
        (lambda: hs.payloads(format="v3"), ConfigError, "format must be 'legacy', 'v2' or None"),
        (lambda: hs.payloads(now=1.7e12), ConfigError, "now must be epoch seconds between"),
        (
            lambda: hs.legacy_payloads(events=["hardbouce"]),
            UnknownNameError,
            "unknown event 'hardbouce'; did you mean 'hardbounce'",
        ),
        (lambda: hs.legacy_payloads(events="hardbounce"), ConfigError, "not the string"),
        (lambda: hs.legacy_payloads(events=[]), ConfigError, "events must name at least one"),
        (
            lambda: hs.legacy_payloads(min_events=5, max_events=2),
            ConfigError,
            "max_events must be an int between 5 and 10000, got 2",
        ),
        (
            lambda: hs.v2_payloads(max_events=1001),
            ConfigError,
            "max_events must be an int between 1 and 1000, got 1001",
        ),
        (lambda: hs.v2_payloads(emails=["a@b.c"]), ConfigError, "emails must be a hypothesis"),
        (lambda: hs.mutated_payloads(codes=["CT999"]), UnknownNameError, "unknown code 'CT999'"),
        (
            lambda: hs.mutated_payloads(format="legacy", codes=["CT403"]),
            ConfigError,
            "cannot be triggered with format 'legacy': CT403 needs v2",
        ),
        (
            lambda: hs.smtp_replies(bounce_class="hrad"),
            UnknownNameError,
            "unknown bounce_class 'hrad'; did you mean 'hard'",
        ),
        (lambda: hs.dsn_messages(dialect="courier"), UnknownNameError, "unknown DSN dialect"),
        (lambda: hs.dsn_messages(action="bounced"), ConfigError, "action must be one of"),
        (lambda: hs.scenarios(max_recipients=0), ConfigError, "max_recipients must be an int"),
    ],
)
def test_bad_options_fail_when_the_strategy_is_built(
    build: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        build()


def test_generated_scenarios_include_reports_with_their_callbacks() -> None:
    text = find(hs.scenarios(format="legacy"), lambda t: ": complaint" in t)
    scenario = parse_scenario(text)
    complainers = scenario.complainers()
    assert complainers
    # A complaint expects its unsubscribe with no click (legacy has no spam event).
    expected = {(c.event, c.e) for c in scenario.expect.callbacks}
    assert {("unsubscribe", a) for a in complainers} <= expected
    assert not scenario.unsubscribe or all(
        c.recipient not in complainers for c in scenario.unsubscribe
    )

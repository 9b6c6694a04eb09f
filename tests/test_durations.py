"""One duration grammar for the command line, scenario files, the control API and the plugin."""

from __future__ import annotations

import re

import pytest

from harness.clevertap.faults import FaultRule, parse_fault
from harness.durations import DURATION_PATTERN, DurationError, parse_duration
from harness.errors import ConfigError
from harness.scenario.loader import parse_scenario

GOOD = {"2": 2.0, "0.5": 0.5, "200ms": 0.2, "2s": 2.0, "1.5m": 90.0, "1h": 3600.0, " 3 s ": 3.0}
BAD = ["", "soon", "-1", "2 sec", "1e3", "1,5s", "inf", "nan", "ms"]


@pytest.mark.parametrize(("text", "seconds"), GOOD.items())
def test_good_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert re.fullmatch(DURATION_PATTERN, text)  # the JSON Schema says the same


@pytest.mark.parametrize("text", BAD)
def test_bad_durations_say_what_was_expected(text: str) -> None:
    with pytest.raises(
        DurationError, match=r'expected a number of seconds or a string like "200ms"'
    ):
        parse_duration(text)
    assert not re.fullmatch(DURATION_PATTERN, text)


@pytest.mark.parametrize("value", [True, -0.5, float("inf"), None, [1]])
def test_non_strings(value: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(value)
    assert parse_duration(7) == 7.0


def test_every_reader_uses_the_one_grammar() -> None:
    assert parse_fault("delay=200ms").delay == pytest.approx(0.2)  # --fault
    assert parse_fault("503,delay=1.5m").delay == 90.0
    body = {"action": "delay", "delay": "2s"}  # the control API's JSON body
    assert FaultRule.model_validate(body).delay == 2.0
    scenario = parse_scenario(
        "campaign: {from: a@brand.test, to: [x@example.com]}\n"
        "clevertap: {faults: [{delay: 200ms}]}\nexpect: {within: 1.5m}\n"
    )  # YAML
    assert scenario.expect.within == 90.0
    assert scenario.clevertap.faults[0].delay == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="delay: Value error, not a duration"):
        parse_fault("delay=soon")

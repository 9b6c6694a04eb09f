"""Every deliberately broken variant of the example integration fails its scenario for the right
reason (the specific unmet expectation and violation code), and the correct one passes them all.

Each test runs a shipped scenario end to end: real fake servers, the gateway as a subprocess
(``--bug NAME`` as ``harness run --sut`` would start it), real SMTP and HTTP in between.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from harness.journal import Journal, Kind
from harness.records import Callback, Click
from harness.scenario.judge import ExpectationResult, Verdict
from harness.scenario.loader import load_scenario
from harness.scenario.model import Scenario
from harness.scenario.runner import RunOptions, ScenarioResult, run_scenario, run_scenarios

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = str(ROOT / "examples" / "integration" / "gateway.py")


DEADLINE = 6.0
"""A missing callback is only known missing at the deadline; the shipped scenarios allow 15-30 s,
the example (with the scenarios' short retry schedules) needs under 3 s."""


def _load(name: str) -> Scenario:
    scenario = load_scenario(ROOT / "scenarios" / f"{name}.yaml")
    expect = scenario.expect.model_copy(update={"within": DEADLINE})
    return scenario.model_copy(update={"expect": expect})


def _run(scenario: str, bug: str | None) -> ScenarioResult:
    sut = [sys.executable, GATEWAY, *(["--bug", bug] if bug else [])]
    return asyncio.run(run_scenario(_load(scenario), RunOptions(sut=sut)))


def _unmet(verdict: Verdict) -> dict[str, ExpectationResult]:
    return {e.path: e for e in verdict.expectations if not e.met}


def _codes(verdict: Verdict) -> set[str]:
    return {v.code for v in verdict.failing_violations}


def _statuses(journal: Journal) -> list[int | None]:
    """The status each callback request was answered, in order."""
    records = [e.data for e in journal.entries(Kind.CALLBACK)]
    assert all(isinstance(r, Callback) for r in records)
    return [r.status for r in records if isinstance(r, Callback)]


def test_ms_timestamps_is_caught_by_the_ts_check() -> None:
    result = _run("invalid-address", "ms_timestamps")
    verdict = result.verdict
    assert verdict is not None
    assert not verdict.passed
    assert _codes(verdict) == {"CT303"}
    unmet = _unmet(verdict)
    assert sorted(unmet) == ["expect.callbacks[0]", "expect.violations"]
    # The strict fake CleverTap answered 400: the bounce never counted as reported.
    assert unmet["expect.callbacks[0]"].reason.startswith(
        "arrived only in requests that were not accepted: hardbounce nobody@example.com"
    )
    assert _statuses(result.journal) == [400]


def test_swapped_classes_reports_a_soft_bounce_as_hard() -> None:
    verdict = _run("mailbox-full", "swapped_classes").verdict
    assert verdict is not None
    assert not verdict.passed
    assert _codes(verdict) == {"CT503"}
    unmet = _unmet(verdict)
    assert sorted(unmet) == ["expect.callbacks[0]", "expect.nothing_else", "expect.violations"]
    assert unmet["expect.callbacks[0]"].reason == "did not arrive"
    assert [(e.event, e.email) for e in verdict.unexpected] == [("hardbounce", "full@example.com")]


def test_double_report_sends_each_bounce_twice() -> None:
    verdict = _run("invalid-address", "double_report").verdict
    assert verdict is not None
    assert not verdict.passed
    assert "CT506" in _codes(verdict)
    unmet = _unmet(verdict)
    assert unmet["expect.callbacks[0]"].reason.startswith("arrived 2 times, expected 1: seq ")


def test_no_unsubscribe_honours_the_click_but_never_calls_back() -> None:
    result = _run("one-click-unsubscribe", "no_unsubscribe")
    verdict = result.verdict
    assert verdict is not None
    assert not verdict.passed
    assert sorted(_unmet(verdict)) == ["expect.callbacks[0]"]
    assert _unmet(verdict)["expect.callbacks[0]"].reason == "did not arrive"
    # The click itself worked (200 from the unsubscribe page): the bug is the missing callback.
    records = [e.data for e in result.journal.entries(Kind.CLICK)]
    assert all(isinstance(r, Click) for r in records)
    clicks = [(r.via, r.status, r.ok) for r in records if isinstance(r, Click)]
    assert clicks == [("one_click", 200, True)]
    assert result.journal.entries(Kind.CALLBACK) == []


def test_no_retry_gives_up_on_the_first_503() -> None:
    result = _run("callback-outage", "no_retry")
    verdict = result.verdict
    assert verdict is not None
    assert not verdict.passed
    assert sorted(_unmet(verdict)) == ["expect.callbacks[0]"]
    assert _unmet(verdict)["expect.callbacks[0]"].reason.startswith(
        "arrived only in requests that were not accepted: softbounce full@example.com"
    )
    assert _statuses(result.journal) == [503]


def test_the_correct_integration_passes_the_same_scenarios() -> None:
    names = ["invalid-address", "mailbox-full", "one-click-unsubscribe", "callback-outage"]
    scenarios = [_load(n) for n in names]
    options = RunOptions(sut=[sys.executable, GATEWAY], jobs=2)
    results = asyncio.run(run_scenarios(scenarios, options))
    assert [(r.name, r.error, r.passed) for r in results] == [(n, None, True) for n in names]
    assert _statuses(results[3].journal) == [503, 503, 503, 200]


@pytest.mark.parametrize("bug", ["swapped_classes", "double_report"])
def test_bugs_that_do_not_touch_a_scenario_leave_it_passing(bug: str) -> None:
    # A control: the one-click scenario involves no bounce, so these bugs cannot show there.
    assert _run("one-click-unsubscribe", bug).passed

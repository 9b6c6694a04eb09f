"""Every ``--bug`` variant of the example integration is caught by a shipped scenario, for its
own reason: the check code, or the expectation, named in docs/example-bugs.md.

Each case runs one shipped scenario end to end as ``harness run --sut "gateway.py --bug NAME"``
would: the real fake servers, the gateway as a subprocess, real SMTP and HTTP in between. Only
the scenario that catches the variant is run. The correct example passing every shipped
scenario (the control) is ``tests/scenario/test_e2e.py::test_every_shipped_scenario_passes_
against_the_example``.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from example_peers import example_settings

from harness.journal import Kind
from harness.records import Click
from harness.scenario.loader import load_scenario
from harness.scenario.runner import RunOptions, ScenarioResult, run_scenario

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "examples" / "integration" / "gateway.py"
DOC = ROOT / "docs" / "example-bugs.md"


BUGS: Mapping[str, str] = example_settings().BUGS

CAUGHT: dict[str, tuple[str, str]] = {
    # variant: (the shipped scenario that catches it, the check code or unmet expectation)
    "ms_timestamps": ("invalid-address", "CT303"),
    "swapped_classes": ("mailbox-full", "CT503"),
    "double_report": ("invalid-address", "CT506"),
    "no_unsubscribe": ("one-click-unsubscribe", "expect.callbacks[0]"),
    "no_retry": ("callback-outage", "expect.callbacks[0]"),
    "late_double_report": ("invalid-address", "CT506"),
    "no_backoff": ("callback-outage", "CT511"),
    "ignore_retry_after": ("callback-throttled", "CT511"),
    "dsn_send_time_ts": ("async-bounce-late", "CT505"),
    "tz_offset": ("invalid-address", "CT304"),
    "delayed_as_bounce": ("dsn-delayed", "CT513"),
    "no_smtp_retry": ("mailbox-full", "CT510"),
    "report_each_deferral": ("greylisting", "CT502"),
    "down_is_hard": ("server-down-refused", "CT503"),
    "reply_code_only": ("v2-meta-echo", "CT503"),
    "exim_status_only": ("async-bounce-exim-soft", "CT503"),
    "double_unsubscribe": ("unsubscribe-twice", "CT512"),
    "ignore_sigterm": ("invalid-address", "integration.stop_timeout"),
    "no_content_type": ("invalid-address", "CT103"),
    "delivered_on_queue": ("v2-meta-echo", "CT509"),
    "stale_meta": ("v2-meta-echo", "CT508"),
    "punycode_address": ("smtputf8", "CT515"),
    "unsubscribe_on_get": ("link-scanner", "CT507"),
    "any_password": ("submission-auth", "CT601"),
    "auth_optional": ("submission-auth", "CT601"),
    "success_dsn_as_bounce": ("success-dsn", "CT514"),
    "alias_reported": ("aliasing", "CT515"),
    "auto_reply_as_bounce": ("auto-reply", "CT520"),
    "complaint_ignored": ("complaint-legacy", "CT521"),
    "float_ts": ("invalid-address", "CT302"),
    "legacy_delivered": ("invalid-address", "CT202"),
    "no_one_click_header": ("one-click-unsubscribe", "expect.callbacks[0]"),
}

DEADLINE = 6.0
"""A callback that never comes is known missing only at the deadline; the shipped scenarios
allow 15-45 s, the example (with the scenarios' short retry schedules) needs under 3 s."""
KEEP_WINDOW = {"async-bounce-late"}
"""Scenarios whose DSN comes later than DEADLINE: their own window stays."""
STOP_GRACE = 2.0
"""For ignore_sigterm: the correct example exits in well under a second after SIGTERM."""


def _run(scenario_name: str, bug: str) -> ScenarioResult:
    scenario = load_scenario(ROOT / "scenarios" / f"{scenario_name}.yaml")
    if scenario_name not in KEEP_WINDOW:
        within = min(scenario.expect.within, DEADLINE)
        scenario = scenario.model_copy(
            update={"expect": scenario.expect.model_copy(update={"within": within})}
        )
    options = RunOptions(
        sut=[sys.executable, str(GATEWAY), "--bug", bug],
        stop_grace=STOP_GRACE if bug == "ignore_sigterm" else None,
    )
    return asyncio.run(run_scenario(scenario, options))


def test_every_variant_is_in_the_table_and_there_are_at_least_20() -> None:
    assert sorted(CAUGHT) == sorted(BUGS)
    assert len(BUGS) >= 20
    for name, description in BUGS.items():
        assert re.fullmatch(r"[a-z0-9_]+", name)
        assert description
        assert "\n" not in description
        assert "|" not in description
    # Each is marked where it lives, so a reader finds the one line that is wrong.
    source = "".join(p.read_text() for p in sorted(GATEWAY.parent.glob("*.py")))
    for name in BUGS:
        assert f"# BUG({name})" in source, name


def _doc_rows() -> list[tuple[str, str, str, str]]:
    rows = []
    for line in DOC.read_text().splitlines():
        match = re.fullmatch(r"\| `([a-z0-9_]+)` \| (.+?) \| `([a-z0-9-]+)` \| `([^`]+)` \|", line)
        if match:
            rows.append((match[1], match[2], match[3], match[4]))
    return rows


def test_the_docs_table_is_this_table() -> None:
    expected = [(name, BUGS[name], *CAUGHT[name]) for name in BUGS]
    assert _doc_rows() == expected


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("bug", list(BUGS))
def test_variant_is_caught_for_its_own_reason(bug: str) -> None:
    scenario, reason = CAUGHT[bug]
    result = _run(scenario, bug)
    assert result.error is None, result.error
    verdict = result.verdict
    assert verdict is not None
    unmet = {e.path: e.reason for e in verdict.expectations if not e.met}
    codes = {v.code for v in verdict.failing_violations}
    assert not result.passed
    if reason.startswith("CT"):
        # That code and no other error: the variant is caught for its own mistake.
        assert codes == {reason}, (codes, unmet)
        assert "expect.violations" in unmet
    else:
        assert codes == set(), (codes, unmet)
        assert reason in unmet, unmet
    if reason == "expect.callbacks[0]" and scenario == "one-click-unsubscribe":
        # Two variants fail the same expectation; the clicks tell them apart: the page took the
        # click and said nothing, or the message offered no one-click at all.
        clicks = [e.data for e in result.journal.entries(Kind.CLICK)]
        assert all(isinstance(c, Click) for c in clicks)
        (click,) = clicks
        assert isinstance(click, Click)
        if bug == "no_unsubscribe":
            assert (click.ok, click.status) == (True, 200)
        else:
            assert not click.ok
            assert "List-Unsubscribe-Post is 'missing'" in (click.error or "")
    # The rest of the run was sound: the integration stopped when asked, unless that is the bug.
    assert result.sut_killed is (bug == "ignore_sigterm"), unmet
    if bug == "ignore_sigterm":
        assert unmet == {"integration.stop_timeout": unmet["integration.stop_timeout"]}, (
            "only the stop is wrong"
        )
        assert unmet["integration.stop_timeout"].startswith(
            f"killed with SIGKILL: still running {STOP_GRACE:g} s after SIGTERM"
        )

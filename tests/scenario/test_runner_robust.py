"""The runner never loses a report and says what it saw: SIGTERM compliance judged (a deaf
integration is killed and fails, one that leaves early fails), the time budget and stop time in
the integration's environment, non-ASCII recipients submitted with SMTPUTF8, a harness error in
one scenario reported as that scenario's failure while the others go on, and a "did not arrive"
that tells what the mail world saw.

Real integrations as subprocesses (the bundled example, or ``data/mini_sut.py``: a minimal one
that takes submissions and can report, duplicate, ignore SIGTERM or leave), real fake servers.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import harness.scenario.runner as runner_module
from harness.cli import main
from harness.journal import Kind
from harness.records import Note, Sent
from harness.scenario.loader import parse_scenario
from harness.scenario.model import Scenario
from harness.scenario.runner import (
    RunOptions,
    ScenarioResult,
    run_scenario,
    run_scenarios,
    verdict_of,
)

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "examples" / "integration" / "gateway.py"
MINI = Path(__file__).resolve().parent / "data" / "mini_sut.py"


def _scenario(text: str, tmp_path: Path, name: str = "s") -> Scenario:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return parse_scenario(text, source=path)


def _run(text: str, tmp_path: Path, **options: Any) -> ScenarioResult:
    return asyncio.run(run_scenario(_scenario(text, tmp_path), RunOptions(**options)))


def _mini(
    env: str,
    *,
    to: str = "[a@example.com]",
    within: str = "10s",
    extra: str = "",
    stop: str = "5s",
) -> str:
    return f"""
name: mini
campaign: {{from: news@brand.test, to: {to}}}
integration:
  command: [python, {MINI}]
  env: {{{env}}}
  stop_timeout: {stop}
expect:
  within: {within}
  quiet: 300ms
  violations: {{allow: [CT501]}}     # the mini integration relays nothing
{extra}"""


def _unmet(result: ScenarioResult) -> dict[str, str]:
    verdict = verdict_of(result)
    return {e.path: e.reason for e in verdict.expectations if not e.met}


# -- SIGTERM -------------------------------------------------------------------------------------


def test_an_integration_deaf_to_sigterm_is_killed_and_fails(tmp_path: Path) -> None:
    result = _run(_mini('MINI_BOUNCE: "1", MINI_DEAF: "1"', stop="500ms"), tmp_path)
    assert result.sut_killed
    assert _unmet(result) == {
        "integration.stop_timeout": "killed with SIGKILL: still running 0.5 s after SIGTERM "
        "(SIGTERM ignored, or its shutdown took too long)"
    }
    assert "ready, deaf to SIGTERM" in result.sut_log
    notes = [e.data for e in result.journal.entries(Kind.NOTE)]
    assert (
        Note(
            source="runner",
            what="integration stopped",
            detail="killed with SIGKILL, still running 0.5 s after SIGTERM",
        )
        in notes
    )


def test_an_integration_that_stops_on_sigterm_passes(tmp_path: Path) -> None:
    extra = "  callbacks:\n    - {event: hardbounce, e: a@example.com}\n"
    result = _run(_mini('MINI_BOUNCE: "1"', extra=extra, stop="5s"), tmp_path)
    assert result.passed, _unmet(result)
    assert (result.sut_killed, result.sut_exit) == (False, 0)
    stop = verdict_of(result).expectations[-1]
    assert stop.path == "integration.stop_timeout"
    assert stop.description == "the integration runs until SIGTERM, then exits within 5 s"
    assert stop.reason.startswith("exited (status 0) ")
    assert stop.reason.endswith(" s after SIGTERM")
    assert "SIGTERM: stopping" in result.sut_log


def test_an_integration_that_leaves_before_the_end_fails(tmp_path: Path) -> None:
    result = _run(_mini('MINI_EXIT_AFTER: "0.2"', within="2s"), tmp_path)
    assert not result.sut_killed
    assert _unmet(result)["integration.stop_timeout"] == (
        "exited on its own (exit status 3) before the run ended; it must run until SIGTERM"
    )


def _wrapped(env: str, stop: str) -> str:
    # A shell wrapper that forks (the trailing echo keeps sh from exec'ing python): SIGTERM
    # goes to the process group, so the integration behind the wrapper gets it too.
    return _mini(env, stop=stop).replace(
        f"command: [python, {MINI}]", f'command: [sh, -c, "{sys.executable} {MINI}; echo done"]'
    )


def test_sigterm_reaches_an_integration_behind_a_shell_wrapper(tmp_path: Path) -> None:
    result = _run(_wrapped('MINI_BOUNCE: "1"', stop="5s"), tmp_path)
    assert not result.sut_killed
    assert "SIGTERM: stopping" in result.sut_log
    assert "integration.stop_timeout" not in _unmet(result)


def test_a_deaf_integration_behind_a_wrapper_that_exits_is_still_killed(tmp_path: Path) -> None:
    # The wrapper dies of the SIGTERM at once; the integration it started ignores it and would
    # outlive the run: the group is waited for, then killed, and the scenario fails.
    result = _run(_wrapped('MINI_BOUNCE: "1", MINI_DEAF: "1"', stop="500ms"), tmp_path)
    assert result.sut_killed
    assert "integration.stop_timeout" in _unmet(result)


def test_the_cli_says_the_integration_was_killed(tmp_path: Path) -> None:
    path = tmp_path / "deaf.yaml"
    path.write_text(_mini('MINI_BOUNCE: "1", MINI_DEAF: "1"', stop="500ms"), encoding="utf-8")
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    result = CliRunner().invoke(
        main, ["run", "-q", str(path), "--json", str(report), "--junit", str(junit)]
    )
    assert result.exit_code == 1, result.output
    assert "killed with SIGKILL" in result.stdout
    # Every report format says so: the JUnit failure carries the same account.
    assert "killed with SIGKILL: still running 0.5 s after SIGTERM" in junit.read_text("utf-8")
    assert "--- mini: output of the integration (killed) ---" in result.stderr
    (scenario,) = json.loads(report.read_text(encoding="utf-8"))["scenarios"]
    (failed,) = [e for e in scenario["expectations"] if not e["met"]]
    assert (failed["kind"], failed["path"]) == ("integration", "integration.stop_timeout")


# -- the contract's time budget ------------------------------------------------------------------


def test_the_integration_is_told_its_retry_budget_and_stop_time(tmp_path: Path) -> None:
    result = _run(_mini('MINI_BOUNCE: "1"', within="15s"), tmp_path)
    assert "env HARNESS_RETRY_BUDGET=10\n" in result.sut_log  # within 15 s minus 5 s
    assert "env HARNESS_STOP_TIMEOUT=5\n" in result.sut_log
    budget = _mini('MINI_BOUNCE: "1"', within="15s").replace(
        "stop_timeout: 5s", "stop_timeout: 5s\n  retry_budget: 3s"
    )
    assert "env HARNESS_RETRY_BUDGET=3\n" in _run(budget, tmp_path).sut_log


def test_the_default_budget_leaves_time_to_report(tmp_path: Path) -> None:
    base = "campaign: {from: n@brand.test, to: [a@example.com]}\nexpect: {within: %s}\n"
    budgets = [_scenario(base % w, tmp_path).retry_budget for w in ("4s", "15s", "45s")]
    assert budgets == [2.0, 10.0, 40.0]


# -- non-ASCII recipients ------------------------------------------------------------------------


def test_non_ascii_recipients_are_submitted_with_smtputf8(tmp_path: Path) -> None:
    to = '[ascii@example.com, "jürgen@example.com", "ана@пример.рф"]'
    result = _run(_mini('MINI_BOUNCE: "1"', to=to), tmp_path)
    assert result.error is None
    sent = [e.data for e in result.journal.entries(Kind.SENT)]
    assert all(isinstance(s, Sent) for s in sent)
    assert sorted((s.to, s.ok) for s in sent if isinstance(s, Sent)) == [
        (("ascii@example.com",), True),
        (("jürgen@example.com",), True),
        (("ана@пример.рф",), True),
    ]
    assert "got news@brand.test -> jürgen@example.com utf8=True" in result.sut_log
    assert "got news@brand.test -> ана@пример.рф utf8=True" in result.sut_log
    assert "got news@brand.test -> ascii@example.com utf8=False" in result.sut_log


def test_harness_run_with_a_non_ascii_recipient_reports_every_scenario(tmp_path: Path) -> None:
    # The crash: any non-ASCII recipient killed `harness run` with a UnicodeEncodeError
    # in the campaign driver, and no scenario of the run was reported. Whatever the bundled
    # example then makes of the address, the run goes on and both scenarios are reported.
    utf8 = tmp_path / "utf8.yaml"
    utf8.write_text(
        "name: utf8\n"
        'campaign: {from: news@brand.test, to: ["jürgen@example.com", ok@example.com]}\n'
        "expect: {within: 3s}\n",
        encoding="utf-8",
    )
    plain = tmp_path / "plain.yaml"
    plain.write_text(
        "name: plain\ncampaign: {from: news@brand.test, to: [ok@example.com]}\n"
        "expect: {within: 3s}\n",
        encoding="utf-8",
    )
    report = tmp_path / "r.json"
    result = CliRunner().invoke(
        main,
        ["run", "-q", str(utf8), str(plain), "--sut", f"python {GATEWAY}", "--json", str(report)],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (0, 1)
    data = json.loads(report.read_text(encoding="utf-8"))
    assert [s["scenario"] for s in data["scenarios"]] == ["utf8", "plain"]
    assert all(
        e["path"] not in ("harness", "integration")
        for s in data["scenarios"]
        for e in s["expectations"]
        if not e["met"]
    )


def test_without_smtputf8_a_non_ascii_recipient_is_a_refused_submission(tmp_path: Path) -> None:
    to = '["jürgen@example.com", ascii@example.com]'
    result = _run(_mini('MINI_NO_UTF8: "1"', to=to, within="2s"), tmp_path)
    assert result.error is None
    by_rcpt = {
        s.to[0]: s for e in result.journal.entries(Kind.SENT) if isinstance(s := e.data, Sent)
    }
    assert not by_rcpt["jürgen@example.com"].ok
    assert by_rcpt["jürgen@example.com"].error is not None
    assert "does not offer SMTPUTF8, needed for jürgen@example.com" in (
        by_rcpt["jürgen@example.com"].error
    )
    assert by_rcpt["ascii@example.com"].ok


# -- a harness error stays in its scenario -------------------------------------------------------


def test_a_harness_error_fails_its_scenario_and_the_others_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = runner_module.submit_campaign

    async def broken(campaign: Any, *args: Any, **kwargs: Any) -> int:
        if campaign.recipients == ["boom@example.com"]:
            raise UnicodeEncodeError("ascii", "bø", 1, 2, "ordinal not in range(128)")
        return await real(campaign, *args, **kwargs)

    monkeypatch.setattr(runner_module, "submit_campaign", broken)
    extra = "  callbacks:\n    - {event: hardbounce, e: a@example.com}\n"
    good = _scenario(_mini('MINI_BOUNCE: "1"', extra=extra), tmp_path, "good")
    bad = _scenario(_mini('MINI_BOUNCE: "1"', to="[boom@example.com]"), tmp_path, "bad")
    bad = bad.model_copy(update={"name": "bad"})
    results = asyncio.run(run_scenarios([bad, good], RunOptions(jobs=1)))
    assert [(r.name, r.passed) for r in results] == [("bad", False), ("mini", True)]
    failed = results[0]
    assert failed.harness_error
    assert failed.error is not None
    assert failed.error.startswith("harness error at runner.py:")
    assert failed.error.endswith(
        "UnicodeEncodeError: 'ascii' codec can't encode character '\\xf8' in position 1: "
        "ordinal not in range(128)"
    )
    # The integration of the failed scenario was still stopped, as it should be.
    assert (failed.sut_exit, failed.sut_killed) == (0, False)
    assert "SIGTERM: stopping" in failed.sut_log
    verdict = verdict_of(failed)
    (unmet,) = verdict.failures
    assert (unmet.kind, unmet.path) == ("integration", "harness")
    assert unmet.description == "the harness runs the scenario to the end"
    assert unmet.reason.startswith(failed.error)


def test_the_cli_reports_every_scenario_when_one_crashes_the_harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the judge fell over")

    monkeypatch.setattr(runner_module, "judge", broken)
    path = tmp_path / "a.yaml"
    path.write_text(_mini('MINI_BOUNCE: "1"'), encoding="utf-8")
    other = tmp_path / "b.yaml"
    other.write_text(_mini('MINI_BOUNCE: "1"').replace("name: mini", "name: other"), "utf-8")
    report = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["run", "-q", str(path), str(other), "--json", str(report)])
    assert result.exit_code == 1, result.output
    assert "0 passed, 2 failed" in result.stdout
    data = json.loads(report.read_text(encoding="utf-8"))
    assert [s["scenario"] for s in data["scenarios"]] == ["mini", "other"]
    for scenario in data["scenarios"]:
        (failed,) = scenario["expectations"]
        assert failed["path"] == "harness"
        assert "RuntimeError: the judge fell over" in failed["reason"]


# -- what the world saw --------------------------------------------------------------------------

SLOW_RETRIES = f"""
name: slow-retries
mx:
  example.com:
    full@example.com: mailbox_full
campaign: {{from: news@brand.test, to: [full@example.com]}}
integration:
  command: [python, {GATEWAY}]
  env: {{EXAMPLE_RETRY_DELAYS: "1.5,3", EXAMPLE_RETRY_BUDGET: ignore}}
expect:
  within: 2500ms
  callbacks:
    - {{event: softbounce, e: full@example.com}}
"""


def test_did_not_arrive_says_what_the_mail_world_saw(tmp_path: Path) -> None:
    # A realistic retry schedule (1.5 s, then 3 s) in a 2.5 s window: the soft bounce would come
    # after the window closed. The report says so instead of a bare "did not arrive".
    result = _run(SLOW_RETRIES, tmp_path)
    verdict = result.verdict
    assert verdict is not None, result.error
    assert not result.settled
    first = verdict.expectations[0]
    assert (first.met, first.reason) == (False, "did not arrive")
    world = list(first.world)
    assert world[0].endswith(": submitted to the integration")
    attempts = [line for line in world if ": refused: 452 4.2.2" in line]
    assert len(attempts) == 2
    # The first attempt at once, the retry 1.5 s later; the next one was due after the window.
    assert attempts[0].startswith("+0.")
    assert attempts[1].startswith("+1.")
    assert world[-1].startswith("+2.5 s: the window closed (expect.within 2.5 s); the last thing")
    assert world[-1].endswith(
        "was a temporary failure: the integration may still have been retrying (its retry "
        "budget, HARNESS_RETRY_BUDGET, was 1.25 s)"
    )
    assert verdict.notes == [
        "judged when the time was up, not settled: 1 recipient(s) without a final outcome: "
        "full@example.com; expected callbacks still missing"
    ]

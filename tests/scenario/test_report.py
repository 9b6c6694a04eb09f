"""The reports: terminal and text (exact key lines), JSON (stable shape), JUnit XML (structure)."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from harness.scenario.judge import Verdict, judge
from harness.scenario.loader import load_scenario, parse_scenario
from harness.scenario.report import (
    exit_code,
    junit_xml,
    print_report,
    render_text,
    report_json,
    summary,
    write_json,
    write_junit,
)

from .test_crosschecks import T0, Run, rcpt

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
FULL = "452 4.2.2 The recipient's inbox is out of storage space."
# The journal seqs the reports show, fixed by the runs below (a connection is three entries:
# smtp_open, smtp_reply, smtp_session); the fixtures check them.
REPLY, HARD, TYPO = 2, 4, 5
"""``failed``: the 452 reply, the hardbounce callback, the rejected callback."""
PASSED_CB = 4
"""``passed``: its callback."""


@pytest.fixture
def failed() -> Verdict:
    """mailbox-full, reported hard, plus a rejected callback in milliseconds for a typo."""
    run = Run()
    session = run.session(1, rcpt("full@example.com", 452, "soft", mode="mailbox_full", reply=FULL))
    hard = run.legacy(5, "hardbounce", ("full@example.com", int(T0) + 4))
    typo = run.legacy(6, "softbounce", ("ful@example.com", int(T0) * 1000), status=400)
    assert (session.reply.seq, hard.seq, typo.seq) == (REPLY, HARD, TYPO)
    scenario = load_scenario(SCENARIOS / "mailbox-full.yaml")
    return judge(scenario, run.journal, started=T0, finished=T0 + 12)


@pytest.fixture
def passed() -> Verdict:
    run = Run()
    run.session(1, rcpt("nobody@example.com", 550, "hard"))
    assert run.legacy(2, "hardbounce", ("nobody@example.com", int(T0) + 1)).seq == PASSED_CB
    scenario = load_scenario(SCENARIOS / "invalid-address.yaml")
    return judge(scenario, run.journal, started=T0, finished=T0 + 3.5)


def lines(text: str) -> list[str]:
    """The lines of *text* with runs of spaces collapsed (column widths are rich's business)."""
    return [" ".join(line.split()) for line in text.splitlines()]


def test_text_report_of_a_failed_scenario(failed: Verdict) -> None:
    text = render_text(failed, width=400)
    path = SCENARIOS / "mailbox-full.yaml"
    found = lines(text)
    assert found[:14] == [
        f"FAIL mailbox-full ({path}) 12.0 s, 2 callbacks",
        "expectation | met | evidence",
        found[2],  # the rule under the header
        "expect.callbacks[0]: softbounce for full@example.com | NO | did not arrive",
        "expect.nothing_else: no callback other than the expected ones | NO | 2 unexpected: "
        f"hardbounce full@example.com (seq {HARD}, 200); softbounce ful@example.com (seq {TYPO}, "
        "400, CT303)",
        "expect.violations: no violations | NO | 3 errors: CT303 x1, CT503 x1, CT510 x1",
        "expect.callbacks[0]: expected vs seen",
        "- expected softbounce for full@example.com",
        f"+ seen hardbounce full@example.com (seq {HARD}, 200)",
        f"+ seen softbounce ful@example.com (seq {TYPO}, 400, CT303)",
        "the mail world, for this recipient:",
        f"+1.1 s seq {REPLY}: refused: {FULL} at rcpt (mailbox_full, attempt 1) on example.com",
        "+30.0 s: the window closed (expect.within 30 s)",
        "violations: 3",
    ]
    assert set(found[2]) == {"-", "+"}
    assert found[14:] == [
        "code | severity | path | message | journal",
        found[15],
        "CT303 | error | $[0].data[0].ts | ts looks like milliseconds: 1700000000000 is "
        "1700000000 s (2023-11-14T22:13:20Z) (expected epoch seconds, seen 1700000000000) | "
        f"{TYPO}",
        "CT503 | error | $[0].data[0] | hardbounce for full@example.com, but the real failure "
        f"is soft: {FULL} at rcpt (mailbox_full, attempt 1) on example.com (expected a soft "
        f"bounce, seen hardbounce (hard)) | {HARD}, {REPLY}",
        # the 452 was never retried before the bounce
        "CT510 | error | $[0].data[0] | hardbounce for full@example.com after a single attempt "
        f"that failed temporarily: {FULL} at rcpt (mailbox_full, attempt 1) on example.com "
        "(expected a retry on the integration's schedule before any bounce, seen 1 attempt, "
        f"then hardbounce) | {HARD}, {REPLY}",
        "",
    ]
    # narrower, long cells wrap inside their column: table lines stay within the width, while
    # the header and the diff lines are never broken (paths and addresses stay searchable)
    narrow = render_text(failed, width=80).splitlines()
    assert narrow[0] == f"FAIL mailbox-full ({path})  12.0 s, 2 callbacks"
    assert f"  + seen      softbounce ful@example.com (seq {TYPO}, 400, CT303)" in narrow
    assert max(len(line) for line in narrow if "|" in line) <= 80


def test_text_report_of_several_scenarios_ends_with_the_summary(
    failed: Verdict, passed: Verdict
) -> None:
    text = render_text([failed, passed], width=400)
    assert text.endswith("\n1 passed, 1 failed\n")
    assert f"PASS invalid-address ({SCENARIOS / 'invalid-address.yaml'}) 3.5 s, 1 callback" in (
        lines(text)
    )
    assert (
        "expect.callbacks[0]: hardbounce for nobody@example.com | yes | arrived in seq "
        f"{PASSED_CB}, 2.0 s after the start" in lines(text)
    )
    # a single verdict (an assertion message, a JUnit test case) has no summary line
    assert "passed" not in render_text(passed).splitlines()[-1]


def test_allowed_violations_are_marked_and_do_not_fail() -> None:
    scenario = parse_scenario(
        """
name: allowed
campaign: {from: n@brand.test, to: [nobody@example.com]}
expect:
  callbacks: [{event: hardbounce, e: nobody@example.com, count: 2}]
  violations: {allow: [CT506]}
"""
    )
    run = Run()
    run.session(1, rcpt("nobody@example.com", 550, "hard"))
    run.legacy(2, "hardbounce", ("nobody@example.com", int(T0) + 1))
    run.legacy(3, "hardbounce", ("nobody@example.com", int(T0) + 1))
    verdict = judge(scenario, run.journal, started=T0, finished=T0 + 4)
    assert verdict.passed
    text = render_text(verdict, width=200)
    row = next(line for line in lines(text) if line.startswith("CT506"))
    assert row.split(" | ")[:2] == ["CT506", "error (allowed)"]
    assert "expect.violations: no violations (allowed: CT506) | yes | tolerated: CT506 x1" in lines(
        text
    )


def test_terminal_report_is_coloured_and_says_the_same(failed: Verdict, passed: Verdict) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=140)
    print_report([failed, passed], console=console)
    coloured = out.getvalue()
    assert "\x1b[" in coloured
    assert "1 passed, 1 failed" in coloured
    assert "FAIL" in coloured
    assert "PASS" in coloured
    assert f"+ seen      hardbounce full@example.com (seq {HARD}, 200)" in coloured


def test_json_report_shape(failed: Verdict, passed: Verdict, tmp_path: Path) -> None:
    data = report_json([failed, passed])
    assert data["format"] == "clevertap-harness-report"
    assert data["version"] == 1
    assert data["passed"] is False
    assert data["summary"] == {"total": 2, "passed": 1, "failed": 1}
    assert data["scenarios"] == [failed.to_json(), passed.to_json()]
    first = data["scenarios"][0]
    assert set(first) == {
        "scenario",
        "path",
        "passed",
        "expectations",
        "violations",
        "unexpected",
        "allowed",
        "timings",
        "counts",
        "notes",
    }
    assert [v["code"] for v in first["violations"]] == ["CT303", "CT503", "CT510"]
    assert first["violations"][1]["evidence"] == [HARD, REPLY]
    assert [e["email"] for e in first["unexpected"]] == ["full@example.com", "ful@example.com"]
    assert first["counts"] == {"callbacks": 2, "entries": 5}
    target = tmp_path / "report.json"
    write_json([failed, passed], target)
    assert json.loads(target.read_text(encoding="utf-8")) == data
    assert report_json([])["passed"] is False


# Attributes and children the common JUnit schema (Jenkins junit-10.xsd) allows.
ALLOWED = {
    "testsuites": {"name", "time", "tests", "failures", "disabled", "errors", "skipped"},
    "testsuite": {
        "name",
        "tests",
        "failures",
        "errors",
        "group",
        "time",
        "disabled",
        "skipped",
        "timestamp",
        "hostname",
        "id",
        "package",
        "file",
        "log",
        "url",
        "version",
    },
    "testcase": {
        "name",
        "assertions",
        "time",
        "classname",
        "status",
        "class",
        "file",
        "line",
        "log",
        "group",
        "url",
    },
    "failure": {"message", "type"},
    "system-out": set(),
}
CHILDREN = {
    "testsuites": {"testsuite"},
    "testsuite": {"properties", "testcase", "system-out", "system-err"},
    "testcase": {"skipped", "error", "failure", "system-out", "system-err"},
    "failure": set(),
    "system-out": set(),
}


def test_junit_xml_structure(failed: Verdict, passed: Verdict, tmp_path: Path) -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    text = junit_xml([failed, passed], timestamp=when)
    root = ET.fromstring(text)
    for element in root.iter():
        assert set(element.attrib) <= ALLOWED[element.tag], element.tag
        assert {child.tag for child in element} <= CHILDREN[element.tag], element.tag
    assert root.tag == "testsuites"
    (suite,) = root
    assert suite.attrib == {
        "name": "clevertap-harness",
        "tests": "2",
        "failures": "1",
        "errors": "0",
        "skipped": "0",
        "time": "15.500",
        "timestamp": "2024-01-02T03:04:05",
        "hostname": "localhost",
    }
    bad, good = suite.findall("testcase")
    assert bad.attrib == {
        "name": "mailbox-full",
        "classname": "harness.scenarios",
        "time": "12.000",
        "file": str(SCENARIOS / "mailbox-full.yaml"),
    }
    (failure,) = bad
    assert failure.tag == "failure"
    assert failure.attrib == {
        "type": "ScenarioFailed",
        "message": "3 of 3 expectations not met; expect.callbacks[0]: softbounce for "
        "full@example.com: did not arrive; 3 violations",
    }
    assert failure.text == render_text(failed)
    assert good.attrib["name"] == "invalid-address"
    assert [child.tag for child in good] == ["system-out"]
    assert good[0].text == render_text(passed)
    target = tmp_path / "junit.xml"
    write_junit([failed, passed], target, timestamp=when)
    assert target.read_text(encoding="utf-8") == text


def test_junit_xml_escapes_what_the_integration_sent() -> None:
    scenario = parse_scenario(
        """
name: escape
campaign: {from: n@brand.test, to: [a@example.com]}
expect: {nothing_else: true}
"""
    )
    run = Run()
    run.callback(1, [{"event": "<bounce & co>", "data": [{"e": "a@example.com", "ts": 1}]}])
    verdict = judge(scenario, run.journal, started=T0, finished=T0 + 2)
    root = ET.fromstring(junit_xml(verdict))
    failure = root.find("testsuite/testcase/failure")
    assert failure is not None
    assert failure.text == render_text(verdict)
    assert (
        "1 unexpected: <bounce & co> a@example.com (seq 1, 200, CT202"
        in (failure.attrib["message"])
    )


def test_exit_code_and_summary(failed: Verdict, passed: Verdict) -> None:
    assert exit_code([passed]) == 0
    assert exit_code(passed) == 0
    assert exit_code([passed, failed]) == 1
    assert exit_code([]) == 1
    assert summary([passed, failed]) == "1 passed, 1 failed"
    assert summary([]) == "0 passed, 0 failed"

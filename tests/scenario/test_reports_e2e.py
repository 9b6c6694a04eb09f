"""Reports end to end: success DSNs, aliasing, auto-replies and complaints from the shipped
scenarios reach a real integration's intake through real SMTP; the example integration passes
them with no violation, and a naive integration (its intake reports whatever arrives, with one
fixed event: ``data/naive_intake_sut.py``) is caught by the code made for its mistake.

Each run starts real fake servers and a real subprocess (a few seconds each)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest

from harness.journal import Kind
from harness.records import Dsn, Violation
from harness.scenario.loader import load_scenario, parse_scenario
from harness.scenario.runner import RunOptions, ScenarioResult, run_scenario
from harness.vocab import MailReport

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
NAIVE = Path(__file__).resolve().parent / "data" / "naive_intake_sut.py"


def _run(
    name: str,
    tmp_path: Path | None = None,
    *,
    replace: tuple[str, str] | None = None,
    **env: str,
) -> ScenarioResult:
    """Run the shipped scenario *name*: against the example, or, given *env*, against the
    naive integration with those knobs (with the text *replace* d in the scenario first)."""
    path = SCENARIOS / f"{name}.yaml"
    if not env:
        scenario = load_scenario(path)
    else:
        assert tmp_path is not None
        command = json.dumps([sys.executable, str(NAIVE)])
        # The naive integration misses expected callbacks: the run waits for them until
        # `within`, so a short one keeps these runs short.
        text = path.read_text(encoding="utf-8").replace("within: 20s", "within: 6s")
        if replace is not None:
            assert replace[0] in text
            text = text.replace(*replace)
        text += f"integration:\n  command: {command}\n  env: {json.dumps(env)}\n"
        copy = tmp_path / f"{name}.yaml"
        copy.write_text(text, encoding="utf-8")
        scenario = parse_scenario(text, source=copy)
    return asyncio.run(run_scenario(scenario, RunOptions()))


def _reports(result: ScenarioResult) -> list[Dsn]:
    found = []
    for entry in result.journal.entries(Kind.DSN):
        assert isinstance(entry.data, Dsn)
        found.append(entry.data)
    return found


def _violations(result: ScenarioResult) -> list[Violation]:
    assert result.verdict is not None, result.error
    return result.verdict.violations


_ADDRESS = re.compile(r"[\w.+-]+@[\w.-]+\w")


def _codes(result: ScenarioResult) -> dict[str, list[str]]:
    """Cross-check code -> the addresses its violations are about (the first one each message
    names), sorted."""
    found: dict[str, list[str]] = {}
    for violation in _violations(result):
        if violation.code.startswith("CT5"):
            match = _ADDRESS.search(violation.message)
            assert match is not None, violation
            found.setdefault(violation.code, []).append(match.group())
    return {code: sorted(names) for code, names in found.items()}


def _intake(result: ScenarioResult) -> str:
    assert result.sut_addresses is not None
    assert result.sut_addresses.bounce is not None
    return "{}:{}".format(*result.sut_addresses.bounce)


# -- the example integration passes, and every report reached its intake ------------------------


def test_success_dsns_reach_the_intake_and_the_example_reports_nothing() -> None:
    result = _run("success-dsn")
    assert result.passed, result.verdict
    reports = sorted(
        (r.recipients[0].recipient, r.recipients[0].action, r.dialect) for r in _reports(result)
    )
    assert reports == [
        ("delivered@example.com", "delivered", "postfix"),
        ("gone@example.com", "failed", "postfix"),
        ("list@example.com", "expanded", "sendmail"),
        ("relayed@example.com", "relayed", "exim"),
    ]
    assert all(r.ok and r.intake == _intake(result) for r in _reports(result))
    assert _violations(result) == []


def test_aliasing_dsns_name_the_alias_and_the_example_reports_the_address_sent_to() -> None:
    result = _run("aliasing")
    assert result.passed, result.verdict
    named = sorted((r.recipients[0].recipient, r.recipients[0].original) for r in _reports(result))
    # Postfix keeps the address sent to in Original-Recipient; Exim writes none.
    assert named == [("desk@forward.test", None), ("old.user@forward.test", "user@example.com")]
    assert all(r.ok and r.intake == _intake(result) for r in _reports(result))
    assert _violations(result) == []


def test_auto_replies_reach_the_intake_and_get_no_callback() -> None:
    result = _run("auto-reply")
    assert result.passed, result.verdict
    replies = sorted(
        (r.recipients[0].recipient, r.style)
        for r in _reports(result)
        if r.report is MailReport.AUTO_REPLY
    )
    assert replies == [("away@example.com", "vacation"), ("ooo@example.com", "exchange")]
    assert all(r.ok and r.intake == _intake(result) for r in _reports(result))
    assert _violations(result) == []


@pytest.mark.parametrize("name", ["complaint-legacy", "complaint-v2"])
def test_complaints_reach_the_intake_and_become_the_mapped_event(name: str) -> None:
    result = _run(name)
    assert result.passed, result.verdict
    complaints = [r for r in _reports(result) if r.report is MailReport.COMPLAINT]
    assert complaints
    assert all(r.ok and r.intake == _intake(result) for r in complaints)
    assert _violations(result) == []


# -- a naive intake is caught, each mistake by its own code -------------------------------------


def test_ct514_success_dsns_reported_as_bounces(tmp_path: Path) -> None:
    result = _run("success-dsn", tmp_path, NAIVE_EVENT="hardbounce")
    assert not result.passed
    codes = _codes(result)
    assert codes.pop("CT514") == [
        "delivered@example.com",
        "list@example.com",
        "relayed@example.com",
    ]
    assert codes == {}  # gone@example.com's hard bounce is right


def test_ct515_the_alias_reported_instead_of_the_address_sent_to(tmp_path: Path) -> None:
    result = _run("aliasing", tmp_path, NAIVE_EVENT="hardbounce", NAIVE_ADDRESS="final")
    assert not result.passed
    assert _codes(result)["CT515"] == ["desk@forward.test", "old.user@forward.test"]
    # Reading the VERP address instead is right (only the class of sales@ is then wrong).
    right = _run("aliasing", tmp_path, NAIVE_EVENT="hardbounce")
    assert "CT515" not in _codes(right)
    assert _codes(right) == {"CT503": ["sales@example.com"]}


def test_ct520_auto_replies_reported_as_bounces(tmp_path: Path) -> None:
    result = _run("auto-reply", tmp_path, NAIVE_EVENT="softbounce")
    assert not result.passed
    assert _codes(result) == {"CT520": ["away@example.com", "ooo@example.com"]}


def test_ct521_and_ct522_complaints_ignored_or_reported_as_bounces(tmp_path: Path) -> None:
    ignored = _run("complaint-legacy", tmp_path, NAIVE_EVENT="none")
    assert _codes(ignored) == {"CT521": ["angry@example.com", "fraud@example.com"]}
    as_bounce = _run("complaint-legacy", tmp_path, NAIVE_EVENT="hardbounce")
    assert _codes(as_bounce) == {"CT522": ["angry@example.com", "fraud@example.com"]}
    # The right event, with no click: no CT507, no CT52x.
    right = _run("complaint-legacy", tmp_path, NAIVE_EVENT="unsubscribe")
    assert right.passed, right.verdict
    assert _violations(right) == []


def test_ct523_complaint_reported_with_another_event_than_the_mapping(tmp_path: Path) -> None:
    wrong = _run("complaint-v2", tmp_path, NAIVE_EVENT="unsubscribed")
    assert _codes(wrong) == {"CT523": ["angry@example.com"]}
    # The same callback is right when the scenario maps complaints to unsubscribe.
    remapped = _run(
        "complaint-v2",
        tmp_path,
        replace=("complaint_as: spam", "complaint_as: unsubscribe"),
        NAIVE_EVENT="unsubscribed",
    )
    assert "CT523" not in _codes(remapped)
    assert "CT521" not in _codes(remapped)


def test_the_reports_example_of_the_docs_passes_against_the_example(tmp_path: Path) -> None:
    docs = (ROOT / "docs" / "scenarios.md").read_text(encoding="utf-8")
    (text,) = [b for b in re.findall(r"```yaml\n(.*?)```", docs, re.S) if "name: reports" in b]
    path = tmp_path / "reports.yaml"
    path.write_text(text, encoding="utf-8")
    result = asyncio.run(run_scenario(load_scenario(path), RunOptions()))
    assert result.passed, result.verdict
    kinds = sorted(str(r.report) for r in _reports(result))
    assert kinds == ["auto_reply", "complaint", "dsn", "dsn"]

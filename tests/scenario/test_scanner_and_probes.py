"""The link scanner (``via: scan``) and the submission probes (``integration.submission_probes``).

End to end with real parts: the shipped scenarios run the bundled example as a subprocess (it
passes them), and the same example with one door left open (``data/broken_gateway.py``) fails
them for the right reason: CT507 for an unsubscribe on GET, CT601 naming the credentials that a
submission port accepted. The scanner's own behaviour (GET only, redirects followed, no form
submitted) is checked against a real HTTP server.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from harness.errors import ScenarioError
from harness.journal import Journal, MemoryJournal
from harness.records import Click, SubmissionProbe
from harness.scenario.campaign import Submission
from harness.scenario.clicks import SCANNER_AGENT, perform_click
from harness.scenario.crosschecks import Facts, cross_check
from harness.scenario.judge import Verdict
from harness.scenario.loader import load_scenario, parse_scenario
from harness.scenario.model import Click as ClickSpec
from harness.scenario.model import Credentials, Scenario
from harness.scenario.probes import probe_notes, probe_submission
from harness.scenario.runner import RunOptions, ScenarioResult, run_scenario
from tests.scenario.test_runner import _delivered, clicked

from .test_crosschecks import T0, Run

ROOT = Path(__file__).resolve().parents[2]
BROKEN = Path(__file__).resolve().parent / "data" / "broken_gateway.py"


def _shipped(name: str, **integration: object) -> Scenario:
    scenario = load_scenario(ROOT / "scenarios" / f"{name}.yaml")
    if integration and scenario.integration is not None:
        changed = scenario.integration.model_copy(update=integration)
        scenario = scenario.model_copy(update={"integration": changed})
    return scenario


def _run(scenario: Scenario, bug: str | None = None) -> ScenarioResult:
    sut = [sys.executable, str(BROKEN), bug] if bug else None
    return asyncio.run(run_scenario(scenario, RunOptions(sut=sut)))


def _verdict(result: ScenarioResult) -> Verdict:
    assert result.error is None, result.error
    assert result.verdict is not None
    return result.verdict


def _records(journal: Journal, kind: type) -> list:  # type: ignore[type-arg]
    return [e.data for e in journal.entries() if isinstance(e.data, kind)]


# -- the link scanner ---------------------------------------------------------------------------


def test_the_example_survives_a_link_scanner() -> None:
    result = _run(_shipped("link-scanner"))
    verdict = _verdict(result)
    assert verdict.passed, [e.reason for e in verdict.expectations if not e.met]
    clicks: list[Click] = _records(result.journal, Click)
    scans = [c for c in clicks if c.via == "scan"]
    assert sorted(c.recipient for c in scans) == ["reader@example.com", "scanned@example.com"]
    for scan in scans:
        # It reached the page (200, the confirm form) and submitted nothing.
        assert scan.ok
        assert scan.reached
        assert not scan.acted
        assert [(s.method, s.status) for s in scan.steps] == [("GET", 200)]
    (real,) = [c for c in clicks if c.via == "one_click"]
    assert real.acted


def test_an_unsubscribe_on_get_is_caught_as_ct507_naming_the_scan() -> None:
    verdict = _verdict(_run(_shipped("link-scanner"), "unsubscribe_on_get"))
    assert not verdict.passed
    assert {v.code for v in verdict.failing_violations} == {"CT507"}
    unmet = {e.path for e in verdict.expectations if not e.met}
    assert {"expect.absent[0]", "expect.nothing_else", "expect.violations"} <= unmet
    by_address = {v.message.split()[2]: v for v in verdict.failing_violations}
    scanned = by_address["scanned@example.com"]
    assert "after only a link scanner's GET (seq " in scanned.message
    assert "the integration unsubscribed on a GET" in scanned.message
    assert scanned.seen is not None
    assert scanned.seen.endswith("and no click")
    # The reader was scanned before clicking: the callback came before the click.
    reader = by_address["reader@example.com"]
    assert reader.seen is not None
    assert "clicks only after the callback" in reader.seen


@pytest.mark.asyncio
async def test_a_scan_gets_every_link_follows_redirects_and_submits_no_form(
    httpserver: HTTPServer,
) -> None:
    form = '<form method="post" action="/confirm"><input name="t" value="9"></form>'
    httpserver.expect_request("/u", method="GET").respond_with_data(
        "", status=302, headers={"Location": "/page"}
    )
    httpserver.expect_request("/page", method="GET").respond_with_data(
        form, content_type="text/html"
    )
    httpserver.expect_request("/read-online", method="GET").respond_with_data("hi")
    journal = MemoryJournal()
    body = f"Read it online: {httpserver.url_for('/read-online')}.\nBye.\n"
    _delivered(
        journal,
        list_unsubscribe=f"<{httpserver.url_for('/u')}>, <mailto:unsubscribe+t@sut.test>",
        list_unsubscribe_post="List-Unsubscribe=One-Click",
        body=body,
    )
    click = ClickSpec(recipient="reader@example.com", via="scan")
    record = clicked(await perform_click(click, journal, deadline=0, intake=None))
    steps = [(s.method, s.url.rsplit("/", 1)[1], s.status) for s in record.steps]
    assert steps == [("GET", "u", 302), ("GET", "page", 200), ("GET", "read-online", 200)]
    assert record.ok
    assert record.scan
    assert not record.acted
    methods = [request.method for request, _ in httpserver.log]
    assert methods == ["GET", "GET", "GET"]  # the confirm form was never posted
    assert {request.headers["User-Agent"] for request, _ in httpserver.log} == {SCANNER_AGENT}


@pytest.mark.asyncio
async def test_one_dead_link_does_not_stop_the_scan(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/read-online", method="GET").respond_with_data("hi")
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/u/1"
        journal = MemoryJournal()
        _delivered(
            journal,
            list_unsubscribe=f"<{dead}>",
            body=f"Online: {httpserver.url_for('/read-online')}\n",
        )
        click = ClickSpec(recipient="reader@example.com", via="scan")
        record = clicked(await perform_click(click, journal, deadline=0, intake=None))
    assert [(s.url, s.status) for s in record.steps] == [(httpserver.url_for("/read-online"), 200)]
    assert record.ok
    assert record.error is not None
    assert record.error.startswith(f"GET {dead}: ConnectError: ")


def test_ct507_after_a_scan_says_so_and_a_click_after_the_scan_is_fine() -> None:
    run = Run()
    scan = run.add(
        2,
        Click(
            recipient="a@example.com", via="scan", url="http://127.0.0.1/u/1", status=200, ok=True
        ),
    )
    cb = run.legacy(3, "unsubscribe", ("a@example.com", int(T0) + 3))
    (violation,) = [v for v in run.check() if v.code == "CT507"]
    assert violation.message == (
        f"unsubscribe for a@example.com after only a link scanner's GET (seq {scan.seq}): the "
        "integration unsubscribed on a GET, which scanners and previewers make"
    )
    assert violation.evidence == (cb.seq, scan.seq)
    # The same scan followed by a real click before the callback: no violation.
    fine = Run()
    fine.add(2, scan.data)
    fine.click(2.5, "a@example.com")
    fine.legacy(3, "unsubscribe", ("a@example.com", int(T0) + 3))
    assert "CT507" not in {v.code for v in fine.check()}


def test_an_unsubscribe_expected_after_only_a_scan_is_a_scenario_error() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(
            """\
campaign: {from: n@brand.test, to: [a@example.com]}
unsubscribe: [{recipient: a@example.com, via: scan}]
expect: {callbacks: [{event: unsubscribe, e: a@example.com}]}
""",
            source="scan.yaml",
        )
    assert info.value.problems == [
        "scan.yaml:3:46: expect.callbacks[0].e: an unsubscribe is expected for a@example.com but "
        "nobody clicks for it (a scan is no click: it must not unsubscribe) (expected an "
        "unsubscribe: entry for this recipient with via one_click, get or mailto)"
    ]


# -- the submission probes ----------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
def test_the_example_refuses_every_submission_probe(tls: str) -> None:
    result = _run(_shipped("submission-auth", tls=tls))
    verdict = _verdict(result)
    assert verdict.passed, [e.reason for e in verdict.expectations if not e.met]
    assert result.accepted == 2  # the campaign itself went through with the real credentials
    probes: list[SubmissionProbe] = _records(result.journal, SubmissionProbe)
    assert [p.probe for p in probes] == ["wrong_password", "wrong_user", "no_auth"]
    for probe in probes:
        assert (probe.accepted, probe.error) == (False, None), probe
    wrong_password, wrong_user, no_auth = probes
    assert wrong_password.username == "clevertap"
    assert wrong_user.username is not None
    assert wrong_user.username.startswith("clevertap-wrong-")
    for probe in (wrong_password, wrong_user):
        assert probe.stage == "auth"
        assert probe.reply is not None
        assert probe.reply.startswith("535 ")
        assert probe.auth_reply == probe.reply
    assert (no_auth.stage, no_auth.username, no_auth.auth_reply) == ("mail", None, None)
    assert no_auth.reply is not None
    assert no_auth.reply.startswith("530 ")


def test_a_submission_port_that_takes_any_password_is_ct601_naming_the_credentials() -> None:
    result = _run(_shipped("submission-auth"), "any_password")
    verdict = _verdict(result)
    assert not verdict.passed
    assert [e.path for e in verdict.expectations if not e.met] == ["expect.violations"]
    violations = verdict.failing_violations
    assert [(v.code, v.path) for v in violations] == [
        ("CT601", "submission wrong_password"),
        ("CT601", "submission wrong_user"),
    ]
    wrong_password, wrong_user = violations
    assert wrong_password.message.startswith(
        "the integration's submission port accepted a submission with a wrong password for "
        "'clevertap': AUTH answered 235 "
    )
    assert wrong_user.message.startswith(
        "the integration's submission port accepted a submission as 'clevertap-wrong-"
    )
    assert wrong_user.expected == "535 to AUTH, and no recipient accepted"
    # Nothing was relayed for the probes: the campaign's two messages only.
    assert result.accepted == 2
    assert len(_records(result.journal, SubmissionProbe)) == 3


def test_a_submission_port_that_takes_mail_without_auth_is_ct601() -> None:
    result = _run(_shipped("submission-auth"), "open_submission")
    verdict = _verdict(result)
    assert {v.path: v.code for v in verdict.failing_violations} == {
        "submission wrong_password": "CT601",
        "submission wrong_user": "CT601",
        "submission no_auth": "CT601",
    }
    by_path = {v.path: v for v in verdict.failing_violations}
    no_auth = by_path["submission no_auth"]
    assert no_auth.message == (
        "the integration's submission port accepted a submission without AUTH: RCPT answered 250 OK"
    )
    assert no_auth.expected == "530 (authentication required) to MAIL or RCPT"
    # AUTH said 535, and yet the recipient was taken: the violation says both.
    assert by_path["submission wrong_password"].message.endswith(
        "RCPT answered 250 OK although AUTH was refused (535 5.7.8 Authentication credentials "
        "invalid)"
    )


@pytest.mark.asyncio
async def test_a_probe_that_cannot_connect_proves_nothing_and_says_so() -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        journal = MemoryJournal()
        submission = Submission("127.0.0.1", port, auth=Credentials(username="u", password="p"))
        entry = await probe_submission(
            "wrong_password", submission, journal, sender="n@brand.test", recipient="a@example.com"
        )
    record = entry.data
    assert isinstance(record, SubmissionProbe)
    assert (record.accepted, record.stage, record.steps) == (False, "connect", ())
    assert record.error is not None
    assert record.error.startswith("SMTPConnectError: ")
    assert probe_notes([entry]) == [
        f"the wrong_password submission probe did not finish: {record.error}"
    ]
    # An unfinished probe is no CT601: it proves nothing either way.
    facts = Facts.from_entries(journal.entries(), started=0.0)
    assert cross_check(facts) == []


@pytest.mark.parametrize(
    ("yaml", "problem"),
    [
        (
            "integration: {submission_probes: [no_auth]}",
            "s.yaml:2:34: integration.submission_probes: submission probes need "
            "integration.auth: without credentials the integration is not asked to require "
            "AUTH, so it may accept anybody (expected an auth: {username, password} block)",
        ),
        (
            "integration: {auth: {username: u, password: p}, "
            "submission_probes: [no_auth, no_auth]}",
            "s.yaml:2:78: integration.submission_probes[1]: no_auth is listed twice",
        ),
    ],
)
def test_bad_submission_probes_are_scenario_errors(yaml: str, problem: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(
            f"campaign: {{from: n@brand.test, to: [a@example.com]}}\n{yaml}\n", source="s.yaml"
        )
    assert info.value.problems == [problem]


def test_an_unknown_probe_name_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(
            "campaign: {from: n@brand.test, to: [a@example.com]}\n"
            "integration: {auth: {username: u, password: p}, submission_probes: [bad_password]}\n",
            source="s.yaml",
        )
    (problem,) = info.value.problems
    assert problem == (
        "s.yaml:2:69: integration.submission_probes[0]: unknown value 'bad_password'; did you "
        "mean 'wrong_password'?"
    )

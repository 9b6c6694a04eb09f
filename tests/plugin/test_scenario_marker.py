"""The scenario marker and harness_scenario: the world of a YAML file, judged after the test."""

from __future__ import annotations

import pytest

SCENARIO = """
name: plugin-demo
mx:
  example.com:
    full@example.com: mailbox_full
    ok@example.com: accept
campaign:
  from: news@brand.test
  to: [full@example.com, ok@example.com]
expect:
  within: 1s
  callbacks:
    - {event: softbounce, e: full@example.com}
  nothing_else: true
"""

TESTS = """
import json
import smtplib

import httpx
import pytest

from bodies import JSON, legacy

pytestmark = pytest.mark.scenario("scenarios/demo.yaml")


def deliver(harness_scenario, to):
    # play the integration: deliver to the MX of the recipient's domain, as the map says
    host, port = json.loads(harness_scenario.sut_env()["HARNESS_MX_MAP"])["example.com"].split(":")
    with smtplib.SMTP(host, int(port)) as smtp:
        try:
            smtp.sendmail("bounces@gw.test", [to], "Subject: x\\r\\n\\r\\nx")
        except smtplib.SMTPRecipientsRefused as exc:
            return exc.recipients[to]
    return (250, b"")


def report(harness_scenario, event, to):
    r = httpx.post(harness_scenario.urls.bounce, content=legacy(event, to), headers=JSON)
    assert r.status_code == 200


def test_met_explicitly(harness_scenario):
    assert harness_scenario.scenario.name == "plugin-demo"
    code, reply = deliver(harness_scenario, "full@example.com")
    assert code == 452
    report(harness_scenario, "softbounce", "full@example.com")
    verdict = harness_scenario.expect_scenario()
    assert verdict.passed


def test_met_checked_after_the_test(harness_scenario):
    deliver(harness_scenario, "full@example.com")
    report(harness_scenario, "softbounce", "full@example.com")


def test_unmet_fails_after_the_test(harness_scenario):
    deliver(harness_scenario, "full@example.com")
    report(harness_scenario, "hardbounce", "full@example.com")


@pytest.mark.harness(check_scenario=False)
def test_opted_out(harness_scenario):
    pass


def test_unmet_explicit(harness_scenario):
    harness_scenario.expect_scenario(within=0.1)
"""


def test_scenario_marker_builds_judges_and_fails_unmet(project: pytest.Pytester) -> None:
    project.mkdir("scenarios")
    (project.path / "scenarios" / "demo.yaml").write_text(SCENARIO)
    project.makepyfile(test_demo=TESTS)
    result = project.runpytest("-v")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*::test_met_explicitly PASSED*",
            "*::test_met_checked_after_the_test PASSED*",
            "*::test_unmet_fails_after_the_test FAILED*",
            "*::test_opted_out PASSED*",
            "*::test_unmet_explicit FAILED*",
        ]
    )
    text = result.stdout.str()
    after = text[text.index("_ test_unmet_fails_after_the_test _") :]
    after = after[: after.index("_ test_unmet_explicit _")]
    assert after.startswith("_ test_unmet_fails_after_the_test _")
    assert "scenario expectations not met after the test:" in after
    assert "FAIL plugin-demo (" in after
    assert "expect.callbacks[0]: expected vs seen" in after
    assert "  - expected  softbounce for full@example.com" in after
    assert "  + seen      hardbounce full@example.com (seq " in after
    assert "CT503 | error" in after  # the cross-check: a soft failure reported as hard
    assert "(opt out with @pytest.mark.harness(check_scenario=False))" in after
    explicit = text[text.index("_ test_unmet_explicit _") :]
    assert ">       harness_scenario.expect_scenario(within=0.1)" in explicit
    assert "E       harness.errors.ExpectationError: FAIL plugin-demo (" in explicit
    assert "E         + seen      no callback at all" in explicit


def test_missing_or_broken_scenario_is_a_clear_error(project: pytest.Pytester) -> None:
    (project.path / "broken.yaml").write_text("name: broken\ncampain: {}\n")
    project.makepyfile(
        """
        import pytest


        def test_no_marker(harness_scenario):
            pass


        @pytest.mark.scenario("broken.yaml")
        def test_broken(harness_scenario):
            pass


        @pytest.mark.scenario("absent.yaml")
        def test_absent(harness_scenario):
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(
        [
            "*::test_no_marker: the harness_scenario fixture needs "
            "@pytest.mark.scenario('path/to/scenario.yaml') on the test, its class or module",
        ]
    )
    result.stdout.fnmatch_lines(
        ["*::test_broken: scenario '*broken.yaml' does not load:", "*campain*"]
    )
    result.stdout.fnmatch_lines(["*::test_absent: scenario '*absent.yaml' does not load:"])

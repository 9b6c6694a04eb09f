"""The scenario marker and ct_scenario: the world of a YAML file, judged after the test."""

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

pytestmark = pytest.mark.ct_scenario("scenarios/demo.yaml")


def deliver(ct_scenario, to):
    # play the integration: deliver to the MX of the recipient's domain, as the map says, and
    # try once more after a temporary failure (CT510: a 4xx is retried before it is reported)
    host, port = json.loads(ct_scenario.sut_env()["HARNESS_MX_MAP"])["example.com"].split(":")
    for _attempt in range(2):
        with smtplib.SMTP(host, int(port)) as smtp:
            try:
                smtp.sendmail("bounces@gw.test", [to], "Subject: x\\r\\n\\r\\nx")
            except smtplib.SMTPRecipientsRefused as exc:
                reply = exc.recipients[to]
            else:
                return (250, b"")
        if reply[0] < 400 or reply[0] >= 500:
            break
    return reply


def report(ct_scenario, event, to):
    r = httpx.post(ct_scenario.urls.bounce, content=legacy(event, to), headers=JSON)
    assert r.status_code == 200


def test_met_explicitly(ct_scenario):
    assert ct_scenario.scenario.name == "plugin-demo"
    code, reply = deliver(ct_scenario, "full@example.com")
    assert code == 452
    report(ct_scenario, "softbounce", "full@example.com")
    verdict = ct_scenario.expect_scenario()
    assert verdict.passed


def test_met_checked_after_the_test(ct_scenario):
    deliver(ct_scenario, "full@example.com")
    report(ct_scenario, "softbounce", "full@example.com")


def test_unmet_fails_after_the_test(ct_scenario):
    deliver(ct_scenario, "full@example.com")
    report(ct_scenario, "hardbounce", "full@example.com")


@pytest.mark.ct_checks(check_scenario=False)
def test_opted_out(ct_scenario):
    pass


def test_unmet_explicit(ct_scenario):
    ct_scenario.expect_scenario(within=0.1)
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
    assert "(opt out with @pytest.mark.ct_checks(check_scenario=False))" in after
    explicit = text[text.index("_ test_unmet_explicit _") :]
    assert ">       ct_scenario.expect_scenario(within=0.1)" in explicit
    assert "E       harness.errors.ExpectationError: FAIL plugin-demo (" in explicit
    assert "E         + seen      no callback at all" in explicit


def test_missing_or_broken_scenario_is_a_clear_error(project: pytest.Pytester) -> None:
    (project.path / "broken.yaml").write_text("name: broken\ncampain: {}\n")
    project.makepyfile(
        """
        import pytest


        def test_no_marker(ct_scenario):
            pass


        @pytest.mark.ct_scenario("broken.yaml")
        def test_broken(ct_scenario):
            pass


        @pytest.mark.ct_scenario("absent.yaml")
        def test_absent(ct_scenario):
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(
        [
            "*::test_no_marker: the ct_scenario fixture needs "
            "@pytest.mark.ct_scenario('path/to/scenario.yaml') on the test, its class or module",
        ]
    )
    result.stdout.fnmatch_lines(
        ["*::test_broken: scenario '*broken.yaml' does not load:", "*campain*"]
    )
    result.stdout.fnmatch_lines(["*::test_absent: scenario '*absent.yaml' does not load:"])

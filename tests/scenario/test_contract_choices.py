"""The choices docs/integration-contract.md leaves to an integration do not fail a correct one,
and the documented limits are where the harness draws the line.

- STARTTLS to MX hosts is optional (section 2): the shipped ``server-down-tls-broken`` expects a
  soft bounce, and the example gets one with STARTTLS (a failed handshake, retried) and
  without (``530 5.7.0`` at RCPT, soft at once).
- The ``slow`` host answers every reply 1 s late (section 4.4): a per-reply timeout of 2 s, the
  documented lower end, delivers; a shorter one reports a bounce for a working server, which
  is CT517 ("slow, not down"), never CT501 ("never attempted"): its connections were attempts.

Real runs: the example as a subprocess (``data/broken_gateway.py plaintext_mx`` for the
plaintext choice), real fake MX hosts.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from harness.records import SmtpOpen, SmtpReply
from harness.scenario.loader import load_scenario
from harness.scenario.model import Integration, Scenario
from harness.scenario.runner import RunOptions, ScenarioResult, run_scenario

ROOT = Path(__file__).resolve().parents[2]
CHOICES = Path(__file__).resolve().parent / "data" / "broken_gateway.py"


def _run(scenario: Scenario, variant: str | None = None) -> ScenarioResult:
    sut = [sys.executable, str(CHOICES), variant] if variant else None
    return asyncio.run(run_scenario(scenario, RunOptions(sut=sut)))


@pytest.mark.parametrize("variant", [None, "plaintext_mx"], ids=["starttls", "plaintext"])
def test_tls_broken_is_a_soft_bounce_with_or_without_starttls(variant: str | None) -> None:
    result = _run(load_scenario(ROOT / "scenarios" / "server-down-tls-broken.yaml"), variant)
    assert result.verdict is not None, result.error
    assert result.verdict.passed, [e.reason for e in result.verdict.expectations if not e.met]
    refused = [
        e.data
        for e in result.journal.entries()
        if isinstance(e.data, SmtpReply) and e.data.recipient == "user@down.test"
    ]
    if variant == "plaintext_mx":
        # One plaintext attempt, refused as a host that requires TLS refuses it; no retry.
        assert [(r.code, r.enhanced, r.stage) for r in refused] == [(530, "5.7.0", "rcpt")]
    else:
        # Every attempt failed in the handshake, before any RCPT.
        assert refused == []
        opened = [
            e.data
            for e in result.journal.entries()
            if isinstance(e.data, SmtpOpen) and e.data.host == "down.test"
        ]
        assert len(opened) == 3  # the first attempt and the two retries of the scenario


def _slow(timeout: str) -> Scenario:
    scenario = load_scenario(ROOT / "scenarios" / "server-down-slow.yaml")
    env = {"EXAMPLE_SMTP_TIMEOUT": timeout, "EXAMPLE_RETRY_DELAYS": "0.2"}
    return scenario.model_copy(update={"integration": Integration(env=env)})


def test_the_documented_timeout_delivers_through_a_slow_host() -> None:
    result = _run(_slow("2"))
    assert result.verdict is not None, result.error
    assert result.verdict.passed, [e.reason for e in result.verdict.expectations if not e.met]


def test_a_timeout_shorter_than_the_slow_hosts_delay_is_ct517_not_never_attempted() -> None:
    result = _run(_slow("0.5"))
    verdict = result.verdict
    assert verdict is not None, result.error
    (violation,) = verdict.failing_violations
    assert violation.code == "CT517"
    assert violation.message == (
        "softbounce for user@slow.test, but its mail server never failed: it answered late, "
        "and the integration gave up before it answered"
    )
    assert violation.seen is not None
    assert violation.seen.startswith(
        "its mail server is slow, not down (every reply 1 s late): 2 connection(s), 2 ended by "
        "the integration, the longest after 0."
    )
    unmet = {e.path for e in verdict.expectations if not e.met}
    assert unmet == {"expect.absent[0]", "expect.nothing_else", "expect.violations"}

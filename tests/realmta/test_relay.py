"""A real Postfix relays to the fake MX hosts: its fate, its DSNs and the journal per catalog mode.

Postfix logs ``dsn=`` and ``status=`` for every attempt (sent, deferred, bounced) and qmgr logs
``status=expired`` when a message outlives ``maximal_queue_lifetime``; its DSNs land in a Maildir.
Each is compared with what the harness predicts for the mode: the catalog (stage, reply code,
enhanced status, texts) and the DSN the harness itself builds for the mode
(:func:`harness.smtp.dsn.dsn_for_mode`, Postfix dialect). Known disagreements are
``xfail(strict=True)``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from harness.smtp.catalog import CATALOG, BounceClass, Stage
from harness.smtp.dsn import dsn_for_mode
from tests.realmta.postfix import postfix_missing
from tests.realmta.relay import (
    GREYLIST_THEN_ACCEPT,
    OVERSIZE,
    RECIPIENTS,
    _dsn_facts,
    host_name,
)

pytestmark = [
    pytest.mark.realmta,
    pytest.mark.skipif(postfix_missing() is not None, reason=str(postfix_missing())),
    # The first test waits for the whole Postfix run (about 30 s).
    pytest.mark.timeout(240),
]

TLS_BROKEN = "user@tls-broken.test"
_XFAIL_FATE: dict[str, str] = {}
_XFAIL_DIAGNOSTIC: dict[str, str] = {}
_XFAIL_REMOTE_MTA: dict[str, str] = {}
_XFAIL_JOURNAL: dict[str, str] = {}
# A tls_broken host refuses mail before STARTTLS (as a host requiring TLS does, RFC 3207), so a
# client that falls back to plaintext after the failed handshake is refused there.
_TLS_PLAINTEXT_REFUSAL = "5.7.0"
# Postfix compares the message with the SIZE the host advertised and bounces it itself, without
# sending MAIL: its own words, no Remote-MTA.
_OVERSIZE_DIAGNOSTIC = re.compile(
    r"X-Postfix; message size \d+ exceeds size limit \d+ of server \S+"
)


def _params(xfails: dict[str, str]) -> list[Any]:
    return [
        pytest.param(
            rcpt,
            id=rcpt,
            marks=[pytest.mark.xfail(strict=True, reason=xfails[rcpt])] if rcpt in xfails else [],
        )
        for rcpt in RECIPIENTS
    ]


def predicted_fate(rcpt: str) -> tuple[list[str], str]:
    """What the catalog predicts Postfix logs for *rcpt*: statuses in order (the deferrals
    collapsed into one), and the enhanced status of the failed attempts (2.0.0 when none)."""
    mode = CATALOG[RECIPIENTS[rcpt]]
    if rcpt == GREYLIST_THEN_ACCEPT:
        return ["deferred", "sent"], "4.2.0"
    if rcpt == TLS_BROKEN:
        return ["deferred", "bounced"], "4.7.5"
    if mode.bounce_class is BounceClass.NONE or mode.stage is Stage.LATER:
        return ["sent"], "2.0.0"
    enhanced = mode.enhanced or ""
    if mode.code is not None and mode.code >= 500:
        return ["bounced"], enhanced
    return ["deferred", "expired"], enhanced


def _collapsed(statuses: list[str]) -> list[str]:
    return [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]


@pytest.mark.parametrize("rcpt", _params(_XFAIL_FATE))
def test_postfix_fate_is_the_catalogs(relay_result: dict[str, Any], rcpt: str) -> None:
    history = relay_result["recipients"][rcpt]["history"]
    statuses, enhanced = predicted_fate(rcpt)
    seen = [h["status"] for h in history]
    assert _collapsed(seen) == statuses, history
    failures = {h["dsn"] for h in history if h["status"] in ("deferred", "bounced")}
    allowed = {enhanced, _TLS_PLAINTEXT_REFUSAL} if rcpt == TLS_BROKEN else {enhanced}
    assert failures <= allowed, history
    if "expired" in statuses:
        # Retried on the short schedule, each time with the same answer, then given up.
        assert seen.count("deferred") >= 2, history


def _expected_actions(rcpt: str) -> list[str]:
    final = predicted_fate(rcpt)[0][-1]
    # The fake MX advertises DSN, so Postfix hands NOTIFY=SUCCESS on and reports no success.
    return {"sent": [], "bounced": ["failed"], "expired": ["delayed", "failed"]}[final]


@pytest.mark.parametrize("rcpt", _params(_XFAIL_FATE))
def test_postfix_dsns_are_the_harness_dsns(relay_result: dict[str, Any], rcpt: str) -> None:
    """Action and Status of every DSN Postfix sent are those of the harness's own DSN."""
    mode = RECIPIENTS[rcpt]
    dsns = relay_result["recipients"][rcpt]["dsns"]
    assert sorted(d["action"] for d in dsns) == _expected_actions(rcpt), dsns
    for dsn in dsns:
        (ours,) = _dsn_facts(dsn_for_mode(mode, rcpt, dialect="postfix", action=dsn["action"]))[
            "blocks"
        ]
        status = _TLS_PLAINTEXT_REFUSAL if rcpt == TLS_BROKEN else ours["status"]
        assert (dsn["action"], dsn["status"]) == (ours["action"], status)
        assert dsn["from"].startswith("Mail Delivery System <MAILER-DAEMON@")


def _catalog_pattern(rcpt: str) -> re.Pattern[str]:
    """Postfix's Diagnostic-Code as the catalog words it: the mode's reply (``smtp;``) or, where
    the host said nothing, Postfix's own account (``X-Postfix;``) with the host left open."""
    mode = CATALOG[RECIPIENTS[rcpt]]
    text = re.escape(mode.text("postfix", rcpt=rcpt, peer="127.0.0.1", host="{host}"))
    text = text.replace(re.escape("{host}"), r"\S+")
    if mode.code is None:
        return re.compile(rf"X-Postfix; {text}")
    return re.compile(rf"smtp; {mode.code} {re.escape(mode.enhanced or '')} {text}")


@pytest.mark.parametrize("rcpt", _params(_XFAIL_DIAGNOSTIC))
def test_postfix_diagnostic_is_the_catalogs(relay_result: dict[str, Any], rcpt: str) -> None:
    dsns = relay_result["recipients"][rcpt]["dsns"]
    if not dsns:
        assert not _expected_actions(rcpt)
        return
    pattern = _OVERSIZE_DIAGNOSTIC if rcpt == OVERSIZE else _catalog_pattern(rcpt)
    if rcpt == TLS_BROKEN:
        pattern = re.compile(r"smtp; 530 5\.7\.0 Must issue a STARTTLS command first")
    for dsn in dsns:
        assert pattern.fullmatch(dsn["diagnostic"]), (pattern.pattern, dsn["diagnostic"])


@pytest.mark.parametrize("rcpt", _params(_XFAIL_REMOTE_MTA))
def test_remote_mta_named_as_postfix_does(relay_result: dict[str, Any], rcpt: str) -> None:
    mode = RECIPIENTS[rcpt]
    for dsn in relay_result["recipients"][rcpt]["dsns"]:
        (ours,) = _dsn_facts(dsn_for_mode(mode, rcpt, dialect="postfix", action=dsn["action"]))[
            "blocks"
        ]
        if rcpt == TLS_BROKEN:
            # The handshake failed, Postfix retried in plaintext and quotes the host's 530.
            assert dsn["remote_mta"] is not None, dsn
            continue
        expected = None if rcpt == OVERSIZE else ours["remote_mta"]
        assert (dsn["remote_mta"] is None) == (expected is None), dsn


@pytest.mark.parametrize("rcpt", _params(_XFAIL_JOURNAL))
def test_journal_agrees_with_postfix(relay_result: dict[str, Any], rcpt: str) -> None:
    """Every attempt Postfix logged is in the journal, with the same enhanced status."""
    facts = relay_result["recipients"][rcpt]
    attempts = [h for h in facts["history"] if h["status"] != "expired"]
    mode = CATALOG[RECIPIENTS[rcpt]]
    if rcpt == OVERSIZE:
        # Postfix decided alone: it greeted the host and left without a MAIL command.
        (session,) = relay_result["sessions"]["small"]
        assert not any(c.upper().startswith("MAIL") for c in session["commands"]), session
        assert facts["decisions"] == []
        return
    if mode.server_down:
        variant = RECIPIENTS[rcpt]
        sessions = relay_result["sessions"][host_name(variant)]
        if variant == "tls_broken":
            # Handshakes fail; the plaintext retry is refused at RCPT, a decision of the mode
            # (soft, 5.7.0) the cross-checks see; no message is ever taken.
            assert any(s["commands"][-1:] == ["STARTTLS"] for s in sessions), sessions
            refusals = [(d["mode"], d["enhanced"], d["class"]) for d in facts["decisions"]]
            assert refusals, facts["decisions"]
            assert set(refusals) == {("tls_broken", "5.7.0", "soft")}, facts["decisions"]
            return
        if variant == "refused":
            assert sessions == []  # nothing listens: no session, only host_down
            return
        # Postfix's connection cache may carry several deliveries in one session, never the
        # other way round.
        assert 1 <= len(sessions) <= len(attempts), sessions
        for session in sessions:
            if variant in ("drop_mid_data", "drop_after_dot"):
                assert session["end"] == "server_dropped", session
                assert session["commands"][-1] == "DATA", session
                assert session["dropped"]["recipients"] == [rcpt], session
        return
    failed = [(d["code"], d["enhanced"]) for d in facts["decisions"] if d["code"] >= 400]
    logged = [h["dsn"] for h in attempts if h["status"] != "sent"]
    assert [e for _, e in failed] == logged, (facts["decisions"], attempts)
    if attempts[-1]["status"] == "sent":
        assert any(d["stage"] in ("accepted", "later") for d in facts["decisions"]), facts[
            "decisions"
        ]


def test_postfix_ran_clean_and_fast(relay_result: dict[str, Any]) -> None:
    """No fatal/error lines in Postfix's log; routed by the harness's own transport map."""
    assert relay_result["postfix_errors"] == []
    assert "rcpt.test smtp:[127.0.0.1]:" in relay_result["transport_map"]
    assert relay_result["elapsed"] < 120

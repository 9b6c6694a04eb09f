"""The cross-checks of issue 9 (CT510-CT516, and CT505 anchored on the event that justifies a
report): each fires on a journal built to trigger it, and the correct behaviour next to it (a
proper retry schedule, a resend after Retry-After, one report, the address as sent) raises
nothing. Journals are built with the typed records, as in ``test_crosschecks``."""

from __future__ import annotations

import msgspec

from harness.checks import Severity, Violation
from harness.records import SmtpMessage
from harness.scenario.crosschecks import CrossCheckConfig, Facts, cross_check
from harness.scenario.loader import parse_scenario
from harness.scenario.model import Scenario

from .test_crosschecks import T0, Run, codes, rcpt

TS = int(T0)

WITHIN_10 = """
name: retries
mx:
  example.com:
    busy@example.com: throttle
campaign:
  from: news@brand.test
  to: [busy@example.com]
expect:
  within: 10s
"""


def judged(run: Run, scenario: Scenario, finished: float) -> list[Violation]:
    """The cross-checks of *run* as the judge makes them, the run having ended at *finished*
    (seconds after T0)."""
    facts = Facts.from_entries(
        run.journal.entries(), scenario=scenario, started=T0, finished=T0 + finished
    )
    return cross_check(facts)


# --- CT510: a temporary failure never retried ---------------------------------------------------


def test_ct510_a_soft_bounce_reported_after_a_single_4xx() -> None:
    run = Run()
    session = run.session(
        1, rcpt("busy@example.com", 450, "soft", mode="throttle", reply="450 4.2.1 slow down")
    )
    cb = run.legacy(2, "softbounce", ("busy@example.com", TS + 1))
    (violation,) = run.check()
    assert violation == Violation(
        code="CT510",
        severity=Severity.ERROR,
        path="$[0].data[0]",
        message="softbounce for busy@example.com after a single attempt that failed "
        "temporarily: 450 4.2.1 slow down at rcpt (throttle, attempt 1) on example.com",
        expected="a retry on the integration's schedule before any bounce",
        seen="1 attempt, then softbounce",
        evidence=(cb.seq, session.reply.seq),
        extra={"callback": cb.seq},
    )


def test_ct510_is_silent_after_a_proper_retry_schedule() -> None:
    run = Run()
    run.session(1, rcpt("busy@example.com", 450, "soft", mode="throttle"))
    run.session(1.2, rcpt("busy@example.com", 450, "soft", mode="throttle", attempt=2))
    run.session(1.6, rcpt("busy@example.com", 450, "soft", mode="throttle", attempt=3))
    run.legacy(2, "softbounce", ("busy@example.com", TS + 1))
    assert run.check() == []


def test_ct510_a_5xx_is_not_retried_and_a_dsn_is_final() -> None:
    run = Run()
    run.session(1, rcpt("full@example.com", 552, "soft", mode="mailbox_full_permanent"))
    run.session(
        1, rcpt("late@example.com", 250, "soft", stage="later", mode="queue_expiry"), accept=True
    )
    run.dsn(3, "late@example.com", status="4.4.7")
    run.legacy(4, "softbounce", ("full@example.com", TS + 1), ("late@example.com", TS + 3))
    assert run.check() == []


def test_ct510_a_dropped_connection_and_a_tarpit_count_as_one_attempt_each() -> None:
    run = Run()
    run.session(1, host="down.test", variant="tarpit")
    run.legacy(2, "softbounce", ("user@down.test", TS + 1))
    assert codes(run.check()) == ["CT510"]
    run = Run()
    run.session(1, host="down.test", variant="tarpit")
    run.session(1.5, host="down.test", variant="tarpit")
    run.legacy(2, "softbounce", ("user@down.test", TS + 1))
    assert run.check() == []


def test_ct510_cannot_judge_a_host_that_refuses_every_connection() -> None:
    # refused leaves no trace of how often the integration tried
    run = Run()
    run.host_down(0.5, "down.test")
    run.legacy(2, "softbounce", ("user@down.test", TS + 1))
    assert run.check() == []


def test_ct510_not_tried_again_in_the_whole_retry_budget_and_never_reported() -> None:
    scenario = parse_scenario(WITHIN_10)
    assert scenario.retry_budget == 5  # within 10 s, minus 5 s for reporting
    run = Run()
    run.sent(0, "busy@example.com", "m1")
    session = run.session(
        1, rcpt("busy@example.com", 450, "soft", mode="throttle", reply="450 4.2.1 slow down")
    )
    (violation,) = judged(run, scenario, finished=10)
    assert violation == Violation(
        code="CT510",
        severity=Severity.ERROR,
        path="recipient busy@example.com",
        message="busy@example.com failed temporarily on its only attempt and was not tried "
        "again in the 5 s of the retry budget (HARNESS_RETRY_BUDGET): 450 4.2.1 slow down at "
        "rcpt (throttle, attempt 1) on example.com",
        expected="a retry on the integration's schedule, within the retry budget",
        seen="1 attempt in the 9 s after it",
        evidence=(session.reply.seq,),
        extra={"recipient": "busy@example.com", "retry_budget": 5.0},
    )


def test_ct510_waits_for_the_whole_retry_budget() -> None:
    scenario = parse_scenario(WITHIN_10)
    run = Run()
    run.session(1, rcpt("busy@example.com", 450, "soft", mode="throttle"))
    # the run stopped before the budget was over: a retry might still have come
    assert judged(run, scenario, finished=5.9) == []
    assert codes(judged(run, scenario, finished=6.2)) == ["CT510"]
    # without a scenario there is no budget: only a report after one attempt is judged
    assert run.check() == []
    # retried, not reported (an expectation says the report is missing)
    retried = Run()
    retried.session(1, rcpt("busy@example.com", 450, "soft", mode="throttle"))
    retried.session(3, rcpt("busy@example.com", 450, "soft", mode="throttle", attempt=2))
    assert judged(retried, scenario, finished=11) == []


def test_ct510_the_budget_is_the_scenarios() -> None:
    longer = parse_scenario(WITHIN_10 + "integration: {retry_budget: 20s}\n")
    assert longer.retry_budget == 20
    run = Run()
    run.session(1, rcpt("busy@example.com", 450, "soft", mode="throttle"))
    assert judged(run, longer, finished=11) == []
    assert codes(judged(run, longer, finished=21.5)) == ["CT510"]


def test_ct510_a_host_down_tried_once() -> None:
    scenario = parse_scenario(
        WITHIN_10.replace("busy@example.com]", "busy@example.com, a@down.test]")
    )
    run = Run()
    run.sent(0, "a@down.test", "m2")
    run.session(1, host="down.test", variant="tarpit", duration=2)
    assert codes(judged(run, scenario, finished=10)) == ["CT510"]
    run.session(4, host="down.test", variant="tarpit", duration=2)
    assert judged(run, scenario, finished=10) == []


def test_ct510_counts_transactions_not_connections() -> None:
    # An integration that keeps its connection (as Postfix does) retries on the one that got
    # the 4xx: two transactions in one session are two attempts.
    busy = rcpt("busy@example.com", 450, "soft", mode="throttle")
    again = msgspec.structs.replace(busy, attempt=2, transaction=2)
    run = Run()
    run.session(1, msgspec.structs.replace(busy, transaction=1), again, duration=1)
    run.legacy(2.5, "softbounce", ("busy@example.com", TS + 2))
    assert Facts.from_entries(run.journal.entries(), started=T0).attempts("busy@example.com") == 2
    assert run.check() == []
    # The session's other transaction was another recipient's: busy@ was tried once.
    run = Run()
    other = rcpt("ok@example.com", 250, "none", mode="accept")
    run.session(
        1,
        msgspec.structs.replace(busy, transaction=1),
        msgspec.structs.replace(other, transaction=2),
        duration=1,
    )
    run.legacy(2.5, "softbounce", ("busy@example.com", TS + 2))
    assert codes(run.check()) == ["CT510"]


def test_ct510_a_down_host_session_with_transactions_is_not_counted_twice() -> None:
    # STARTTLS off, a tls_broken host refuses the plaintext mail at RCPT (530): the connection
    # is a down host's, and its two transactions are the two attempts (not three).
    refused = rcpt("a@down.test", 530, "soft", mode="tls_broken", reply="530 5.7.0 TLS first")
    run = Run()
    run.session(
        1,
        msgspec.structs.replace(refused, transaction=1),
        msgspec.structs.replace(refused, attempt=2, transaction=2),
        host="down.test",
        variant="tls_broken",
        duration=1,
    )
    run.session(3, host="down.test", variant="tls_broken")
    facts = Facts.from_entries(run.journal.entries(), started=T0)
    assert facts.attempts("a@down.test") == 3
    assert facts.attempts("a@down.test", at=T0 + 2) == 2


# --- CT511: a failed callback resent too soon ---------------------------------------------------


def failed_then_resent(
    spec: str | None, gap: float, status: int | None = 429
) -> tuple[Run, int, int]:
    run = Run()
    run.session(1, rcpt("nobody@example.com", 550, "hard"))
    first = run.legacy(2, "hardbounce", ("nobody@example.com", TS + 1), status=status, fault=spec)
    again = run.legacy(2 + gap, "hardbounce", ("nobody@example.com", TS + 1))
    return run, first.seq, again.seq


def test_ct511_resent_3_ms_after_a_429_with_retry_after_2() -> None:
    run, first, again = failed_then_resent("429,retry_after=2", 0.003)
    (violation,) = run.check()
    assert violation == Violation(
        code="CT511",
        severity=Severity.ERROR,
        path="$",
        message=f"callback {first} got 429 with Retry-After: 2 and was resent 0.003 s later "
        f"(callback {again})",
        expected="a resend at least 2 s after the answer",
        seen="0.003 s",
        evidence=(first, again),
        extra={"callback": again, "gap": 0.003, "retry_after": 2},
    )


def test_ct511_a_resend_after_retry_after_is_fine() -> None:
    run, _, _ = failed_then_resent("429,retry_after=2", 2.01)
    assert run.check() == []


def test_ct511_retry_after_is_honoured_up_to_the_cap() -> None:
    run, _, _ = failed_then_resent("503,retry_after=30", 5.01, status=503)
    assert run.check() == []
    run, _, _ = failed_then_resent("503,retry_after=30", 3, status=503)
    assert codes(run.check()) == ["CT511"]
    assert run.check(config=CrossCheckConfig(retry_after_cap=2)) == []


def test_ct511_hammering_without_retry_after() -> None:
    run, first, again = failed_then_resent("503", 0.01, status=503)
    (violation,) = run.check()
    assert violation.message == (
        f"callback {first} got 503 and was resent 0.010 s later (callback {again})"
    )
    assert violation.expected == "a backoff of at least 0.1 s"
    run, _, _ = failed_then_resent("503", 0.2, status=503)
    assert run.check() == []


def test_ct511_a_dropped_connection_resent_at_once() -> None:
    run, first, _ = failed_then_resent("close", 0.001, status=None)
    (violation,) = run.check()
    assert violation.message.startswith(f"callback {first} got dropped (close) and was resent")


def test_ct511_counts_from_the_answer_of_a_delayed_fault() -> None:
    # the fake CleverTap answered 1 s after the request arrived
    run, _, _ = failed_then_resent("503,delay=1", 1.2, status=503)
    assert run.check() == []
    run, _, _ = failed_then_resent("503,delay=1", 1.05, status=503)
    assert codes(run.check()) == ["CT511"]


def test_ct511_a_rebatched_resend_is_a_resend_and_another_request_is_not() -> None:
    run = Run()
    run.session(1, rcpt("a@example.com", 550, "hard"))
    run.session(1, rcpt("b@example.com", 550, "hard"))
    run.legacy(2, "hardbounce", ("a@example.com", TS + 1), status=503, fault="503")
    # the next request is about b only: not the resend
    run.legacy(2.01, "hardbounce", ("b@example.com", TS + 1))
    assert run.check() == []
    # a and b in one batch, 0.02 s after a failed: a's resend, too soon
    run.legacy(2.02, "hardbounce", ("a@example.com", TS + 1), ("c@example.com", TS + 1))
    assert "CT511" in codes(run.check())


def test_ct511_each_resend_of_a_chain_is_judged_against_its_own_failure() -> None:
    run = Run()
    run.session(1, rcpt("a@example.com", 550, "hard"))
    run.legacy(2, "hardbounce", ("a@example.com", TS + 1), status=503, fault="503")
    second = run.legacy(2.2, "hardbounce", ("a@example.com", TS + 1), status=503, fault="503")
    third = run.legacy(2.201, "hardbounce", ("a@example.com", TS + 1))
    (violation,) = run.check()
    assert violation.evidence == (second.seq, third.seq)


def test_ct511_a_400_is_not_resent_and_not_judged() -> None:
    run, _, _ = failed_then_resent(None, 0.001, status=400)
    assert run.check() == []


# --- CT512: the same unsubscribe reported twice -------------------------------------------------


def test_ct512_one_click_two_accepted_unsubscribes() -> None:
    run = Run()
    run.click(1, "reader@example.com")
    first = run.legacy(2, "unsubscribe", ("reader@example.com", TS + 1))
    second = run.legacy(9, "unsubscribe", ("reader@example.com", TS + 8))
    (violation,) = run.check()
    assert violation == Violation(
        code="CT512",
        severity=Severity.ERROR,
        path="$[0].data[0]",
        message=f"unsubscribe for reader@example.com was already reported in callback {first.seq}",
        expected="one report per unsubscribe",
        seen=f"reports in callbacks {first.seq} and {second.seq}",
        evidence=(first.seq, second.seq),
        extra={"callback": second.seq},
    )


def test_ct512_in_v2_and_a_second_click_does_not_excuse_it() -> None:
    run = Run()
    run.sent(0, "reader@example.com", "m1")
    run.session(0.5, rcpt("reader@example.com", 250, "none"), accept=True, meta="m1")
    run.click(1, "reader@example.com")
    run.v2(2, ("unsubscribed", "reader@example.com", "m1"))
    run.click(3, "reader@example.com")
    run.v2(4, ("unsubscribed", "READER@example.com", "m1"))
    assert codes(run.check()) == ["CT512", "CT516"]


def test_ct512_one_report_and_a_resend_after_a_fault_are_fine() -> None:
    run = Run()
    run.click(1, "reader@example.com")
    run.click(1, "other@example.com")
    run.legacy(2, "unsubscribe", ("reader@example.com", TS + 1), status=503, fault="503")
    run.legacy(3, "unsubscribe", ("reader@example.com", TS + 1))
    run.legacy(4, "unsubscribe", ("other@example.com", TS + 1))
    assert run.check() == []


# --- CT505: ts anchored on the event that justifies the report ----------------------------------


def test_ct505_an_async_bounce_is_timed_from_the_dsn() -> None:
    run = Run()
    run.session(
        1,
        rcpt("late@example.com", 250, "hard", stage="later", mode="invalid_address"),
        accept=True,
    )
    dsn = run.dsn(13, "late@example.com")
    cb = run.legacy(14, "hardbounce", ("late@example.com", TS + 1))  # the send time
    (violation,) = run.check()
    assert violation.code == "CT505"
    assert violation.message == (
        f"ts {TS + 1} of hardbounce for late@example.com is 7 s before the DSN arrived"
    )
    assert violation.evidence == (cb.seq, dsn.seq)
    ok = Run()
    ok.session(1, rcpt("late@example.com", 250, "hard", stage="later"), accept=True)
    ok.dsn(13, "late@example.com")
    ok.legacy(14, "hardbounce", ("late@example.com", TS + 13))
    assert ok.check() == []


def test_ct505_after_retries_ts_is_the_final_failure() -> None:
    run = Run()
    run.session(1, rcpt("busy@example.com", 450, "soft"))
    last = run.session(20, rcpt("busy@example.com", 450, "soft", attempt=2))
    run.legacy(21, "softbounce", ("busy@example.com", TS + 1))  # the first attempt's time
    (violation,) = run.check()
    assert violation.code == "CT505"
    assert violation.message.endswith("is 14 s before the failure it reports")
    assert violation.evidence[1] == last.reply.seq
    run = Run()
    run.session(1, rcpt("busy@example.com", 450, "soft"))
    run.session(20, rcpt("busy@example.com", 450, "soft", attempt=2))
    run.legacy(21, "softbounce", ("busy@example.com", TS + 20))
    assert run.check() == []


# --- CT513 / CT514: delayed and success DSNs ----------------------------------------------------


def accepted_then_dsn(action: str, status: str) -> tuple[Run, int]:
    run = Run()
    run.sent(0, "late@example.com", "m1")
    run.session(1, rcpt("late@example.com", 250, "none"), accept=True, meta="m1")
    dsn = run.dsn(3, "late@example.com", action=action, status=status)
    return run, dsn.seq


def test_ct513_a_delayed_dsn_reported_as_a_soft_or_hard_bounce() -> None:
    for event in ("softbounce", "hardbounce"):
        run, dsn = accepted_then_dsn("delayed", "4.4.7")
        cb = run.legacy(4, event, ("late@example.com", TS + 3))
        (violation,) = run.check()
        assert (violation.code, violation.evidence) == ("CT513", (cb.seq, dsn))
        assert violation.message == (
            f"{event} for late@example.com, but the last DSN before it says the message is "
            "delayed, not failed: DSN delayed 4.4.7 (postfix), delivered to the intake"
        )
    run, _ = accepted_then_dsn("delayed", "4.4.7")
    run.v2(4, ("soft_bounce", "late@example.com", "m1"))
    assert codes(run.check()) == ["CT513"]


def test_ct513_a_failed_dsn_after_the_delayed_one_is_a_bounce() -> None:
    run, _ = accepted_then_dsn("delayed", "4.4.7")
    run.dsn(6, "late@example.com", status="5.1.1")
    run.legacy(7, "hardbounce", ("late@example.com", TS + 6))
    assert run.check() == []
    # reported between the two: too early
    early, _ = accepted_then_dsn("delayed", "4.4.7")
    early.legacy(4, "hardbounce", ("late@example.com", TS + 3))
    early.dsn(6, "late@example.com", status="5.1.1")
    assert codes(early.check()) == ["CT513"]


def test_ct514_a_success_dsn_reported_as_a_bounce() -> None:
    for action in ("delivered", "relayed", "expanded"):
        run, dsn = accepted_then_dsn(action, "2.0.0")
        cb = run.legacy(4, "hardbounce", ("late@example.com", TS + 3))
        (violation,) = run.check()
        assert (violation.code, violation.evidence) == ("CT514", (cb.seq, dsn))
        assert violation.expected == "no bounce"


def test_ct514_a_success_dsn_is_a_delivery_and_a_bounce_before_it_is_ct502() -> None:
    run, _ = accepted_then_dsn("relayed", "2.0.0")
    run.v2(4, ("delivered", "late@example.com", "m1"))
    assert run.check() == []
    early = Run()
    early.session(1, rcpt("late@example.com", 250, "none"), accept=True)
    early.legacy(2, "hardbounce", ("late@example.com", TS + 1))
    early.dsn(3, "late@example.com", action="delivered", status="2.0.0")
    assert codes(early.check()) == ["CT502"]


# --- CT515 / CT516: the address CleverTap sent to -----------------------------------------------


def aliased() -> tuple[Run, int, int]:
    """user@example.com's message, forwarded to alias@other.test, which bounced it."""
    run = Run()
    run.sent(0, "user@example.com", "m1")
    session = run.session(
        1,
        rcpt("user@example.com", 250, "hard", stage="later", mode="invalid_address"),
        accept=True,
    )
    assert session.message is not None
    assert isinstance(session.message.data, SmtpMessage)
    queue_id = session.message.data.id
    dsn = run.dsn(3, "alias@other.test", message=queue_id)
    return run, dsn.seq, session.message.seq


def test_ct515_the_final_recipient_of_an_aliased_message() -> None:
    run, dsn, message = aliased()
    cb = run.legacy(4, "hardbounce", ("alias@other.test", TS + 3))
    (violation,) = run.check()  # not CT501: it says why the address is unknown
    assert violation == Violation(
        code="CT515",
        severity=Severity.ERROR,
        path="$[0].data[0]",
        message=f"hardbounce for alias@other.test, the Final-Recipient of the DSN (seq {dsn}) "
        "of a message sent to user@example.com",
        expected="user@example.com",
        seen="alias@other.test",
        evidence=(cb.seq, dsn, message),
        extra={"callback": cb.seq},
    )


def test_an_aliased_dsn_is_the_real_event_of_the_address_sent_to() -> None:
    # the right report (the VERP address's recipient) is judged against the DSN: no CT502
    run, _, _ = aliased()
    run.legacy(4, "hardbounce", ("user@example.com", TS + 3))
    assert run.check() == []
    run.legacy(5, "softbounce", ("user@example.com", TS + 3))
    assert codes(run.check()) == ["CT504"]  # the DSN's class is the `later` reply's: hard


def test_ct515_an_idn_domain_in_the_other_form() -> None:
    run = Run()
    sent = run.sent(0, "user@bücher.example", "m1")
    # the integration converted the domain for a server without SMTPUTF8: allowed
    run.session(1, rcpt("user@xn--bcher-kva.example", 550, "hard"))
    run.legacy(2, "hardbounce", ("user@bücher.example", TS + 1))
    assert run.check() == []
    cb = run.legacy(3, "hardbounce", ("user@xn--bcher-kva.example", TS + 1))
    (violation,) = run.check()
    assert violation.code == "CT515"
    assert violation.message == (
        "hardbounce for user@xn--bcher-kva.example, but CleverTap sent to user@bücher.example: "
        "the same domain in its other IDN form"
    )
    assert violation.evidence == (cb.seq, sent.seq)


def test_ct515_the_reverse_form_and_an_unknown_address_is_still_ct501() -> None:
    run = Run()
    run.sent(0, "user@xn--bcher-kva.example", "m1")
    run.session(1, rcpt("user@xn--bcher-kva.example", 550, "hard"))
    run.legacy(2, "hardbounce", ("user@bücher.example", TS + 1))
    run.legacy(3, "hardbounce", ("ghost@bücher.example", TS + 1))
    assert codes(run.check()) == ["CT515", "CT501"]


def test_ct516_the_local_part_in_another_case_is_a_warning() -> None:
    run = Run()
    sent = run.sent(0, "Ann.Lee@example.com", "m1")
    run.session(1, rcpt("Ann.Lee@example.com", 550, "hard"))
    cb = run.legacy(2, "hardbounce", ("ann.lee@example.com", TS + 1))
    (violation,) = run.check()
    assert (violation.code, violation.severity) == ("CT516", Severity.WARNING)
    assert (violation.expected, violation.seen) == ("Ann.Lee@example.com", "ann.lee@example.com")
    assert violation.evidence == (cb.seq, sent.seq)


def test_ct516_is_silent_for_the_exact_address_or_another_case_of_the_domain() -> None:
    run = Run()
    run.sent(0, "Ann.Lee@example.com", "m1")
    run.session(1, rcpt("Ann.Lee@example.com", 550, "hard"))
    run.legacy(2, "hardbounce", ("Ann.Lee@EXAMPLE.com", TS + 1))
    assert run.check() == []

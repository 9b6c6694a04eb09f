"""judge() and pending(): expectations met and unmet, what counts, violations, the journal."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from harness.checks import Violation
from harness.clevertap.faults import parse_fault
from harness.clevertap.server import CleverTapServer
from harness.journal import Journal, Kind, MemoryJournal
from harness.records import Sent, SmtpClose, SmtpReply, ViolationFound
from harness.scenario.judge import Verdict, judge, pending
from harness.scenario.loader import load_scenario, parse_scenario
from harness.scenario.model import Scenario
from harness.smtp.world import MailWorld

from .test_crosschecks import T0, Run, Session, rcpt

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def verdict_of(run: Run, scenario: Scenario, *, finished: float = T0 + 100) -> Verdict:
    return judge(scenario, run.journal, started=T0, finished=finished)


def results(verdict: Verdict) -> list[tuple[str, bool, str]]:
    return [(r.path, r.met, r.reason) for r in verdict.expectations]


@pytest.fixture
def mailbox_full() -> Scenario:
    return load_scenario(SCENARIOS / "mailbox-full.yaml")


def full_bounced(run: Run) -> Session:
    run.session(1, rcpt("full@example.com", 452, "soft", mode="mailbox_full"))
    return run.session(3, rcpt("full@example.com", 452, "soft", mode="mailbox_full", attempt=2))


def test_a_correct_run_passes_with_evidence(mailbox_full: Scenario) -> None:
    run = Run()
    full_bounced(run)
    run.session(1, rcpt("ok@example.com", 250, "none"), accept=True)
    cb = run.legacy(5, "softbounce", ("full@example.com", int(T0) + 4))
    verdict = verdict_of(run, mailbox_full)
    assert verdict.passed
    assert results(verdict) == [
        ("expect.callbacks[0]", True, f"arrived in seq {cb.seq}, 5.0 s after the start"),
        ("expect.nothing_else", True, "none arrived"),
        ("expect.violations", True, "none"),
    ]
    (first, *_) = verdict.expectations
    assert first.evidence == (cb.seq,)
    assert first.arrived_after == 5.0
    assert verdict.violations == []
    assert (verdict.scenario, verdict.path) == (
        "mailbox-full",
        str(SCENARIOS / "mailbox-full.yaml"),
    )
    # three connections (smtp_open, smtp_reply, smtp_session; one smtp_message), one callback
    assert (verdict.deadline, verdict.callbacks, verdict.entries) == (T0 + 30, 1, 11)
    assert run.journal.entries(Kind.VIOLATION) == []


def test_a_wrong_class_fails_with_the_nearest_callback_and_the_cross_check(
    mailbox_full: Scenario,
) -> None:
    run = Run()
    session = full_bounced(run)
    cb = run.legacy(5, "hardbounce", ("full@example.com", int(T0) + 4))
    verdict = verdict_of(run, mailbox_full)
    assert not verdict.passed
    assert results(verdict) == [
        ("expect.callbacks[0]", False, "did not arrive"),
        (
            "expect.nothing_else",
            False,
            f"1 unexpected: hardbounce full@example.com (seq {cb.seq}, 200)",
        ),
        ("expect.violations", False, "1 error: CT503 x1"),
    ]
    assert [e.describe() for e in verdict.expectations[0].nearest] == [
        f"hardbounce full@example.com (seq {cb.seq}, 200)"
    ]
    (violation,) = verdict.violations
    assert (violation.code, violation.evidence) == ("CT503", (cb.seq, session.reply.seq))
    # the cross-check is in the journal too, as the Violation itself
    (recorded,) = run.journal.entries(Kind.VIOLATION)
    assert isinstance(recorded.data, ViolationFound)
    assert recorded.data.source == "judge"
    assert recorded.data.scenario == "mailbox-full"
    assert recorded.data.violation == violation
    assert Violation.from_json(recorded.to_json()["data"]["violation"]) == violation


def test_judging_twice_records_each_violation_once(mailbox_full: Scenario) -> None:
    run = Run()
    full_bounced(run)
    run.legacy(5, "hardbounce", ("full@example.com", int(T0) + 4))
    verdict_of(run, mailbox_full)
    again = verdict_of(run, mailbox_full)
    assert len(run.journal.entries(Kind.VIOLATION)) == 1
    assert [v.code for v in again.violations] == ["CT503"]


def test_nearest_callbacks_put_the_same_address_first_then_similar_ones() -> None:
    scenario = parse_scenario(
        """
name: near
campaign: {from: n@brand.test, to: [full@example.com, fall@example.com, zz@other.test]}
expect: {callbacks: [{event: softbounce, e: full@example.com}]}
"""
    )
    run = Run()
    run.legacy(1, "softbounce", ("zz@other.test", int(T0)))
    run.legacy(1, "softbounce", ("fall@example.com", int(T0)))
    run.legacy(1, "hardbounce", ("full@example.com", int(T0)))
    (expectation, _) = verdict_of(run, scenario).expectations
    assert [(e.event, e.email) for e in expectation.nearest] == [
        ("hardbounce", "full@example.com"),
        ("softbounce", "fall@example.com"),
        ("softbounce", "zz@other.test"),
    ]


def test_a_faulted_request_never_counts_its_accepted_retry_does() -> None:
    scenario = load_scenario(SCENARIOS / "callback-outage.yaml")
    run = Run()
    run.session(1, rcpt("full@example.com", 552, "soft"))
    faulted = [
        run.legacy(
            2 + n, "softbounce", ("full@example.com", int(T0) + 1), status=503, fault="503,first=3"
        )
        for n in range(3)
    ]
    only_faulted = verdict_of(run, scenario, finished=T0 + 10)
    assert not only_faulted.passed
    (first, nothing_else, policy) = only_faulted.expectations
    assert first.reason == "arrived only in requests that were not accepted: " + "; ".join(
        f"softbounce full@example.com (seq {f.seq}, 503, fault 503,first=3)" for f in faulted
    )
    assert first.evidence == tuple(f.seq for f in faulted)
    assert nothing_else.met  # the attempts are of an expected callback
    assert policy.met
    assert pending(scenario, run.journal)

    retry = run.legacy(6, "softbounce", ("full@example.com", int(T0) + 1))
    verdict = verdict_of(run, scenario)
    assert verdict.passed, results(verdict)
    assert verdict.expectations[0].evidence == (retry.seq,)
    assert not pending(scenario, run.journal)


def test_count_is_exact_and_a_second_report_is_also_ct506() -> None:
    scenario = load_scenario(SCENARIOS / "callback-outage.yaml")
    run = Run()
    run.session(1, rcpt("full@example.com", 552, "soft"))
    one = run.legacy(2, "softbounce", ("full@example.com", int(T0) + 1))
    two = run.legacy(3, "softbounce", ("full@example.com", int(T0) + 1))
    verdict = verdict_of(run, scenario)
    assert results(verdict)[0] == (
        "expect.callbacks[0]",
        False,
        f"arrived 2 times, expected 1: seq {one.seq}, {two.seq}",
    )
    assert verdict.expectations[0].nearest == ()
    assert [v.code for v in verdict.violations] == ["CT506"]
    assert not pending(scenario, run.journal)


def test_a_callback_after_the_deadline_does_not_count(mailbox_full: Scenario) -> None:
    run = Run()
    full_bounced(run)
    late = run.legacy(32.5, "softbounce", ("full@example.com", int(T0) + 32))
    verdict = verdict_of(run, mailbox_full)
    assert results(verdict)[0] == (
        "expect.callbacks[0]",
        False,
        f"arrived 2.5 s after the deadline (30 s from the start): seq {late.seq}",
    )


def test_ts_must_be_within_the_window_of_the_real_event() -> None:
    scenario = load_scenario(SCENARIOS / "invalid-address.yaml")  # ts: {within: 15s}
    run = Run()
    reply = run.session(40, rcpt("nobody@example.com", 550, "hard")).reply
    cb = run.legacy(80, "hardbounce", ("nobody@example.com", int(T0) + 79))
    # 40 s from the start is after the 15 s deadline: move the deadline out of the way
    verdict = judge(
        scenario.model_copy(update={"expect": scenario.expect.model_copy(update={"within": 90})}),
        run.journal,
        started=T0,
        finished=T0 + 100,
    )
    assert results(verdict)[0] == (
        "expect.callbacks[0]",
        False,
        # the RCPT was answered 40.1 s from the start: the window [25.1, 55.1] is rounded
        # outwards
        f"ts {int(T0) + 79} in seq {cb.seq} is 23 s after the window of the real event "
        f"(seq {reply.seq}): expected {int(T0) + 25} <= ts <= {int(T0) + 56} (within 15 s)",
    )
    assert results(verdict)[0][1] is False
    assert verdict.expectations[0].evidence == (cb.seq, reply.seq)


def test_ts_within_the_window_meets_the_expectation() -> None:
    scenario = load_scenario(SCENARIOS / "invalid-address.yaml")
    run = Run()
    run.session(1, rcpt("nobody@example.com", 550, "hard"))
    run.legacy(3, "hardbounce", ("nobody@example.com", int(T0) + 2))
    assert verdict_of(run, scenario).passed


def test_absent_is_broken_even_by_a_request_that_was_not_accepted() -> None:
    scenario = load_scenario(SCENARIOS / "greylisting.yaml")
    run = Run()
    run.session(1, rcpt("grey@example.com", 450, "soft"))
    run.session(1.5, rcpt("grey@example.com", 450, "soft", attempt=2))  # retried: no CT510
    cb = run.legacy(2, "softbounce", ("grey@example.com", int(T0) + 1), status=503, fault="503")
    verdict = verdict_of(run, scenario)
    assert results(verdict) == [
        (
            "expect.absent[0]",
            False,
            f"arrived: softbounce grey@example.com (seq {cb.seq}, 503, fault 503)",
        ),
        (
            "expect.nothing_else",
            False,
            f"1 unexpected: softbounce grey@example.com (seq {cb.seq}, 503, fault 503)",
        ),
        ("expect.violations", True, "none"),
    ]
    assert verdict.expectations[0].description == "no callback at all for grey@example.com"


def test_warnings_never_fail_and_allowed_codes_are_tolerated() -> None:
    scenario = parse_scenario(
        """
name: policy
campaign: {from: n@brand.test, to: [nobody@example.com]}
expect:
  callbacks: [{event: hardbounce, e: nobody@example.com}]
  violations: {allow: [CT506]}
"""
    )
    run = Run()
    run.session(1, rcpt("nobody@example.com", 550, "hard"))
    # an extra key is a warning (CT206); the second report an allowed error (CT506)
    run.callback(
        2,
        [{"event": "hardbounce", "data": [{"e": "nobody@example.com", "ts": int(T0), "x": 1}]}],
    )
    verdict = verdict_of(run, scenario)
    assert verdict.passed
    assert results(verdict)[-1] == ("expect.violations", True, "tolerated: CT206 x1")
    run.legacy(3, "hardbounce", ("nobody@example.com", int(T0) + 1))
    verdict = verdict_of(run, scenario)
    assert results(verdict)[0][1] is False  # count 1, arrived twice
    assert results(verdict)[-1] == ("expect.violations", True, "tolerated: CT206 x1, CT506 x1")
    assert [v.code for v in verdict.failing_violations] == []


def test_payload_violations_carry_their_callback_as_evidence() -> None:
    scenario = parse_scenario(
        """
name: ms
clevertap: {strictness: lenient}
campaign: {from: n@brand.test, to: [nobody@example.com]}
expect: {callbacks: [{event: hardbounce, e: nobody@example.com}]}
"""
    )
    run = Run()
    run.session(1, rcpt("nobody@example.com", 550, "hard"))
    cb = run.legacy(2, "hardbounce", ("nobody@example.com", int(T0) * 1000))
    verdict = verdict_of(run, scenario)
    (violation,) = verdict.violations
    assert (violation.code, violation.path, violation.evidence) == (
        "CT303",
        "$[0].data[0].ts",
        (cb.seq,),
    )
    assert results(verdict)[-1] == ("expect.violations", False, "1 error: CT303 x1")
    assert verdict.expectations[-1].evidence == (cb.seq,)


def test_only_the_entries_of_the_run_are_judged(mailbox_full: Scenario) -> None:
    run = Run()
    run.legacy(-5, "hardbounce", ("full@example.com", int(T0) - 5))  # an earlier test's
    full_bounced(run)
    run.legacy(5, "softbounce", ("full@example.com", int(T0) + 4))
    run.legacy(150, "hardbounce", ("full@example.com", int(T0) + 150))  # after finished
    verdict = verdict_of(run, mailbox_full, finished=T0 + 100)
    assert verdict.passed, results(verdict)
    assert verdict.callbacks == 1


def test_pending_until_every_expected_callback_arrived_accepted() -> None:
    scenario = load_scenario(SCENARIOS / "async-bounce-postfix.yaml")
    journal = MemoryJournal()
    run = Run(journal)
    assert pending(scenario, journal)
    run.legacy(1, "hardbounce", ("late@example.com", int(T0)))
    assert pending(scenario, journal)
    run.legacy(2, "softbounce", ("later@example.com", int(T0)), status=400)
    assert pending(scenario, journal)
    run.legacy(3, "softbounce", ("LATER@example.com", int(T0)))
    assert not pending(scenario, journal)
    # entries before started do not count, and past the deadline nothing is pending
    now = time.time()
    assert pending(scenario, journal, started=now)
    assert not pending(scenario, journal, started=now - 21)


def test_nothing_is_pending_without_expected_callbacks() -> None:
    assert not pending(load_scenario(SCENARIOS / "greylisting.yaml"), MemoryJournal())


def test_to_json_is_plain_data(mailbox_full: Scenario) -> None:
    run = Run()
    full_bounced(run)
    cb = run.legacy(5, "hardbounce", ("full@example.com", int(T0) + 4))
    data = verdict_of(run, mailbox_full).to_json()
    first, second = (e.seq for e in run.journal.entries(Kind.SMTP_REPLY))
    assert data["passed"] is False
    assert data["expectations"][0] == {
        "kind": "callback",
        "path": "expect.callbacks[0]",
        "description": "softbounce for full@example.com",
        "met": False,
        "reason": "did not arrive",
        "evidence": [],
        "nearest": [
            {
                "seq": cb.seq,
                "at": T0 + 5,
                "endpoint": "bounce",
                "event": "hardbounce",
                "email": "full@example.com",
                "ts": int(T0) + 4,
                "meta": None,
                "status": 200,
                "fault": None,
                "codes": [],
            }
        ],
        "arrived_after": None,
        "world": [
            f"+1.1 s seq {first}: refused: 452 reply at rcpt (mailbox_full, attempt 1) "
            "on example.com",
            f"+3.1 s seq {second}: refused: 452 reply at rcpt (mailbox_full, attempt 2) "
            "on example.com",
            "+30.0 s: the window closed (expect.within 30 s)",
        ],
    }
    assert data["violations"][0]["code"] == "CT503"
    assert data["timings"] == {
        "started": T0,
        "finished": T0 + 100,
        "deadline": T0 + 30,
        "duration": 100.0,
    }


# --- real servers ------------------------------------------------------------------------------

REAL = """
name: real
clevertap: {format: %s}
mx:
  example.com:
    full@example.com: mailbox_full_permanent
    nobody@example.com: invalid_address
    ok@example.com: accept
  down.test: {server_down: refused}
campaign:
  from: news@brand.test
  to: [full@example.com, nobody@example.com, ok@example.com, user@down.test]
expect:
  within: 30s
  callbacks: %s
  nothing_else: true
"""


class RealWorld:
    """The fake MX hosts and the fake CleverTap of a scenario, on 127.0.0.1, one journal."""

    def __init__(self, scenario: Scenario, journal: Journal, mail: MailWorld, ct: CleverTapServer):
        self.scenario = scenario
        self.journal = journal
        self.mail = mail
        self.ct = ct

    def deliver(self, recipient: str, meta: str = "m") -> None:
        """One message, one SMTP connection, as an integration's MTA would send it."""
        target = self.mail.transport_map()[recipient.rpartition("@")[2]]
        host, port = target.rsplit(":", 1)
        message = EmailMessage()
        message["From"] = "news@brand.test"
        message["To"] = recipient
        message["Subject"] = "Hi"
        message["X-CleverTap_META"] = meta
        message.set_content("hello")
        # What the runner journals for each message it submits (the meta's first record).
        self.journal.append(
            Sent(
                message_id=f"<{recipient}>",
                sender="news@brand.test",
                to=(recipient,),
                meta=meta,
                subject="Hi",
                ok=True,
                reply="250 ok",
            )
        )
        before = self.journal.next_seq - 1  # appended so far, committed or not
        try:
            with smtplib.SMTP(host, int(port), timeout=10) as smtp:
                smtp.send_message(message, from_addr="bounces@gateway.test", to_addrs=[recipient])
        except smtplib.SMTPRecipientsRefused:
            pass
        except ConnectionRefusedError:
            return  # refused: no session to wait for
        # The replies are journaled before the client reads them; the end of the session comes
        # when the server's thread sees the connection close: wait for it, so that the journal
        # holds whole sessions.
        found = self.journal.wait_for(
            lambda e: e.kind is Kind.SMTP_SESSION, timeout=10, since=before
        )
        assert found is not None


@pytest.fixture
def real_world(request: pytest.FixtureRequest) -> Iterator[RealWorld]:
    fmt, callbacks = request.param
    scenario = parse_scenario(REAL % (fmt, callbacks))
    journal = MemoryJournal()
    mail = MailWorld(journal=journal)
    for plan in scenario.hosts():
        mail.add_host(
            plan.domains[0],
            domains=plan.domains,
            rules=plan.parsed_rules(),
            server_down=plan.host.server_down,
        )
    with mail, CleverTapServer(scenario.clevertap.server_settings(), journal=journal) as ct:
        yield RealWorld(scenario, journal, mail, ct)


LEGACY_EXPECTED = (
    "legacy",
    "[{event: softbounce, e: full@example.com}, {event: hardbounce, e: nobody@example.com},"
    " {event: softbounce, e: user@down.test}]",
)


@pytest.mark.parametrize("real_world", [LEGACY_EXPECTED], indirect=True)
def test_a_real_run_judged_correct(real_world: RealWorld) -> None:
    started = time.time()
    for recipient in real_world.scenario.recipients:
        real_world.deliver(recipient)
    now = int(time.time())
    with httpx.Client(timeout=10) as client:
        response = client.post(
            real_world.ct.urls.bounce,
            json=[
                {"event": "softbounce", "data": [{"e": "full@example.com", "ts": now}]},
                {"event": "hardbounce", "data": [{"e": "nobody@example.com", "ts": now}]},
                {"event": "softbounce", "data": [{"e": "user@down.test", "ts": now}]},
            ],
        )
    assert response.status_code == 200
    verdict = judge(real_world.scenario, real_world.journal, started=started)
    assert verdict.passed, results(verdict)
    assert verdict.violations == []


@pytest.mark.parametrize("real_world", [LEGACY_EXPECTED], indirect=True)
def test_a_real_run_with_a_wrong_class_a_retry_and_an_invented_bounce(
    real_world: RealWorld,
) -> None:
    started = time.time()
    for recipient in real_world.scenario.recipients:
        real_world.deliver(recipient)
    real_world.ct.set_faults(parse_fault("503,first=1"))
    now = int(time.time())
    payload = [
        {"event": "hardbounce", "data": [{"e": "full@example.com", "ts": now}]},
        {"event": "hardbounce", "data": [{"e": "nobody@example.com", "ts": now}]},
        {"event": "softbounce", "data": [{"e": "user@down.test", "ts": now}]},
        {"event": "hardbounce", "data": [{"e": "ok@example.com", "ts": now}]},
    ]
    with httpx.Client(timeout=10) as client:
        assert client.post(real_world.ct.urls.bounce, json=payload).status_code == 503
        time.sleep(0.15)  # a backoff: resending at once is CT511
        assert client.post(real_world.ct.urls.bounce, json=payload).status_code == 200
    verdict = judge(real_world.scenario, real_world.journal, started=started)
    assert not verdict.passed
    assert [(r.path, r.met) for r in verdict.expectations] == [
        ("expect.callbacks[0]", False),
        ("expect.callbacks[1]", True),
        ("expect.callbacks[2]", True),
        ("expect.nothing_else", False),
        ("expect.violations", False),
    ]
    assert sorted((v.code, v.path) for v in verdict.violations) == [
        ("CT502", "$[3].data[0]"),
        ("CT503", "$[0].data[0]"),
    ]
    replies = {
        e.data.recipient: e
        for e in real_world.journal.entries(Kind.SMTP_REPLY)
        if isinstance(e.data, SmtpReply)
    }
    # each decision is its own entry, journaled before its session ended
    ends = {
        e.data.session: e.seq
        for e in real_world.journal.entries(Kind.SMTP_SESSION)
        if isinstance(e.data, SmtpClose)
    }
    assert sorted(replies) == ["full@example.com", "nobody@example.com", "ok@example.com"]
    for reply in replies.values():
        assert isinstance(reply.data, SmtpReply)
        assert reply.seq < ends[reply.data.session]
    (accepted,) = real_world.journal.entries(Kind.SMTP_MESSAGE)
    by_code = {v.code: v for v in verdict.violations}
    callback = by_code["CT503"].evidence[0]
    assert by_code["CT503"].evidence == (callback, replies["full@example.com"].seq)
    assert by_code["CT503"].message.startswith(
        "hardbounce for full@example.com, but the real failure is soft: 552 5.2.2 "
    )
    assert by_code["CT502"].evidence == (callback, accepted.seq)


@pytest.mark.parametrize(
    "real_world",
    [
        (
            "v2",
            "[{event: soft_bounce, e: full@example.com},"
            " {event: hard_bounce, e: nobody@example.com},"
            " {event: delivered, e: ok@example.com}, {event: soft_bounce, e: user@down.test}]",
        )
    ],
    indirect=True,
)
def test_a_real_v2_run_checks_the_meta_echo(real_world: RealWorld) -> None:
    started = time.time()
    metas = {r: f"{r}|20241104|{n}|" for n, r in enumerate(real_world.scenario.recipients)}
    for recipient, meta in metas.items():
        real_world.deliver(recipient, meta)
    events = {
        "success": [
            {"type": "delivered", "email": "ok@example.com", "meta": metas["ok@example.com"]}
        ],
        "failed": [
            {"type": "soft_bounce", "email": "full@example.com", "meta": metas["full@example.com"]},
            # the meta of another message: CT508
            {"type": "hard_bounce", "email": "nobody@example.com", "meta": metas["ok@example.com"]},
            # a meta no message carried: CT508
            {"type": "soft_bounce", "email": "user@down.test", "meta": "user@down.test|"},
        ],
    }
    with httpx.Client(timeout=10) as client:
        response = client.post(real_world.ct.urls.v2, json={"version": "v2", "events": events})
    assert response.status_code == 200
    verdict = judge(real_world.scenario, real_world.journal, started=started)
    assert [(v.code, v.path) for v in verdict.violations] == [
        ("CT508", "$.events.failed[1]"),
        ("CT508", "$.events.failed[2]"),
    ]
    assert [v.message for v in verdict.violations] == [
        "meta of hard_bounce for nobody@example.com belongs to a message sent to ok@example.com",
        "meta of soft_bounce for user@down.test matches no X-CleverTap_META of a sent message",
    ]
    assert verdict.violations[1].expected == repr(metas["user@down.test"])
    assert [r.met for r in verdict.expectations] == [True, True, True, True, True, False]

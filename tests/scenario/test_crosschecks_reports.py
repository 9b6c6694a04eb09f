"""The cross-checks of reports (CT520-CT523, and CT505/CT507/CT515 around them): each fires on a
journal built to trigger it, and the right callback next to it raises nothing. Journals are
built with the typed records, as in ``test_crosschecks``."""

from __future__ import annotations

from harness.records import Dsn, DsnRecipient
from harness.scenario.crosschecks import Facts, cross_check
from harness.scenario.loader import parse_scenario
from harness.vocab import MailReport

from .test_crosschecks import SENDER, T0, Run, codes, rcpt

TS = int(T0)


def accepted(run: Run, address: str, t: float = 1.0, *others: str) -> str:
    """A message for *address* (and *others*) accepted at *t*; its queue id."""
    replies = [rcpt(a, 250, "none", stage="later", mode="accept") for a in (address, *others)]
    session = run.session(t, *replies, accept=True, meta=f"{address}|m")
    assert session.message is not None
    run.sent(0, address, f"{address}|m")
    return str(session.message.data.id)  # type: ignore[union-attr]


def mail_report(
    run: Run,
    t: float,
    address: str,
    report: MailReport,
    queue_id: str,
    *,
    ok: bool = True,
    started: float | None = None,
) -> int:
    entry = run.add(
        t,
        Dsn(
            to=SENDER,
            dialect="",
            recipients=(DsnRecipient(recipient=address),),
            ok=ok,
            reply="250 ok" if ok else None,
            error=None if ok else "ConnectionRefusedError: refused",
            host="example.com",
            message=queue_id,
            report=report,
            style="abuse" if report is MailReport.COMPLAINT else "vacation",
            started=T0 + (t if started is None else started),
        ),
    )
    return entry.seq


def judged(run: Run, *, finished: float, scenario: str | None = None) -> list[str]:
    facts = Facts.from_entries(
        run.journal.entries(),
        scenario=parse_scenario(scenario) if scenario is not None else None,
        started=T0,
        finished=T0 + finished,
    )
    return codes(cross_check(facts))


# --- CT520: an auto-reply reported -------------------------------------------------------------


def test_ct520_a_bounce_or_spam_for_an_auto_reply() -> None:
    run = Run()
    queue = accepted(run, "away@example.com")
    seq = mail_report(run, 3, "away@example.com", MailReport.AUTO_REPLY, queue)
    cb = run.legacy(4, "softbounce", ("away@example.com", TS + 3))
    (violation,) = run.check()
    assert violation.code == "CT520"
    assert violation.evidence == (cb.seq, seq)
    assert "auto-reply (vacation) from away@example.com" in violation.message
    spam = Run()
    queue = accepted(spam, "away@example.com")
    mail_report(spam, 3, "away@example.com", MailReport.AUTO_REPLY, queue)
    spam.v2(4, ("spam", "away@example.com", "away@example.com|m"))
    assert codes(spam.check()) == ["CT520"]


def test_an_auto_reply_with_no_callback_or_delivered_is_right() -> None:
    run = Run()
    queue = accepted(run, "away@example.com")
    mail_report(run, 3, "away@example.com", MailReport.AUTO_REPLY, queue)
    assert judged(run, finished=30) == []
    run.v2(4, ("delivered", "away@example.com", "away@example.com|m"))
    assert run.check() == []


def test_a_callback_that_beats_the_reports_journal_entry_is_still_judged_on_it() -> None:
    # The integration answered while the report's SMTP delivery was still closing: its entry
    # comes after the callback, but the report began before it (Dsn.started).
    run = Run()
    queue = accepted(run, "away@example.com")
    run.legacy(3.05, "hardbounce", ("away@example.com", TS + 3))
    mail_report(run, 3.1, "away@example.com", MailReport.AUTO_REPLY, queue, started=3.0)
    assert codes(run.check()) == ["CT520"]


# --- CT521: a complaint never reported ----------------------------------------------------------


def test_ct521_a_complaint_nobody_reported_once_its_window_passed() -> None:
    run = Run()
    queue = accepted(run, "angry@example.com")
    seq = mail_report(run, 3, "angry@example.com", MailReport.COMPLAINT, queue)
    assert judged(run, finished=4.5) == []  # still within after_dsn (2 s)
    facts = Facts.from_entries(run.journal.entries(), started=T0, finished=T0 + 5.5)
    (violation,) = cross_check(facts)
    assert violation.code == "CT521"
    assert violation.path == "recipient angry@example.com"
    assert violation.evidence == (seq,)
    assert "in the 2.5 s that followed" in violation.message


def test_ct521_not_for_a_complaint_that_never_reached_the_integration() -> None:
    run = Run()
    queue = accepted(run, "angry@example.com")
    mail_report(run, 3, "angry@example.com", MailReport.COMPLAINT, queue, ok=False)
    assert judged(run, finished=30) == []


def test_ct521_not_when_a_click_already_unsubscribed_the_address() -> None:
    run = Run()
    queue = accepted(run, "angry@example.com")
    run.click(2, "angry@example.com")
    run.legacy(2.5, "unsubscribe", ("angry@example.com", TS + 2))
    mail_report(run, 3, "angry@example.com", MailReport.COMPLAINT, queue)
    assert judged(run, finished=30) == []


# --- CT522: a complaint reported as a bounce ----------------------------------------------------


def test_ct522_a_complaint_reported_as_a_bounce_and_nothing_else() -> None:
    run = Run()
    queue = accepted(run, "angry@example.com")
    seq = mail_report(run, 3, "angry@example.com", MailReport.COMPLAINT, queue)
    cb = run.legacy(4, "hardbounce", ("angry@example.com", TS + 3))
    violations = cross_check(
        Facts.from_entries(run.journal.entries(), started=T0, finished=T0 + 30)
    )
    (violation,) = violations  # no CT521 besides: CT522 says it
    assert violation.code == "CT522"
    assert violation.evidence == (cb.seq, seq)
    assert violation.expected == "unsubscribe"


# --- CT523: the wrong event for the mapping; the right ones ---------------------------------------


V2_SCENARIO = """
name: s
clevertap: {{format: v2{mapping}}}
mx:
  example.com:
    angry@example.com: complaint
campaign: {{from: news@brand.test, to: [angry@example.com]}}
"""


def test_ct523_v2_unsubscribed_when_complaints_map_to_spam() -> None:
    run = Run()
    queue = accepted(run, "angry@example.com")
    mail_report(run, 3, "angry@example.com", MailReport.COMPLAINT, queue)
    run.v2(4, ("unsubscribed", "angry@example.com", "angry@example.com|m"))
    assert codes(run.check()) == ["CT523"]  # no scenario: v2's default, spam
    assert judged(run, finished=30, scenario=V2_SCENARIO.format(mapping="")) == ["CT523"]
    mapped = V2_SCENARIO.format(mapping=", complaint_as: unsubscribe")
    assert judged(run, finished=30, scenario=mapped) == []


def test_ct523_v2_spam_when_complaints_map_to_unsubscribe() -> None:
    run = Run()
    queue = accepted(run, "angry@example.com")
    mail_report(run, 3, "angry@example.com", MailReport.COMPLAINT, queue)
    run.v2(4, ("spam", "angry@example.com", "angry@example.com|m"))
    assert run.check() == []
    mapped = V2_SCENARIO.format(mapping=", complaint_as: unsubscribe")
    assert judged(run, finished=30, scenario=mapped) == ["CT523"]


def test_a_legacy_unsubscribe_after_a_complaint_needs_no_click_and_is_timed_from_it() -> None:
    run = Run()
    queue = accepted(run, "angry@example.com")
    mail_report(run, 3, "angry@example.com", MailReport.COMPLAINT, queue)
    run.legacy(4, "unsubscribe", ("angry@example.com", TS + 3))
    assert run.check() == []  # no CT507: the complaint is the real event
    late = Run()
    queue = accepted(late, "angry@example.com")
    mail_report(late, 30, "angry@example.com", MailReport.COMPLAINT, queue)
    late.legacy(31, "unsubscribe", ("angry@example.com", TS + 1))  # the send time, made up
    (violation,) = late.check()
    assert violation.code == "CT505"
    assert "before the complaint" in violation.message


def test_a_click_explains_an_unsubscribe_whatever_the_mapping() -> None:
    run = Run()
    queue = accepted(run, "angry@example.com")
    mail_report(run, 3, "angry@example.com", MailReport.COMPLAINT, queue)
    run.click(3.5, "angry@example.com")
    run.v2(4, ("unsubscribed", "angry@example.com", "angry@example.com|m"))
    assert run.check() == []


# --- CT515 from Original-Recipient --------------------------------------------------------------


def test_ct515_original_recipient_names_the_address_in_a_message_to_several() -> None:
    run = Run()
    queue = accepted(run, "user@example.com", 1.0, "other@example.com")
    run.sent(0, "other@example.com", "other@example.com|m")
    run.add(
        3,
        Dsn(
            to=SENDER,
            dialect="postfix",
            recipients=(
                DsnRecipient(
                    recipient="old@forward.test",
                    action="failed",
                    status="5.1.1",
                    original="user@example.com",
                ),
            ),
            ok=True,
            message=queue,
        ),
    )
    run.legacy(4, "hardbounce", ("old@forward.test", TS + 3))
    (violation,) = run.check()
    assert violation.code == "CT515"
    assert violation.expected == "user@example.com"
    right = Run()
    queue = accepted(right, "user@example.com", 1.0, "other@example.com")
    right.add(
        3,
        Dsn(
            to=SENDER,
            recipients=(
                DsnRecipient(
                    recipient="old@forward.test",
                    action="failed",
                    status="5.1.1",
                    original="user@example.com",
                ),
            ),
            ok=True,
            message=queue,
        ),
    )
    right.legacy(4, "hardbounce", ("user@example.com", TS + 3))
    assert right.check() == []

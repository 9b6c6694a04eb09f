"""The cross-checks CT5xx: each fires on a journal built to trigger it, and stays silent on a
correct run. Journals are built synthetically, entry by entry, with the record types the
producers journal (an SMTP connection is its ``smtp_open``, one ``smtp_reply`` per reply that
decided a recipient, its ``smtp_message`` and its ``smtp_session``); the callback entries are
made by the same inspect() the fake CleverTap runs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from harness.checks import Severity, Violation, all_checks, get_check
from harness.clevertap.faults import parse_fault
from harness.clevertap.inspect import Endpoint, inspect
from harness.journal import Entry, Journal, MemoryJournal
from harness.records import (
    Callback,
    CallbackEvent,
    Click,
    DroppedMessage,
    Dsn,
    DsnRecipient,
    FaultHit,
    HostChange,
    Recipient,
    Record,
    Sent,
    SmtpClose,
    SmtpMessage,
    SmtpOpen,
    SmtpReply,
    TranscriptLine,
    record_from_json,
)
from harness.scenario.crosschecks import CrossCheckConfig, Facts, cross_check
from harness.scenario.loader import parse_scenario
from harness.scenario.model import Scenario

T0 = 1_700_000_000.0
DOCS = Path(__file__).resolve().parents[2] / "docs" / "checks.md"
SENDER = "bounces@gateway.test"
PEER = "127.0.0.1:40000"


@dataclass(frozen=True, slots=True)
class Session:
    """The entries of one SMTP connection, in the order a fake MX journals them."""

    opened: Entry
    replies: tuple[Entry, ...]
    """One ``smtp_reply`` per reply that decided a recipient."""
    message: Entry | None
    """The ``smtp_message`` of the message accepted in it, if any."""
    closed: Entry

    @property
    def reply(self) -> Entry:
        """The one reply of a single-recipient session."""
        (reply,) = self.replies
        return reply


class Run:
    """A journal written as the world, the runner and the fake CleverTap would write it."""

    def __init__(self, journal: Journal | None = None) -> None:
        self.journal = journal if journal is not None else MemoryJournal()

    def add(self, t: float, record: Record) -> Entry:
        return self.journal.append(record, at=T0 + t)

    def session(
        self,
        t: float,
        *replies: SmtpReply,
        host: str = "example.com",
        variant: str | None = None,
        duration: float = 0.2,
        dropped: DroppedMessage | None = None,
        accept: bool = False,
        meta: str | None = None,
    ) -> Session:
        """One connection from *t* to *t* + *duration*: opened at *t*, the *replies* (made by
        :func:`rcpt`) given halfway, with *accept* one message accepted for every recipient
        whose RCPT was not refused (carrying the X-CleverTap_META *meta*), then closed."""
        # Session and queue ids come from the journal's next seq, as the fake MX makes them.
        session = f"{host}-{self.journal.next_seq}"
        opened = self.add(
            t, SmtpOpen(host=host, session=session, peer=PEER, port=2525, variant=variant)
        )
        given = tuple(
            self.add(t + duration / 2, msgspec.structs.replace(reply, host=host, session=session))
            for reply in replies
        )
        message = None
        queue_ids: tuple[str, ...] = ()
        if accept:
            queue_id = f"{host.upper()}{self.journal.next_seq:06d}"
            queue_ids = (queue_id,)
            message = self.add(
                t + duration * 3 / 4,
                SmtpMessage(
                    host=host,
                    session=session,
                    id=queue_id,
                    peer=PEER,
                    sender=SENDER,
                    recipients=tuple(
                        Recipient(address=r.recipient) for r in replies if not r.failed
                    ),
                    x_clevertap_meta=meta,
                ),
            )
        commands = ["EHLO gateway.test", f"MAIL FROM:<{SENDER}>"]
        commands += [f"RCPT TO:<{r.recipient}>" for r in replies]
        # The client saw 250 at RCPT for a recipient whose rules act later.
        transcript = [
            TranscriptLine(stage="rcpt", reply=r.reply if r.stage == "rcpt" else "250 2.1.5 Ok")
            for r in replies
        ]
        if message is not None:
            commands.append("DATA")
            queued = f"250 2.0.0 Ok: queued as {queue_ids[0]}"
            transcript.append(TranscriptLine(stage="end_of_data", reply=queued))
        closed = self.add(
            t + duration,
            SmtpClose(
                host=host,
                session=session,
                peer=PEER,
                port=2525,
                variant=variant,
                ehlo="gateway.test",
                commands=tuple(commands),
                replies=tuple(transcript),
                messages=queue_ids,
                dropped_message=dropped,
                end="server_dropped" if dropped is not None else "quit",
                started=T0 + t,
                duration=duration,
            ),
        )
        return Session(opened, given, message, closed)

    def dsn(
        self,
        t: float,
        recipient: str,
        action: str = "failed",
        status: str = "5.1.1",
        *,
        message: str | None = None,
    ) -> Entry:
        """A DSN about *recipient* (its Final-Recipient), about the message queued as
        *message* when given."""
        return self.add(
            t,
            Dsn(
                to=SENDER,
                dialect="postfix",
                recipients=(DsnRecipient(recipient=recipient, action=action, status=status),),
                ok=True,
                reply="250 ok",
                message=message,
            ),
        )

    def callback(
        self,
        t: float,
        payload: Any,
        *,
        endpoint: str = "bounce",
        status: int | None = 200,
        fault: str | None = None,
    ) -> Entry:
        """A callback entry exactly as the fake CleverTap journals it (inspect() included)."""
        body = json.dumps(payload).encode()
        inspection = inspect(body, endpoint=Endpoint(endpoint), now=T0 + t)
        return self.add(
            t,
            Callback(
                endpoint=endpoint,
                path=f"/callbacks/{endpoint}",
                peer="127.0.0.1:50000",
                content_type="application/json",
                size=len(body),
                body=body.decode(),
                format=inspection.format,
                events=tuple(
                    CallbackEvent(e.event, e.email, e.ts, e.meta) for e in inspection.events
                ),
                violations=tuple(inspection.violations),
                status=status,
                fault=None if fault is None else _fault_hit(fault),
            ),
        )

    def legacy(self, t: float, event: str, *items: tuple[str, int], **kw: Any) -> Entry:
        endpoint = "unsubscribe" if event == "unsubscribe" else "bounce"
        data = [{"e": e, "ts": ts} for e, ts in items]
        return self.callback(t, [{"event": event, "data": data}], endpoint=endpoint, **kw)

    def v2(self, t: float, *items: tuple[str, str, str], **kw: Any) -> Entry:
        success = [{"type": k, "email": e, "meta": m} for k, e, m in items if k == "delivered"]
        failed = [{"type": k, "email": e, "meta": m} for k, e, m in items if k != "delivered"]
        payload = {"version": "v2", "events": {"success": success, "failed": failed}}
        return self.callback(t, payload, endpoint="v2", **kw)

    def click(
        self, t: float, recipient: str, *, status: int | None = 200, ok: bool = True
    ) -> Entry:
        return self.add(
            t,
            Click(
                recipient=recipient,
                via="one_click",
                url="http://127.0.0.1:8080/u/1",
                status=status,
                ok=ok,
                error=None if ok else "ConnectError: refused",
            ),
        )

    def sent(self, t: float, recipient: str, meta: str) -> Entry:
        return self.add(
            t,
            Sent(
                message_id=f"<{recipient}>",
                sender="news@brand.test",
                to=(recipient,),
                meta=meta,
                subject="Harness campaign",
                ok=True,
                reply="250 2.0.0 queued",
            ),
        )

    def host_down(self, t: float, host: str, variant: str = "refused") -> Entry:
        return self.add(t, HostChange(host=host, state="down", variant=variant))

    def check(
        self, scenario: Scenario | None = None, config: CrossCheckConfig | None = None
    ) -> list[Violation]:
        facts = Facts.from_entries(self.journal.entries(), scenario=scenario, started=T0)
        return cross_check(facts, config=config)


def _fault_hit(spec: str) -> FaultHit:
    """The FaultHit the fake CleverTap journals for the rule *spec* (``429,retry_after=2``)."""
    rule = parse_fault(spec)
    return FaultHit(rule=0, action=rule.action, spec=rule.describe(), retry_after=rule.retry_after)


def rcpt(
    recipient: str,
    code: int,
    klass: str | None,
    *,
    stage: str = "rcpt",
    mode: str | None = None,
    reply: str | None = None,
    attempt: int = 1,
) -> SmtpReply:
    """A reply deciding *recipient*, for :meth:`Run.session` (which fills in host and session).

    *klass* None makes a protocol reply (503, 530: no rule, no class, no attempt), as the fake
    MX journals its own replies to RCPT."""
    text = reply or f"{code} reply"
    words = text.split(" ")
    enhanced = (
        words[1] if len(words) > 1 and re.fullmatch(r"\d\.\d{1,3}\.\d{1,3}", words[1]) else None
    )
    protocol = klass is None
    return SmtpReply(
        host="",
        session="",
        recipient=recipient,
        sender=SENDER,
        stage=stage,
        code=code,
        enhanced=enhanced,
        reply=text,
        mode=None if protocol else mode,
        rule=None if protocol else recipient,
        bounce_class=klass,
        attempt=None if protocol else attempt,
    )


def codes(violations: list[Violation]) -> list[str]:
    return [v.code for v in violations]


SCENARIO = """
name: crosschecks
mx:
  example.com:
    ok@example.com: accept
  down.test: {server_down: refused}
campaign:
  from: news@brand.test
  to: [ok@example.com, full@example.com, nobody@example.com, grey@example.com,
       late@example.com, user@down.test, reader@example.com]
unsubscribe:
  - {recipient: reader@example.com}
"""


def correct_run() -> Run:
    """Everything a correct integration does, each kind of real event once."""
    run = Run()
    for n, address in enumerate(["ok", "full", "nobody", "grey", "late", "reader"]):
        run.sent(0, f"{address}@example.com", f"{address}|meta|{n}")
    run.sent(0, "user@down.test", "user|meta|6")
    # full: 452 twice (retries), then reported soft
    run.session(1, rcpt("full@example.com", 452, "soft", mode="mailbox_full"))
    run.session(3, rcpt("full@example.com", 452, "soft", mode="mailbox_full", attempt=2))
    # nobody: 550 hard
    run.session(1, rcpt("nobody@example.com", 550, "hard", mode="invalid_address"))
    # grey: greylisted, then accepted: nothing to report
    run.session(1, rcpt("grey@example.com", 450, "soft", mode="greylist"))
    run.session(
        2,
        rcpt("grey@example.com", 250, "none", mode="accept", attempt=2),
        accept=True,
        meta="grey|meta|3",
    )
    # ok and reader: accepted
    run.session(1, rcpt("ok@example.com", 250, "none"), accept=True, meta="ok|meta|0")
    run.session(1, rcpt("reader@example.com", 250, "none"), accept=True, meta="reader|meta|5")
    # late: accepted, then a DSN
    run.session(
        1,
        rcpt("late@example.com", 250, "hard", stage="later", mode="invalid_address"),
        accept=True,
        meta="late|meta|4",
    )
    run.dsn(4, "late@example.com")
    # reader clicks
    run.click(5, "reader@example.com")
    # the callbacks
    run.legacy(
        6,
        "softbounce",
        ("full@example.com", int(T0) + 4),
        ("user@down.test", int(T0) + 6),
    )
    run.legacy(
        6, "hardbounce", ("nobody@example.com", int(T0) + 1), ("late@example.com", int(T0) + 5)
    )
    run.legacy(7, "unsubscribe", ("reader@example.com", int(T0) + 5))
    return run


def test_a_correct_run_has_no_cross_check_violation() -> None:
    scenario = parse_scenario(SCENARIO)
    assert correct_run().check(scenario) == []


def test_the_same_journal_with_v2_callbacks_is_correct_too() -> None:
    run = Run()
    run.sent(0, "ok@example.com", "ok|meta|1")
    run.sent(0, "nobody@example.com", "nobody|meta|2")
    run.sent(0, "late@example.com", "late|meta|3")
    run.session(
        1,
        rcpt("ok@example.com", 250, "none"),
        rcpt("late@example.com", 250, "hard", stage="later"),
        accept=True,
        meta="ok|meta|1",
    )
    run.session(1, rcpt("nobody@example.com", 550, "hard"))
    run.dsn(3, "late@example.com")
    # delivered at 250 time, then the DSN's hard bounce: both right
    run.v2(
        2,
        ("delivered", "ok@example.com", "ok|meta|1"),
        ("delivered", "late@example.com", "late|meta|3"),
        ("hard_bounce", "nobody@example.com", "nobody|meta|2"),
    )
    run.v2(4, ("hard_bounce", "late@example.com", "late|meta|3"))
    assert run.check() == []


# --- CT501 -------------------------------------------------------------------------------------


def test_ct501_bounce_for_an_address_nobody_tried() -> None:
    run = Run()
    sent = run.sent(0, "ghost@example.com", "m")
    run.session(1, rcpt("ok@example.com", 250, "none"))
    cb = run.legacy(2, "hardbounce", ("ghost@example.com", int(T0) + 1))
    (violation,) = run.check()
    assert violation == Violation(
        code="CT501",
        severity=Severity.ERROR,
        path="$[0].data[0]",
        message="hardbounce for ghost@example.com, an address the integration never attempted",
        expected="an SMTP attempt or a DSN for the address",
        seen=f"SENT in seq {sent.seq}, but no RCPT at any fake MX or relay and no DSN",
        evidence=(cb.seq, sent.seq),
        extra={"callback": cb.seq},
    )


def test_ct501_is_silent_when_the_domain_is_declared_down_refused() -> None:
    # refused leaves no session at all: the scenario's server_down is the only trace
    run = Run()
    run.legacy(2, "softbounce", ("user@down.test", int(T0) + 1))
    assert codes(run.check()) == ["CT501"]
    assert run.check(parse_scenario(SCENARIO)) == []


def test_ct501_is_silent_when_a_host_went_down_at_runtime() -> None:
    run = Run()
    run.host_down(0.5, "down.test")
    run.legacy(2, "softbounce", ("user@down.test", int(T0) + 1))
    assert run.check() == []


def test_a_down_host_seen_serving_other_domains_does_not_excuse_a_bounce() -> None:
    run = Run()
    run.session(0.1, rcpt("a@other.test", 250, "none"), host="mx-other")
    run.host_down(0.5, "mx-other")
    run.legacy(2, "softbounce", ("user@elsewhere.test", int(T0) + 1))
    assert codes(run.check()) == ["CT501"]


def test_ct501_is_silent_for_a_tarpit_host_and_its_class_is_soft() -> None:
    run = Run()
    run.session(1, host="down.test", variant="tarpit")
    run.session(1.5, host="down.test", variant="tarpit")  # the retry
    run.legacy(2, "softbounce", ("user@down.test", int(T0) + 1))
    assert run.check() == []
    run.legacy(3, "hardbounce", ("user@down.test", int(T0) + 1))
    (violation,) = run.check()
    assert violation.code == "CT503"
    assert violation.message == (
        "hardbounce for user@down.test, but the real failure is soft: its mail server is down "
        "(tarpit, 4.4.2)"
    )


def test_an_rcpt_answered_outside_the_rules_is_an_attempt() -> None:
    # 530 auth required: the host's own reply, journaled without a class; it decides nothing
    # about the address, but the address was attempted
    run = Run()
    run.session(1, rcpt("a@example.com", 530, None, reply="530 5.7.0 Authentication required"))
    run.legacy(2, "softbounce", ("a@example.com", int(T0) + 1))
    assert run.check() == []
    # and it is no failure either: no class to contradict
    run.legacy(3, "hardbounce", ("a@example.com", int(T0) + 1))
    assert run.check() == []


def test_a_dropped_message_is_a_soft_failure() -> None:
    run = Run()
    dropped = DroppedMessage(sender="b@gw", recipients=("a@down.test",), after_dot=True, size=10)
    run.session(1, rcpt("a@down.test", 250, "none"), variant="drop_after_dot", dropped=dropped)
    session = run.session(  # the retry, dropped too
        1.5, rcpt("a@down.test", 250, "none"), variant="drop_after_dot", dropped=dropped
    )
    run.legacy(2, "softbounce", ("a@down.test", int(T0) + 1))
    assert run.check() == []
    cb = run.legacy(3, "hardbounce", ("a@down.test", int(T0) + 1))
    (violation,) = run.check()
    # the evidence is the end of the session, which says what was dropped
    assert (violation.code, violation.evidence) == ("CT503", (cb.seq, session.closed.seq))
    assert "connection dropped after the final dot (drop_after_dot)" in violation.message


# --- CT502 -------------------------------------------------------------------------------------


def test_ct502_greylisted_then_accepted_is_no_bounce() -> None:
    run = Run()
    first = run.session(1, rcpt("grey@example.com", 450, "soft", mode="greylist"))
    retry = run.session(2, rcpt("grey@example.com", 250, "none", attempt=2), accept=True)
    accepted = retry.message
    assert accepted is not None
    assert isinstance(accepted.data, SmtpMessage)
    cb = run.legacy(3, "softbounce", ("grey@example.com", int(T0) + 2))
    (violation,) = run.check()
    assert violation.code == "CT502"
    assert violation.message == (
        "softbounce for grey@example.com, but the mail world accepted its message and never "
        "bounced it"
    )
    assert violation.expected == "no bounce"
    assert violation.seen == (
        f"softbounce; final outcome: accepted as {accepted.data.id} on example.com"
    )
    assert violation.evidence == (cb.seq, first.reply.seq, accepted.seq)


def test_ct502_even_when_the_bounce_came_between_the_attempts() -> None:
    # reported soft after the greylisting, then the retry went through: still wrong
    run = Run()
    run.session(1, rcpt("grey@example.com", 450, "soft", mode="greylist"))
    run.legacy(1.5, "softbounce", ("grey@example.com", int(T0) + 1))
    run.session(2, rcpt("grey@example.com", 250, "none", attempt=2), accept=True)
    assert codes(run.check()) == ["CT502"]


def test_accept_then_bounce_takes_its_class_from_the_mail_world() -> None:
    # the scenario overrode the class to soft: the DSN (5.1.1) must be reported soft
    run = Run()
    run.session(
        1,
        rcpt("late@example.com", 250, "soft", stage="later", mode="invalid_address"),
        accept=True,
    )
    dsn = run.dsn(3, "late@example.com", status="5.1.1")
    run.legacy(4, "softbounce", ("late@example.com", int(T0) + 3))
    assert run.check() == []
    cb = run.legacy(5, "hardbounce", ("late@example.com", int(T0) + 3))
    (violation,) = run.check()
    assert (violation.code, violation.evidence) == ("CT503", (cb.seq, dsn.seq))
    assert violation.expected == "a soft bounce"
    assert violation.seen == "hardbounce (hard)"


def test_a_dsn_without_a_later_reply_is_classed_by_status() -> None:
    # no `later` reply says which class the mail world decided: the DSN's status does
    run = Run()
    run.session(1, rcpt("late@example.com", 250, "none"), accept=True)
    run.session(1, rcpt("expired@example.com", 250, "none"), accept=True)
    run.dsn(3, "late@example.com", status="5.1.1")
    run.dsn(3, "expired@example.com", status="4.4.7")  # a queue given up on: soft
    run.legacy(4, "softbounce", ("late@example.com", int(T0) + 3))
    run.legacy(4, "hardbounce", ("expired@example.com", int(T0) + 3))
    assert codes(run.check()) == ["CT504", "CT503"]


# --- CT503 / CT504 -----------------------------------------------------------------------------


def test_ct503_soft_reported_as_hard() -> None:
    run = Run()
    session = run.session(
        1,
        rcpt(
            "full@example.com",
            552,
            "soft",
            mode="mailbox_full_permanent",
            reply="552 5.2.2 Mailbox full",
        ),
    )
    cb = run.legacy(2, "hardbounce", ("full@example.com", int(T0) + 1))
    (violation,) = run.check()
    assert violation.code == "CT503"
    assert violation.message == (
        "hardbounce for full@example.com, but the real failure is soft: 552 5.2.2 Mailbox full "
        "at rcpt (mailbox_full_permanent, attempt 1) on example.com"
    )
    assert (violation.expected, violation.seen) == ("a soft bounce", "hardbounce (hard)")
    assert violation.evidence == (cb.seq, session.reply.seq)


def test_a_reply_counts_while_its_session_is_still_open() -> None:
    # replies are journaled as they are given: a client that keeps its connection open (a
    # connection cache) has no smtp_session entry yet, and its decisions count all the same
    run = Run()
    session = f"example.com-{run.journal.next_seq}"
    run.add(1, SmtpOpen(host="example.com", session=session, peer=PEER))
    refused = rcpt("full@example.com", 552, "soft", reply="552 5.2.2 Mailbox full")
    reply = run.add(1.1, msgspec.structs.replace(refused, host="example.com", session=session))
    cb = run.legacy(2, "hardbounce", ("full@example.com", int(T0) + 1))
    (violation,) = run.check()
    assert (violation.code, violation.evidence) == ("CT503", (cb.seq, reply.seq))


def test_ct504_hard_reported_as_soft_in_v2() -> None:
    run = Run()
    run.sent(0, "nobody@example.com", "m1")
    session = run.session(1, rcpt("nobody@example.com", 550, "hard"))
    cb = run.v2(2, ("soft_bounce", "nobody@example.com", "m1"))
    (violation,) = run.check()
    assert (violation.code, violation.path) == ("CT504", "$.events.failed[0]")
    assert (violation.expected, violation.seen) == ("a hard bounce", "soft_bounce (soft)")
    assert violation.evidence == (cb.seq, session.reply.seq)


def test_the_last_failure_before_the_callback_decides_the_class() -> None:
    # attempt 1 greylisted (soft), attempt 2 user unknown (hard): a hard bounce is right
    run = Run()
    run.session(1, rcpt("a@example.com", 450, "soft"))
    run.session(2, rcpt("a@example.com", 550, "hard", attempt=2))
    run.legacy(3, "hardbounce", ("a@example.com", int(T0) + 2))
    assert run.check() == []


# --- CT505 -------------------------------------------------------------------------------------


def test_ct505_ts_before_the_failure_it_reports() -> None:
    run = Run()
    session = run.session(10, rcpt("nobody@example.com", 550, "hard"))
    cb = run.legacy(12, "hardbounce", ("nobody@example.com", int(T0)))
    (violation,) = run.check()
    assert violation.code == "CT505"
    assert violation.message == (
        f"ts {int(T0)} of hardbounce for nobody@example.com is 5 s before the failure it reports"
    )
    assert violation.expected == f"{int(T0) + 5} <= ts <= {int(T0) + 17}"
    assert violation.seen == str(int(T0))
    assert violation.evidence == (cb.seq, session.reply.seq)
    assert violation.extra == {"callback": cb.seq, "earliest": int(T0) + 5, "latest": int(T0) + 17}


def test_ct505_ts_after_the_callback_arrived_and_the_skew_is_configurable() -> None:
    run = Run()
    run.session(1, rcpt("nobody@example.com", 550, "hard"))
    run.legacy(2, "hardbounce", ("nobody@example.com", int(T0) + 10))
    (violation,) = run.check()
    assert violation.message.endswith("is 3 s after the callback arrived")
    assert run.check(config=CrossCheckConfig(ts_skew=8)) == []


def test_ct505_skips_a_ts_in_milliseconds_which_ct303_reports() -> None:
    run = Run()
    run.session(1, rcpt("nobody@example.com", 550, "hard"))
    run.legacy(2, "hardbounce", ("nobody@example.com", int(T0) * 1000), status=200)
    assert run.check() == []


def test_ct505_an_unsubscribe_is_timed_from_the_click() -> None:
    run = Run()
    click = run.click(50, "reader@example.com")
    cb = run.legacy(52, "unsubscribe", ("reader@example.com", int(T0) + 1))
    (violation,) = run.check()
    assert violation.code == "CT505"
    assert violation.message.endswith("is 44 s before the click")
    assert violation.evidence == (cb.seq, click.seq)


# --- CT506 -------------------------------------------------------------------------------------


def test_ct506_the_same_bounce_in_two_accepted_callbacks_hours_apart() -> None:
    run = Run()
    run.session(1, rcpt("nobody@example.com", 550, "hard"))
    first = run.legacy(2, "hardbounce", ("nobody@example.com", int(T0) + 1))
    second = run.legacy(9000, "hardbounce", ("nobody@example.com", int(T0) + 1))
    (violation,) = run.check()
    assert violation.code == "CT506"
    assert violation.message == (
        f"hardbounce for nobody@example.com was already reported in callback {first.seq}"
    )
    assert violation.seen == f"reports in callbacks {first.seq} and {second.seq}"
    assert violation.evidence == (first.seq, second.seq)


def test_ct506_a_resend_after_a_fault_or_a_rejection_is_no_duplicate() -> None:
    run = Run()
    run.session(1, rcpt("nobody@example.com", 550, "hard"))
    run.legacy(2, "hardbounce", ("nobody@example.com", int(T0) + 1), status=503, fault="503")
    run.legacy(3, "hardbounce", ("nobody@example.com", int(T0) + 1), status=None, fault="close")
    run.legacy(4, "hardbounce", ("nobody@example.com", int(T0) + 1), status=400)
    run.legacy(5, "hardbounce", ("nobody@example.com", int(T0) + 1))
    assert run.check() == []


def test_faulted_and_rejected_callbacks_are_not_cross_checked() -> None:
    run = Run()
    run.legacy(2, "hardbounce", ("ghost@example.com", int(T0) + 1), status=503, fault="503")
    run.legacy(2, "unsubscribe", ("ghost@example.com", int(T0) + 1), status=400)
    assert run.check() == []


# --- CT507 -------------------------------------------------------------------------------------


def test_ct507_unsubscribe_without_a_click() -> None:
    run = Run()
    run.click(1, "reader@example.com")
    cb = run.legacy(2, "unsubscribe", ("other@example.com", int(T0) + 1))
    (violation,) = run.check()
    assert violation.code == "CT507"
    assert violation.message == (
        "unsubscribe for other@example.com, but no unsubscribe action by that recipient reached "
        "the integration before it"
    )
    assert (violation.seen, violation.evidence) == ("no click", (cb.seq,))


def test_ct507_a_click_after_the_callback_or_one_that_never_arrived_does_not_count() -> None:
    run = Run()
    refused = run.click(1, "reader@example.com", status=None, ok=False)  # connection refused
    cb = run.legacy(2, "unsubscribe", ("reader@example.com", int(T0) + 2))
    late = run.click(3, "reader@example.com")
    (violation,) = run.check()
    assert violation.code == "CT507"
    assert violation.seen == f"clicks only after the callback (seq {refused.seq}, {late.seq})"
    assert violation.evidence == (cb.seq, refused.seq, late.seq)


def test_ct507_v2_unsubscribed_after_a_click_is_fine() -> None:
    run = Run()
    run.sent(0, "reader@example.com", "m1")
    run.session(1, rcpt("reader@example.com", 250, "none"), accept=True, meta="m1")
    run.click(2, "reader@example.com", status=500, ok=False)  # it reached the integration
    run.v2(3, ("unsubscribed", "reader@example.com", "m1"))
    assert run.check() == []


# --- CT508 -------------------------------------------------------------------------------------


def test_ct508_meta_that_no_message_carried() -> None:
    run = Run()
    sent = run.sent(0, "nobody@example.com", "nobody|1|2|")
    run.session(1, rcpt("nobody@example.com", 550, "hard"))
    cb = run.v2(2, ("hard_bounce", "nobody@example.com", "nobody|1|"))
    (violation,) = run.check()
    assert violation.code == "CT508"
    assert violation.message == (
        "meta of hard_bounce for nobody@example.com matches no X-CleverTap_META of a sent message"
    )
    assert (violation.expected, violation.seen) == ("'nobody|1|2|'", "'nobody|1|'")
    assert violation.evidence == (cb.seq, sent.seq)


def test_ct508_meta_of_another_recipients_message() -> None:
    run = Run()
    run.sent(0, "a@example.com", "a-meta")
    other = run.sent(0, "b@example.com", "b-meta")
    run.session(1, rcpt("a@example.com", 550, "hard"))
    cb = run.v2(2, ("hard_bounce", "a@example.com", "b-meta"))
    (violation,) = run.check()
    assert violation.code == "CT508"
    assert violation.message == (
        "meta of hard_bounce for a@example.com belongs to a message sent to b@example.com"
    )
    assert violation.evidence == (cb.seq, other.seq)


def test_ct508_a_folded_header_at_the_mx_still_matches() -> None:
    run = Run()
    # RFC 5322 folds only at whitespace; unfolding removes the CRLF and keeps the space
    long_meta = "a@example.com|" + "x" * 60 + "| campaign " + "y" * 40 + "|"
    folded = long_meta.replace("| campaign", "|\r\n campaign")
    run.session(1, rcpt("a@example.com", 250, "none"), accept=True, meta=folded)
    run.v2(2, ("delivered", "a@example.com", long_meta))
    assert run.check() == []


# --- CT509 -------------------------------------------------------------------------------------


def test_ct509_delivered_for_a_refused_message() -> None:
    run = Run()
    run.sent(0, "nobody@example.com", "m1")
    session = run.session(1, rcpt("nobody@example.com", 550, "hard", reply="550 5.1.1 unknown"))
    cb = run.v2(2, ("delivered", "nobody@example.com", "m1"))
    (violation,) = run.check()
    assert violation.code == "CT509"
    assert violation.seen == "550 5.1.1 unknown at rcpt (attempt 1) on example.com"
    assert violation.evidence == (cb.seq, session.reply.seq)


def test_ct509_delivered_before_the_message_was_accepted() -> None:
    run = Run()
    run.sent(0, "a@example.com", "m1")
    run.v2(1, ("delivered", "a@example.com", "m1"))
    run.session(2, rcpt("a@example.com", 250, "none"), accept=True, meta="m1")
    (violation,) = run.check()
    assert (violation.code, violation.seen) == ("CT509", "no attempt at all")


# --- the docs ----------------------------------------------------------------------------------


def replay(example: str) -> list[Violation]:
    """Replay a documented journal excerpt: ``<t> <kind> <json>`` per line, # comments.

    Each line becomes the record of its kind through ``record_from_json``: an example that no
    longer matches the record types (a field renamed, removed, of another type) fails here."""
    run = Run()
    for line in example.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        t, kind, data = line.split(" ", 2)
        run.add(float(t), record_from_json(kind, json.loads(data)))
    return run.check()


def test_an_example_that_does_not_match_the_record_types_is_refused() -> None:
    # the shape before smtp_reply: decisions inside the session record
    old = (
        '0.5 smtp_session {"host": "mx1", "session": "mx1-1", "peer": "127.0.0.1:1", '
        '"decisions": [{"recipient": "nobody@example.com", "code": 550, "class": "hard"}]}'
    )
    with pytest.raises(
        msgspec.ValidationError, match=r"unknown field\(s\) decisions in a smtp_session record"
    ):
        replay(old)
    wrong_type = (
        '0.5 smtp_reply {"host": "mx1", "session": "mx1-1", "recipient": "a@example.com", '
        '"sender": "", "stage": "rcpt", "code": "550", "enhanced": null, "reply": "550"}'
    )
    with pytest.raises(msgspec.ValidationError, match="Expected `int`, got `str`"):
        replay(wrong_type)


CROSS = [c for c in all_checks() if c.family == "cross"]


def test_every_cross_check_is_registered_with_an_example() -> None:
    # CT518-CT519 are free; CT520-CT523 are about reports (auto-replies and complaints).
    assert [c.code for c in CROSS] == [f"CT5{n:02}" for n in (*range(1, 18), 20, 21, 22, 23)]
    assert all(c.explanation and c.example for c in CROSS)


INTEGRATION = [c for c in all_checks() if c.family == "integration"]


def test_every_integration_check_is_registered_with_an_example() -> None:
    assert [c.code for c in INTEGRATION] == ["CT601"]
    assert all(c.explanation and c.example for c in INTEGRATION)


@pytest.mark.parametrize("check", CROSS + INTEGRATION, ids=lambda c: c.code)
def test_documented_cross_check_example_triggers_its_code(check: Any) -> None:
    sections = re.split(r"^## ", DOCS.read_text(encoding="utf-8"), flags=re.M)
    (section,) = [s for s in sections if s.startswith(f"{check.code}: ")]
    (example,) = re.findall(r"^```journal\n(.*?)^```$", section, flags=re.M | re.S)
    assert example == get_check(check.code).example
    assert check.code in codes(replay(example))

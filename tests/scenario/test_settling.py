"""When a run may be judged: the runner's :class:`Settling` over typed journal records, then end
to end (real fake servers, real integrations as subprocesses): a scenario that expects nothing
after a DSN is judged after the DSN and its consequences, a duplicate 0.7 s after the first
report is seen, and the per-scenario ``expect.quiet`` / ``expect.after_dsn`` knobs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from harness.journal import MemoryJournal
from harness.records import (
    Callback,
    CallbackEvent,
    DroppedMessage,
    Dsn,
    DsnRecipient,
    DsnSkipped,
    FaultHit,
    Recipient,
    ScheduledBounce,
    SmtpClose,
    SmtpMessage,
    SmtpReply,
)
from harness.scenario.loader import parse_scenario
from harness.scenario.runner import DSN_SLACK, RunOptions, ScenarioResult, Settling, run_scenario

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "examples" / "integration" / "gateway.py"
MINI = Path(__file__).resolve().parent / "data" / "mini_sut.py"
T = 1_700_000_000.0


def later(recipient: str, after: float, session: str = "mx1-1") -> SmtpReply:
    return SmtpReply(
        host="mx1",
        session=session,
        recipient=recipient,
        sender="bounces@sut.test",
        stage="later",
        code=250,
        enhanced="2.1.5",
        reply="250 2.1.5 Ok",
        mode="invalid_address",
        bounce_class="hard",
        attempt=1,
        bounce=ScheduledBounce(
            after=after, status="5.1.1", diagnostic=None, dialect="postfix", action="failed"
        ),
    )


def message(queue_id: str, *recipients: str, session: str = "mx1-1") -> SmtpMessage:
    return SmtpMessage(
        host="mx1",
        session=session,
        id=queue_id,
        sender="bounces@sut.test",
        recipients=tuple(Recipient(address=r) for r in recipients),
    )


def dsn(queue_id: str | None, *recipients: str) -> Dsn:
    return Dsn(
        to="bounces@sut.test",
        recipients=tuple(
            DsnRecipient(recipient=r, action="failed", status="5.1.1") for r in recipients
        ),
        ok=True,
        message=queue_id,
        host="mx1",
    )


def settling(*recipients: str, quiet: float = 1.5, after_dsn: float = 2.0) -> Settling:
    return Settling(recipients, 0, quiet=quiet, after_dsn=after_dsn, now=T)


def test_a_scheduled_dsn_keeps_the_run_open_until_sent_and_its_window_over() -> None:
    journal = MemoryJournal()
    state = settling("late@example.com", "ok@example.com")
    journal.append(later("late@example.com", 3.0), at=T)
    journal.append(message("Q1", "late@example.com", "ok@example.com"), at=T + 0.1)
    state.update(journal)
    # Every recipient has its message accepted, but the DSN is due at T + 3.1: not settled, and
    # waiting goes past a deadline that comes first.
    assert state.open == set()
    assert state.dsns_due == {("Q1", "late@example.com"): pytest.approx(T + 3.1)}
    assert not state.ready(T + 60, busy=False)
    assert state.ready_at(busy=False) is None
    assert state.limit(T + 1) == pytest.approx(T + 3.1 + 2.0 + DSN_SLACK)
    assert state.open_items() == [
        "judged when the time was up, not settled: 1 DSN(s) due but never sent"
    ]
    journal.append(dsn("Q1", "late@example.com"), at=T + 3.2)
    state.update(journal)
    assert state.dsns_due == {}
    # The DSN's consequences (a callback, a duplicate) get after_dsn, past the deadline too.
    assert state.limit(T + 1) == pytest.approx(T + 5.2)
    assert not state.ready(T + 5.1, busy=False)
    assert state.ready(T + 5.2, busy=False)
    assert not state.ready(T + 5.2, busy=True)


def test_the_quiet_period_counts_from_the_last_entry() -> None:
    journal = MemoryJournal()
    state = settling("a@example.com", quiet=1.5)
    journal.append(message("Q1", "a@example.com"), at=T)
    state.update(journal)
    assert not state.ready(T + 1.4, busy=False)
    assert state.ready(T + 1.5, busy=False)
    # The runner sleeps until then (a new entry wakes it earlier); nothing to wait for while busy.
    assert state.ready_at(busy=False) == pytest.approx(T + 1.5)
    assert state.ready_at(busy=True) is None
    event = CallbackEvent("hardbounce", "a@example.com", int(T))
    journal.append(Callback(endpoint="bounce", path="/b", status=200, events=(event,)), at=T + 1)
    state.update(journal)
    assert state.callbacks == 1
    assert not state.ready(T + 2.4, busy=False)
    assert state.ready(T + 2.5, busy=False)
    assert state.ready_at(busy=False) == pytest.approx(T + 2.5)


def test_an_idle_connection_closed_late_is_no_activity_but_a_hang_up_is() -> None:
    # An integration with a connection cache (Postfix's, the example's) QUITs its idle
    # connections a while after their last message: that says nothing new. A session whose
    # end dropped a transaction does.
    journal = MemoryJournal()
    state = settling("a@example.com", quiet=1.5)
    journal.append(message("Q1", "a@example.com"), at=T)
    journal.append(SmtpClose(host="mx1", session="mx1-1", peer="127.0.0.1:1", end="quit"), at=T + 1)
    state.update(journal)
    assert state.ready(T + 1.5, busy=False)
    dropped = DroppedMessage(sender="b@sut.test", recipients=("a@example.com",), after_dot=False)
    journal.append(
        SmtpClose(
            host="mx1",
            session="mx1-2",
            peer="127.0.0.1:2",
            end="server_dropped",
            dropped_message=dropped,
        ),
        at=T + 1.2,
    )
    state.update(journal)
    assert not state.ready(T + 2.6, busy=False)
    assert state.ready(T + 2.7, busy=False)


def test_a_report_to_come_is_matched_by_session_and_transaction_on_a_reused_connection() -> None:
    # Two transactions on one connection for the same address: only the one accepted with a
    # report to come (the second) schedules a DSN, due from its own message.
    journal = MemoryJournal()
    state = settling("late@example.com")
    first = message("Q1", "late@example.com")
    journal.append(msgspec.structs.replace(first, transaction=1), at=T)
    journal.append(msgspec.structs.replace(later("late@example.com", 3.0), transaction=2), at=T + 1)
    journal.append(
        msgspec.structs.replace(message("Q2", "late@example.com"), transaction=2), at=T + 1.1
    )
    state.update(journal)
    assert state.dsns_due == {("Q2", "late@example.com"): pytest.approx(T + 4.1)}


def test_a_skipped_dsn_settles_without_a_window() -> None:
    journal = MemoryJournal()
    state = settling("late@example.com", quiet=0.5)
    journal.append(later("late@example.com", 1.0), at=T)
    journal.append(message("Q1", "late@example.com"), at=T)
    journal.append(
        DsnSkipped(
            host="mx1",
            message="Q1",
            recipients=("late@example.com",),
            sender="",
            reason="the message came from the null sender",
        ),
        at=T + 0.1,
    )
    state.update(journal)
    assert state.dsns_due == {}
    assert state.ready(T + 0.6, busy=False)


def test_a_dsn_naming_an_alias_settles_its_message() -> None:
    # The next hop aliased late@ to its real mailbox: the DSN's Final-Recipient is another
    # address, and it still answers for the message it is about.
    journal = MemoryJournal()
    state = settling("late@example.com", "other@example.com")
    journal.append(later("late@example.com", 1.0), at=T)
    journal.append(later("other@example.com", 5.0, session="mx1-2"), at=T)
    journal.append(message("Q1", "late@example.com"), at=T)
    journal.append(message("Q2", "other@example.com", session="mx1-2"), at=T)
    journal.append(dsn("Q1", "real.mailbox@example.com"), at=T + 1.0)
    state.update(journal)
    assert list(state.dsns_due) == [("Q2", "other@example.com")]


def test_a_later_reply_without_an_accepted_message_schedules_nothing() -> None:
    # Accepted at RCPT, but the transaction never completed: no DSN will ever come.
    journal = MemoryJournal()
    state = settling("late@example.com", quiet=0.5)
    journal.append(later("late@example.com", 1.0), at=T)
    state.update(journal)
    assert state.dsns_due == {}


def test_a_refused_callback_with_retry_after_holds_the_run_for_its_resend() -> None:
    journal = MemoryJournal()
    state = settling("a@example.com", quiet=1.0)
    journal.append(message("Q1", "a@example.com"), at=T)
    fault = FaultHit(rule=0, action="status", spec="status=429,retry_after=3", retry_after=3)
    event = CallbackEvent("hardbounce", "a@example.com", int(T))
    refused = Callback(endpoint="bounce", path="/b", status=429, fault=fault, events=(event,))
    journal.append(refused, at=T + 1)
    state.update(journal)
    assert not state.ready(T + 3.9, busy=False)
    assert state.ready(T + 4.0, busy=False)


# -- end to end ----------------------------------------------------------------------------------


def _run(text: str, tmp_path: Path, **options: object) -> ScenarioResult:
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    scenario = parse_scenario(text, source=path)
    return asyncio.run(run_scenario(scenario, RunOptions(**options)))  # type: ignore[arg-type]


SILENT_AFTER_DSN = f"""
name: silent-after-dsn
mx:
  example.com:
    late@example.com: {{accept_then_bounce: invalid_address, after: 1500ms, dsn: postfix}}
campaign: {{from: news@brand.test, to: [late@example.com]}}
integration:
  command: [python, {GATEWAY}]
expect:
  within: 15s
  absent:
    - {{e: late@example.com}}
"""


def test_a_scenario_that_expects_nothing_after_a_dsn_waits_for_the_dsn(tmp_path: Path) -> None:
    # The message is accepted at once and the DSN comes 1.5 s later. Judged after 0.5 s of
    # quiet, this (wrong) scenario used to pass before the DSN was even sent; now the run sees
    # the DSN and the correct integration's hard bounce, and the absent expectation fails.
    result = _run(SILENT_AFTER_DSN, tmp_path)
    verdict = result.verdict
    assert verdict is not None, result.error
    assert result.settled
    unmet = {e.path: e for e in verdict.expectations if not e.met}
    assert list(unmet) == ["expect.absent[0]"]
    assert unmet["expect.absent[0]"].reason.startswith("arrived: hardbounce late@example.com")
    assert verdict.notes == []


DUPLICATE = f"""
name: duplicate
campaign: {{from: news@brand.test, to: [a@example.com]}}
integration:
  command: [python, {MINI}]
  env: {{MINI_BOUNCE: "1", MINI_DUPLICATE: "0.7"}}
expect:
  within: 10s
  callbacks:
    - {{event: hardbounce, e: a@example.com}}
  violations: {{allow: [CT501]}}     # the mini integration relays nothing
"""


def test_a_duplicate_report_0_7_s_later_is_seen(tmp_path: Path) -> None:
    result = _run(DUPLICATE, tmp_path)
    verdict = result.verdict
    assert verdict is not None, result.error
    first = verdict.expectations[0]
    assert first.path == "expect.callbacks[0]"
    assert not first.met
    assert first.reason.startswith("arrived 2 times, expected 1: seq ")
    assert "reported a@example.com again: 200" in result.sut_log


def test_a_quiet_period_too_short_for_the_duplicate_misses_it(tmp_path: Path) -> None:
    # The control: with the old 0.5 s of quiet, the same run is judged before the duplicate.
    text = DUPLICATE.replace("within: 10s", "within: 10s\n  quiet: 300ms")
    result = _run(text, tmp_path)
    verdict = result.verdict
    assert verdict is not None, result.error
    assert verdict.expectations[0].met, verdict.expectations[0].reason
    assert result.timings["wait"] < 2.0


def test_expect_quiet_and_after_dsn_are_read_with_their_defaults(tmp_path: Path) -> None:
    base = "campaign: {from: n@brand.test, to: [a@example.com]}\n"
    default = parse_scenario(base, source=tmp_path / "a.yaml")
    assert (default.expect.quiet, default.expect.after_dsn) == (1.5, 2.0)
    tuned = parse_scenario(
        base + "expect: {quiet: 250ms, after_dsn: 4s}\n", source=tmp_path / "b.yaml"
    )
    assert (tuned.expect.quiet, tuned.expect.after_dsn) == (0.25, 4.0)

"""Judging a scenario run from its journal: expectations, violations, cross-checks, a verdict.

:func:`judge` reads only the journal (the entries from ``started`` to ``finished``) and the
scenario, and returns a :class:`Verdict`: one :class:`ExpectationResult` per expectation of the
scenario's ``expect:`` (met or not, the journal entries that prove it, a human reason, and the
nearest callbacks that did arrive when it is not met), every violation (the payload checks'
from the CALLBACK entries, the cross-checks CT5xx that compare callbacks with the mail world, and
any other ``violation`` entry), the unexpected callbacks, and timings. The cross-check
violations are appended to the journal as ``Kind.VIOLATION`` entries, once.

What counts, and why:

- An **expected callback** is met by events in requests the fake CleverTap *accepted* (2xx)
  before the deadline (``started + expect.within``). A request that got a fault (a 5xx, a closed
  or reset connection) or a 400 never reached CleverTap as far as the integration can tell: it
  does not count, and the integration's resend does. ``count`` is exact: two accepted reports of
  one bounce are one too many (CleverTap does not deduplicate). With ``ts: {within: W}`` the
  event's ``ts`` must lie within W seconds of the real event (the last failure before the
  callback, the DSN, the click).
- **absent** and **nothing_else** count every request that carried the event, whatever the
  answer: trying to report something that must not be reported is the bug, accepted or not.
  An event whose (event, address) is expected is never "unexpected", even past its count (the
  count expectation fails instead).
- **violations**: every error-severity violation fails the run unless the scenario allows its
  code (``violations: {allow: [CT301]}``); warnings are reported and never fail it.
- **the integration's stop** (when the runner says how it ended, *stopped*): it must run until
  SIGTERM and then exit within ``integration.stop_timeout``; killed with SIGKILL, or gone before
  the run ended, fails the run.

An expected callback that did not arrive says what the mail world saw for its recipient (from
:meth:`Facts.history`): when it was submitted, every attempt, acceptance and DSN, and when the
``within`` window closed (``ExpectationResult.world``).

Events are matched by their name in the scenario's format (``softbounce`` in legacy,
``soft_bounce`` in v2) and the address, case-insensitively.
"""

from __future__ import annotations

import functools
import math
import signal
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from harness._loop import gc_paused
from harness.checks import Severity, Violation
from harness.expect import nearness
from harness.journal import Entry, Journal, Kind
from harness.records import Callback, CallbackEvent, Sent, ViolationFound
from harness.scenario.crosschecks import (
    CrossCheckConfig,
    Facts,
    ReportedEvent,
    cross_check,
)
from harness.scenario.model import AbsentCallback, ExpectedCallback, Scenario
from harness.vocab import address_key

__all__ = ["ExpectationResult", "Stopped", "Verdict", "judge", "pending", "world_account"]

_NEAREST = 3
_WORLD_LINES = 8
"""At most this many observations in a "what the world saw" account (first and last ones)."""


@dataclass(frozen=True, slots=True)
class ExpectationResult:
    """The fate of one expectation of a scenario."""

    kind: Literal["callback", "absent", "nothing_else", "violations", "integration"]
    path: str
    """Where it is written in the scenario: ``expect.callbacks[0]``."""
    description: str
    """What was expected, in words: ``softbounce for full@example.com``."""
    met: bool
    reason: str
    """Why it is met or not, with journal seqs: ``arrived in seq 14, 1.8 s after the start``."""
    evidence: tuple[int, ...] = ()
    """The journal entries that prove the result (the callbacks that met or broke it)."""
    nearest: tuple[ReportedEvent, ...] = ()
    """When an expected callback is missing: the callbacks that did arrive, closest first."""
    arrived_after: float | None = None
    """Seconds from the start of the run to the callback that met it (expected callbacks)."""
    expectation: ExpectedCallback | AbsentCallback | None = None
    world: tuple[str, ...] = ()
    """When an expected callback is missing: what the mail world saw for its recipient, one
    line per observation (``+1.2 s seq 14: accepted as MX1000002 on mx1``), then when the
    window closed."""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "description": self.description,
            "met": self.met,
            "reason": self.reason,
            "evidence": list(self.evidence),
            "nearest": [e.to_json() for e in self.nearest],
            "arrived_after": self.arrived_after,
            "world": list(self.world),
        }


@dataclass(frozen=True, slots=True)
class Stopped:
    """How the integration under test ended, as the runner saw it."""

    timeout: float
    """Seconds it had to exit after SIGTERM (``integration.stop_timeout``)."""
    exit_code: int | None
    """Its exit status (negative: the signal that ended it); None if unknown."""
    killed: bool
    """Still running *timeout* seconds after SIGTERM: killed with SIGKILL."""
    seconds: float | None = None
    """From SIGTERM to its exit."""
    early: bool = False
    """It had exited on its own before the runner sent SIGTERM."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judgement of one scenario run. ``passed`` is True when every expectation is met."""

    scenario: str
    path: str | None
    """The scenario file, if it came from one."""
    passed: bool
    expectations: list[ExpectationResult]
    violations: list[Violation]
    """Every violation of the run: payload checks (CT1xx-CT4xx) and cross-checks (CT5xx)."""
    unexpected: list[ReportedEvent]
    """Callback events nothing in ``expect.callbacks`` asked for (whether or not nothing_else)."""
    allowed: tuple[str, ...]
    """The violation codes the scenario tolerates."""
    started: float
    finished: float
    deadline: float
    callbacks: int = 0
    """How many callback requests the run saw."""
    entries: int = 0
    """How many journal entries the run produced."""
    notes: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.finished - self.started

    @property
    def failures(self) -> list[ExpectationResult]:
        """The expectations that were not met."""
        return [e for e in self.expectations if not e.met]

    @property
    def failing_violations(self) -> list[Violation]:
        """The violations that fail the run: errors whose code the scenario does not allow."""
        return _failing(self.violations, self.allowed)

    def to_json(self) -> dict[str, Any]:
        """A stable JSON form (documented in ``harness.scenario.report``)."""
        return {
            "scenario": self.scenario,
            "path": self.path,
            "passed": self.passed,
            "expectations": [e.to_json() for e in self.expectations],
            "violations": [v.to_json() for v in self.violations],
            "unexpected": [e.to_json() for e in self.unexpected],
            "allowed": list(self.allowed),
            "timings": {
                "started": self.started,
                "finished": self.finished,
                "deadline": self.deadline,
                "duration": self.duration,
            },
            "counts": {"callbacks": self.callbacks, "entries": self.entries},
            "notes": list(self.notes),
        }


def judge(
    scenario: Scenario,
    journal: Journal,
    *,
    started: float,
    finished: float | None = None,
    config: CrossCheckConfig | None = None,
    stopped: Stopped | None = None,
    notes: Sequence[str] = (),
) -> Verdict:
    """Judge the run of *scenario* recorded in *journal* between *started* and *finished*.

    *started* and *finished* are wall-clock times (``time.time()``); *finished* defaults to now.
    *stopped* (the runner's account of the integration's end) adds the stop expectation;
    *notes* are kept in the verdict as they are.
    Appends each cross-check violation to the journal as a ``Kind.VIOLATION`` entry (once, even
    when called again on the same run). See the module docstring for what counts.
    """
    with gc_paused():
        return _judge(scenario, journal, started, finished, config, stopped, notes)


def _judge(
    scenario: Scenario,
    journal: Journal,
    started: float,
    finished: float | None,
    config: CrossCheckConfig | None,
    stopped: Stopped | None,
    notes: Sequence[str],
) -> Verdict:
    end = time.time() if finished is None else finished
    entries = _run_entries(journal, started, end)
    facts = Facts.from_entries(entries, scenario=scenario, started=started, finished=end)
    deadline = started + scenario.expect.within
    crossed = cross_check(facts, config=config)
    _record(journal, scenario, entries, crossed)

    violations: list[Violation] = []
    for entry in entries:
        record = entry.data
        if isinstance(record, Callback):
            for violation in record.violations:
                if entry.seq not in violation.evidence:
                    evidence = (entry.seq, *violation.evidence)
                    violation = msgspec.structs.replace(violation, evidence=evidence)
                violations.append(violation)
        elif isinstance(record, ViolationFound) and record.source != "judge":
            violations.append(record.violation)
    violations.extend(crossed)

    expect = scenario.expect
    allowed = tuple(expect.violations.allow)
    results: list[ExpectationResult] = []
    for i, wanted in enumerate(expect.callbacks):
        results.append(_expected(facts, wanted, i, started, deadline, scenario.retry_budget))
    for i, absent in enumerate(expect.absent):
        results.append(_absent(facts, absent, i))
    unexpected = _unexpected(facts, expect.callbacks)
    if expect.nothing_else:
        results.append(_nothing_else(unexpected))
    results.append(_violations(violations, allowed))
    if stopped is not None:
        results.append(_stop(stopped))

    return Verdict(
        scenario=scenario.name,
        path=str(scenario.source) if scenario.source is not None else None,
        passed=all(r.met for r in results),
        expectations=results,
        violations=violations,
        unexpected=unexpected,
        allowed=allowed,
        started=started,
        finished=end,
        deadline=deadline,
        callbacks=len(facts.callbacks),
        entries=len(entries),
        notes=list(notes),
    )


def pending(scenario: Scenario, journal: Journal, *, started: float | None = None) -> bool:
    """True while some expected callback has not yet arrived (accepted) as often as it must.

    A runner polls this to stop waiting early. Only ``expect.callbacks`` can still be met by
    waiting: ``absent`` and ``nothing_else`` can only be broken, so a runner that stops as soon
    as this is False judges them on what arrived so far. With *started*, only callbacks from then
    on count, and nothing is pending once the deadline (``started + expect.within``) has passed.
    """
    wanted = scenario.expect.callbacks
    if not wanted:
        return False
    if started is not None and time.time() > started + scenario.expect.within:
        return False
    need = Counter[tuple[str, str]]()
    for cb in wanted:
        need[(cb.event, address_key(cb.e))] += cb.count
    for entry in journal.callbacks(accepted=True):
        if started is not None and entry.at < started:
            continue
        if not isinstance(entry.data, Callback):  # pragma: no cover - callbacks() gives these
            continue
        for event in entry.data.events:
            key = (event.event, address_key(event.email))
            if need.get(key, 0) > 0:
                need[key] -= 1
    return any(n > 0 for n in need.values())


# -- the pieces ----------------------------------------------------------------------------------


def _run_entries(journal: Journal, started: float, finished: float) -> list[Entry]:
    return [e for e in journal.entries() if started <= e.at <= finished]


def _record(
    journal: Journal, scenario: Scenario, entries: Sequence[Entry], found: Sequence[Violation]
) -> None:
    """Append each cross-check violation once (judging the same run twice adds nothing)."""
    if not found:
        return
    # Violations are journaled when found, after the run's entries and maybe after `finished`:
    # look at every one recorded since the run began.
    since = entries[0].seq - 1 if entries else journal.last_seq
    done = {
        (e.data.violation.code, e.data.violation.path, e.data.violation.evidence)
        for e in journal.iter_entries(Kind.VIOLATION, since=since)
        if isinstance(e.data, ViolationFound) and e.data.source == "judge"
    }
    for violation in found:
        if (violation.code, violation.path, violation.evidence) in done:
            continue
        journal.append(ViolationFound(violation=violation, source="judge", scenario=scenario.name))


def _describe(event: str | None, address: str, count: int = 1) -> str:
    what = f"{event} for {address}" if event else f"any callback for {address}"
    return what if count == 1 else f"{what} ({count} times)"


def _seqs(events: Iterable[ReportedEvent]) -> str:
    return ", ".join(str(s) for s in dict.fromkeys(e.seq for e in events))


def _expected(
    facts: Facts,
    wanted: ExpectedCallback,
    i: int,
    started: float,
    deadline: float,
    budget: float,
) -> ExpectationResult:
    address = address_key(wanted.e)
    matching = [e for e in facts.events if e.event == wanted.event and e.address == address]
    accepted = [e for e in matching if e.accepted]
    in_time = [e for e in accepted if e.at <= deadline]
    late = [e for e in accepted if e.at > deadline]
    refused = [e for e in matching if not e.accepted]
    result = functools.partial(
        ExpectationResult,
        "callback",
        f"expect.callbacks[{i}]",
        _describe(wanted.event, wanted.e, wanted.count),
        expectation=wanted,
    )
    evidence = tuple(dict.fromkeys(e.seq for e in in_time))

    if not in_time:
        if late:
            first = late[0]
            reason = (
                f"arrived {first.at - deadline:.1f} s after the deadline "
                f"({_duration(deadline - started)} from the start): seq {_seqs(late)}"
            )
        elif refused:
            reason = "arrived only in requests that were not accepted: " + "; ".join(
                e.describe() for e in refused
            )
        else:
            reason = "did not arrive"
        nearest = _nearest(facts, wanted.event, address, exclude=in_time)
        return result(
            met=False,
            reason=reason,
            evidence=tuple(dict.fromkeys(e.seq for e in late + refused)),
            nearest=nearest,
            world=world_account(facts, wanted.e, started, deadline, budget),
        )
    if len(in_time) != wanted.count:
        times = "time" if len(in_time) == 1 else "times"
        reason = f"arrived {len(in_time)} {times}, expected {wanted.count}: seq {_seqs(in_time)}"
        nearest = (
            _nearest(facts, wanted.event, address, exclude=in_time)
            if len(in_time) < wanted.count
            else ()
        )
        return result(met=False, reason=reason, evidence=evidence, nearest=nearest)
    if wanted.ts is not None:
        problems, extra = _ts_problems(facts, in_time, wanted.ts.within)
        if problems:
            return result(
                met=False,
                reason="; ".join(problems),
                evidence=tuple(dict.fromkeys((*evidence, *extra))),
            )
    last = in_time[-1]
    where = f"seq {_seqs(in_time)}"
    return result(
        met=True,
        reason=f"arrived in {where}, {last.at - started:.1f} s after the start",
        evidence=evidence,
        arrived_after=last.at - started,
    )


_KINDS = {
    "reply": "refused",
    "attempt": "attempt",
    "accepted": "accepted",
    "dropped": "dropped",
    "dsn": "DSN",
    "host_down": "host down",
    "slow": "slow server",
}


def world_account(
    facts: Facts, address: str, started: float, deadline: float, budget: float | None = None
) -> tuple[str, ...]:
    """What the mail world saw for *address*, one line each, times from the start of the run:
    its submission, every attempt, acceptance, drop and DSN, then when the window closed (and,
    when the last thing seen was a temporary failure, that a retry may still have been due)."""
    lines: list[str] = []

    def at(when: float) -> str:
        return f"+{when - started:.1f} s"

    for entry in facts.sent.get(address_key(address), ()):
        sent = entry.data
        if isinstance(sent, Sent):
            if sent.ok:
                lines.append(f"{at(entry.at)} seq {entry.seq}: submitted to the integration")
            else:
                why = sent.reply or sent.error or "refused"
                lines.append(f"{at(entry.at)} seq {entry.seq}: submission refused: {why}")
    history = facts.history(address)
    shown = list(history)
    skipped = 0
    if len(shown) > _WORLD_LINES:
        skipped = len(shown) - _WORLD_LINES
        shown = shown[:2] + shown[-(_WORLD_LINES - 2) :]
    for n, observation in enumerate(shown):
        if skipped and n == 2:
            lines.append(f"... {skipped} more observations ...")
        kind = _KINDS.get(observation.kind, observation.kind)
        lines.append(f"{at(observation.start)} seq {observation.seq}: {kind}: {observation.detail}")
    if not history:
        lines.append("no fake mail server saw an attempt at this address, and no DSN named it")
    window = f"{at(deadline)}: the window closed (expect.within {deadline - started:g} s)"
    final = facts.final(address)
    reported = any(e.address == address_key(address) for e in facts.events)
    if final is not None and final.failed and final.bounce_class == "soft" and not reported:
        window += (
            f"; the last thing seen ({at(final.start)}) was a temporary failure: the integration "
            "may still have been retrying"
        )
        if budget is not None:
            window += f" (its retry budget, HARNESS_RETRY_BUDGET, was {budget:g} s)"
    lines.append(window)
    return tuple(lines)


def _stop(stopped: Stopped) -> ExpectationResult:
    description = f"the integration runs until SIGTERM, then exits within {stopped.timeout:g} s"
    result = functools.partial(
        ExpectationResult, "integration", "integration.stop_timeout", description
    )
    code = stopped.exit_code
    if stopped.killed:
        return result(
            met=False,
            reason=f"killed with SIGKILL: still running {stopped.timeout:g} s after SIGTERM "
            "(SIGTERM ignored, or its shutdown took too long)",
        )
    if stopped.early:
        return result(
            met=False,
            reason=f"exited on its own (exit status {code}) before the run ended; it must run "
            "until SIGTERM",
        )
    took = f" {stopped.seconds:.1f} s" if stopped.seconds is not None else ""
    if code == -signal.SIGTERM:
        how = f"ended by SIGTERM itself{took} after it (no handler: nothing queued was flushed)"
    elif code is not None and code < 0:
        how = f"ended by signal {-code}{took} after SIGTERM"
    else:
        how = f"exited (status {code}){took} after SIGTERM"
    return result(met=True, reason=how)


def _ts_problems(
    facts: Facts, events: Sequence[ReportedEvent], within: float
) -> tuple[list[str], list[int]]:
    problems: list[str] = []
    extra: list[int] = []
    for event in events:
        if event.ts is None:
            problems.append(f"seq {event.seq} carries no integer ts")
            continue
        real = facts.real_event(event)
        if real is None:
            problems.append(f"seq {event.seq}: no real event to compare its ts {event.ts} with")
            continue
        start, end, seq = real
        extra.append(seq)
        low, high = math.floor(start - within), math.ceil(end + within)
        if not low <= event.ts <= high:
            off = low - event.ts if event.ts < low else event.ts - high
            side = "before" if event.ts < low else "after"
            problems.append(
                f"ts {event.ts} in seq {event.seq} is {off} s {side} the window of the real "
                f"event (seq {seq}): expected {low} <= ts <= {high} (within {_duration(within)})"
            )
    return problems, extra


def _nearest(
    facts: Facts, event: str | None, address: str, *, exclude: Sequence[ReportedEvent]
) -> tuple[ReportedEvent, ...]:
    """The callbacks closest to (event, address): same address first, then similar addresses
    with the same event, then the rest; accepted before refused."""
    skip = {(e.seq, e.index) for e in exclude}

    def score(e: ReportedEvent) -> tuple[int, float, bool, int]:
        item = CallbackEvent(e.event, e.email, e.ts, e.meta)
        return nearness(item, event=event, email=address, accepted=e.accepted, seq=e.seq)

    candidates = [e for e in facts.events if (e.seq, e.index) not in skip]
    return tuple(sorted(candidates, key=score)[:_NEAREST])


def _absent(facts: Facts, absent: AbsentCallback, i: int) -> ExpectationResult:
    address = address_key(absent.e)
    hits = [
        e
        for e in facts.events
        if e.address == address and (absent.event is None or e.event == absent.event)
    ]
    description = (
        f"no {absent.event} for {absent.e}"
        if absent.event is not None
        else f"no callback at all for {absent.e}"
    )
    result = functools.partial(
        ExpectationResult, "absent", f"expect.absent[{i}]", description, expectation=absent
    )
    if not hits:
        return result(met=True, reason="none arrived")
    return result(
        met=False,
        reason="arrived: " + "; ".join(e.describe() for e in hits),
        evidence=tuple(dict.fromkeys(e.seq for e in hits)),
    )


def _unexpected(facts: Facts, wanted: Sequence[ExpectedCallback]) -> list[ReportedEvent]:
    listed = {(cb.event, address_key(cb.e)) for cb in wanted}
    return [e for e in facts.events if (e.event, e.address) not in listed]


def _nothing_else(unexpected: Sequence[ReportedEvent]) -> ExpectationResult:
    result = functools.partial(
        ExpectationResult,
        "nothing_else",
        "expect.nothing_else",
        "no callback other than the expected ones",
    )
    if not unexpected:
        return result(met=True, reason="none arrived")
    shown = "; ".join(e.describe() for e in unexpected[:10])
    more = f"; and {len(unexpected) - 10} more" if len(unexpected) > 10 else ""
    return result(
        met=False,
        reason=f"{len(unexpected)} unexpected: {shown}{more}",
        evidence=tuple(dict.fromkeys(e.seq for e in unexpected)),
    )


def _failing(violations: Iterable[Violation], allowed: Sequence[str]) -> list[Violation]:
    return [v for v in violations if v.severity is Severity.ERROR and v.code not in allowed]


def _violations(violations: Sequence[Violation], allowed: Sequence[str]) -> ExpectationResult:
    failing = _failing(violations, allowed)
    tolerated = [v for v in violations if v not in failing]
    description = "no violations" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    result = functools.partial(ExpectationResult, "violations", "expect.violations", description)

    def tally(found: Sequence[Violation]) -> str:
        counts = Counter(v.code for v in found)
        return ", ".join(f"{code} x{n}" for code, n in sorted(counts.items()))

    if failing:
        reason = f"{len(failing)} error{'s' if len(failing) > 1 else ''}: {tally(failing)}"
        if tolerated:
            reason += f" (also tolerated: {tally(tolerated)})"
        evidence = tuple(dict.fromkeys(s for v in failing for s in v.evidence[:1]))
        return result(met=False, reason=reason, evidence=evidence)
    reason = f"tolerated: {tally(tolerated)}" if tolerated else "none"
    return result(met=True, reason=reason)


def _duration(seconds: float) -> str:
    return f"{seconds:g} s"

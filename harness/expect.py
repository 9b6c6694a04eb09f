"""Assertions over the journal: wait for a callback, or make sure none (or no violation) came.

Shared by :class:`harness.world.World`, the pytest plugin and the respx mock
(:class:`harness.respx_mock.CleverTapMock`), so a failure reads the same wherever it happens::

    expect_callback(journal, "hardbounce", "gone@example.com", within=5)
    expect_no_callbacks(journal, within=0.5, email="ok@example.com")
    expect_no_violations(journal, allow=["CT402"])

A failure raises :class:`~harness.errors.ExpectationError` (an ``AssertionError``) whose message
reads like a diff: the expectation on the first line, then what did arrive, nearest first (same
address with another event, then same event for another address, ...), then the checks that
fired, each with the journal ``seq`` that proves it.

What counts as "a callback arrived": a :class:`~harness.records.Callback` entry after ``since``
with an event of that name for that address (:meth:`~harness.records.CallbackEvent.matches`: the
address compared by :func:`~harness.vocab.address_key`) that the fake CleverTap *accepted*
(:attr:`~harness.records.Callback.accepted`: a 2xx answer). A callback answered 400 (strict
mode, errors in it) or hit by a fault did not reach CleverTap; it is shown as the nearest
candidate with the reason.
"""

from __future__ import annotations

import asyncio
import difflib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgspec

from harness.checks import Severity, Violation, all_checks
from harness.errors import ConfigError, ExpectationError, UnknownNameError
from harness.journal import Entry, Journal, Kind
from harness.records import Callback, CallbackEvent, ViolationFound
from harness.vocab import CLASS_OF_EVENT

__all__ = [
    "JournalAssertions",
    "expect_callback",
    "expect_callback_async",
    "expect_no_callbacks",
    "expect_no_callbacks_async",
    "expect_no_violations",
    "refuse_blocking_wait",
    "violations",
]

_EVENTS = sorted(CLASS_OF_EVENT)
_SHOWN_CANDIDATES = 8
_SHOWN_VIOLATIONS = 12
_CODE = re.compile(r"^CT\d{3}$")


# -- arguments -------------------------------------------------------------------------------------


def _check_within(within: float) -> float:
    if isinstance(within, bool) or not isinstance(within, int | float) or not math.isfinite(within):
        raise ConfigError(f"within must be a number of seconds, got {within!r}")
    if within < 0:
        raise ConfigError(f"within must be 0 or more seconds, got {within!r}")
    return float(within)


def _check_since(since: int) -> int:
    if isinstance(since, bool) or not isinstance(since, int) or since < 0:
        raise ConfigError(f"since must be a journal seq (an int >= 0), got {since!r}")
    return since


def _check_event(event: str) -> str:
    if not isinstance(event, str) or event not in CLASS_OF_EVENT:
        raise UnknownNameError("event", str(event), _EVENTS)
    return event


def _check_email(email: str) -> str:
    if not isinstance(email, str) or not email:
        raise ConfigError(f"email must be a non-empty address, got {email!r}")
    return email


def _check_ts(ts: tuple[float, float] | None) -> tuple[float, float] | None:
    if ts is None:
        return None
    if (
        not isinstance(ts, tuple)
        or len(ts) != 2
        or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in ts)
        or ts[0] > ts[1]
    ):
        raise ConfigError(
            f"ts must be a (low, high) pair of epoch seconds, low <= high; got {ts!r}"
        )
    return ts


# -- matching --------------------------------------------------------------------------------------


def _num(value: float) -> str:
    """Epoch seconds as written: 1700000000, not 1.7e+09."""
    return str(int(value)) if float(value).is_integer() else str(value)


def refuse_blocking_wait(name: str, *, instead: str | None = None) -> None:
    """Raise :class:`ConfigError` when the blocking wait *name* is called in a thread that runs an
    event loop: it would stall the very servers it waits for, then report that nothing came.
    *instead* is the coroutine to await (default ``{name}_async``)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise ConfigError(
        f"{name}() waits by blocking, and it was called inside a running event loop (an async "
        f"test?), where it would stall the loop; use `await {instead or name + '_async'}(...)`"
    )


@dataclass(frozen=True, slots=True)
class _Want:
    event: str
    email: str
    ts: tuple[float, float] | None

    def item_matches(self, item: CallbackEvent) -> bool:
        if not item.matches(self.event, self.email):
            return False
        if self.ts is None:
            return True
        return item.ts is not None and self.ts[0] <= item.ts <= self.ts[1]

    def __call__(self, entry: Entry) -> bool:
        record = entry.data
        if not isinstance(record, Callback) or not record.accepted:
            return False
        return any(self.item_matches(item) for item in record.events)

    def describe(self) -> str:
        text = f"a {self.event} callback for {self.email}"
        if self.ts is not None:
            text += f" with ts in [{_num(self.ts[0])}, {_num(self.ts[1])}]"
        return text


def _answer(record: Callback) -> str:
    if record.status is None:
        why = record.fault.action if record.fault is not None else "client gone"
        return f"no answer ({why})"
    if record.fault is not None:
        return f"{record.status} (fault {record.fault.spec})"
    return str(record.status)


def _event_line(entry: Entry, record: Callback, item: CallbackEvent | None) -> str:
    where = f"seq {entry.seq:<4} {record.endpoint or '?'} {_answer(record)}"
    if item is None:
        return f"{where}  no event could be read"
    event = item.event or "(no event)"
    email = item.email or "(no address)"
    ts = f" ts={item.ts}" if item.ts is not None else ""
    meta = f" meta={item.meta!r}" if item.meta is not None else ""
    return f"{where}  {event} {email}{ts}{meta}"


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def _callbacks(entries: Iterable[Entry]) -> list[tuple[Entry, Callback]]:
    return [(e, e.data) for e in entries if isinstance(e.data, Callback)]


def nearness(
    item: CallbackEvent, *, event: str | None, email: str, accepted: bool, seq: int
) -> tuple[int, float, bool, int]:
    """How near a reported event is to the one wanted (smaller is nearer): the one ranking of
    candidates, used by ``expect_*`` failures and by the scenario judge's "nearest" lines.

    Same event and address first, then the same address, then the same event, then the rest;
    within each, the most similar address first, accepted before refused, then journal order.
    """
    same_address = item.matches(None, email)
    same_event = event is None or item.event == event
    rank = 0 if same_address and same_event else 1 if same_address else 2 if same_event else 3
    closeness = -_similarity(item.email.casefold(), email.casefold())
    return (rank, closeness, not accepted, seq)


def _candidates(
    want: _Want, callbacks: list[tuple[Entry, Callback]]
) -> list[tuple[tuple[int, float, bool, int], str]]:
    found: list[tuple[tuple[int, float, bool, int], str]] = []
    for entry, record in callbacks:
        if not record.events:
            found.append(((4, 0.0, False, entry.seq), _event_line(entry, record, None)))
            continue
        for item in record.events:
            same_address = item.matches(None, want.email)
            same_event = item.event == want.event
            near = nearness(
                item, event=want.event, email=want.email, accepted=record.accepted, seq=entry.seq
            )
            if same_address and same_event:
                if not record.accepted:
                    reason = "not accepted: " + _answer(record)
                else:
                    reason = (
                        f"ts {item.ts} outside [{_num(want.ts[0])}, {_num(want.ts[1])}]"
                        if want.ts
                        else ""
                    )
            elif same_address:
                reason = "same address, other event"
            elif same_event:
                reason = "same event, other address"
            else:
                reason = "other event and address"
            line = _event_line(entry, record, item)
            found.append((near, f"{line}  <- {reason}" if reason else line))
    found.sort(key=lambda c: c[0])
    return found


def _fired(callbacks: list[tuple[Entry, Callback]]) -> list[str]:
    return [
        f"seq {entry.seq:<4} {v.severity:<7} {v.format()}"
        for entry, record in callbacks
        for v in record.violations
    ]


def _clipped(lines: list[str], limit: int, indent: str = "  ") -> list[str]:
    shown = [indent + line for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"{indent}... and {len(lines) - limit} more")
    return shown


def _with_fired(lines: list[str], callbacks: list[tuple[Entry, Callback]]) -> str:
    """*lines*, then the checks that fired on *callbacks* (if any), as one message."""
    fired = _fired(callbacks)
    if fired:
        lines.append("checks that fired:")
        lines.extend(_clipped(fired, _SHOWN_VIOLATIONS))
    return "\n".join(lines)


def _callback_failure(want: _Want, journal: Journal, within: float, since: int) -> str:
    callbacks = _callbacks(journal.iter_entries(Kind.CALLBACK, since=since))
    head = f"expected {want.describe()} within {within:g} s (journal after seq {since})"
    if not callbacks:
        return f"{head}\narrived: no callbacks at all"
    candidates = _candidates(want, callbacks)
    lines = [
        head,
        f"arrived: {len(callbacks)} callback{'s' if len(callbacks) != 1 else ''}, nearest first:",
        *_clipped([line for _, line in candidates], _SHOWN_CANDIDATES),
    ]
    return _with_fired(lines, callbacks)


# -- expect a callback -----------------------------------------------------------------------------


def expect_callback(
    journal: Journal,
    event: str,
    email: str,
    *,
    within: float = 5.0,
    since: int = 0,
    ts: tuple[float, float] | None = None,
) -> Entry:
    """Wait up to *within* seconds for an accepted callback carrying *event* for *email*.

    Entries already in the journal (after seq *since*) count, so acting first and expecting
    afterwards is race-free. *ts*, a ``(low, high)`` pair of epoch seconds, also requires the
    event's legacy ``ts`` to lie in it. Returns the ``Kind.CALLBACK`` entry; raises
    :class:`~harness.errors.ExpectationError` showing the nearest callbacks that did arrive.
    Blocks the calling thread: inside an event loop use :func:`expect_callback_async`.
    """
    want = _Want(_check_event(event), _check_email(email), _check_ts(ts))
    within, since = _check_within(within), _check_since(since)
    refuse_blocking_wait("expect_callback")
    found = journal.wait_for(want, within, since=since)
    if found is None:
        raise ExpectationError(_callback_failure(want, journal, within, since))
    return found


async def expect_callback_async(
    journal: Journal,
    event: str,
    email: str,
    *,
    within: float = 5.0,
    since: int = 0,
    ts: tuple[float, float] | None = None,
) -> Entry:
    """Like :func:`expect_callback`, as a coroutine that never blocks the running event loop."""
    want = _Want(_check_event(event), _check_email(email), _check_ts(ts))
    within, since = _check_within(within), _check_since(since)
    found = await journal.wait_for_async(want, within, since=since)
    if found is None:
        raise ExpectationError(_callback_failure(want, journal, within, since))
    return found


# -- expect no callbacks ---------------------------------------------------------------------------


def _no_callbacks_filter(event: str | None, email: str | None) -> Callable[[Entry], bool]:
    def matches(entry: Entry) -> bool:
        record = entry.data
        if not isinstance(record, Callback):
            return False
        if event is None and email is None:
            return True
        return any(record.matching(event, email))

    return matches


def _no_callbacks_failure(
    journal: Journal,
    matches: Callable[[Entry], bool],
    event: str | None,
    email: str | None,
    within: float,
    since: int,
) -> str:
    found = _callbacks(e for e in journal.iter_entries(Kind.CALLBACK, since=since) if matches(e))
    what = " ".join(f"{k}={v}" for k, v in (("event", event), ("email", email)) if v is not None)
    head = f"expected no callbacks{' with ' + what if what else ''} after seq {since}"
    head += f" (waited up to {within:g} s)" if within else ""
    lines = [head, f"arrived: {len(found)} callback{'s' if len(found) != 1 else ''}:"]
    shown: list[str] = []
    for entry, record in found:
        if not record.events:
            shown.append(_event_line(entry, record, None))
        shown.extend(_event_line(entry, record, item) for item in record.matching(event, email))
    lines.extend(_clipped(shown, _SHOWN_CANDIDATES))
    return _with_fired(lines, found)


def _no_callbacks_args(
    within: float, since: int, event: str | None, email: str | None
) -> tuple[float, int]:
    if event is not None:
        _check_event(event)
    if email is not None:
        _check_email(email)
    return _check_within(within), _check_since(since)


def expect_no_callbacks(
    journal: Journal,
    *,
    within: float = 0.0,
    since: int = 0,
    event: str | None = None,
    email: str | None = None,
) -> None:
    """Fail if a callback (any request; or one carrying *event* and/or *email*) is journaled.

    Looks at what is already there after seq *since*, then keeps watching for *within* seconds
    (0: look once, do not wait) and fails as soon as one arrives. Blocks the calling thread.
    """
    within, since = _no_callbacks_args(within, since, event, email)
    matches = _no_callbacks_filter(event, email)
    if within:
        refuse_blocking_wait("expect_no_callbacks")
    if journal.wait_for(matches, within, since=since) is not None:
        raise ExpectationError(_no_callbacks_failure(journal, matches, event, email, within, since))


async def expect_no_callbacks_async(
    journal: Journal,
    *,
    within: float = 0.0,
    since: int = 0,
    event: str | None = None,
    email: str | None = None,
) -> None:
    """Like :func:`expect_no_callbacks`, as a coroutine that never blocks the event loop."""
    within, since = _no_callbacks_args(within, since, event, email)
    matches = _no_callbacks_filter(event, email)
    if await journal.wait_for_async(matches, within, since=since) is not None:
        raise ExpectationError(_no_callbacks_failure(journal, matches, event, email, within, since))


# -- violations ------------------------------------------------------------------------------------


def violations(journal: Journal, *, since: int = 0) -> list[Violation]:
    """Every violation recorded after seq *since*, in journal order.

    Payload checks come from :class:`~harness.records.Callback` entries (their evidence starts
    with the callback's own seq), cross-checks from :class:`~harness.records.ViolationFound`
    entries.
    """
    since = _check_since(since)
    found: list[Violation] = []
    for entry in journal.iter_entries(since=since):
        record = entry.data
        if isinstance(record, Callback):
            for v in record.violations:
                evidence = (entry.seq, *(s for s in v.evidence if s != entry.seq))
                found.append(msgspec.structs.replace(v, evidence=evidence))
        elif isinstance(record, ViolationFound):
            v = record.violation
            found.append(v if v.evidence else msgspec.structs.replace(v, evidence=(entry.seq,)))
    return found


def _check_allow(allow: Iterable[str]) -> frozenset[str]:
    if isinstance(allow, str):
        raise ConfigError(f"allow must be a list of check codes, not the string {allow!r}")
    codes = frozenset(allow)
    known = {c.code for c in all_checks()}
    for code in sorted(codes):
        if not isinstance(code, str) or not _CODE.match(code):
            raise ConfigError(f"allow: {code!r} is not a check code like 'CT301'")
        # Cross-checks (CT5xx) register when the scenario judge is imported, which an assertion
        # over a bare journal may never do; their codes are accepted on their shape alone.
        if code not in known and not code.startswith("CT5"):
            raise UnknownNameError("check code", code, known)
    return codes


def expect_no_violations(
    journal: Journal,
    *,
    since: int = 0,
    allow: Iterable[str] = (),
    severity: Severity = Severity.ERROR,
) -> None:
    """Fail if a violation of *severity* or worse was recorded after seq *since*.

    ``Severity.ERROR`` (the default) ignores warnings; ``Severity.WARNING`` counts them too.
    Codes in *allow* are ignored. The message lists every violation with its journal seqs.
    """
    allowed = _check_allow(allow)
    severity = Severity(severity)
    counted = {Severity.ERROR} if severity is Severity.ERROR else {Severity.ERROR, Severity.WARNING}
    bad = [
        v
        for v in violations(journal, since=since)
        if v.severity in counted and v.code not in allowed
    ]
    if not bad:
        return
    level = "errors" if severity is Severity.ERROR else "errors or warnings"
    head = f"expected no violations ({level}) after seq {since}"
    if allowed:
        head += f", allowing {', '.join(sorted(allowed))}"
    lines = [head, f"found {len(bad)}:"]
    shown = [
        f"seq {','.join(str(s) for s in v.evidence) or '?':<4} {v.severity:<7} {v.format()}"
        for v in bad
    ]
    lines.extend(_clipped(shown, _SHOWN_VIOLATIONS * 2))
    raise ExpectationError("\n".join(lines))


class JournalAssertions:
    """The helpers above as methods, for objects that own a journal (World, CleverTapMock)."""

    journal: Journal

    def expect_callback(
        self,
        event: str,
        email: str,
        *,
        within: float = 5.0,
        since: int = 0,
        ts: tuple[float, float] | None = None,
    ) -> Entry:
        """:func:`expect_callback` on this object's journal."""
        return expect_callback(self.journal, event, email, within=within, since=since, ts=ts)

    async def expect_callback_async(
        self,
        event: str,
        email: str,
        *,
        within: float = 5.0,
        since: int = 0,
        ts: tuple[float, float] | None = None,
    ) -> Entry:
        """:func:`expect_callback_async` on this object's journal."""
        return await expect_callback_async(
            self.journal, event, email, within=within, since=since, ts=ts
        )

    def expect_no_callbacks(
        self,
        *,
        within: float = 0.0,
        since: int = 0,
        event: str | None = None,
        email: str | None = None,
    ) -> None:
        """:func:`expect_no_callbacks` on this object's journal."""
        expect_no_callbacks(self.journal, within=within, since=since, event=event, email=email)

    async def expect_no_callbacks_async(
        self,
        *,
        within: float = 0.0,
        since: int = 0,
        event: str | None = None,
        email: str | None = None,
    ) -> None:
        """:func:`expect_no_callbacks_async` on this object's journal."""
        await expect_no_callbacks_async(
            self.journal, within=within, since=since, event=event, email=email
        )

    def expect_no_violations(
        self, *, since: int = 0, allow: Iterable[str] = (), severity: Severity = Severity.ERROR
    ) -> None:
        """:func:`expect_no_violations` on this object's journal."""
        expect_no_violations(self.journal, since=since, allow=allow, severity=severity)

    def violations(self, *, since: int = 0) -> list[Violation]:
        """:func:`violations` on this object's journal."""
        return violations(self.journal, since=since)

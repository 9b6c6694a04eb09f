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

What counts as "a callback arrived": a ``Kind.CALLBACK`` entry after ``since`` with an event of
that name for that address (compared case-insensitively, as CleverTap matches users) that the
fake CleverTap *accepted* (a 2xx answer). A callback answered 400 (strict mode, errors in it) or
hit by a fault did not reach CleverTap; it is shown as the nearest candidate with the reason.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.checks import Severity, Violation, all_checks
from harness.clevertap.models import LEGACY_EVENTS, V2_TYPES
from harness.errors import ConfigError, ExpectationError, UnknownNameError
from harness.journal import Entry, Journal, Kind

__all__ = [
    "JournalAssertions",
    "expect_callback",
    "expect_callback_async",
    "expect_no_callbacks",
    "expect_no_callbacks_async",
    "expect_no_violations",
    "violations",
]

_EVENTS = sorted(LEGACY_EVENTS | V2_TYPES)
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
    if not isinstance(event, str) or event not in LEGACY_EVENTS | V2_TYPES:
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


def _accepted(data: Mapping[str, Any]) -> bool:
    status = data.get("status")
    return isinstance(status, int) and 200 <= status < 300


@dataclass(frozen=True, slots=True)
class _Want:
    event: str
    email: str
    ts: tuple[float, float] | None

    @property
    def key(self) -> str:
        return self.email.casefold()

    def item_matches(self, item: Sequence[Any]) -> bool:
        if item[0] != self.event or not isinstance(item[1], str):
            return False
        if item[1].casefold() != self.key:
            return False
        if self.ts is None:
            return True
        ts = item[2]
        return isinstance(ts, int) and self.ts[0] <= ts <= self.ts[1]

    def __call__(self, entry: Entry) -> bool:
        if entry.kind is not Kind.CALLBACK or not _accepted(entry.data):
            return False
        return any(self.item_matches(item) for item in entry.data.get("events", ()))

    def describe(self) -> str:
        text = f"a {self.event} callback for {self.email}"
        if self.ts is not None:
            text += f" with ts in [{_num(self.ts[0])}, {_num(self.ts[1])}]"
        return text


def _answer(data: Mapping[str, Any]) -> str:
    status = data.get("status")
    fault = data.get("fault")
    if status is None:
        why = fault["action"] if isinstance(fault, Mapping) else "client gone"
        return f"no answer ({why})"
    if isinstance(fault, Mapping):
        return f"{status} (fault {fault.get('spec')})"
    return str(status)


def _event_line(entry: Entry, item: Sequence[Any] | None) -> str:
    data = entry.data
    where = f"seq {entry.seq:<4} {data.get('endpoint', '?')} {_answer(data)}"
    if item is None:
        return f"{where}  no event could be read"
    event = item[0] or "(no event)"
    email = item[1] or "(no address)"
    ts = f" ts={item[2]}" if item[2] is not None else ""
    meta = f" meta={item[3]!r}" if item[3] is not None else ""
    return f"{where}  {event} {email}{ts}{meta}"


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def _candidates(want: _Want, callbacks: list[Entry]) -> list[tuple[tuple[int, float, int], str]]:
    """Every event that arrived, with a sort key (nearest first) and its line with the reason."""
    found: list[tuple[tuple[int, float, int], str]] = []
    for entry in callbacks:
        items = entry.data.get("events", ())
        if not items:
            found.append(((4, 0.0, entry.seq), _event_line(entry, None)))
            continue
        for item in items:
            email = item[1] if isinstance(item[1], str) else ""
            same_address = email.casefold() == want.key
            same_event = item[0] == want.event
            closeness = -_similarity(email.casefold(), want.key)
            if same_address and same_event:
                if not _accepted(entry.data):
                    reason = "not accepted: " + _answer(entry.data)
                else:
                    reason = (
                        f"ts {item[2]} outside [{_num(want.ts[0])}, {_num(want.ts[1])}]"
                        if want.ts
                        else ""
                    )
                rank = 0
            elif same_address:
                rank, reason = 1, "same address, other event"
            elif same_event:
                rank, reason = 2, "same event, other address"
            else:
                rank, reason = 3, "other event and address"
            line = _event_line(entry, item)
            found.append(((rank, closeness, entry.seq), f"{line}  <- {reason}" if reason else line))
    found.sort(key=lambda c: c[0])
    return found


def _fired(callbacks: list[Entry]) -> list[str]:
    lines = []
    for entry in callbacks:
        for v in entry.data.get("violations", ()):
            violation = Violation.from_json(v)
            lines.append(f"seq {entry.seq:<4} {violation.severity:<7} {violation.format()}")
    return lines


def _clipped(lines: list[str], limit: int, indent: str = "  ") -> list[str]:
    shown = [indent + line for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"{indent}... and {len(lines) - limit} more")
    return shown


def _with_fired(lines: list[str], callbacks: list[Entry]) -> str:
    """*lines*, then the checks that fired on *callbacks* (if any), as one message."""
    fired = _fired(callbacks)
    if fired:
        lines.append("checks that fired:")
        lines.extend(_clipped(fired, _SHOWN_VIOLATIONS))
    return "\n".join(lines)


def _callback_failure(want: _Want, journal: Journal, within: float, since: int) -> str:
    callbacks = journal.entries(Kind.CALLBACK, since=since)
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


def _item_matches(item: Sequence[Any], event: str | None, key: str | None) -> bool:
    """Whether a journaled ``[event, email, ts, meta]`` item has *event* and the address *key*
    (casefolded); None matches anything."""
    return (event is None or item[0] == event) and (
        key is None or (isinstance(item[1], str) and item[1].casefold() == key)
    )


def _no_callbacks_filter(event: str | None, email: str | None) -> Any:
    key = email.casefold() if email is not None else None

    def matches(entry: Entry) -> bool:
        if entry.kind is not Kind.CALLBACK:
            return False
        if event is None and key is None:
            return True
        return any(_item_matches(item, event, key) for item in entry.data.get("events", ()))

    return matches


def _no_callbacks_failure(
    journal: Journal, matches: Any, event: str | None, email: str | None, within: float, since: int
) -> str:
    found = [e for e in journal.entries(Kind.CALLBACK, since=since) if matches(e)]
    what = " ".join(f"{k}={v}" for k, v in (("event", event), ("email", email)) if v is not None)
    head = f"expected no callbacks{' with ' + what if what else ''} after seq {since}"
    head += f" (waited up to {within:g} s)" if within else ""
    lines = [head, f"arrived: {len(found)} callback{'s' if len(found) != 1 else ''}:"]
    key = email.casefold() if email is not None else None
    shown: list[str] = []
    for entry in found:
        items = entry.data.get("events", ())
        if not items:
            shown.append(_event_line(entry, None))
        shown.extend(_event_line(entry, item) for item in items if _item_matches(item, event, key))
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

    Payload checks come from ``Kind.CALLBACK`` entries (their evidence starts with the callback's
    own seq), cross-checks from ``Kind.VIOLATION`` entries (``data`` is ``Violation.to_json()``,
    or holds it under ``"violation"``).
    """
    since = _check_since(since)
    found: list[Violation] = []
    for entry in journal.entries(since=since):
        if entry.kind is Kind.CALLBACK:
            for raw in entry.data.get("violations", ()):
                v = Violation.from_json(raw)
                evidence = (entry.seq, *(s for s in v.evidence if s != entry.seq))
                found.append(
                    Violation(
                        v.code, v.severity, v.path, v.message, v.expected, v.seen, evidence, v.extra
                    )
                )
        elif entry.kind is Kind.VIOLATION:
            raw = entry.data.get("violation", entry.data)
            v = Violation.from_json(raw)
            if not v.evidence:
                v = Violation(
                    v.code, v.severity, v.path, v.message, v.expected, v.seen, (entry.seq,), v.extra
                )
            found.append(v)
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

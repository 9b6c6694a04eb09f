"""What the dashboard reads from the journal: filtered pages, one recipient's story, sessions.

Every journal read of the dashboard is in this module, through the journal's public reads
(:meth:`~harness.journal.Journal.iter_entries`, :meth:`~harness.journal.Journal.callbacks`,
:meth:`~harness.journal.Journal.get`) and the typed records. Nothing here renders.

Pages go from the newest entry back, in windows of seq numbers: each window is one indexed range
read (by kind, or through the callback indexes), so a page costs the same at 100 entries or at
100,000. A recipient filter reads the journal's address indexes (callbacks by their events,
every other kind by the address table). A filter the indexes cannot answer (a code across every
kind) is checked entry by entry, within a scan budget; the page then says how far back it looked
and offers to go on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from harness.journal import Entry, Journal
from harness.records import (
    Callback,
    Kind,
    SmtpClose,
    SmtpMessage,
    SmtpOpen,
    SmtpReply,
    ViolationFound,
    addresses_of,
)
from harness.vocab import address_key

__all__ = ["Filter", "Page", "Story", "page", "recipients_of", "session_entries", "story"]

_WINDOW = 2000
"""Seq numbers read per window when walking back."""
_SCAN_BUDGET = 20_000
"""Entries one page may check one by one before it stops and offers to look further back."""


@dataclass(frozen=True, slots=True)
class Filter:
    """What the live view shows; None (or empty) means any."""

    kind: Kind | None = None
    address: str | None = None
    event: str | None = None
    code: str | None = None

    @property
    def callbacks_only(self) -> bool:
        """Only callbacks can match: an event is a callback's, and so is the kind asked for.
        (A code alone can also match the judge's violation records, so it is not enough.)"""
        return self.event is not None or self.kind is Kind.CALLBACK

    def matches(self, entry: Entry) -> bool:
        """The one predicate of the filter (pages and the live stream both use it)."""
        if self.kind is not None and entry.kind is not self.kind:
            return False
        record = entry.data
        if self.event is not None and not (
            isinstance(record, Callback) and any(record.matching(self.event, self.address))
        ):
            return False
        if self.code is not None and self.code not in codes_of(entry):
            return False
        return self.address is None or address_key(self.address) in {
            address_key(a) for a in recipients_of(entry)
        }


def codes_of(entry: Entry) -> tuple[str, ...]:
    """The check codes an entry carries (a callback's violations, a judge's violation)."""
    record = entry.data
    if isinstance(record, Callback):
        return record.codes
    if isinstance(record, ViolationFound):
        return (record.violation.code,)
    return ()


def recipients_of(entry: Entry) -> tuple[str, ...]:
    """The recipient addresses an entry is about (:func:`~harness.records.addresses_of`)."""
    return addresses_of(entry.data)


@dataclass(slots=True)
class Page:
    """Entries newest first; ``older`` is the ``before`` of the next page (None: no more)."""

    entries: list[Entry]
    older: int | None
    last_seq: int
    scanned_to: int = 0
    """The oldest seq this page looked at (a page cut short by the scan budget says so)."""


def _window(journal: Journal, flt: Filter, lo: int, hi: int) -> Iterator[Entry]:
    """The entries with ``lo < seq < hi`` that may match *flt*, oldest first, through the most
    selective index."""
    if flt.callbacks_only:
        candidates: Iterator[Entry] = iter(
            journal.callbacks(
                event=flt.event, address=flt.address, code=flt.code, since=lo, limit=hi - lo
            )
        )
    elif flt.address is not None:
        # Every kind about the address, through the journal's address indexes.
        kinds = None if flt.kind is None else [flt.kind]
        candidates = iter(journal.about(flt.address, kinds=kinds, since=lo, before=hi))
    else:
        candidates = journal.iter_entries(flt.kind, since=lo)
    for entry in candidates:
        if entry.seq >= hi:
            return
        yield entry


def page(journal: Journal, flt: Filter, *, before: int | None = None, limit: int = 100) -> Page:
    """The newest *limit* entries matching *flt* with ``seq < before`` (all when None)."""
    last = journal.last_seq
    hi = last + 1 if before is None else min(before, last + 1)
    found: list[Entry] = []
    checked = 0
    # An address's entries come straight from its index, however far apart: one window.
    span = hi if flt.address is not None and not flt.callbacks_only else _WINDOW
    while hi > 1 and len(found) < limit and checked < _SCAN_BUDGET:
        lo = max(0, hi - 1 - span)
        batch = []
        for entry in _window(journal, flt, lo, hi):
            checked += 1
            if flt.matches(entry):
                batch.append(entry)
        found.extend(reversed(batch))
        hi = lo + 1
    older = None
    if len(found) > limit:
        older = found[limit - 1].seq
        found = found[:limit]
    elif hi > 1:
        older = hi
    return Page(found, older, last, scanned_to=hi)


@dataclass(slots=True)
class Story:
    """Everything about one recipient, in journal order, sorted into the steps of its story."""

    address: str
    sent: list[Entry] = field(default_factory=list)
    replies: list[Entry] = field(default_factory=list)
    messages: list[Entry] = field(default_factory=list)
    dsns: list[Entry] = field(default_factory=list)
    callbacks: list[Entry] = field(default_factory=list)
    clicks: list[Entry] = field(default_factory=list)
    violations: list[Entry] = field(default_factory=list)

    @property
    def seqs(self) -> set[int]:
        """The entries of the story so far (a violation whose evidence names one belongs)."""
        groups = (self.sent, self.replies, self.messages, self.dsns, self.callbacks, self.clicks)
        return {e.seq for group in groups for e in group}


def story(journal: Journal, address: str) -> Story:
    """The story of *address*: sent, replies, messages, DSNs, callbacks, clicks, violations.

    Everything about the address comes through the journal's address indexes
    (:meth:`~harness.journal.Journal.about`); the judge's violations that name it only through
    their evidence are found in the violation kind.
    """
    result = Story(address)
    groups = {
        Kind.SENT: result.sent,
        Kind.SMTP_REPLY: result.replies,
        Kind.SMTP_MESSAGE: result.messages,
        Kind.DSN: result.dsns,
        Kind.DSN_SKIPPED: result.dsns,
        Kind.CLICK: result.clicks,
        Kind.CALLBACK: result.callbacks,
        Kind.VIOLATION: result.violations,
    }
    for entry in journal.about(address):
        group = groups.get(entry.kind)
        if group is not None:
            group.append(entry)
    mine = result.seqs
    named = {e.seq for e in result.violations}
    for entry in journal.iter_entries(Kind.VIOLATION):
        record = entry.data
        if (
            entry.seq not in named
            and isinstance(record, ViolationFound)
            and mine.intersection(record.violation.evidence)
        ):
            result.violations.append(entry)
    result.violations.sort(key=lambda e: e.seq)
    return result


def session_entries(journal: Journal, session: str) -> list[Entry]:
    """The open, replies, messages and close of one SMTP session, in order."""
    found: list[Entry] = []
    for kind in (Kind.SMTP_OPEN, Kind.SMTP_REPLY, Kind.SMTP_MESSAGE, Kind.SMTP_SESSION):
        for entry in journal.iter_entries(kind):
            record = entry.data
            if isinstance(record, SmtpOpen | SmtpReply | SmtpMessage | SmtpClose) and (
                record.session == session
            ):
                found.append(entry)
    found.sort(key=lambda e: e.seq)
    return found

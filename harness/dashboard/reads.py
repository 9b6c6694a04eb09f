"""What the dashboard reads from the journal: filtered pages, one recipient's story, sessions.

Every journal read of the dashboard is in this module, through the journal's public reads
(:meth:`~harness.journal.Journal.iter_entries`, :meth:`~harness.journal.Journal.callbacks`,
:meth:`~harness.journal.Journal.get`) and the typed records. Nothing here renders.

Pages go from the newest entry back, in windows of seq numbers: each window is one indexed range
read (by kind, or through the callback indexes), so a page costs the same at 100 entries or at
100,000. A filter the indexes cannot answer (a recipient across mail records) is checked entry by
entry, within a scan budget; the page then says how far back it looked and offers to go on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from harness.journal import Entry, Journal
from harness.records import (
    Callback,
    Click,
    Dsn,
    DsnSkipped,
    Kind,
    Sent,
    SmtpClose,
    SmtpMessage,
    SmtpOpen,
    SmtpReply,
    ViolationFound,
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
    """The recipient addresses an entry is about (none for sessions, faults, notes)."""
    record = entry.data
    if isinstance(record, Callback):
        return tuple(e.email for e in record.events)
    if isinstance(record, SmtpReply):
        return (record.recipient,)
    if isinstance(record, SmtpMessage):
        return tuple(r.address for r in record.recipients)
    if isinstance(record, Dsn):
        return tuple(r.recipient for r in record.recipients)
    if isinstance(record, DsnSkipped):
        return record.recipients
    if isinstance(record, Sent):
        return record.to
    if isinstance(record, Click):
        return (record.recipient,)
    if isinstance(record, ViolationFound):
        # The judge names the recipient in `extra` where it has one (no typed field yet); the
        # story also finds a violation through its evidence.
        address = record.violation.extra.get("recipient")
        return (address,) if isinstance(address, str) else ()
    return ()


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
    while hi > 1 and len(found) < limit and checked < _SCAN_BUDGET:
        lo = max(0, hi - 1 - _WINDOW)
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

    Callbacks come through the address index; the mail records have none yet, so their kinds
    are read one kind at a time (the kind index) and checked.
    """
    result = Story(address)
    key = address_key(address)

    def about(entry: Entry) -> bool:
        return key in {address_key(a) for a in recipients_of(entry)}

    groups = (
        (Kind.SENT, result.sent),
        (Kind.SMTP_REPLY, result.replies),
        (Kind.SMTP_MESSAGE, result.messages),
        (Kind.DSN, result.dsns),
        (Kind.DSN_SKIPPED, result.dsns),
        (Kind.CLICK, result.clicks),
    )
    for kind, group in groups:
        group.extend(e for e in journal.iter_entries(kind) if about(e))
    result.dsns.sort(key=lambda e: e.seq)
    result.callbacks = journal.callbacks(address=address)
    mine = result.seqs
    for entry in journal.iter_entries(Kind.VIOLATION):
        record = entry.data
        if isinstance(record, ViolationFound) and (
            about(entry) or mine.intersection(record.violation.evidence)
        ):
            result.violations.append(entry)
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

"""The journal: one ordered, append-only record of everything observable.

SMTP sessions and the replies given, messages accepted, DSNs sent, clicks, callbacks received and
the violations found in them are all appended here. Verdicts, assertions, reports and the control
API read the journal and nothing else.

Two stores share one interface:

- :class:`MemoryJournal`, the default: a list behind a lock. Appending is the hot path of both
  servers (every callback, every SMTP session), so it does as little as possible: take the lock,
  number the entry, append it, wake waiters only when there are any.
- :class:`SQLiteJournal`: the same, written through to an SQLite file, so a standalone server that
  restarts loses nothing. Entries already in the file are loaded when it opens and numbering goes
  on after them.

Entries are plain data (JSON types only in ``data``) so that every store, the control API and the
reports can serialize them without knowing what produced them. The producers document the shape
of ``data`` for each kind next to the code that appends it.

Thread safety: servers run in their own threads (uvicorn, aiosmtpd), tests read from the main
thread. Every method is safe to call from any thread. Waiting is offered both blocking
(:meth:`Journal.wait_for`) and as a coroutine (:meth:`Journal.wait_for_async`) that never blocks
the event loop.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

__all__ = [
    "Entry",
    "Journal",
    "Kind",
    "MemoryJournal",
    "SQLiteJournal",
    "open_journal",
]


class Kind(StrEnum):
    """What an entry records. Producers own the shape of ``Entry.data`` for their kinds."""

    CALLBACK = "callback"
    """An HTTP request to the fake CleverTap, valid or not, with its violations and the answer."""
    SMTP_SESSION = "smtp_session"
    """One SMTP connection to a fake MX or relay: peer, EHLO, TLS, AUTH, commands, replies, end."""
    SMTP_MESSAGE = "smtp_message"
    """One message accepted (250 after DATA) by a fake MX or relay."""
    DSN = "dsn"
    """A delivery status notification the world sent (or failed to send) to the bounce intake."""
    SENT = "sent"
    """A campaign message the runner submitted to the integration, as CleverTap would."""
    CLICK = "click"
    """An unsubscribe action the runner performed as the recipient."""
    VIOLATION = "violation"
    """A violation found after the fact (cross-checks that join the mail world and callbacks)."""
    NOTE = "note"
    """Anything else worth keeping in order: a host taken down, a fault switched on, a reset."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal record.

    ``seq`` numbers entries from 1 in the order they were appended; ``at`` is the wall-clock time
    (``time.time()``) at which the harness observed the thing; ``data`` holds JSON types only.
    """

    seq: int
    kind: Kind
    at: float
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": str(self.kind), "at": self.at, "data": dict(self.data)}


Predicate = Callable[[Entry], bool]


def _seq(entry: Entry) -> int:
    return entry.seq


class Journal:
    """In-memory journal; the base of every store. See the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._entries: list[Entry] = []
        self._next = 1
        self._waiters = 0
        self._listeners: list[Callable[[Entry], None]] = []
        self._closed = False

    # -- writing -------------------------------------------------------------------------------

    def append(self, kind: Kind, data: Mapping[str, Any], *, at: float | None = None) -> Entry:
        """Record one entry and return it. Safe from any thread; never drops an entry."""
        when = time.time() if at is None else at
        with self._lock:
            entry = Entry(self._next, kind, when, data)
            self._store(entry)
            self._entries.append(entry)
            self._next += 1
            if self._waiters:
                self._cond.notify_all()
            listeners = self._listeners
        # Listeners run outside the lock so a slow one cannot stall other writers.
        for listener in listeners:
            listener(entry)
        return entry

    def _store(self, entry: Entry) -> None:
        """Persist *entry*; called with the lock held. The memory store keeps only the list."""

    def reset(self) -> None:
        """Forget every entry (numbering goes on, so old sequence numbers are never reused)."""
        with self._lock:
            self._entries.clear()
            self._clear_store()

    def _clear_store(self) -> None:
        """Drop persisted entries; called with the lock held."""

    # -- reading -------------------------------------------------------------------------------

    def entries(self, kind: Kind | None = None, *, since: int = 0) -> list[Entry]:
        """A snapshot of the entries with ``seq > since``, of one kind or of all kinds."""
        with self._lock:
            # Entries are sorted by seq, so the first one after *since* is found by bisection.
            start = bisect.bisect_right(self._entries, since, key=_seq) if since else 0
            if kind is None:
                return self._entries[start:]
            return [e for e in self._entries[start:] if e.kind is kind]

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest entry ever appended (0 when none was)."""
        with self._lock:
            return self._next - 1

    def find(self, predicate: Predicate, *, since: int = 0) -> Entry | None:
        """The first entry after *since* that matches *predicate*, or None."""
        for entry in self.entries(since=since):
            if predicate(entry):
                return entry
        return None

    # -- waiting -------------------------------------------------------------------------------

    def wait_for(self, predicate: Predicate, timeout: float, *, since: int = 0) -> Entry | None:
        """Block until an entry after *since* matches *predicate*; None after *timeout* seconds.

        Entries already in the journal count, so there is no race between acting and waiting.
        The predicate runs outside the lock, so it may read the journal itself.
        """
        deadline = time.monotonic() + timeout
        checked = since
        while True:
            batch = self.entries(since=checked)
            for entry in batch:
                if predicate(entry):
                    return entry
            if batch:
                checked = batch[-1].seq
            with self._lock:
                if self._entries and self._entries[-1].seq > checked:
                    continue  # something arrived while we were scanning: scan it first
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._waiters += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._waiters -= 1

    async def wait_for_async(
        self, predicate: Predicate, timeout: float, *, since: int = 0
    ) -> Entry | None:
        """Like :meth:`wait_for`, as a coroutine that never blocks the running event loop."""
        found = self.find(predicate, since=since)
        if found is not None:
            return found
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Entry] = loop.create_future()

        def _on_append(entry: Entry) -> None:
            if predicate(entry):
                loop.call_soon_threadsafe(_resolve, entry)

        def _resolve(entry: Entry) -> None:
            if not result.done():
                result.set_result(entry)

        remove = self.subscribe(_on_append)
        try:
            # Re-scan after subscribing: an entry appended between the first scan and the
            # subscription would otherwise be missed.
            found = self.find(predicate, since=since)
            if found is not None:
                return found
            try:
                return await asyncio.wait_for(result, timeout)
            except TimeoutError:
                return None
        finally:
            remove()

    def subscribe(self, listener: Callable[[Entry], None]) -> Callable[[], None]:
        """Call *listener* with every new entry (in the appending thread); returns an unsubscriber.

        Listeners must be quick and must not raise; they run on the servers' hot paths.
        """
        with self._lock:
            # Copy-on-write: append() iterates a snapshot without holding the lock.
            self._listeners = [*self._listeners, listener]

        def remove() -> None:
            with self._lock:
                self._listeners = [x for x in self._listeners if x is not listener]

        return remove

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the store. The memory store has nothing to release."""
        self._closed = True

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


MemoryJournal = Journal


class SQLiteJournal(Journal):
    """A journal written through to an SQLite file; reopening the file restores every entry."""

    _SCHEMA = """
        CREATE TABLE IF NOT EXISTS entries (
            seq  INTEGER PRIMARY KEY,
            kind TEXT    NOT NULL,
            at   REAL    NOT NULL,
            data TEXT    NOT NULL
        )
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        try:
            # check_same_thread=False: every use is serialized by the journal's lock.
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(self._SCHEMA)
            rows = self._db.execute("SELECT seq, kind, at, data FROM entries ORDER BY seq")
            for seq, kind, at, data in rows:
                self._entries.append(Entry(seq, Kind(kind), at, json.loads(data)))
        except (sqlite3.Error, ValueError) as exc:
            raise ConfigError(
                f"journal file {str(self.path)!r} cannot be used as an SQLite journal: {exc}"
            ) from exc
        if self._entries:
            self._next = self._entries[-1].seq + 1

    def _store(self, entry: Entry) -> None:
        self._db.execute(
            "INSERT INTO entries (seq, kind, at, data) VALUES (?, ?, ?, ?)",
            (entry.seq, str(entry.kind), entry.at, json.dumps(entry.data, separators=(",", ":"))),
        )

    def _clear_store(self) -> None:
        self._db.execute("DELETE FROM entries")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._db.close()
            self._closed = True


def open_journal(path: str | Path | None = None) -> Journal:
    """An SQLite journal at *path*, or an in-memory one when *path* is None or ``":memory:"``."""
    if path is None or str(path) == ":memory:":
        return MemoryJournal()
    return SQLiteJournal(path)

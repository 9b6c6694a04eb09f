"""The journal: one ordered, append-only record of everything observable.

SMTP replies as they are given, messages accepted, DSNs sent, clicks, callbacks received and the
violations found in them are all appended here as typed records (:mod:`harness.records`).
Verdicts, assertions, reports and the control API read the journal and nothing else.

One store, two places: every journal is an SQLite database, in memory (:class:`MemoryJournal`,
the default) or in a file (:class:`SQLiteJournal`, for standalone servers that must survive a
restart or a ``kill -9``). Why SQLite for the memory journal too:

- **compact**: a record is one MessagePack array in an SQLite page, not a graph of Python objects
  (1M callbacks take a few hundred bytes each, indexes included);
- **no garbage-collection pauses**: entries are not Python objects until someone reads them, so
  the cyclic collector never walks a million of them while a request waits;
- **indexed reads**: "callbacks for this address", "the first accepted hardbounce after seq N",
  "entries with violation CT402" are index lookups, fast at any size;
- the duplicate history of CT402 is an index of the journal, not a second copy of it.

Numbering: ``seq`` numbers entries from 1, in the order they were appended, and a number is never
given twice, not after :meth:`Journal.reset`, not after a restart of a file journal.

Durability (file journals): an entry is *committed* when it is in the file (written, not
synced: it survives a killed process, not a crashed machine). Producers that answer
a client (200 to a callback, 250 to a message) ``await journal.committed(entry)`` first, so a
client never holds an answer for an entry the file lacks. Commits are grouped: every append made
in one turn of the event loop is committed by one transaction at the end of it. Readers see only
committed entries. The memory store goes one step further: it writes its entries in batches of
at least :data:`_MEMORY_BATCH` (at the end of the loop turn that fills one; a few multi-row
INSERTs per table), and every read writes what is pending first, so its readers still see each
entry from the moment it was appended; it commits only every few thousand entries (nobody but
its own connection reads an in-memory database).

A failed write (disk full, I/O error) raises :class:`JournalWriteError` to the producer, which
answers "try again later" (HTTP 503, SMTP 451); the failure is counted
(:attr:`Journal.write_failures`) and logged.

Thread safety: servers run in their own threads, tests read from the main thread; every method
is safe from any thread (one lock around the database connection). Reads fetch in chunks, letting
writers in between.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import heapq
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import msgspec

from harness.errors import ConfigError, JournalWriteError
from harness.records import (
    RECORD_TYPES,
    Callback,
    Kind,
    Record,
    RecordType,
    addresses_of,
    record_json,
    scrub,
)
from harness.vocab import address_key

__all__ = [
    "ADDRESS_INDEX",
    "DECODERS",
    "ENDPOINT_CODE",
    "KINDS",
    "KIND_CODE",
    "SQLITE",
    "CommitWaiter",
    "Entry",
    "Journal",
    "Kind",
    "MemoryJournal",
    "SQLiteJournal",
    "SqlDialect",
    "address_query",
    "candidate_query",
    "encode_record",
    "event_key",
    "open_journal",
    "settle_waiter",
]

log = logging.getLogger("harness.journal")

# The stored codes, shared with the other SQL store (journal_pg.py): a kind is stored as its
# position in KINDS, a callback's endpoint as ENDPOINT_CODE's; DECODERS (below) read the records
# back, encode_record writes them, event_key keys the event index.
KINDS: tuple[Kind, ...] = tuple(Kind)
KIND_CODE = {kind: i for i, kind in enumerate(KINDS)}
_ENDPOINTS = ("bounce", "unsubscribe", "v2")
ENDPOINT_CODE = {name: i for i, name in enumerate(_ENDPOINTS)}
_CHUNK = 2000
_FORMAT = 2
"""Version of the file layout; a journal written by another layout is refused with a message."""

_SCHEMA = (
    # One row per entry; `data` is the record as a MessagePack array. The callback columns
    # (endpoint, accepted) are NULL for other kinds and feed the partial index below.
    """CREATE TABLE IF NOT EXISTS entries (
        seq      INTEGER PRIMARY KEY,
        kind     INTEGER NOT NULL,
        at       REAL    NOT NULL,
        data     BLOB    NOT NULL,
        endpoint INTEGER,
        accepted INTEGER,
        flagged  INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS entries_kind ON entries (kind, seq)",
    """CREATE INDEX IF NOT EXISTS entries_callback ON entries (endpoint, accepted, seq)
        WHERE endpoint IS NOT NULL""",
    """CREATE INDEX IF NOT EXISTS entries_accepted ON entries (accepted, seq)
        WHERE endpoint IS NOT NULL""",
    # Callbacks with at least one violation, in order (the control API's violation list).
    "CREATE INDEX IF NOT EXISTS entries_flagged ON entries (seq) WHERE flagged = 1",
    # One row per event of a callback: address and event as 64-bit keys (a hash; reads check
    # the record itself, so a collision can only cost time), for filters and for CT402.
    """CREATE TABLE IF NOT EXISTS events (
        akey       INTEGER NOT NULL,
        ekey       INTEGER NOT NULL,
        seq        INTEGER NOT NULL,
        at         REAL    NOT NULL,
        remembered INTEGER NOT NULL,
        PRIMARY KEY (akey, ekey, seq)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS events_event ON events (ekey, seq)",
    """CREATE TABLE IF NOT EXISTS codes (
        code TEXT    NOT NULL,
        seq  INTEGER NOT NULL,
        PRIMARY KEY (code, seq)
    ) WITHOUT ROWID""",
    # One row per address of every other record that names recipients (replies, messages,
    # DSNs, sent, clicks: records.addresses_of), so that "everything about this address" is an
    # index read too. Callbacks are not here: the events table indexes their addresses.
    """CREATE TABLE IF NOT EXISTS addresses (
        akey INTEGER NOT NULL,
        seq  INTEGER NOT NULL,
        PRIMARY KEY (akey, seq)
    ) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
)
ADDRESS_INDEX = "address_index"
"""The meta key saying the address table covers every entry (journals written before it existed
are indexed when opened)."""


def _hash(text: str) -> int:
    """A stable signed 64-bit key for *text* (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_EVENT_KEYS: dict[str, int] = {}


def event_key(event: str) -> int:
    """The key of an event name: a handful of names, so each is hashed once (bounded: payloads
    can name anything)."""
    found = _EVENT_KEYS.get(event)
    if found is None:
        found = _hash(event)
        if len(_EVENT_KEYS) < 256:
            _EVENT_KEYS[event] = found
    return found


_ADDRESS_KEYS: dict[str, int] = {}
_ADDRESS_KEYS_MAX = 4096


def address_index_key(address: str) -> int:
    """The key of an address (by :func:`~harness.vocab.address_key`). One address comes back
    again and again (a callback is looked up for duplicates and then indexed; a recipient's
    reply, message and DSN are indexed in turn), so recent keys are remembered: a bounded dict,
    emptied when full (each get and set is atomic, so threads share it safely)."""
    found = _ADDRESS_KEYS.get(address)
    if found is None:
        found = _hash(address_key(address))
        if len(_ADDRESS_KEYS) >= _ADDRESS_KEYS_MAX:
            _ADDRESS_KEYS.clear()
        _ADDRESS_KEYS[address] = found
    return found


def process_address_key(address: str) -> int:
    """The memory store's key of an address: Python's own string hash of its
    :func:`~harness.vocab.address_key`. Salted per process (``PYTHONHASHSEED``), so it keys only
    what never leaves the process, an in-memory database; a fraction of the cost of the stable
    :func:`address_index_key` (a BLAKE2 digest), which CT402's lookup and the events index pay for
    every address of every callback."""
    return hash(address_key(address))


AddressKey = Callable[[str], int]
"""How a store keys an address: :func:`address_index_key` (stable: files, PostgreSQL) or
:func:`process_address_key` (the memory store)."""

_MEMORY_BATCH = 100
"""The memory store writes its pending entries at the end of a loop turn once there are this many
(or before any read). Fewer, larger batches keep SQLite's code and pages in the caches between
callbacks: 2 to 3 us less CPU per callback than a batch per turn (about 20 entries) under
bench_callbacks' load, where a batch of 100 holds the loop about 1 ms (p99 unchanged)."""
_MEMORY_COMMIT_EVERY = 4096
"""The memory store commits its open transaction once it holds this many entries."""

_SEEN_BYTES = 1 << 21
"""Bytes of the filter of indexed addresses (2 MiB), allocated at the first remembered event."""
_SEEN_MASK = _SEEN_BYTES - 1


def _seen_slot(akey: int) -> tuple[int, int]:
    """Where an address key sits in the filter: (byte, bits). Two bits of one byte (a Bloom
    filter blocked to a byte; the key is a hash already).

    Why so: the hot path sets and tests these inline for every event of every callback, and each
    operation counts there (a filter of three bits in a 64-byte block cost 1.2 us more per
    callback under bench_callbacks' load). In 2 MiB, 2 bits per byte answer a false "maybe" for
    0.6% of new addresses at 200,000 indexed, 3.4% at 1,000,000 and 7.8% at 2,000,000 (a
    simulation with random keys); a false "maybe" costs one indexed query.
    """
    return akey >> 6 & _SEEN_MASK, 1 << (akey & 7) | 1 << (akey >> 3 & 7)


class Entry(msgspec.Struct, frozen=True, gc=False):
    """One journal entry: ``seq`` (from 1, never reused), ``kind``, ``at`` (``time.time()`` when
    the harness observed the thing) and ``data``, the typed record."""

    # A msgspec struct (frozen, untracked by the cyclic collector like the records it holds):
    # one is built per append and per entry read, and a frozen dataclass's __init__ costs
    # several times more.

    seq: int
    kind: Kind
    at: float
    data: RecordType

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": str(self.kind),
            "at": self.at,
            "data": record_json(self.data),
        }


Predicate = Callable[[Entry], bool]


@dataclass(frozen=True, slots=True)
class SqlDialect:
    """What differs between the SQL stores in the candidate queries (:func:`candidate_query`)."""

    param: str
    """The placeholder: ``?`` (sqlite3) or ``%s`` (psycopg)."""
    entries: str
    events: str
    codes: str
    join: str
    """SQLite needs ``CROSS JOIN`` to keep the small index side as the outer loop."""
    flagged: str
    upper_bound: bool
    """Whether the query also bounds seq from above (the SQLite store's committed seq)."""
    boolean: Callable[[bool], Any]
    addresses: str = "addresses"


SQLITE = SqlDialect("?", "entries", "events", "codes", "CROSS JOIN", "e.flagged = 1", True, int)


def address_query(dialect: SqlDialect) -> str:
    """The read of :meth:`Journal.about` for every kind but callbacks, for every SQL store: the
    address's rows of the address table joined to their entries, in seq order. Its parameters:
    the address key, ``seq > P`` (and ``seq <= P`` when the dialect bounds it), ``LIMIT P``."""
    p = dialect.param
    upper = f" AND a.seq <= {p}" if dialect.upper_bound else ""
    return (
        f"SELECT e.seq, e.kind, e.at, e.data FROM {dialect.addresses} a {dialect.join} "
        f"{dialect.entries} e ON e.seq = a.seq WHERE a.akey = {p} AND a.seq > {p}{upper} "
        f"ORDER BY a.seq LIMIT {p}"
    )


def address_keys(record: Record, key: AddressKey = address_index_key) -> set[int]:
    """The address-table keys of a record that is not a callback (one per distinct address)."""
    return {key(a) for a in addresses_of(record)}


def candidate_query(
    dialect: SqlDialect,
    event: str | None,
    address: str | None,
    code: str | None,
    endpoint: str | None,
    accepted: bool | None,
    flagged: bool,
    key: AddressKey = address_index_key,
) -> tuple[str, list[Any]]:
    """The one plan of the callback reads, for every SQL store: start from the most selective
    index (the address's or the event's events, a code's callbacks, else the callbacks
    themselves) and join the entries, in seq order. Returns the query and its leading
    parameters; it ends with ``seq > P`` (and ``seq <= P`` when the dialect bounds it) and
    ``LIMIT P``, whose values the store appends. Candidates only: callbacks() checks each
    against its record (the keys are hashes)."""
    p = dialect.param
    # Every callback has a non-NULL endpoint (-1 for a wrong path), and only callbacks do:
    # this term lets the partial indexes serve.
    where = ["e.endpoint IS NOT NULL"]
    args: list[Any] = []
    if endpoint is not None:
        where.append(f"e.endpoint = {p}")
        args.append(ENDPOINT_CODE.get(endpoint, -2))
    if accepted is not None:
        where.append(f"e.accepted = {p}")
        args.append(dialect.boolean(accepted))
    if flagged:
        where.append(dialect.flagged)
    if address is not None or event is not None:
        if address is not None:
            where.append(f"v.akey = {p}")
            args.append(key(address))
        if event is not None:
            where.append(f"v.ekey = {p}")
            args.append(event_key(event))
        source, seq = (
            f"{dialect.events} v {dialect.join} {dialect.entries} e ON e.seq = v.seq",
            "v.seq",
        )
    elif code is not None:
        where.append(f"c.code = {p}")
        args.append(code)
        source, seq = (
            f"{dialect.codes} c {dialect.join} {dialect.entries} e ON e.seq = c.seq",
            "c.seq",
        )
    else:
        source, seq = f"{dialect.entries} e", "e.seq"
    where.append(f"{seq} > {p}")
    if dialect.upper_bound:
        where.append(f"{seq} <= {p}")
    sql = (
        f"SELECT e.seq, e.kind, e.at, e.data FROM {source} WHERE {' AND '.join(where)} "
        f"ORDER BY {seq} LIMIT {p}"
    )
    return sql, args


_ENCODER = msgspec.msgpack.Encoder()
DECODERS: dict[int, msgspec.msgpack.Decoder[Any]] = {
    KIND_CODE[kind]: msgspec.msgpack.Decoder(rtype) for kind, rtype in RECORD_TYPES.items()
}


def encode_record(record: Record) -> tuple[bytes, Record]:
    """*record* as stored (MessagePack) and the record that was stored: the same one, or a copy
    with unpaired surrogates replaced when it held any (they cannot be encoded)."""
    try:
        return _ENCODER.encode(record), record
    except UnicodeEncodeError:
        clean = scrub(record)
        return _ENCODER.encode(clean), clean


@dataclass(slots=True)
class _Rows:
    """The rows of a batch of entries, per table (one home for what an entry indexes)."""

    callbacks: list[tuple[Any, ...]]
    others: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]
    codes: list[tuple[Any, ...]]
    addresses: list[tuple[Any, ...]]

    @classmethod
    def of(cls, batch: Sequence[_Batched], key: AddressKey) -> _Rows:
        """The rows of *batch*: (entry, its MessagePack, and for a callback whose append
        computed them already its :func:`_event_keys` and :attr:`~Callback.remembered`), with
        addresses keyed by *key*."""
        rows = cls([], [], [], [], [])
        for entry, blob, keys, remembered in batch:
            record = entry.data
            seq, at = entry.seq, entry.at
            if not isinstance(record, Callback):
                rows.others.append((seq, KIND_CODE[entry.kind], at, blob))
                rows.addresses.extend((k, seq) for k in address_keys(record, key))
                continue
            endpoint = ENDPOINT_CODE.get(record.endpoint) if record.endpoint else None
            rows.callbacks.append(
                (
                    seq,
                    KIND_CODE[entry.kind],
                    at,
                    blob,
                    -1 if endpoint is None else endpoint,
                    int(record.accepted),
                    1 if record.violations else None,
                )
            )
            if keys is None:
                keys, remembered = _event_keys(record, key), record.remembered
            flag = int(remembered)
            # Each (address, event) once per request: twice in one payload is CT401's.
            rows.events.extend([(akey, ekey, seq, at, flag) for akey, ekey in keys])
            if record.violations:
                rows.codes.extend((code, seq) for code in record.codes)
        return rows


_VALUES_CHUNKS = (64, 16, 4)
"""The row counts of the multi-row INSERT statements :func:`_insert_rows` uses: a few fixed sizes,
so that each stays prepared in sqlite3's statement cache."""


@functools.cache
def _values_sql(head: str, width: int, count: int) -> str:
    """``head VALUES (?, ...), ...``: *count* rows of *width* values."""
    row = "(" + ", ".join(["?"] * width) + ")"
    return f"{head} VALUES {', '.join([row] * count)}"


def _insert_rows(
    db: sqlite3.Connection, head: str, width: int, rows: list[tuple[Any, ...]]
) -> None:
    """Insert *rows* (each *width* values) with *head* (``INSERT ... INTO table``): up to 64 rows
    per statement, one statement per row only for the last few.

    Why: ``executemany`` resets and steps its statement once per row; a multi-row VALUES binds
    the same values but runs the statement once per chunk. For the memory store's batches of
    100 callbacks (an entry and two events each, 200,000 callbacks into the indexed tables):
    5.0 to 5.7 us per callback against 7.9 to 8.2, and about 4% of a callback's CPU under
    bench_callbacks' load."""
    start, left = 0, len(rows)
    for count in _VALUES_CHUNKS:
        if left < count:
            continue
        sql = _values_sql(head, width, count)
        while left >= count:
            db.execute(sql, [value for row in rows[start : start + count] for value in row])
            start += count
            left -= count
    if left:
        db.executemany(_values_sql(head, width, 1), rows[start:])


EventKeys = set[tuple[int, int]] | list[tuple[int, int]]
"""The (address key, event key) pairs of a callback's events, each once."""
_Batched = tuple["Entry", bytes, EventKeys | None, bool]
"""An entry waiting in the memory store's batch: (entry, blob, keys, remembered); see
:meth:`_Rows.of`."""


def _event_keys(record: Callback, key: AddressKey) -> EventKeys:
    events = record.events
    if key is not address_index_key:
        # The memory store's key costs less than a look in the cache below.
        if len(events) == 1:
            return [(key(events[0].email), event_key(events[0].event))]
        return {(key(e.email), event_key(e.event)) for e in events}
    if len(events) == 1:
        return [(address_index_key(events[0].email), event_key(events[0].event))]
    # Once per callback appended: the caches are read here without a call per key.
    akeys, ekeys = _ADDRESS_KEYS, _EVENT_KEYS
    found = set()
    for e in events:
        akey = akeys.get(e.email)
        if akey is None:
            akey = address_index_key(e.email)
        ekey = ekeys.get(e.event)
        if ekey is None:
            ekey = event_key(e.event)
        found.add((akey, ekey))
    return found


@dataclass(slots=True)
class CommitWaiter:
    """An async reader waiting on its own loop until entry *seq* is committed."""

    seq: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


def _index_addresses(db: sqlite3.Connection) -> None:
    """Fill the address table for the entries of a file written before it existed."""
    callback = KIND_CODE[Kind.CALLBACK]
    rows = db.execute("SELECT seq, kind, data FROM entries WHERE kind != ?", (callback,))
    for seq, kind, blob in rows.fetchall():
        keys = address_keys(DECODERS[kind].decode(blob))
        db.executemany("INSERT OR IGNORE INTO addresses VALUES (?, ?)", [(k, seq) for k in keys])
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, 1)", (ADDRESS_INDEX,))


class Journal:
    """A journal in memory (*path* None or ``":memory:"``) or in an SQLite file.

    See the module docstring. Use :func:`open_journal` or the two subclasses by name.
    """

    # The stable key unless __init__ says otherwise (a store that sets itself up, PostgreSQL's,
    # keeps it).
    _address_key: AddressKey = staticmethod(address_index_key)

    def __init__(self, path: str | Path | None = None) -> None:
        self.path: Path | None = None if path is None or str(path) == ":memory:" else Path(path)
        self.durable = self.path is not None
        """True for a file journal: appends must be committed before they are answered."""
        if not self.durable:
            self._address_key = process_address_key
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._waiters = 0
        self._listeners: list[Callable[[Entry], None]] = []
        self._closed = False
        self._next = 1
        self._committed = 0
        self._in_tx = False
        self._pending: list[Entry] = []
        self._commit_waiters: list[CommitWaiter] = []
        self._commit_scheduled = False
        self._counts = dict.fromkeys(KINDS, 0)
        self._floor = 0
        self.write_failures = 0
        """Appends and commits that failed (disk full, I/O error) since the journal opened."""
        # A Bloom filter of every address the events table holds (remembered events): most
        # callbacks name addresses never seen, and the filter answers "no duplicate" for them
        # without a query. This process is the only writer of its SQLite database (PostgreSQL,
        # with other writers, has none); a file's events from before are read into it at the
        # first lookup (_filter).
        self._seen: bytearray | None = None
        self._seen_loaded = self.path is None
        self._unflushed: list[_Batched] = []
        self._written = 0
        """Entries the memory store wrote in its open transaction (see :meth:`_end_turn`)."""
        self._db = self._open()
        self._finalizer = weakref.finalize(self, self._db.close)

    # -- opening -------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            # Nothing to roll back to and nothing to sync: a memory journal lives and dies with
            # the process.
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            # Every page of an in-memory database stays in its page cache (there is nowhere to
            # spill to); past the default 2 MB cap SQLite keeps trying to recycle pages that
            # cannot be, a cost that showed as pauses of tens of ms at a few 100k entries.
            db.execute("PRAGMA cache_size=-4000000")
            # Pages of 16 KiB rather than 4: the B-trees of random address keys fill them as
            # well, with fewer page headers and interior cells (376 B per entry instead of 418
            # in bench_journal.py at 200,000 callbacks; the same CPU per insert).
            db.execute("PRAGMA page_size=16384")
            for statement in _SCHEMA:
                db.execute(statement)
            return db
        return self._open_file(self.path)

    def _open_file(self, path: Path) -> sqlite3.Connection:
        where = f"journal file {str(path)!r}"
        if path.exists():
            if path.is_dir():
                raise ConfigError(f"{where} is a directory; give a file path")
            if path.stat().st_size == 0:
                raise ConfigError(
                    f"{where} is empty (0 bytes), so it is no journal; delete it to start a new "
                    "journal there, or give another path"
                )
            if not os.access(path, os.R_OK | os.W_OK):
                raise ConfigError(f"{where} is not readable and writable by this user")
        elif not os.access(path.parent if str(path.parent) else Path("."), os.W_OK | os.X_OK):
            raise ConfigError(
                f"{where} cannot be created: directory {str(path.parent)!r} is not "
                "writable (or does not exist)"
            )
        try:
            # check_same_thread=False: every use is serialized by the journal's lock.
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigError(f"{where} cannot be opened: {exc}") from exc
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            if tables and "meta" not in tables:
                raise ConfigError(
                    f"{where} is an SQLite database but not a harness journal (it has "
                    f"{', '.join(sorted(tables)) or 'no tables'}); give another path"
                )
            db.execute("PRAGMA journal_mode=WAL")
            # OFF: a commit is written to the file (the WAL) when COMMIT returns, so a killed
            # process loses nothing committed; only a crash of the machine itself could, which
            # a test harness may accept. It also spares every checkpoint an fsync: with
            # NORMAL, a checkpoint inside a commit stalled the loop for hundreds of ms at 1M.
            db.execute("PRAGMA synchronous=OFF")
            # Small checkpoints, often (in the committing thread, where they always complete
            # and keep the WAL small): each copies at most this many pages.
            db.execute("PRAGMA wal_autocheckpoint=256")
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('format', ?)", (_FORMAT,))
            elif row[0] != _FORMAT:
                raise ConfigError(
                    f"{where} was written in journal format {row[0]}, this harness reads format "
                    f"{_FORMAT}; give another path"
                )
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('opened', ?)", (time.time(),)
            )  # proves the file is writable now, not at the first callback
            if db.execute("SELECT 1 FROM meta WHERE key = ?", (ADDRESS_INDEX,)).fetchone() is None:
                _index_addresses(db)
            db.execute("COMMIT")
        except ConfigError:
            db.close()
            raise
        except sqlite3.Error as exc:
            db.close()
            raise ConfigError(f"{where} cannot be used as a journal: {exc}") from exc
        floor = db.execute("SELECT value FROM meta WHERE key = 'floor'").fetchone()
        top = db.execute("SELECT max(seq) FROM entries").fetchone()[0] or 0
        self._floor = int(floor[0]) if floor else 0
        self._next = max(top, self._floor) + 1
        self._committed = self._next - 1
        for code, count in db.execute("SELECT kind, count(*) FROM entries GROUP BY kind"):
            self._counts[KINDS[code]] = count
        return db

    # -- writing -------------------------------------------------------------------------------

    def append(self, record: Record, *, at: float | None = None) -> Entry:
        """Record one entry and return it. Safe from any thread.

        A memory journal never loses an entry. A file journal may fail to write one (disk full,
        I/O error): then :class:`JournalWriteError` is raised and nothing was recorded.
        """
        when = time.time() if at is None else at
        kind = record.KIND
        try:
            blob = _ENCODER.encode(record)
        except UnicodeEncodeError:
            blob, record = encode_record(record)
        with self._lock:
            if self._closed:
                raise JournalWriteError("the journal is closed")
            seq = self._next
            entry = Entry(seq, kind, when, record)  # type: ignore[arg-type]
            if self.durable:
                try:
                    # One transaction per event-loop turn groups the appends of that turn.
                    if not self._in_tx:
                        self._db.execute("BEGIN")
                        self._in_tx = True
                    if type(record) is Callback:
                        keys = _event_keys(record, self._address_key)
                        remembered = record.remembered
                        self._write_rows(
                            _Rows.of([(entry, blob, keys, remembered)], self._address_key)
                        )
                        # (A write that fails after this leaves a bit set: a "maybe", safe.)
                        if remembered and keys and self._seen_loaded:
                            self._remember(keys)
                    else:
                        self._insert(entry, blob)
                except sqlite3.Error as exc:
                    self._write_failed(exc, "append")
                    raise JournalWriteError(
                        f"the journal could not record a {kind} entry: {exc}"
                    ) from exc
            else:
                # The memory store writes its entries in batches (its readers flush first, so
                # they see every entry from its append on): one executemany per table instead
                # of statements per entry, and SQLite's code and pages stay warm.
                # A callback's keys are computed once, for the filter and for its index rows.
                if type(record) is Callback:
                    keys = _event_keys(record, self._address_key)
                    remembered = record.remembered
                    if remembered and keys:
                        self._remember(keys)
                    self._unflushed.append((entry, blob, keys, remembered))
                else:
                    self._unflushed.append((entry, blob, None, False))
            self._next = seq + 1
            self._counts[kind] += 1
            if not self.durable:
                self._committed = seq
                listeners = self._announce_locked()
            else:
                self._pending.append(entry)
                listeners = None
        if listeners is not None:
            for listener in listeners:
                listener(entry)
        self._schedule_commit()
        return entry

    def _insert(self, entry: Entry, blob: bytes) -> None:
        """Insert one entry and its index rows now (file store)."""
        self._write_rows(_Rows.of([(entry, blob, None, False)], self._address_key))

    def _write_rows(self, rows: _Rows) -> None:
        db = self._db
        if rows.callbacks:
            _insert_rows(db, "INSERT INTO entries", 7, rows.callbacks)
        if rows.others:
            _insert_rows(db, "INSERT INTO entries (seq, kind, at, data)", 4, rows.others)
        if rows.events:
            _insert_rows(db, "INSERT OR IGNORE INTO events", 5, rows.events)
        if rows.codes:
            _insert_rows(db, "INSERT OR IGNORE INTO codes", 2, rows.codes)
        if rows.addresses:
            _insert_rows(db, "INSERT OR IGNORE INTO addresses", 2, rows.addresses)

    def _flush_locked(self) -> None:
        """Write the memory store's entries appended since the last flush (lock held): in one
        batch, at the end of the loop turn or before any read, whichever comes first."""
        unflushed = self._unflushed
        if not unflushed:
            return
        self._unflushed = []
        try:
            if not self._in_tx:
                self._db.execute("BEGIN")
                self._in_tx = True
            self._write_rows(_Rows.of(unflushed, self._address_key))
            self._written += len(unflushed)
        except sqlite3.Error as exc:
            # Out of memory, in practice (nothing else fails an in-memory database): these
            # were announced already, so they can only be counted and logged as lost.
            self.write_failures += len(unflushed)
            for entry, *_ in unflushed:
                self._counts[entry.kind] -= 1
            log.error("journal batch write failed (%s); %d entries lost", exc, len(unflushed))

    def _remember(self, keys: EventKeys) -> None:
        """Put the addresses of a callback's (address, event) keys in the filter (lock held)."""
        seen = self._seen
        if seen is None:
            # Allocated at the first callback, not per journal: most journals hold none.
            seen = self._seen = bytearray(_SEEN_BYTES)
        for akey, _ in keys:
            # _seen_slot(), inline: once per event appended
            seen[akey >> 6 & _SEEN_MASK] |= 1 << (akey & 7) | 1 << (akey >> 3 & 7)

    def _filter(self) -> bytearray | None:
        """The filter (lock held), filled first from a file's events from before; None while
        no remembered event was ever indexed."""
        if not self._seen_loaded:
            self._seen_loaded = True
            rows = self._db.execute("SELECT DISTINCT akey FROM events WHERE remembered = 1")
            keys = [(akey, 0) for (akey,) in rows]
            if keys:
                self._remember(keys)
        return self._seen

    def _never_seen(self, akey: int) -> bool:
        """Whether no event of this address was ever indexed (False: maybe)."""
        seen = self._filter()
        if seen is None:
            return True
        index, bits = _seen_slot(akey)
        return seen[index] & bits != bits

    def _announce_locked(self) -> list[Callable[[Entry], None]]:
        if self._waiters:
            self._cond.notify_all()
        return self._listeners

    def _write_failed(self, exc: BaseException, what: str) -> None:
        """Count and log a failed write; roll back what was not committed (lock held)."""
        lost = self._pending
        self._pending = []
        self.write_failures += 1 + len(lost)
        for entry in lost:
            self._counts[entry.kind] -= 1
        if self._in_tx and self.durable:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite may have rolled back already (disk full does)
            self._in_tx = False
        # A memory journal (journal_mode=OFF) cannot roll back, and announced its entries as
        # they came: they stay; only the failed insert is lost (and answered as such).
        log.error(
            "journal %s failed (%s); %d entr%s not recorded, answered as temporary failures",
            what,
            exc,
            1 + len(lost) if what == "append" else len(lost),
            "y" if len(lost) + (what == "append") == 1 else "ies",
        )
        error = JournalWriteError(f"the journal could not commit: {exc}")
        for waiter in self._commit_waiters:
            settle_waiter(waiter, error)
        self._commit_waiters = []

    def _schedule_commit(self) -> None:
        """Commit at the end of this turn of the event loop (all its appends in one
        transaction), or at once when called outside a loop."""
        if self._commit_scheduled and not self.durable:
            # The end of a turn will write this entry too, and a memory store's readers flush
            # first anyway, so where the append came from does not matter. Checked before the
            # loop lookup: get_running_loop() makes a getpid() system call on every call
            # (CPython 3.11's fork check), a few us per append on a virtual machine.
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.commit()
            return
        if self._commit_scheduled:
            # Read without the lock: it turns False only under the lock, in commit(), which
            # then writes everything appended before; an append that sees True was before.
            return
        with self._lock:
            scheduled = self._commit_scheduled
            self._commit_scheduled = True
        if not scheduled:
            loop.call_soon(self._end_turn)

    def _end_turn(self) -> None:
        """The end of a loop turn that appended: commit its entries (a durable store), or write
        what is pending once it makes a batch (the memory store), committing only every few
        thousand entries.

        Why the memory store keeps its transaction open across turns: nothing outside this
        connection sees the database, its readers (this connection) see the entries written,
        and each COMMIT of an in-memory database walks SQLite's page-cache hash (measured at
        6% of a callback's CPU with a commit per turn under the callback bench's load).
        """
        if self.durable:
            self.commit()
            return
        with self._lock:
            self._commit_scheduled = False
            if len(self._unflushed) >= _MEMORY_BATCH:
                self._flush_locked()
            if self._in_tx and self._written >= _MEMORY_COMMIT_EVERY:
                self.commit()

    def commit(self) -> None:
        """Commit every pending append now (for a memory journal: end its transaction; its
        entries were visible, and announced, as they were appended)."""
        with self._lock:
            self._commit_scheduled = False
            self._flush_locked()
            if not self._in_tx:
                return
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._write_failed(exc, "commit")
                return
            self._in_tx = False
            self._written = 0
            done = self._pending
            self._pending = []
            if done:
                self._committed = done[-1].seq
            ready = [w for w in self._commit_waiters if w.seq <= self._committed]
            self._commit_waiters = [w for w in self._commit_waiters if w.seq > self._committed]
            listeners = self._announce_locked()
        for waiter in ready:
            settle_waiter(waiter, None)
        for entry in done:
            for listener in listeners:
                listener(entry)

    async def committed(self, entry: Entry) -> None:
        """Return once *entry* is in the file (at once for a memory journal).

        Raises :class:`JournalWriteError` when its transaction failed: the caller must not
        answer as if it had been recorded.
        """
        if entry.seq <= self._committed:
            return
        loop = asyncio.get_running_loop()
        with self._lock:
            if entry.seq <= self._committed:
                return
            if not any(e.seq == entry.seq for e in self._pending):
                raise JournalWriteError(f"journal entry {entry.seq} was not recorded")
            future: asyncio.Future[None] = loop.create_future()
            self._commit_waiters.append(CommitWaiter(entry.seq, loop, future))
        await future

    def reset(self) -> None:
        """Forget every entry. Numbering goes on: old sequence numbers are never reused, also
        after a restart of a file journal."""
        with self._lock:
            self.commit()
            floor = self._next - 1
            try:
                self._db.execute("BEGIN")
                for table in ("entries", "events", "codes", "addresses"):
                    self._db.execute(f"DELETE FROM {table}")
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('floor', ?)", (floor,))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._write_failed(exc, "reset")
                raise JournalWriteError(f"the journal could not be reset: {exc}") from exc
            self._floor = floor
            self._counts = dict.fromkeys(KINDS, 0)
            self._seen = None

    # -- reading -------------------------------------------------------------------------------

    def _decode(self, row: Sequence[Any]) -> Entry:
        seq, kind, at, blob = row[0], row[1], row[2], row[3]
        return Entry(seq, KINDS[kind], at, DECODERS[kind].decode(blob))

    def _select(self, sql: str, args: Sequence[Any]) -> Iterator[Entry]:
        """Entries of ``SELECT seq, kind, at, data ... WHERE ... seq > ? ... LIMIT ?`` (the last
        two parameters), fetched in chunks without holding the lock in between."""
        *fixed, since, _ = args
        while True:
            with self._lock:
                if self._closed:
                    return
                self._flush_locked()
                rows = self._db.execute(sql, (*fixed, since, self._committed, _CHUNK)).fetchall()
            for row in rows:
                yield self._decode(row)
            if len(rows) < _CHUNK:
                return
            since = rows[-1][0]

    def entries(self, kind: Kind | None = None, *, since: int = 0) -> list[Entry]:
        """The entries with ``seq > since``, of one kind or of all kinds, in order."""
        return list(self.iter_entries(kind, since=since))

    def iter_entries(self, kind: Kind | None = None, *, since: int = 0) -> Iterator[Entry]:
        """Like :meth:`entries`, lazily (for long journals)."""
        if kind is None:
            return self._select(
                "SELECT seq, kind, at, data FROM entries WHERE seq > ? AND seq <= ? "
                "ORDER BY seq LIMIT ?",
                (since, None),
            )
        return self._select(
            "SELECT seq, kind, at, data FROM entries WHERE kind = ? AND seq > ? AND seq <= ? "
            "ORDER BY seq LIMIT ?",
            (KIND_CODE[kind], since, None),
        )

    def get(self, seq: int) -> Entry | None:
        """The entry numbered *seq*, or None."""
        with self._lock:
            self._flush_locked()
            row = self._db.execute(
                "SELECT seq, kind, at, data FROM entries WHERE seq = ? AND seq <= ?",
                (seq, self._committed),
            ).fetchone()
        return None if row is None else self._decode(row)

    def callbacks(
        self,
        *,
        event: str | None = None,
        address: str | None = None,
        code: str | None = None,
        endpoint: str | None = None,
        accepted: bool | None = None,
        flagged: bool = False,
        since: int = 0,
        limit: int | None = None,
    ) -> list[Entry]:
        """Callback entries after *since*, filtered through the indexes, in order.

        *event* and *address* must match the same event of a payload
        (:meth:`~harness.records.CallbackEvent.matches`); *code* a violation found in it;
        *endpoint* where it arrived; *accepted* whether it was answered 2xx; *flagged* only
        those with at least one violation.
        """
        found: list[Entry] = []
        last = 0
        candidates = self._callback_candidates(
            event, address, code, endpoint, accepted, flagged, since
        )
        for entry in candidates:
            if entry.seq == last:
                continue  # two events of one payload matched an event-only filter
            last = entry.seq
            record = entry.data
            if not isinstance(record, Callback):  # pragma: no cover - the indexes are per kind
                continue
            if (event is not None or address is not None) and not any(
                record.matching(event, address)
            ):
                continue  # a key collision, or an index that cannot tell the whole filter
            if code is not None and code not in record.codes:
                continue
            if endpoint is not None and record.endpoint != endpoint:
                continue
            if accepted is not None and record.accepted != accepted:
                continue
            if flagged and not record.violations:  # pragma: no cover - the index says so
                continue
            found.append(entry)
            if limit is not None and len(found) >= limit:
                break
        return found

    def _callback_candidates(
        self,
        event: str | None,
        address: str | None,
        code: str | None,
        endpoint: str | None,
        accepted: bool | None,
        flagged: bool,
        since: int,
    ) -> Iterator[Entry]:
        """Candidates in seq order from the most selective index; callbacks() checks them."""
        sql, args = candidate_query(
            SQLITE, event, address, code, endpoint, accepted, flagged, self._address_key
        )
        return self._select(sql, (*args, since, None))

    def about(
        self,
        address: str,
        *,
        kinds: Collection[Kind] | None = None,
        since: int = 0,
        before: int | None = None,
        limit: int | None = None,
    ) -> list[Entry]:
        """The entries about *address* (:func:`~harness.records.addresses_of`, compared by
        :func:`~harness.vocab.address_key`) with ``since < seq < before``, of *kinds* (all when
        None), in order: callbacks through their events' index, every other kind through the
        address table. Index reads at any journal size."""
        key = address_key(address)
        wanted = None if kinds is None else frozenset(kinds)
        streams: list[Iterator[Entry]] = []
        if wanted is None or Kind.CALLBACK in wanted:
            streams.append(self._callback_candidates(None, address, None, None, None, False, since))
        if wanted is None or wanted - {Kind.CALLBACK}:
            streams.append(self._address_candidates(address, since))
        found: list[Entry] = []
        last = 0
        for entry in heapq.merge(*streams, key=lambda e: e.seq):
            if before is not None and entry.seq >= before:
                break
            if entry.seq == last:
                continue  # two events of one callback for the address
            last = entry.seq
            if wanted is not None and entry.kind not in wanted:
                continue
            if key not in {address_key(a) for a in addresses_of(entry.data)}:
                continue  # a key collision (the keys are hashes)
            found.append(entry)
            if limit is not None and len(found) >= limit:
                break
        return found

    def _address_candidates(self, address: str, since: int) -> Iterator[Entry]:
        """Entries of the address table for *address* after *since*, in seq order."""
        return self._select(address_query(SQLITE), (self._address_key(address), since, None))

    def last_remembered(
        self, event: str, address: str, *, after: float, since: int = 0
    ) -> tuple[float, int] | None:
        """The newest callback at or after *after* (a time) that reported *event* for *address*
        and counts for duplicates (:attr:`~harness.records.Callback.remembered`): (at, seq)."""
        akey = self._address_key(address)
        with self._lock:
            if self._never_seen(akey):
                return None
            self._flush_locked()
            rows = self._db.execute(
                "SELECT at, seq FROM events WHERE akey = ? AND ekey = ? AND remembered = 1 "
                "AND at >= ? AND seq > ? ORDER BY seq DESC LIMIT 4",
                (akey, event_key(event), after, since),
            ).fetchall()
        for at, seq in rows:
            entry = self.get(seq)
            if (
                entry is not None
                and isinstance(entry.data, Callback)
                and any(entry.data.matching(event, address))
            ):
                return (at, seq)
        return None

    def remembered_many(
        self, keys: Iterable[tuple[str, str]], *, after: float, since: int = 0
    ) -> dict[tuple[str, str], tuple[float, int | None]]:
        """:meth:`last_remembered` for each (event, address) of *keys*: the hits, by key.

        The lookup of CT402, once per callback. An SQLite store asks its filter first, for
        all the keys under one lock: an address it never indexed (most of them) costs no query.
        """
        found: dict[tuple[str, str], tuple[float, int | None]] = {}
        # Only the SQLite stores have the filter (a store that answers last_remembered its own
        # way, PostgreSQL's, has none).
        if type(self).last_remembered is Journal.last_remembered:
            with self._lock:
                seen = self._seen if self._seen_loaded else self._filter()
                if seen is None:
                    return found
                maybe = []
                akey_of = self._address_key
                for key in keys:
                    k = akey_of(key[1])  # _seen_slot(), inline
                    bits = 1 << (k & 7) | 1 << (k >> 3 & 7)
                    if seen[k >> 6 & _SEEN_MASK] & bits == bits:
                        maybe.append(key)
            if not maybe:
                return found
        else:
            maybe = list(keys)
        for event, address in maybe:
            hit = self.last_remembered(event, address, after=after, since=since)
            if hit is not None:
                found[(event, address)] = hit
        return found

    def count(self, kind: Kind | None = None) -> int:
        """How many entries of *kind* (or of all kinds) the journal holds, without a scan."""
        with self._lock:
            if kind is None:
                return sum(self._counts.values())
            return self._counts[kind]

    def __iter__(self) -> Iterator[Entry]:
        return self.iter_entries()

    def __len__(self) -> int:
        return self.count()

    @property
    def last_seq(self) -> int:
        """The newest committed entry's seq (0 when none ever was); a reader passes it as
        ``since`` to see only newer entries."""
        return self._committed

    @property
    def next_seq(self) -> int:
        """The seq the next append will get. Producers derive ids that must never repeat from
        it (queue ids, session ids): seqs are never reused, also across restarts."""
        with self._lock:
            return self._next

    def find(self, predicate: Predicate, *, since: int = 0) -> Entry | None:
        """The first entry after *since* that matches *predicate*, or None."""
        for entry in self.iter_entries(since=since):
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
            top = self._committed
            for entry in self.iter_entries(since=checked):
                if entry.seq > top:
                    break
                if predicate(entry):
                    return entry
            checked = top
            with self._lock:
                if self._committed > checked:
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
        self,
        predicate: Predicate,
        timeout: float,
        *,
        since: int = 0,
        first: Callable[[int], Entry | None] | None = None,
    ) -> Entry | None:
        """Like :meth:`wait_for`, as a coroutine that never blocks the running event loop.

        *first*, given ``since``, finds the first matching entry already in the journal with an
        index (e.g. through :meth:`callbacks`) instead of a scan; new entries are checked with
        *predicate* as they are committed.
        """
        look = first if first is not None else (lambda s: self.find(predicate, since=s))
        found = look(since)
        if found is not None:
            return found
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Entry] = loop.create_future()

        def _on_append(entry: Entry) -> None:
            if entry.seq > since and predicate(entry):
                loop.call_soon_threadsafe(_resolve, entry)

        def _resolve(entry: Entry) -> None:
            if not result.done():
                result.set_result(entry)

        remove = self.subscribe(_on_append)
        try:
            # Look again after subscribing: an entry committed between the first look and the
            # subscription would otherwise be missed.
            found = look(since)
            if found is not None:
                return found
            try:
                return await asyncio.wait_for(result, timeout)
            except TimeoutError:
                return None
        finally:
            remove()

    def subscribe(self, listener: Callable[[Entry], None]) -> Callable[[], None]:
        """Call *listener* with every new entry once it is committed (in the committing thread);
        returns an unsubscriber. Listeners must be quick and must not raise."""
        with self._lock:
            # Copy-on-write: writers iterate a snapshot without holding the lock.
            self._listeners = [*self._listeners, listener]

        def remove() -> None:
            with self._lock:
                self._listeners = [x for x in self._listeners if x is not listener]

        return remove

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Commit what is pending and release the database."""
        with self._lock:
            if self._closed:
                return
            self.commit()
            self._closed = True
            self._finalizer()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def settle_waiter(waiter: CommitWaiter, error: BaseException | None) -> None:
    """Wake *waiter* on its own loop (called from the writer thread): done, or *error*."""

    def settle() -> None:
        if waiter.future.done():
            return
        if error is None:
            waiter.future.set_result(None)
        else:
            waiter.future.set_exception(error)

    try:
        waiter.loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # that loop is closed: nobody is waiting any more


class MemoryJournal(Journal):
    """A journal in memory (an in-memory SQLite database): the default."""

    def __init__(self) -> None:
        super().__init__(None)


class SQLiteJournal(Journal):
    """A journal in an SQLite file: reopening the file restores every committed entry.

    Refused at once, with a :class:`~harness.errors.ConfigError` naming the problem, when the
    file is empty, not SQLite, another SQLite database, read-only or not creatable.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(Path(path))


def is_journal_url(path: object) -> TypeGuard[str]:
    """Whether *path* names a journal store by URL (``postgresql://...``), not a file."""
    return isinstance(path, str) and "://" in path


def open_journal(path: str | Path | None = None) -> Journal:
    """An SQLite journal at *path*, or an in-memory one when *path* is None or ``":memory:"``,
    or, for a URL (``postgresql://...``), the store registered for its scheme under the
    ``harness.journals`` entry point (:mod:`harness.journal_pg` for PostgreSQL)."""
    if is_journal_url(path):
        return _open_url(path)
    if path is None or str(path) == ":memory:":
        return MemoryJournal()
    return SQLiteJournal(path)


def _open_url(url: str) -> Journal:
    from importlib.metadata import entry_points

    scheme = url.split("://", 1)[0]
    stores = {ep.name: ep for ep in entry_points(group="harness.journals")}
    if scheme not in stores:
        known = ", ".join(f"{name}://" for name in sorted(stores)) or "none installed"
        raise ConfigError(f"no journal store for {scheme}:// URLs (known: {known})")
    try:
        store = stores[scheme].load()
    except ImportError as exc:
        raise ConfigError(
            f"the {scheme}:// journal store cannot be loaded ({exc}); install its extra, e.g. "
            "pip install 'clevertap-harness[postgres]'"
        ) from None
    journal: Journal = store(url)
    return journal

"""The journal on PostgreSQL: one journal shared by several harness processes.

``open_journal("postgresql://user@host/db")`` (``--journal postgresql://...``) returns a
:class:`PostgresJournal`: the public API and the guarantees of :class:`harness.journal.Journal`,
with the entries in a PostgreSQL database that any number of harness processes, on any number
of machines, append to and read from. Needs ``pip install clevertap-harness[postgres]``
(psycopg 3). Topology and commands: ``docs/scale-out.md``.

Storage: the same rows as the SQLite store. A record is the same MessagePack bytes (``bytea``),
with the same index columns and tables (``harness_events`` keyed by address and event hashes,
``harness_codes``, the ``accepted``/``flagged`` columns), so filtered reads stay index lookups
and the duplicate history behind CT402 is the shared index: a bounce posted to two receivers in
two processes is still CT402.

**One order across processes.** A reader that holds ``since=N`` must never miss an entry, so
seq order must equal commit order. A sequence alone does not give that: two transactions take
11 and 12, 12 commits first, a reader sees 12, moves ``since`` to 12 and never sees 11. So a
process takes a transaction-level advisory lock (:data:`_LOCK`) before it numbers anything and
keeps it until its commit: numbering and committing are one critical section across all
processes, and PostgreSQL makes a commit visible before it releases the locks. Numbers come
from the ``harness_seq`` sequence, set (non-transactionally) by each commit's write, so a
number is never given twice once a group reached the server; a group lost before that (the
connection died) frees its numbers, and nothing recorded or answered carries them.

**Group commit.** As the SQLite file store: the first append in a turn of the event loop opens
the transaction (and takes the lock), later appends of the same turn join it, and it commits at
the end of the turn in one round trip (rows sent as arrays, one statement). Producers
``await journal.committed(entry)`` before they answer. The lock is held for one turn, so the
processes take turns; the cost is measured by ``bench/bench_scaleout.py``.

**Waits** use LISTEN/NOTIFY: each commit notifies ``harness_journal`` with its top seq; a
listener thread per journal wakes :meth:`wait_for`, :meth:`wait_for_async` and subscribers, for
entries of every process, in seq order. No polling.

**Failures.** A write that fails (server gone, connection lost, disk full on the server) raises
:class:`~harness.errors.JournalWriteError` to the producer, which answers "try again later"; it
is counted in :attr:`write_failures`. The next append reconnects.

Connections: one writer, one reader and one listener per journal, each behind its own lock.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from harness.errors import ConfigError, JournalWriteError
from harness.journal import (
    _ADDRESS_INDEX,
    _DECODERS,
    _ENDPOINT_CODE,
    _KIND_CODE,
    _KINDS,
    Entry,
    Journal,
    Kind,
    Predicate,
    SqlDialect,
    _CommitWaiter,
    _encode,
    _key,
    _settle,
    address_index_key,
    address_keys,
    address_query,
    candidate_query,
)
from harness.records import Callback, Record

__all__ = ["PostgresJournal", "redact"]

log = logging.getLogger("harness.journal")

_FORMAT = 1
"""Version of the table layout; a database written by another layout is refused."""

POSTGRES = SqlDialect(
    "%s",
    "harness_entries",
    "harness_events",
    "harness_codes",
    "JOIN",
    "e.flagged",
    False,
    bool,
    "harness_addresses",
)
"""PostgreSQL's planner keeps the selective side outer by itself; its readers see committed
rows only, so no upper bound on seq."""
_LOCK = 0x6861726E657373  # "harness": the advisory lock that orders commits
_CHANNEL = "harness_journal"
_CHUNK = 2000
_COLUMNS = (
    *("seq", "kind", "at", "data", "endpoint", "accepted", "flagged"),  # harness_entries
    *("akey", "ekey", "vseq", "vat", "remembered"),  # harness_events
    *("code", "cseq"),  # harness_codes
    *("aakey", "aseq"),  # harness_addresses
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS harness_meta (key text PRIMARY KEY, value text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS harness_entries (
        seq      bigint PRIMARY KEY,
        kind     smallint NOT NULL,
        at       double precision NOT NULL,
        data     bytea NOT NULL,
        endpoint smallint,
        accepted boolean,
        flagged  boolean
    )""",
    "CREATE INDEX IF NOT EXISTS harness_entries_kind ON harness_entries (kind, seq)",
    """CREATE INDEX IF NOT EXISTS harness_entries_callback
        ON harness_entries (endpoint, accepted, seq) WHERE endpoint IS NOT NULL""",
    """CREATE INDEX IF NOT EXISTS harness_entries_accepted
        ON harness_entries (accepted, seq) WHERE endpoint IS NOT NULL""",
    "CREATE INDEX IF NOT EXISTS harness_entries_flagged ON harness_entries (seq) WHERE flagged",
    """CREATE TABLE IF NOT EXISTS harness_events (
        akey       bigint NOT NULL,
        ekey       bigint NOT NULL,
        seq        bigint NOT NULL,
        at         double precision NOT NULL,
        remembered boolean NOT NULL,
        PRIMARY KEY (akey, ekey, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS harness_events_event ON harness_events (ekey, seq)",
    """CREATE TABLE IF NOT EXISTS harness_codes (
        code text   NOT NULL,
        seq  bigint NOT NULL,
        PRIMARY KEY (code, seq)
    )""",
    # The address index of every record but callbacks (journal.py's `addresses` table).
    """CREATE TABLE IF NOT EXISTS harness_addresses (
        akey bigint NOT NULL,
        seq  bigint NOT NULL,
        PRIMARY KEY (akey, seq)
    )""",
    # Counts per kind and the top committed seq, kept by the committing transaction (under the
    # lock), so count() and last_seq never scan.
    "CREATE TABLE IF NOT EXISTS harness_counts (kind smallint PRIMARY KEY, n bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS harness_state (one boolean PRIMARY KEY, top bigint NOT NULL)",
    "CREATE SEQUENCE IF NOT EXISTS harness_seq MINVALUE 0 START 0",
)

# One statement writes a whole group: each column is sent as one array and unnested.
_WRITE = """
WITH e AS (
    INSERT INTO harness_entries
    SELECT * FROM unnest(%(seq)s::bigint[], %(kind)s::smallint[], %(at)s::float8[],
                         %(data)s::bytea[], %(endpoint)s::smallint[], %(accepted)s::boolean[],
                         %(flagged)s::boolean[])
), v AS (
    INSERT INTO harness_events
    SELECT * FROM unnest(%(akey)s::bigint[], %(ekey)s::bigint[], %(vseq)s::bigint[],
                         %(vat)s::float8[], %(remembered)s::boolean[])
), c AS (
    INSERT INTO harness_codes SELECT * FROM unnest(%(code)s::text[], %(cseq)s::bigint[])
), a AS (
    INSERT INTO harness_addresses SELECT * FROM unnest(%(aakey)s::bigint[], %(aseq)s::bigint[])
), n AS (
    UPDATE harness_counts SET n = harness_counts.n + d.n
    FROM unnest(%(ckind)s::smallint[], %(cn)s::bigint[]) AS d(kind, n)
    WHERE harness_counts.kind = d.kind
), s AS (
    UPDATE harness_state SET top = %(top)s
)
SELECT setval('harness_seq', %(top)s), pg_notify('harness_journal', %(top)s::text)
"""


def redact(url: str) -> str:
    """*url* without its password, for messages and banners."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://..."
    host = params.get("host", "localhost")
    port = f":{params['port']}" if "port" in params else ""
    user = f"{params['user']}@" if "user" in params else ""
    return f"postgresql://{user}{host}{port}/{params.get('dbname', '')}"


class PostgresJournal(Journal):
    """A journal in a PostgreSQL database shared by several processes (module docstring).

    Refused at once with a :class:`~harness.errors.ConfigError` naming the problem when the
    server cannot be reached or the database holds another layout.
    """

    def __init__(self, url: str, *, connect_timeout: float = 10.0) -> None:
        # Journal.__init__ opens SQLite: this store sets up the same attributes on PostgreSQL.
        self.path = None
        self.url = url
        self.durable = True
        """Always: appends are answered only once committed."""
        self._where = f"PostgreSQL journal {redact(url)}"
        self._conninfo = make_conninfo(url, connect_timeout=max(1, round(connect_timeout)))
        self._lock = threading.RLock()  # the writer connection and the pending group
        self._rlock = threading.Lock()  # the reader connection
        self._cond = threading.Condition(threading.Lock())  # woken by every commit seen
        self._listeners: list[Callable[[Entry], None]] = []
        self._closed = False
        self._in_tx = False
        self._next = 0
        self._group: list[tuple[Entry, bytes]] = []
        self._commit_waiters: list[_CommitWaiter] = []
        self._commit_scheduled = False
        self._committed = 0  # the newest commit seen (own, or notified by any process)
        self.write_failures = 0
        """Appends and commits that failed since the journal opened."""
        # Writer, reader, listener; replaced in place when one is lost (the finalizer closes
        # whatever the list holds).
        self._conns: list[psycopg.Connection[Any]] = []
        try:
            self._conns += [self._connect() for _ in range(3)]
            self._setup()
            self._ldb.execute(f"LISTEN {_CHANNEL}")
        except psycopg.Error as exc:
            _close_all(self._conns)
            raise ConfigError(f"{self._where} cannot be used as a journal: {exc}") from exc
        except ConfigError:
            _close_all(self._conns)
            raise
        self._committed = self._announced = self._top()
        self._stop_token = f"stop:{id(self)}:{time.monotonic_ns()}"
        self._stopping = threading.Event()
        self._finalizer = weakref.finalize(self, functools.partial(_close_all, self._conns))
        self._thread = threading.Thread(
            target=self._listen, name="harness-journal-listen", daemon=True
        )
        self._thread.start()

    # -- opening -------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise ConfigError(
                f"{self._where} cannot be reached: {str(exc).strip()}; check the URL "
                "(postgresql://USER@HOST:PORT/DATABASE) and that the server runs"
            ) from exc

    @property
    def _wdb(self) -> psycopg.Connection[Any]:
        return self._conns[0]

    @property
    def _rdb(self) -> psycopg.Connection[Any]:
        return self._conns[1]

    @property
    def _ldb(self) -> psycopg.Connection[Any]:
        return self._conns[2]

    def _reconnect(self, which: int) -> psycopg.Connection[Any]:
        """Replace a lost connection (0 writer, 1 reader, 2 listener) with a new one."""
        _close_all([self._conns[which]])
        self._conns[which] = self._connect()
        return self._conns[which]

    def _setup(self) -> None:
        db = self._wdb
        db.execute("BEGIN")
        # Processes starting together must not create the tables twice at once.
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        tables = {
            row[0]
            for row in db.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_name LIKE 'harness%%'"
            )
        }
        if tables and "harness_meta" not in tables:
            db.execute("ROLLBACK")
            raise ConfigError(
                f"{self._where} has tables named harness* but no harness_meta: not a harness "
                "journal; use another database"
            )
        for statement in _SCHEMA:
            db.execute(statement)
        row = db.execute("SELECT value FROM harness_meta WHERE key = 'format'").fetchone()
        if row is None:
            db.execute("INSERT INTO harness_meta VALUES ('format', %s)", (str(_FORMAT),))
            db.execute("INSERT INTO harness_state VALUES (true, 0)")
            db.execute(
                "INSERT INTO harness_counts SELECT k, 0 FROM unnest(%s::smallint[]) AS k",
                (list(range(len(_KINDS))),),
            )
        elif row[0] != str(_FORMAT):
            db.execute("ROLLBACK")
            raise ConfigError(
                f"{self._where} was written in journal layout {row[0]}, this harness uses "
                f"layout {_FORMAT}; use another database"
            )
        else:
            # Kinds added since the database was made start at 0.
            db.execute(
                "INSERT INTO harness_counts SELECT k, 0 FROM unnest(%s::smallint[]) AS k "
                "ON CONFLICT DO NOTHING",
                (list(range(len(_KINDS))),),
            )
        indexed = db.execute(
            "SELECT 1 FROM harness_meta WHERE key = %s", (_ADDRESS_INDEX,)
        ).fetchone()
        if indexed is None:
            # A database written before the address table existed: index what it holds.
            rows = db.execute(
                "SELECT seq, kind, data FROM harness_entries WHERE kind != %s",
                (_KIND_CODE[Kind.CALLBACK],),
            ).fetchall()
            pairs = [
                (akey, seq)
                for seq, kind, blob in rows
                for akey in address_keys(_DECODERS[kind].decode(blob))
            ]
            if pairs:
                db.execute(
                    "INSERT INTO harness_addresses SELECT * FROM unnest(%s::bigint[], "
                    "%s::bigint[]) ON CONFLICT DO NOTHING",
                    ([a for a, _ in pairs], [q for _, q in pairs]),
                )
            db.execute("INSERT INTO harness_meta VALUES (%s, '1')", (_ADDRESS_INDEX,))
        db.execute("COMMIT")

    def _top(self) -> int:
        with self._rlock:
            row = self._rdb.execute("SELECT top FROM harness_state").fetchone()
        return int(row[0]) if row else 0

    # -- writing -------------------------------------------------------------------------------

    def _begin_locked(self) -> None:
        """Open the group's transaction and take the commit-order lock (lock held)."""
        if self._wdb.broken or self._wdb.closed:
            self._reconnect(0)
        for attempt in (1, 2):
            db = self._wdb
            try:
                with db.pipeline():
                    db.execute("BEGIN")
                    db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                    cur = db.execute("SELECT last_value, is_called FROM harness_seq")
                row = cur.fetchone()
                break
            except psycopg.Error:
                self._rollback_quietly()
                # A connection lost while idle (server restarted, idle timeout) is found here:
                # nothing was sent for this group yet, so one new connection may try again.
                if attempt == 2 or not db.broken:
                    raise
                self._reconnect(0)
        if row is None:  # pragma: no cover - a sequence always has its row
            raise psycopg.DataError("harness_seq has no row")
        last, called = int(row[0]), bool(row[1])
        self._next = (last if called else last - 1) + 1
        self._next = max(self._next, 1)
        self._in_tx = True

    def _rollback_quietly(self) -> None:
        try:
            if not self._wdb.broken and not self._wdb.closed:
                self._wdb.execute("ROLLBACK")
        except psycopg.Error:
            pass
        self._in_tx = False

    def append(self, record: Record, *, at: float | None = None) -> Entry:
        """Record one entry and return it (uncommitted: ``await committed(entry)`` before
        answering). Raises :class:`JournalWriteError` when the database cannot be reached."""
        when = time.time() if at is None else at
        kind = record.KIND
        blob, record = _encode(record)
        with self._lock:
            if self._closed:
                raise JournalWriteError("the journal is closed")
            if not self._in_tx:
                try:
                    self._begin_locked()
                except (psycopg.Error, ConfigError) as exc:
                    self._write_failed(exc, "append")
                    raise JournalWriteError(
                        f"the journal could not record a {kind} entry: {exc}"
                    ) from exc
            entry = Entry(self._next, kind, when, record)  # type: ignore[arg-type]
            self._next += 1
            self._group.append((entry, blob))
        self._schedule_commit()
        return entry

    def _rows(self) -> dict[str, Any]:
        cols: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
        counts: dict[int, int] = {}
        for entry, blob in self._group:
            record = entry.data
            code = _KIND_CODE[entry.kind]
            counts[code] = counts.get(code, 0) + 1
            cols["seq"].append(entry.seq)
            cols["kind"].append(code)
            cols["at"].append(entry.at)
            cols["data"].append(blob)
            if isinstance(record, Callback):
                endpoint = _ENDPOINT_CODE.get(record.endpoint) if record.endpoint else None
                cols["endpoint"].append(-1 if endpoint is None else endpoint)
                cols["accepted"].append(record.accepted)
                cols["flagged"].append(True if record.violations else None)
                remembered = record.remembered
                # Each (address, event) once per request: twice in one payload is CT401's.
                for akey, ekey in {
                    (address_index_key(e.email), _key(e.event)) for e in record.events
                }:
                    cols["akey"].append(akey)
                    cols["ekey"].append(ekey)
                    cols["vseq"].append(entry.seq)
                    cols["vat"].append(entry.at)
                    cols["remembered"].append(remembered)
                for violation_code in record.codes:
                    cols["code"].append(violation_code)
                    cols["cseq"].append(entry.seq)
            else:
                cols["endpoint"].append(None)
                cols["accepted"].append(None)
                cols["flagged"].append(None)
                for akey in address_keys(record):
                    cols["aakey"].append(akey)
                    cols["aseq"].append(entry.seq)
        return {
            **cols,
            "ckind": list(counts),
            "cn": list(counts.values()),
            "top": self._group[-1][0].seq,
        }

    def commit(self) -> None:
        """Write and commit the pending group now (one round trip), then release the lock."""
        with self._lock:
            self._commit_scheduled = False
            if not self._in_tx:
                return
            db = self._wdb
            try:
                with db.pipeline():
                    if self._group:
                        db.execute(_WRITE, self._rows())
                    db.execute("COMMIT")
            except psycopg.Error as exc:
                self._write_failed(exc, "commit")
                return
            self._in_tx = False
            done = self._group
            self._group = []
            if done:
                top = done[-1][0].seq
                with self._cond:
                    self._committed = max(self._committed, top)
                    self._cond.notify_all()
            committed = self._committed
            ready = [w for w in self._commit_waiters if w.seq <= committed]
            self._commit_waiters = [w for w in self._commit_waiters if w.seq > committed]
        for waiter in ready:
            _settle(waiter, None)

    def _write_failed(self, exc: BaseException, what: str) -> None:
        """Count and log a failed write, roll back, fail the waiters (lock held)."""
        lost = self._group
        self._group = []
        self.write_failures += (what == "append") + len(lost)
        self._rollback_quietly()
        log.error(
            "journal %s failed on %s (%s); %d entr%s not recorded, answered as temporary failures",
            what,
            redact(self.url),
            str(exc).strip(),
            len(lost) + (what == "append"),
            "y" if len(lost) + (what == "append") == 1 else "ies",
        )
        error = JournalWriteError(f"the journal could not commit: {exc}")
        for waiter in self._commit_waiters:
            _settle(waiter, error)
        self._commit_waiters = []

    async def committed(self, entry: Entry) -> None:
        """Return once *entry* is committed; :class:`JournalWriteError` when it never will be."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if not any(e.seq == entry.seq for e, _ in self._group):
                if entry.seq <= self._committed:
                    return
                raise JournalWriteError(f"journal entry {entry.seq} was not recorded")
            future: asyncio.Future[None] = loop.create_future()
            self._commit_waiters.append(_CommitWaiter(entry.seq, loop, future))
        await future

    def reset(self) -> None:
        """Forget every entry, for every process sharing the journal; numbering goes on."""
        with self._lock:
            self.commit()
            db = self._wdb
            try:
                if db.broken or db.closed:
                    db = self._reconnect(0)
                db.execute("BEGIN")
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                db.execute(
                    "TRUNCATE harness_entries, harness_events, harness_codes, harness_addresses"
                )
                db.execute("UPDATE harness_counts SET n = 0")
                db.execute("COMMIT")
            except (psycopg.Error, ConfigError) as exc:
                self._write_failed(exc, "reset")
                raise JournalWriteError(f"the journal could not be reset: {exc}") from exc

    # -- reading -------------------------------------------------------------------------------

    def _query(self, query: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._rlock:
            if self._closed:
                return []
            try:
                return self._rdb.execute(query, args).fetchall()
            except psycopg.OperationalError:
                if not self._rdb.broken:
                    raise
                # The server restarted or dropped us: one new connection, one retry.
                return self._reconnect(1).execute(query, args).fetchall()

    def _pg_select(self, query: str, args: Sequence[Any], since: int) -> Iterator[Entry]:
        """Entries of *query* (ending ``seq > %s ORDER BY seq LIMIT %s``), in chunks.

        No upper bound is needed: commits are in seq order, so what a reader sees is always
        every entry up to some seq (less what a reset removed).
        """
        while True:
            rows = self._query(query, (*args, since, _CHUNK))
            for row in rows:
                yield self._decode(row)
            if len(rows) < _CHUNK:
                return
            since = rows[-1][0]

    def _decode(self, row: Sequence[Any]) -> Entry:
        seq, kind, at, blob = row[0], row[1], row[2], row[3]
        return Entry(seq, _KINDS[kind], at, _DECODERS[kind].decode(blob))

    def iter_entries(self, kind: Kind | None = None, *, since: int = 0) -> Iterator[Entry]:
        if kind is None:
            return self._pg_select(
                "SELECT seq, kind, at, data FROM harness_entries WHERE seq > %s "
                "ORDER BY seq LIMIT %s",
                (),
                since,
            )
        return self._pg_select(
            "SELECT seq, kind, at, data FROM harness_entries WHERE kind = %s AND seq > %s "
            "ORDER BY seq LIMIT %s",
            (_KIND_CODE[kind],),
            since,
        )

    def get(self, seq: int) -> Entry | None:
        rows = self._query("SELECT seq, kind, at, data FROM harness_entries WHERE seq = %s", (seq,))
        return self._decode(rows[0]) if rows else None

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
        # The same plan as the SQLite store (one builder); callbacks() checks every candidate
        # against the record itself.
        query, args = candidate_query(POSTGRES, event, address, code, endpoint, accepted, flagged)
        return self._pg_select(query, args, since)

    def _address_candidates(self, address: str, since: int) -> Iterator[Entry]:
        # The same read as the SQLite store's (one builder).
        return self._pg_select(address_query(POSTGRES), (address_index_key(address),), since)

    def last_remembered(
        self, event: str, address: str, *, after: float, since: int = 0
    ) -> tuple[float, int] | None:
        """As :meth:`Journal.last_remembered`, exact across processes.

        In an event loop this first takes the turn's commit-order lock (the callback's own
        append follows in the same turn): then every other process's callbacks are either
        committed, so the index has them, or not numbered yet, so they come after this one and
        their own lookup sees it. This process's callbacks not yet committed are looked up in
        its pending group.
        """
        with self._lock:
            try:
                self._hold_turn()
            except (psycopg.Error, ConfigError):
                pass  # the append that follows meets the same failure and reports it
            pending = [entry for entry, _ in self._group]
        for mine in reversed(pending):
            record = mine.data
            if (
                isinstance(record, Callback)
                and record.remembered
                and mine.at >= after
                and mine.seq > since
                and any(record.matching(event, address))
            ):
                return (mine.at, mine.seq)
        rows = self._query(
            "SELECT at, seq FROM harness_events WHERE akey = %s AND ekey = %s AND remembered "
            "AND at >= %s AND seq > %s ORDER BY seq DESC LIMIT 4",
            (address_index_key(address), _key(event), after, since),
        )
        for at, seq in rows:
            entry = self.get(seq)
            if (
                entry is not None
                and isinstance(entry.data, Callback)
                and any(entry.data.matching(event, address))
            ):
                return (at, seq)
        return None

    def count(self, kind: Kind | None = None) -> int:
        if kind is None:
            rows = self._query("SELECT coalesce(sum(n), 0) FROM harness_counts", ())
        else:
            rows = self._query("SELECT n FROM harness_counts WHERE kind = %s", (_KIND_CODE[kind],))
        return int(rows[0][0]) if rows else 0

    @property
    def last_seq(self) -> int:
        """The newest entry committed by any process (0 when none ever was)."""
        return self._top()

    @property
    def next_seq(self) -> int:
        """The seq the next append of this turn of the event loop will get.

        In an event loop this opens the turn's transaction (as an append does), so the number is
        reserved: no other process can take it. Outside a loop it is the next free number now,
        which another process may take first.
        """
        with self._lock:
            try:
                held = self._hold_turn()
            except (psycopg.Error, ConfigError) as exc:
                self._write_failed(exc, "append")
                raise JournalWriteError(f"the journal could not be reached: {exc}") from exc
            if held:
                return self._next
        rows = self._query("SELECT last_value, is_called FROM harness_seq", ())
        last, called = int(rows[0][0]), bool(rows[0][1])
        return max(1, (last if called else last - 1) + 1)

    def _hold_turn(self) -> bool:
        """In an event loop, open this turn's transaction (take the commit-order lock) as an
        append does, committed at the end of the turn; False outside a loop (lock held)."""
        if self._in_tx:
            return True
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._begin_locked()
        self._schedule_commit()
        return True

    # -- waiting -------------------------------------------------------------------------------

    def wait_for(self, predicate: Predicate, timeout: float, *, since: int = 0) -> Entry | None:
        """Block until an entry after *since*, appended by any process, matches *predicate*."""
        deadline = time.monotonic() + timeout
        checked = since
        while True:
            mark = self._committed  # every entry up to it is visible now
            for entry in self.iter_entries(since=checked):
                checked = entry.seq
                if predicate(entry):
                    return entry
            checked = max(checked, mark)
            with self._cond:
                while self._committed <= checked:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._cond.wait(remaining)

    def subscribe(self, listener: Callable[[Entry], None]) -> Callable[[], None]:
        """Call *listener* with every new entry of any process once it is committed, in seq
        order, in the journal's listener thread; returns an unsubscriber."""
        with self._lock:
            self._listeners = [*self._listeners, listener]

        def remove() -> None:
            with self._lock:
                self._listeners = [x for x in self._listeners if x is not listener]

        return remove

    def _listen(self) -> None:
        """The listener thread: wake waiters and feed subscribers on every NOTIFY; after a lost
        connection, listen again on a new one and catch up."""
        pause = 0.1
        while not self._stopping.is_set():
            try:
                self._listen_once()
                return  # stopped by close()
            except psycopg.Error as exc:
                if self._stopping.is_set():
                    return
                log.warning(
                    "journal listener on %s lost its connection (%s); reconnecting",
                    redact(self.url),
                    str(exc).strip(),
                )
            # Only after a failure: wait a little (longer each time) before the next connection.
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, 5.0)
            try:
                self._reconnect(2).execute(f"LISTEN {_CHANNEL}")
                pause = 0.1
                self._announce(self._top())  # what was committed while nobody listened
            except (psycopg.Error, ConfigError):
                continue

    def _listen_once(self) -> None:
        for note in self._ldb.notifies():
            if note.payload == self._stop_token:
                return
            if note.payload.isdigit():
                self._announce(int(note.payload))

    def _announce(self, top: int) -> None:
        """Entries up to *top* are committed: wake the waiters, feed the subscribers."""
        with self._cond:
            if top > self._committed:
                self._committed = top
            self._cond.notify_all()
        listeners = self._listeners
        if not listeners:
            self._announced = max(self._announced, top)
            return
        if top <= self._announced:
            return
        for entry in self._pg_select(
            "SELECT seq, kind, at, data FROM harness_entries WHERE seq <= %s "
            "AND seq > %s ORDER BY seq LIMIT %s",
            (top,),
            self._announced,
        ):
            for listener in listeners:
                listener(entry)
        self._announced = top

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Commit what is pending, stop the listener, close the connections."""
        with self._lock:
            if self._closed:
                return
            self.commit()
            self._stopping.set()
            # The listener blocks in notifies(): a notification of its own wakes it.
            for conn in (self._wdb, self._rdb):
                try:
                    conn.execute("SELECT pg_notify(%s, %s)", (_CHANNEL, self._stop_token))
                    break
                except psycopg.Error:
                    continue  # then the join times out and closing its connection ends it
            self._thread.join(5)
            self._closed = True
            with self._rlock:
                self._finalizer()
        with self._cond:
            self._cond.notify_all()


def _close_all(connections: list[psycopg.Connection[Any]]) -> None:
    for conn in connections:
        try:
            conn.close()
        except psycopg.Error:  # pragma: no cover - closing is best effort
            pass

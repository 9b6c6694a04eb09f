"""Unit tests of harness.journal: numbering, typed reads, indexes, waiting, durability."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from harness.checks import Severity, Violation
from harness.errors import ConfigError, JournalWriteError
from harness.journal import Entry, Journal, Kind, MemoryJournal, SQLiteJournal, open_journal
from harness.records import (
    Callback,
    CallbackEvent,
    Click,
    Dsn,
    DsnRecipient,
    DsnSkipped,
    FaultHit,
    Note,
    Recipient,
    Record,
    Sent,
    SmtpMessage,
    SmtpReply,
)


def note(what: str = "x") -> Note:
    return Note(source="test", what=what)


def callback(
    event: str = "hardbounce",
    email: str = "a@example.com",
    *,
    status: int | None = 200,
    endpoint: str = "bounce",
    violations: tuple[Violation, ...] = (),
    fault: FaultHit | None = None,
    more: tuple[CallbackEvent, ...] = (),
) -> Callback:
    return Callback(
        endpoint=endpoint,
        path=f"/{endpoint}",
        body="[]",
        events=(CallbackEvent(event, email, 1700000000), *more),
        violations=violations,
        status=status,
        fault=fault,
    )


def test_entries_are_numbered_from_one_in_append_order() -> None:
    journal = Journal()
    first = journal.append(note("one"), at=10.0)
    second = journal.append(callback(), at=11.0)
    assert first == Entry(1, Kind.NOTE, 10.0, note("one"))
    assert second.seq == 2
    assert second.kind is Kind.CALLBACK
    assert journal.entries() == [first, second]
    assert list(journal) == [first, second]
    assert len(journal) == 2
    assert journal.last_seq == 2


def test_reads_give_back_the_typed_record() -> None:
    journal = Journal()
    record = callback(more=(CallbackEvent("softbounce", "b@example.com", None, "m"),))
    journal.append(record)
    (entry,) = journal.entries()
    assert entry.data == record
    assert isinstance(entry.data, Callback)
    assert entry.data.events[1].meta == "m"


def test_entries_by_kind_and_since() -> None:
    journal = Journal()
    a = journal.append(note())
    b = journal.append(callback())
    c = journal.append(note())
    assert journal.entries(Kind.NOTE) == [a, c]
    assert journal.entries(since=a.seq) == [b, c]
    assert journal.entries(Kind.NOTE, since=a.seq) == [c]
    assert journal.entries(since=c.seq) == []
    assert journal.get(b.seq) == b
    assert journal.get(99) is None


def test_reads_in_chunks_see_every_entry() -> None:
    journal = Journal()
    for i in range(4500):
        journal.append(note(str(i)))
    entries = journal.entries()
    assert [e.seq for e in entries] == list(range(1, 4501))
    assert journal.count(Kind.NOTE) == 4500


def test_reset_forgets_entries_but_never_reuses_numbers() -> None:
    journal = Journal()
    journal.append(note())
    journal.append(note())
    journal.reset()
    assert journal.entries() == []
    assert journal.count() == 0
    assert journal.last_seq == 2
    assert journal.append(note()).seq == 3


def test_entry_to_json_names_the_fields() -> None:
    entry = Journal().append(Sent(message_id="<1@x>", sender="n@b.test", to=("a@x.test",)), at=1.5)
    assert entry.to_json() == {
        "seq": 1,
        "kind": "sent",
        "at": 1.5,
        "data": {
            "message_id": "<1@x>",
            "from": "n@b.test",
            "to": ["a@x.test"],
            "meta": None,
            "subject": None,
            "n": 0,
            "ok": False,
            "reply": None,
            "error": None,
        },
    }


def test_unencodable_text_is_stored_escaped_and_stays_readable() -> None:
    journal = Journal()
    entry = journal.append(callback(email="\ud800@x.test", status=400))
    assert isinstance(entry.data, Callback)
    assert entry.data.events[0].email == "\\ud800@x.test"
    (read,) = journal.entries()
    assert read == entry
    assert read.to_json()["data"]["events"][0][1] == "\\ud800@x.test"


def test_find() -> None:
    journal = Journal()
    journal.append(note("1"))
    second = journal.append(note("2"))
    assert journal.find(lambda e: isinstance(e.data, Note) and e.data.what == "2") == second
    assert journal.find(lambda e: isinstance(e.data, Note) and e.data.what == "1", since=1) is None


# -- indexed reads ---------------------------------------------------------------------------------


def test_callbacks_filters_match_the_same_event_and_any_case() -> None:
    journal = Journal()
    one = journal.append(callback("hardbounce", "A@Example.com"))
    journal.append(callback("softbounce", "b@example.com"))
    mixed = journal.append(
        callback("softbounce", "a@example.com", more=(CallbackEvent("hardbounce", "c@x.test"),))
    )
    refused = journal.append(callback("hardbounce", "a@example.com", status=400))
    journal.append(note())
    assert journal.callbacks(address="a@EXAMPLE.com") == [one, mixed, refused]
    assert journal.callbacks(event="hardbounce", address="a@example.com") == [one, refused]
    assert journal.callbacks(event="hardbounce") == [one, mixed, refused]
    assert journal.callbacks(event="hardbounce", accepted=True) == [one, mixed]
    assert journal.callbacks(accepted=False) == [refused]
    assert journal.callbacks(event="hardbounce", limit=1) == [one]
    assert journal.callbacks(since=one.seq, limit=1)[0].seq == one.seq + 1
    assert journal.callbacks(endpoint="v2") == []
    assert len(journal.callbacks()) == 4


def mail_records() -> list[Record]:
    """One of every kind that names recipients, about a@example.com in any case (and others)."""
    return [
        Sent(message_id="<m1@x>", sender="n@brand.test", to=("A@example.com", "b@example.com")),
        SmtpReply(
            host="example.com",
            session="example.com-1",
            recipient="a@EXAMPLE.com",
            sender="n@brand.test",
            stage="rcpt",
            code=452,
            enhanced="4.2.2",
            reply="452 4.2.2 full",
        ),
        SmtpReply(
            host="example.com",
            session="example.com-1",
            recipient="b@example.com",
            sender="n@brand.test",
            stage="rcpt",
            code=250,
            enhanced="2.1.5",
            reply="250 ok",
        ),
        SmtpMessage(
            host="example.com",
            session="example.com-1",
            id="Q1",
            recipients=(Recipient(address="b@example.com"), Recipient(address="a@example.com")),
        ),
        Dsn(
            to="bounces@brand.test", recipients=(DsnRecipient("a@example.com", "failed", "5.1.1"),)
        ),
        DsnSkipped(host="x", message="Q1", recipients=("a@example.com",), sender="", reason="null"),
        Click(recipient="a@example.com", via="one_click"),
        note(),
    ]


@pytest.mark.parametrize("store", ["memory", "file"])
def test_about_reads_every_kind_about_an_address_through_the_indexes(
    tmp_path: Path, store: str
) -> None:
    journal = open_journal(None if store == "memory" else tmp_path / "j.db")
    seqs = [journal.append(r).seq for r in mail_records()]
    cb = journal.append(callback("hardbounce", "A@example.com")).seq
    journal.append(callback("softbounce", "b@example.com"))
    journal.commit()
    about_a = [seqs[0], seqs[1], seqs[3], seqs[4], seqs[5], seqs[6], cb]
    assert [e.seq for e in journal.about("a@example.COM")] == about_a
    assert [e.seq for e in journal.about("a@example.com", kinds=[Kind.DSN, Kind.CALLBACK])] == [
        seqs[4],
        cb,
    ]
    assert [e.seq for e in journal.about("a@example.com", since=seqs[3], before=cb)] == about_a[3:6]
    assert [e.seq for e in journal.about("a@example.com", limit=2)] == about_a[:2]
    assert journal.about("nobody@example.com") == []
    journal.reset()
    assert journal.about("a@example.com") == []
    journal.close()


def test_an_aliased_dsn_is_about_the_address_sent_to_as_well() -> None:
    journal = MemoryJournal()
    dsn = journal.append(
        Dsn(
            to="bounces@brand.test",
            recipients=(
                DsnRecipient(
                    recipient="final@example.com",
                    action="failed",
                    status="5.1.1",
                    original="sent@example.com",
                ),
            ),
        )
    )
    assert journal.about("SENT@example.com") == [dsn]
    assert journal.about("final@example.com") == [dsn]


def test_a_file_written_before_the_address_index_is_indexed_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with SQLiteJournal(path) as journal:
        seqs = [journal.append(r).seq for r in mail_records()]
    # As a journal of the previous release left it: no address rows, no marker.
    db = sqlite3.connect(path)
    db.execute("DELETE FROM addresses")
    db.execute("DELETE FROM meta WHERE key = 'address_index'")
    db.commit()
    db.close()
    with SQLiteJournal(path) as journal:
        assert [e.seq for e in journal.about("b@example.com")] == [seqs[0], seqs[2], seqs[3]]


def test_callbacks_by_violation_code() -> None:
    journal = Journal()
    bad = Violation("CT303", Severity.ERROR, "$[0].data[0].ts", "ts in ms")
    journal.append(callback())
    flagged = journal.append(callback(violations=(bad, bad), status=400))
    assert journal.callbacks(code="CT303") == [flagged]
    assert journal.callbacks(code="CT101") == []


def test_last_remembered_counts_only_what_counts_for_duplicates() -> None:
    journal = Journal()
    delay = FaultHit(rule=0, action="delay", spec="delay=1")
    dropped = FaultHit(rule=1, action="close", spec="close")
    error = Violation("CT303", Severity.ERROR, "$", "bad")
    journal.append(callback(status=503, fault=FaultHit(rule=2, action="status", spec="status")))
    journal.append(callback(status=None, fault=dropped))
    journal.append(callback(status=400, violations=(error,)))
    assert journal.last_remembered("hardbounce", "a@example.com", after=0) is None
    kept = journal.append(callback(fault=delay))
    assert journal.last_remembered("hardbounce", "A@EXAMPLE.COM", after=0) == (kept.at, kept.seq)
    assert journal.last_remembered("softbounce", "a@example.com", after=0) is None
    assert journal.last_remembered("hardbounce", "a@example.com", after=kept.at + 1) is None
    assert journal.last_remembered("hardbounce", "a@example.com", after=0, since=kept.seq) is None


# -- waiting ---------------------------------------------------------------------------------------


def test_wait_for_returns_an_entry_already_there() -> None:
    journal = Journal()
    entry = journal.append(Click(recipient="a@x.test", via="one_click"))
    assert journal.wait_for(lambda e: e.kind is Kind.CLICK, timeout=0) == entry


def test_wait_for_wakes_up_on_an_append_from_another_thread() -> None:
    journal = Journal()
    started = threading.Event()

    def append_later() -> None:
        started.wait(10)
        journal.append(note("skip"))
        journal.append(Click(recipient="a@x.test", via="get"))

    thread = threading.Thread(target=append_later)
    thread.start()
    started.set()
    found = journal.wait_for(lambda e: e.kind is Kind.CLICK, timeout=10)
    thread.join()
    assert found is not None
    assert found.seq == 2


def test_wait_for_times_out() -> None:
    journal = Journal()
    journal.append(note())
    assert journal.wait_for(lambda e: e.kind is Kind.CLICK, timeout=0.05) is None


@pytest.mark.asyncio
async def test_wait_for_async_sees_entries_from_other_threads() -> None:
    journal = Journal()

    def append() -> None:
        journal.append(note("later"))

    loop = asyncio.get_running_loop()
    loop.call_later(0.05, lambda: threading.Thread(target=append).start())
    found = await journal.wait_for_async(lambda e: e.kind is Kind.NOTE, timeout=5)
    assert found is not None
    assert found.seq == 1


@pytest.mark.asyncio
async def test_wait_for_async_uses_the_first_finder() -> None:
    journal = Journal()
    old = journal.append(callback())
    asked: list[int] = []

    def first(since: int) -> Entry | None:
        asked.append(since)
        found = journal.callbacks(event="hardbounce", since=since, limit=1)
        return found[0] if found else None

    found = await journal.wait_for_async(lambda e: False, timeout=1, first=first)
    assert found == old
    assert asked == [0]


def test_listeners_get_every_entry_and_can_unsubscribe() -> None:
    journal = Journal()
    seen: list[int] = []
    remove = journal.subscribe(lambda e: seen.append(e.seq))
    journal.append(note())
    remove()
    journal.append(note())
    assert seen == [1]


def test_concurrent_appends_get_unique_consecutive_numbers() -> None:
    journal = Journal()

    def work() -> None:
        for _ in range(500):
            journal.append(note())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.seq for e in journal.entries()] == list(range(1, 4001))


# -- the file store --------------------------------------------------------------------------------


def test_open_journal_picks_the_store(tmp_path: Path) -> None:
    assert isinstance(open_journal(), MemoryJournal)
    assert isinstance(open_journal(":memory:"), MemoryJournal)
    with open_journal(tmp_path / "j.sqlite") as journal:
        assert isinstance(journal, SQLiteJournal)
        assert journal.durable


def test_a_file_journal_survives_reopening_and_never_reuses_numbers(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with SQLiteJournal(path) as journal:
        journal.append(callback())
        journal.append(note())
    with SQLiteJournal(path) as journal:
        assert [e.kind for e in journal.entries()] == [Kind.CALLBACK, Kind.NOTE]
        assert journal.count(Kind.CALLBACK) == 1
        assert journal.callbacks(address="a@example.com")[0].seq == 1
        journal.reset()
    with SQLiteJournal(path) as journal:
        assert journal.entries() == []
        # Numbering goes on after a reset and a restart: a poller holding since=2 sees seq 3.
        assert journal.append(note()).seq == 3


@pytest.mark.asyncio
async def test_file_appends_are_committed_together_at_the_end_of_the_loop_turn(
    tmp_path: Path,
) -> None:
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    seen: list[int] = []
    journal.subscribe(lambda e: seen.append(e.seq))
    entries = [journal.append(note(str(i))) for i in range(5)]
    # Not yet committed: readers and listeners do not see them.
    assert journal.last_seq == 0
    assert journal.entries() == []
    assert seen == []
    await asyncio.gather(*(journal.committed(e) for e in entries))
    assert journal.last_seq == 5
    assert seen == [1, 2, 3, 4, 5]
    other = sqlite3.connect(tmp_path / "j.sqlite")
    assert other.execute("SELECT count(*) FROM entries").fetchone()[0] == 5
    other.close()
    journal.close()


def test_appends_outside_an_event_loop_commit_at_once(tmp_path: Path) -> None:
    with SQLiteJournal(tmp_path / "j.sqlite") as journal:
        entry = journal.append(note())
        assert journal.last_seq == entry.seq


@pytest.mark.asyncio
async def test_a_full_disk_fails_the_write_and_answers_nothing_as_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    journal.append(note("before"))
    await asyncio.sleep(0)
    pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
    # SQLite's page limit fails a write exactly as a full disk does (SQLITE_FULL).
    journal._db.execute(f"PRAGMA max_page_count = {pages + 2}")
    big = Note(source="test", what="big", detail="x" * 200_000)
    with caplog.at_level(logging.ERROR, "harness.journal"):
        with pytest.raises(JournalWriteError, match="full"):
            journal.append(big)
        pending = journal.append(note("small"))
    assert journal.write_failures >= 1
    assert "not recorded" in caplog.text
    # The small one fits and is committed; the failed one left nothing behind.
    await journal.committed(pending)
    assert [e.data.what for e in journal.entries() if isinstance(e.data, Note)] == [
        "before",
        "small",
    ]
    journal.close()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
        (lambda p: p.write_text("not a database at all\n" * 100), "cannot be used as a journal"),
        (lambda p: p.mkdir(), "is a directory"),
        (
            lambda p: sqlite3.connect(p).execute("CREATE TABLE users (id)").connection.commit(),
            "not a harness journal",
        ),
    ],
    ids=["empty", "not-sqlite", "directory", "other-database"],
)
def test_unusable_files_are_refused_at_open(tmp_path: Path, setup: object, message: str) -> None:
    path = tmp_path / "j.sqlite"
    setup(path)  # type: ignore[operator]
    with pytest.raises(ConfigError, match=message) as info:
        SQLiteJournal(path)
    assert str(path) in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write read-only files")
def test_a_read_only_file_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    SQLiteJournal(path).close()
    path.chmod(0o444)
    with pytest.raises(ConfigError, match="not readable and writable"):
        SQLiteJournal(path)


def test_a_file_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be created"):
        SQLiteJournal(tmp_path / "missing" / "j.sqlite")


def test_a_journal_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    SQLiteJournal(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = 1 WHERE key = 'format'")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="journal format 1"):
        SQLiteJournal(path)

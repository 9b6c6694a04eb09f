"""Unit tests of harness.journal: numbering, reading, waiting, listeners, the SQLite store."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.journal import Entry, Journal, Kind, MemoryJournal, SQLiteJournal, open_journal


def test_entries_are_numbered_from_one_in_append_order() -> None:
    journal = Journal()
    first = journal.append(Kind.NOTE, {"n": 1}, at=10.0)
    second = journal.append(Kind.CALLBACK, {"n": 2}, at=11.0)
    assert first == Entry(1, Kind.NOTE, 10.0, {"n": 1})
    assert second == Entry(2, Kind.CALLBACK, 11.0, {"n": 2})
    assert journal.entries() == [first, second]
    assert list(journal) == [first, second]
    assert len(journal) == 2
    assert journal.last_seq == 2


def test_entries_by_kind_and_since() -> None:
    journal = Journal()
    a = journal.append(Kind.NOTE, {})
    b = journal.append(Kind.CALLBACK, {})
    c = journal.append(Kind.NOTE, {})
    assert journal.entries(Kind.NOTE) == [a, c]
    assert journal.entries(since=a.seq) == [b, c]
    assert journal.entries(Kind.NOTE, since=a.seq) == [c]
    assert journal.entries(since=c.seq) == []


def test_reset_forgets_entries_but_never_reuses_numbers() -> None:
    journal = Journal()
    journal.append(Kind.NOTE, {})
    journal.append(Kind.NOTE, {})
    journal.reset()
    assert journal.entries() == []
    assert journal.last_seq == 2
    assert journal.append(Kind.NOTE, {}).seq == 3


def test_entry_to_json() -> None:
    entry = Entry(7, Kind.SENT, 1.5, {"to": "a@example.com"})
    assert entry.to_json() == {
        "seq": 7,
        "kind": "sent",
        "at": 1.5,
        "data": {"to": "a@example.com"},
    }


def test_find() -> None:
    journal = Journal()
    journal.append(Kind.NOTE, {"x": 1})
    second = journal.append(Kind.NOTE, {"x": 2})
    assert journal.find(lambda e: e.data["x"] == 2) == second
    assert journal.find(lambda e: e.data["x"] == 1, since=1) is None


def test_wait_for_returns_an_entry_already_there() -> None:
    journal = Journal()
    entry = journal.append(Kind.CLICK, {})
    assert journal.wait_for(lambda e: e.kind is Kind.CLICK, timeout=0) == entry


def test_wait_for_wakes_up_on_an_append_from_another_thread() -> None:
    journal = Journal()
    started = threading.Event()

    def append_later() -> None:
        started.wait(10)
        journal.append(Kind.NOTE, {"skip": True})
        journal.append(Kind.DSN, {})

    writer = threading.Thread(target=append_later)
    writer.start()
    started.set()
    found = journal.wait_for(lambda e: e.kind is Kind.DSN, timeout=30)
    writer.join()
    assert found is not None
    assert found.kind is Kind.DSN
    assert found.seq == 2


def test_wait_for_gives_none_after_the_timeout() -> None:
    journal = Journal()
    journal.append(Kind.NOTE, {})
    assert journal.wait_for(lambda e: e.kind is Kind.DSN, timeout=0.01) is None


@pytest.mark.asyncio
async def test_wait_for_async_sees_an_append_made_while_waiting() -> None:
    journal = Journal()
    waiter = asyncio.ensure_future(journal.wait_for_async(lambda e: e.data.get("ok"), 30))
    for _ in range(1000):  # until subscribed: the waiter is then inside its wait
        if journal._listeners:
            break
        await asyncio.sleep(0)
    assert journal._listeners
    writer = threading.Thread(target=journal.append, args=(Kind.NOTE, {"ok": True}))
    writer.start()
    found = await waiter
    writer.join()
    assert found is not None
    assert found.data == {"ok": True}
    assert journal._listeners == []  # the subscription is removed


@pytest.mark.asyncio
async def test_wait_for_async_timeout_and_existing_entry() -> None:
    journal = Journal()
    assert await journal.wait_for_async(lambda e: True, 0.01) is None
    entry = journal.append(Kind.NOTE, {})
    assert await journal.wait_for_async(lambda e: True, 0) == entry
    assert await journal.wait_for_async(lambda e: True, 0.01, since=entry.seq) is None


def test_subscribe_and_unsubscribe() -> None:
    journal = Journal()
    seen: list[int] = []
    remove = journal.subscribe(lambda e: seen.append(e.seq))
    journal.append(Kind.NOTE, {})
    remove()
    journal.append(Kind.NOTE, {})
    assert seen == [1]


def test_concurrent_appends_get_unique_consecutive_numbers() -> None:
    journal = Journal()

    def writer() -> None:
        for _ in range(500):
            journal.append(Kind.NOTE, {})

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.seq for e in journal.entries()] == list(range(1, 4001))


def test_sqlite_journal_restores_entries_and_continues_numbering(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SQLiteJournal(path) as journal:
        journal.append(
            Kind.CALLBACK, {"events": [["softbounce", "a@example.com", 1, None]]}, at=5.0
        )
        journal.append(Kind.NOTE, {"text": "é"}, at=6.0)
    with SQLiteJournal(path) as reopened:
        assert reopened.entries() == [
            Entry(1, Kind.CALLBACK, 5.0, {"events": [["softbounce", "a@example.com", 1, None]]}),
            Entry(2, Kind.NOTE, 6.0, {"text": "é"}),
        ]
        assert reopened.append(Kind.NOTE, {}).seq == 3


def test_sqlite_reset_is_persisted(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SQLiteJournal(path) as journal:
        journal.append(Kind.NOTE, {})
        journal.reset()
        journal.append(Kind.NOTE, {})
    with SQLiteJournal(path) as reopened:
        assert [e.seq for e in reopened.entries()] == [2]


def test_a_file_that_is_not_sqlite_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not a database, just text long enough to have a header" * 10)
    with pytest.raises(ConfigError, match="cannot be used as an SQLite journal"):
        SQLiteJournal(path)


def test_close_twice_is_harmless(tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "j.db")
    journal.close()
    journal.close()


def test_open_journal(tmp_path: Path) -> None:
    assert type(open_journal()) is MemoryJournal
    assert type(open_journal(":memory:")) is MemoryJournal
    with open_journal(tmp_path / "j.db") as journal:
        assert isinstance(journal, SQLiteJournal)

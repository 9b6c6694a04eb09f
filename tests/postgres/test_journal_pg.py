"""PostgresJournal, method by method, against a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner

from harness.checks import Severity, Violation
from harness.cli import main
from harness.errors import ConfigError, JournalWriteError
from harness.journal import Entry, Kind, open_journal
from harness.journal_pg import PostgresJournal, redact
from harness.records import Callback, CallbackEvent, Note

pytestmark = pytest.mark.postgres


def note(what: str = "x") -> Note:
    return Note(source="test", what=what)


def callback(
    event: str = "hardbounce",
    email: str = "a@example.com",
    *,
    status: int | None = 200,
    endpoint: str = "bounce",
    violations: tuple[Violation, ...] = (),
) -> Callback:
    return Callback(
        endpoint=endpoint,
        path=f"/{endpoint}",
        body="[]",
        events=(CallbackEvent(event, email, 1700000000),),
        violations=violations,
        status=status,
    )


@pytest.fixture
def journal(pg_url: str) -> Iterator[PostgresJournal]:
    j = open_journal(pg_url)
    assert isinstance(j, PostgresJournal)
    yield j
    j.close()


@pytest.fixture
def other(pg_url: str, journal: PostgresJournal) -> Iterator[PostgresJournal]:
    """A second journal on the same database: what another process sees."""
    j = PostgresJournal(pg_url)
    yield j
    j.close()


def test_open_journal_picks_postgres_and_is_durable(journal: PostgresJournal) -> None:
    assert journal.durable
    assert journal.count() == 0
    assert journal.last_seq == 0
    assert journal.next_seq == 1


def test_append_numbers_from_one_and_reads_give_back_the_typed_record(
    journal: PostgresJournal, other: PostgresJournal
) -> None:
    first = journal.append(note("one"), at=10.0)
    second = journal.append(callback(), at=11.0)
    assert first == Entry(1, Kind.NOTE, 10.0, note("one"))
    assert second.seq == 2
    assert other.entries() == [first, second]
    assert other.get(2) == second
    assert other.get(3) is None
    assert other.entries(Kind.CALLBACK) == [second]
    assert other.entries(since=1) == [second]
    assert list(other) == [first, second]
    assert len(other) == 2
    assert other.count(Kind.NOTE) == 1
    assert other.count(Kind.CALLBACK) == 1
    assert other.last_seq == 2


def test_reads_in_chunks_see_every_entry(journal: PostgresJournal) -> None:
    async def fill() -> None:
        # One loop turn: one transaction for all of them.
        last = [journal.append(note(str(i))) for i in range(4500)][-1]
        await journal.committed(last)

    asyncio.run(fill())
    seen = [e.seq for e in journal.iter_entries()]
    assert seen == list(range(1, 4501))


def test_reset_forgets_entries_for_everyone_and_never_reuses_numbers(
    journal: PostgresJournal, other: PostgresJournal
) -> None:
    journal.append(note())
    journal.append(callback())
    other.reset()
    assert journal.entries() == []
    assert journal.count() == 0
    assert journal.callbacks() == []
    assert journal.append(note()).seq == 3
    assert other.last_seq == 3


def test_callbacks_filters_are_index_lookups_across_journals(
    journal: PostgresJournal, other: PostgresJournal
) -> None:
    bad = Violation("CT103", Severity.ERROR, "$[0].data[0].ts", "ts in ms", expected="ms", seen="s")
    a = journal.append(callback("hardbounce", "A@Example.com"))
    b = journal.append(callback("softbounce", "a@example.com", endpoint="v2"))
    c = journal.append(callback("hardbounce", "b@example.com", status=400, violations=(bad,)))
    assert other.callbacks(address="a@EXAMPLE.com") == [a, b]
    assert other.callbacks(event="hardbounce") == [a, c]
    assert other.callbacks(event="hardbounce", address="a@example.com") == [a]
    assert other.callbacks(endpoint="v2") == [b]
    assert other.callbacks(accepted=False) == [c]
    assert other.callbacks(code="CT103") == [c]
    assert other.callbacks(flagged=True) == [c]
    assert other.callbacks(since=a.seq, limit=1) == [b]


def test_about_reads_every_kind_about_an_address_across_journals(
    journal: PostgresJournal, other: PostgresJournal
) -> None:
    from tests.test_journal import mail_records

    seqs = [journal.append(r).seq for r in mail_records()]
    cb = journal.append(callback("hardbounce", "A@example.com")).seq
    journal.commit()
    about_a = [seqs[0], seqs[1], seqs[3], seqs[4], seqs[5], seqs[6], cb]
    assert [e.seq for e in other.about("a@example.COM")] == about_a
    assert [e.seq for e in other.about("a@example.com", kinds=[Kind.SMTP_REPLY])] == [seqs[1]]
    assert [e.seq for e in other.about("a@example.com", since=seqs[1], limit=2)] == about_a[2:4]
    other.reset()
    assert journal.about("a@example.com") == []


def test_a_database_written_before_the_address_index_is_indexed_when_opened(
    journal: PostgresJournal, pg_url: str
) -> None:
    from tests.test_journal import mail_records

    seqs = [journal.append(r).seq for r in mail_records()]
    journal.commit()
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("DELETE FROM harness_addresses")
        db.execute("DELETE FROM harness_meta WHERE key = 'address_index'")
    again = PostgresJournal(pg_url)
    try:
        assert [e.seq for e in again.about("b@example.com")] == [seqs[0], seqs[2], seqs[3]]
    finally:
        again.close()


def test_last_remembered_is_shared_between_journals(
    journal: PostgresJournal, other: PostgresJournal
) -> None:
    entry = journal.append(callback("hardbounce", "a@example.com"), at=100.0)
    journal.append(callback("hardbounce", "a@example.com", status=None), at=101.0)
    assert other.last_remembered("hardbounce", "A@example.com", after=50.0) == (100.0, entry.seq)
    assert other.last_remembered("hardbounce", "a@example.com", after=100.5) is None
    assert other.last_remembered("hardbounce", "a@example.com", after=0, since=entry.seq) is None
    assert other.last_remembered("softbounce", "a@example.com", after=0) is None


def test_find_and_wait_for_an_entry_already_there(
    journal: PostgresJournal, other: PostgresJournal
) -> None:
    journal.append(note("one"))
    two = journal.append(note("two"))
    assert other.find(lambda e: e.data == note("two")) == two
    assert other.find(lambda e: e.data == note("two"), since=two.seq) is None
    assert other.wait_for(lambda e: e.data == note("two"), 0.1) == two


def test_wait_for_wakes_on_an_append_by_another_journal(
    journal: PostgresJournal, other: PostgresJournal
) -> None:
    def later() -> None:
        time.sleep(0.2)
        journal.append(note("late"))

    thread = threading.Thread(target=later)
    started = time.monotonic()
    thread.start()
    found = other.wait_for(lambda e: e.data == note("late"), 10)
    thread.join()
    assert found is not None
    assert found.seq == 1
    assert time.monotonic() - started < 5


def test_wait_for_times_out(journal: PostgresJournal) -> None:
    started = time.monotonic()
    assert journal.wait_for(lambda e: True, 0.3) is None
    assert 0.25 < time.monotonic() - started < 3


@pytest.mark.asyncio
async def test_wait_for_async_sees_entries_of_another_journal(
    journal: PostgresJournal, other: PostgresJournal
) -> None:
    waiting = asyncio.create_task(other.wait_for_async(lambda e: e.data == note("b"), 10))
    await asyncio.sleep(0.1)
    await asyncio.to_thread(journal.append, note("a"))
    await asyncio.to_thread(journal.append, note("b"))
    found = await waiting
    assert found is not None
    assert found.seq == 2
    assert await other.wait_for_async(lambda e: e.data == note("c"), 0.2) is None


def test_subscribers_get_every_entry_of_every_journal_in_order(
    journal: PostgresJournal, other: PostgresJournal
) -> None:
    seen: list[int] = []
    done = threading.Event()

    def listener(entry: Entry) -> None:
        seen.append(entry.seq)
        if entry.seq == 20:
            done.set()

    remove = other.subscribe(listener)
    for i in range(10):
        journal.append(note(str(i)))
        other.append(note(str(i)))
    assert done.wait(10)
    assert seen == list(range(1, 21))
    remove()
    journal.append(note())
    time.sleep(0.3)
    assert seen == list(range(1, 21))


@pytest.mark.asyncio
async def test_appends_of_one_loop_turn_commit_together(
    journal: PostgresJournal, other: PostgresJournal
) -> None:
    a = journal.append(note("a"))
    b = journal.append(note("b"))
    assert other.entries() == []  # not committed before the end of this turn
    assert journal.last_seq == 0
    await journal.committed(b)
    await journal.committed(a)
    assert [e.seq for e in other.entries()] == [1, 2]


@pytest.mark.asyncio
async def test_next_seq_in_a_loop_reserves_the_number(
    journal: PostgresJournal, other: PostgresJournal
) -> None:
    reserved = journal.next_seq
    taken: list[Entry] = []
    # Another journal (process) cannot take the number: it waits for this turn's commit. The
    # test blocks its own loop on purpose, so that the turn lasts.
    thread = threading.Thread(target=lambda: taken.append(other.append(note("other"))))
    thread.start()
    thread.join(0.3)
    assert taken == []
    mine = journal.append(note("mine"))
    assert mine.seq == reserved
    await journal.committed(mine)
    await asyncio.to_thread(thread.join, 10)
    assert [e.seq for e in taken] == [reserved + 1]


def test_next_seq_outside_a_loop_is_the_next_free_number(journal: PostgresJournal) -> None:
    journal.append(note())
    assert journal.next_seq == 2
    assert journal.append(note()).seq == 2


@pytest.mark.asyncio
async def test_a_lost_connection_fails_the_commit_and_the_next_append_reconnects(
    journal: PostgresJournal, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    entry = journal.append(note("doomed"))
    pid = journal._wdb.info.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with caplog.at_level(logging.ERROR, "harness.journal"), pytest.raises(JournalWriteError):
        await journal.committed(entry)
    assert journal.write_failures == 1
    assert "not recorded" in caplog.text
    assert journal.entries() == []
    # The group never reached the server, so its numbers are free again: nothing recorded or
    # answered carries them.
    again = journal.append(note("after"))
    await journal.committed(again)
    assert [e.data for e in journal.entries()] == [note("after")]


def test_an_unreachable_server_is_refused_with_the_url_and_no_password() -> None:
    url = "postgresql://me:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(ConfigError, match=r"me@127\.0\.0\.1:1/nowhere cannot be ") as info:
        open_journal(url)
    assert "s3cret" not in str(info.value)
    assert redact(url) == "postgresql://me@127.0.0.1:1/nowhere"


def test_a_url_of_an_unknown_scheme_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"no journal store for redis:// URLs \(known: "):
        open_journal("redis://127.0.0.1/0")


def test_serve_refuses_an_unreachable_journal_with_exit_2() -> None:
    url = "postgresql://me@127.0.0.1:1/nowhere"
    result = CliRunner().invoke(main, ["serve", "--journal", url])
    assert result.exit_code == 2
    assert "PostgreSQL journal postgresql://me@127.0.0.1:1/nowhere cannot be reached" in (
        result.output
    )


def test_a_database_with_other_harness_tables_is_refused(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE harness_entries (x int)")
    with pytest.raises(ConfigError, match="not a harness journal"):
        open_journal(pg_url)


def test_a_journal_of_another_layout_is_refused(journal: PostgresJournal, pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE harness_meta SET value = '99' WHERE key = 'format'")
    with pytest.raises(ConfigError, match="layout 99"):
        open_journal(pg_url)


def test_close_commits_and_stops_the_listener(pg_url: str) -> None:
    j = PostgresJournal(pg_url)
    j.append(note())
    j.close()
    j.close()  # twice is harmless
    assert not j._thread.is_alive()
    with pytest.raises(JournalWriteError, match="closed"):
        j.append(note())
    with PostgresJournal(pg_url) as again:
        assert again.count() == 1


def test_an_append_after_the_connection_was_lost_while_idle_reconnects(
    journal: PostgresJournal, pg_url: str
) -> None:
    journal.append(note("before"))
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (journal._wdb.info.backend_pid,))
    # Nothing of the new group had been sent: the append takes a new connection and succeeds.
    assert journal.append(note("after")).seq == 2
    assert journal.write_failures == 0
    assert [e.data for e in journal.entries()] == [note("before"), note("after")]


def test_waits_survive_a_lost_listener_connection(
    journal: PostgresJournal, other: PostgresJournal, pg_url: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (other._ldb.info.backend_pid,))
    time.sleep(0.5)  # the listener notices, waits a little, listens on a new connection

    def later() -> None:
        time.sleep(0.5)
        journal.append(note("late"))

    thread = threading.Thread(target=later)
    thread.start()
    found = other.wait_for(lambda e: e.data == note("late"), 10)
    thread.join()
    assert found is not None
    assert other._thread.is_alive()


@pytest.mark.asyncio
async def test_last_remembered_sees_this_turns_callbacks_before_they_commit(
    journal: PostgresJournal,
) -> None:
    # Two identical callbacks handled in one loop turn: the second is still a duplicate.
    entry = journal.append(callback("hardbounce", "a@example.com"), at=100.0)
    assert journal.last_remembered("hardbounce", "a@example.com", after=50.0) == (100.0, 1)
    assert journal.last_remembered("hardbounce", "a@example.com", after=100.5) is None
    await journal.committed(entry)
    assert journal.last_remembered("hardbounce", "a@example.com", after=50.0) == (100.0, 1)


@pytest.mark.asyncio
async def test_a_lookup_in_a_loop_holds_the_order_lock_until_the_turn_ends(
    journal: PostgresJournal, other: PostgresJournal
) -> None:
    # While this turn looks up and appends, another process cannot slip a callback in between
    # (it would be numbered after this one and see it).
    assert journal.last_remembered("hardbounce", "a@example.com", after=0) is None
    taken: list[Entry] = []
    thread = threading.Thread(target=lambda: taken.append(other.append(callback())))
    thread.start()
    thread.join(0.3)
    assert taken == []
    mine = journal.append(callback())
    await journal.committed(mine)
    await asyncio.to_thread(thread.join, 10)
    assert other.last_remembered("hardbounce", "a@example.com", after=0) == (
        taken[0].at,
        taken[0].seq,
    )
    assert taken[0].seq == mine.seq + 1

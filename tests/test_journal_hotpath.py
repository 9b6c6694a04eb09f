"""The memory journal's callback hot path: appends written in one batch per loop turn, the
filter of indexed addresses that spares new addresses the duplicate query, the address-key
cache. What readers see must not change: every entry from its append on, every duplicate."""

from __future__ import annotations

import asyncio
import time

import pytest

from harness import journal as journal_module
from harness.journal import (
    Journal,
    Kind,
    MemoryJournal,
    address_index_key,
    process_address_key,
)
from harness.records import Callback, CallbackEvent, FaultHit, Note

NOW = time.time()


def callback(*emails: str, remembered: bool = True) -> Callback:
    fault = None if remembered else FaultHit(rule=0, action="status", spec="503")
    return Callback(
        endpoint="bounce",
        path="/callbacks/bounce",
        body="[]",
        events=tuple(CallbackEvent("hardbounce", e, 1700000000) for e in emails),
        status=200 if remembered else 503,
        fault=fault,
    )


@pytest.mark.asyncio
async def test_every_read_sees_an_entry_from_its_append_on_within_one_loop_turn() -> None:
    journal = MemoryJournal()
    first = journal.append(callback("a@example.com"), at=NOW)
    # No await since: the batch is not written yet, and each read writes it first.
    assert journal.get(first.seq) == first
    second = journal.append(Note(source="test", what="x"))
    assert journal.entries() == [first, second]
    third = journal.append(callback("B@example.com"), at=NOW)
    assert [e.seq for e in journal.callbacks(address="b@example.com")] == [third.seq]
    fourth = journal.append(callback("a@example.com"), at=NOW + 1)
    assert journal.last_remembered("hardbounce", "a@example.com", after=0) == (NOW + 1, fourth.seq)
    await asyncio.sleep(0)  # the turn ends: what is left is written by the commit
    fifth = journal.append(callback("c@example.com"), at=NOW)
    await asyncio.sleep(0)
    assert [e.seq for e in journal.entries(Kind.CALLBACK)] == [1, 3, 4, 5]
    assert fifth.seq == 5
    assert journal.count(Kind.CALLBACK) == 4


def test_addresses_never_indexed_skip_the_query_and_indexed_ones_never_do() -> None:
    journal = MemoryJournal()
    indexed = [f"user{i}@example.com" for i in range(20_000)]
    for start in range(0, len(indexed), 2):
        journal.append(callback(*indexed[start : start + 2]), at=NOW)
    # A Bloom filter: never a false "never seen" (duplicates would be missed) ...
    assert not any(journal._never_seen(journal._address_key(a)) for a in indexed)
    assert journal.last_remembered("hardbounce", indexed[-1], after=0) is not None
    # ... and few false "maybe" (each costs one query) at this size.
    unseen = [f"other{i}@example.org" for i in range(20_000)]
    maybe = sum(not journal._never_seen(journal._address_key(a)) for a in unseen)
    assert maybe < 200
    assert all(journal.last_remembered("hardbounce", a, after=0) is None for a in unseen[:500])


def test_the_filter_answers_few_false_maybes_at_200_000_addresses() -> None:
    # docs/journal.md quotes about 0.6% at this size (and more at 1M and 2M, from a simulation).
    seen = bytearray(journal_module._SEEN_BYTES)
    for i in range(200_000):
        index, bits = journal_module._seen_slot(process_address_key(f"user{i}@example.com"))
        seen[index] |= bits
    slots = (
        journal_module._seen_slot(process_address_key(f"other{i}@example.org"))
        for i in range(50_000)
    )
    false_maybes = sum(seen[index] & bits == bits for index, bits in slots)
    assert false_maybes / 50_000 < 0.01


def test_reset_forgets_the_filter_and_faulted_callbacks_never_enter_it() -> None:
    journal = MemoryJournal()
    journal.append(callback("kept@example.com"), at=NOW)
    journal.append(callback("faulted@example.com", remembered=False), at=NOW)
    assert not journal._never_seen(journal._address_key("kept@example.com"))
    assert journal._never_seen(journal._address_key("faulted@example.com"))
    assert journal.last_remembered("hardbounce", "faulted@example.com", after=0) is None
    journal.reset()
    assert journal._never_seen(journal._address_key("kept@example.com"))
    journal.append(callback("kept@example.com"), at=NOW)
    assert journal.last_remembered("hardbounce", "kept@example.com", after=0) is not None


def test_a_file_journal_filters_too_with_the_events_written_before_it_was_opened(
    tmp_path: object,
) -> None:
    # A file may hold events written before this process opened it (a restart): they are read
    # into the filter at the first lookup, so a duplicate across the restart is still found.
    path = f"{tmp_path}/j.sqlite"
    with Journal(path) as journal:
        # A file outlives the process: its keys are the stable ones, not the process's hash.
        assert journal._address_key is address_index_key
        before = journal.append(callback("x@example.com"), at=NOW)
        journal.append(callback("faulted@example.com", remembered=False), at=NOW)
    with Journal(path) as journal:
        assert journal._never_seen(journal._address_key("never@example.com"))
        assert not journal._never_seen(journal._address_key("x@example.com"))
        # Not remembered (a faulted request): not in the filter, not a duplicate.
        assert journal._never_seen(journal._address_key("faulted@example.com"))
        hits = journal.remembered_many(
            [("hardbounce", "x@example.com"), ("hardbounce", "new@example.com")], after=0
        )
        assert hits == {("hardbounce", "x@example.com"): (NOW, before.seq)}
        # And what this process appends goes into the filter as it is written.
        later = journal.append(callback("new@example.com"), at=NOW + 1)
        assert journal.last_remembered("hardbounce", "new@example.com", after=0) == (
            NOW + 1,
            later.seq,
        )


def test_the_address_key_cache_is_bounded_and_keys_follow_the_address_rules() -> None:
    for i in range(journal_module._ADDRESS_KEYS_MAX * 2 + 7):
        address_index_key(f"k{i}@example.com")
    assert len(journal_module._ADDRESS_KEYS) <= journal_module._ADDRESS_KEYS_MAX
    # The same key as an address that compares equal (the domain's case does not matter).
    assert address_index_key("Someone@EXAMPLE.com") == address_index_key("Someone@example.com")


def test_the_memory_store_keys_addresses_by_the_process_hash_with_the_address_rules() -> None:
    journal = MemoryJournal()
    assert journal._address_key is process_address_key
    assert process_address_key("Someone@EXAMPLE.com") == process_address_key("someone@example.com")
    journal.append(callback("Someone@EXAMPLE.com"), at=NOW)
    # Every read that keys an address keys it the same way: filter, index, address reads.
    assert not journal._never_seen(process_address_key("someone@example.com"))
    assert journal.last_remembered("hardbounce", "SOMEONE@example.com", after=0) is not None
    assert [e.seq for e in journal.callbacks(address="someone@Example.com")] == [1]
    assert [e.seq for e in journal.about("someone@example.COM")] == [1]


@pytest.mark.asyncio
async def test_the_memory_store_writes_in_batches_and_readers_never_wait_for_one() -> None:
    journal = MemoryJournal()
    few = [journal.append(callback(f"f{i}@example.com"), at=NOW) for i in range(3)]
    await asyncio.sleep(0)  # a turn ends with less than a batch: it stays pending...
    assert len(journal._unflushed) == 3
    # ... and every read writes it first.
    assert [e.seq for e in journal.callbacks(address="f1@example.com")] == [few[1].seq]
    assert journal._unflushed == []
    for i in range(journal_module._MEMORY_BATCH):
        journal.append(callback(f"m{i}@example.com"), at=NOW)
    await asyncio.sleep(0)  # a turn that fills a batch writes it at its end
    assert journal._unflushed == []
    assert journal.count(Kind.CALLBACK) == 3 + journal_module._MEMORY_BATCH

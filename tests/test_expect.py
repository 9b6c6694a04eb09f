"""The assertion helpers of harness.expect, against a real fake CleverTap on 127.0.0.1."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from harness.checks import Severity, Violation
from harness.clevertap.faults import parse_fault
from harness.clevertap.server import CleverTapServer
from harness.clevertap.settings import ServerSettings
from harness.errors import ConfigError, ExpectationError, UnknownNameError
from harness.expect import (
    expect_callback,
    expect_callback_async,
    expect_no_callbacks,
    expect_no_callbacks_async,
    expect_no_violations,
    violations,
)
from harness.journal import Entry, Kind, MemoryJournal
from harness.records import Callback, CallbackEvent, ViolationFound

NOW = int(time.time())


def legacy(event: str, *emails: str, ts: int = NOW) -> bytes:
    return json.dumps([{"event": event, "data": [{"e": e, "ts": ts} for e in emails]}]).encode()


@pytest.fixture(scope="module")
def server() -> Iterator[CleverTapServer]:
    with CleverTapServer() as ct:
        yield ct


@pytest.fixture
def ct(server: CleverTapServer) -> Iterator[CleverTapServer]:
    server.reset()
    yield server
    server.set_faults()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, headers={"content-type": "application/json"}) as c:
        yield c


def callback(entry: Entry) -> Callback:
    assert isinstance(entry.data, Callback), entry
    return entry.data


def post(client: httpx.Client, url: str, body: bytes) -> int:
    return client.post(url, content=body).status_code


def post_later(url: str, body: bytes, delay: float) -> threading.Thread:
    """Post from another thread once *delay* has passed (the waiter is already waiting)."""

    def run() -> None:
        time.sleep(delay)
        with httpx.Client(timeout=10) as c:
            c.post(url, content=body, headers={"content-type": "application/json"})

    thread = threading.Thread(target=run)
    thread.start()
    return thread


# -- expect_callback ---------------------------------------------------------------------------


def test_a_callback_already_journaled_satisfies_at_once(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    assert post(client, ct.urls.bounce, legacy("hardbounce", "gone@example.com")) == 200
    entry = expect_callback(ct.journal, "hardbounce", "gone@example.com", within=0)
    assert entry.kind is Kind.CALLBACK
    assert callback(entry).events == (CallbackEvent("hardbounce", "gone@example.com", NOW, None),)


def test_a_callback_arriving_during_the_wait_satisfies_it(ct: CleverTapServer) -> None:
    thread = post_later(ct.urls.bounce, legacy("softbounce", "full@example.com"), 0.2)
    try:
        entry = expect_callback(ct.journal, "softbounce", "full@example.com", within=10)
    finally:
        thread.join()
    assert entry.seq == ct.journal.last_seq
    assert callback(entry).status == 200


def test_addresses_compare_case_insensitively(ct: CleverTapServer, client: httpx.Client) -> None:
    post(client, ct.urls.bounce, legacy("hardbounce", "Gone@Example.COM"))
    entry = expect_callback(ct.journal, "hardbounce", "gone@example.com", within=0)
    assert callback(entry).events[0].email == "Gone@Example.COM"


def test_the_failure_reads_like_a_diff_nearest_first(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    s = ct.journal.last_seq
    post(
        client, ct.urls.bounce, legacy("softbounce", "gone@example.com")
    )  # reset() keeps numbering: the five posts are s + 1 ... s + 5
    post(client, ct.urls.bounce, legacy("hardbounce", "gone@example.com", ts=NOW * 1000))  # 2
    post(client, ct.urls.bounce, legacy("hardbounce", "gane@example.com"))  # 3
    post(client, ct.urls.bounce, legacy("hardbounce", "zzz@other.test"))  # 4
    post(client, ct.urls.bounce, b"[{")  # 5
    with pytest.raises(ExpectationError) as info:
        expect_callback(ct.journal, "hardbounce", "gone@example.com", within=0.05)
    seconds = f"{NOW} s ({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(NOW))})"
    assert str(info.value).splitlines() == [
        "expected a hardbounce callback for gone@example.com within 0.05 s (journal after seq 0)",
        "arrived: 5 callbacks, nearest first:",
        f"  seq {s + 2:<4} bounce 400  hardbounce gone@example.com ts={NOW * 1000}"
        "  <- not accepted: 400",
        f"  seq {s + 1:<4} bounce 200  softbounce gone@example.com ts={NOW}"
        "  <- same address, other event",
        f"  seq {s + 3:<4} bounce 200  hardbounce gane@example.com ts={NOW}"
        "  <- same event, other address",
        f"  seq {s + 4:<4} bounce 200  hardbounce zzz@other.test ts={NOW}"
        "  <- same event, other address",
        f"  seq {s + 5:<4} bounce 400  no event could be read",
        "checks that fired:",
        f"  seq {s + 2:<4} error   CT303  $[0].data[0].ts  ts looks like milliseconds: "
        f"{NOW * 1000} is {seconds} (expected epoch seconds, seen {NOW * 1000})",
        f"  seq {s + 5:<4} error   CT101  $  body is not JSON: Expecting property name enclosed in "
        "double quotes: line 1 column 3 (char 2) (expected JSON, seen '[{')",
    ]
    assert isinstance(info.value, AssertionError)


def test_nothing_arrived_says_so(ct: CleverTapServer) -> None:
    with pytest.raises(ExpectationError) as info:
        expect_callback(ct.journal, "unsubscribe", "a@example.com", within=0)
    assert str(info.value) == (
        "expected a unsubscribe callback for a@example.com within 0 s (journal after seq 0)\n"
        "arrived: no callbacks at all"
    )


def test_long_candidate_lists_are_clipped(ct: CleverTapServer, client: httpx.Client) -> None:
    emails = [f"user{i}@example.com" for i in range(12)]
    post(client, ct.urls.bounce, legacy("softbounce", *emails))
    with pytest.raises(ExpectationError) as info:
        expect_callback(ct.journal, "hardbounce", "user1@example.com", within=0)
    lines = str(info.value).splitlines()
    assert lines[2].endswith(f"softbounce user1@example.com ts={NOW}  <- same address, other event")
    assert lines[-1] == "  ... and 4 more"
    assert len(lines) == 2 + 8 + 1


def test_a_rejected_callback_does_not_count_but_a_lenient_server_accepts_it(
    client: httpx.Client,
) -> None:
    body = legacy("hardbounce", "gone@example.com", ts=NOW * 1000)
    for strict, status in ((True, 400), (False, 200)):
        with CleverTapServer(ServerSettings(strict=strict)) as ct:
            assert post(client, ct.urls.bounce, body) == status
            if strict:
                with pytest.raises(ExpectationError, match="not accepted: 400"):
                    expect_callback(ct.journal, "hardbounce", "gone@example.com", within=0)
            else:
                entry = expect_callback(ct.journal, "hardbounce", "gone@example.com", within=0)
                assert callback(entry).codes == ("CT303",)


def test_a_faulted_callback_does_not_count_and_the_retry_does(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    ct.set_faults(parse_fault("503,first=1"))
    body = legacy("hardbounce", "gone@example.com")
    assert post(client, ct.urls.bounce, body) == 503
    with pytest.raises(ExpectationError) as info:
        expect_callback(ct.journal, "hardbounce", "gone@example.com", within=0)
    assert "  <- not accepted: 503 (fault 503,first=1)" in str(info.value)
    assert post(client, ct.urls.bounce, body) == 200
    entry = expect_callback(ct.journal, "hardbounce", "gone@example.com", within=0)
    assert callback(entry).status == 200
    assert callback(entry).fault is None


def test_ts_window(ct: CleverTapServer, client: httpx.Client) -> None:
    post(client, ct.urls.bounce, legacy("hardbounce", "gone@example.com", ts=NOW - 100))
    entry = expect_callback(
        ct.journal, "hardbounce", "gone@example.com", within=0, ts=(NOW - 100, NOW)
    )
    assert callback(entry).events[0].ts == NOW - 100
    with pytest.raises(ExpectationError) as info:
        expect_callback(ct.journal, "hardbounce", "gone@example.com", within=0, ts=(NOW - 10, NOW))
    lines = str(info.value).splitlines()
    assert lines[0] == (
        f"expected a hardbounce callback for gone@example.com with ts in [{NOW - 10}, {NOW}] "
        "within 0 s (journal after seq 0)"
    )
    assert lines[2].endswith(f"  <- ts {NOW - 100} outside [{NOW - 10}, {NOW}]")


def test_since_skips_older_entries(ct: CleverTapServer, client: httpx.Client) -> None:
    post(client, ct.urls.bounce, legacy("hardbounce", "gone@example.com"))
    mark = ct.journal.last_seq
    with pytest.raises(
        ExpectationError, match=rf"after seq {mark}\)\narrived: no callbacks at all"
    ):
        expect_callback(ct.journal, "hardbounce", "gone@example.com", within=0, since=mark)
    post(client, ct.urls.bounce, legacy("hardbounce", "gone@example.com"))
    entry = expect_callback(ct.journal, "hardbounce", "gone@example.com", within=0, since=mark)
    assert entry.seq == mark + 1


def test_v2_callbacks_are_matched_by_type(ct: CleverTapServer, client: httpx.Client) -> None:
    body = json.dumps(
        {
            "version": "v2",
            "events": {"failed": [{"type": "hard_bounce", "email": "b@y.test", "meta": "m|1"}]},
        }
    ).encode()
    assert post(client, ct.urls.v2, body) == 200
    entry = expect_callback(ct.journal, "hard_bounce", "b@y.test", within=0)
    assert callback(entry).events == (CallbackEvent("hard_bounce", "b@y.test", None, "m|1"),)
    with pytest.raises(ExpectationError) as info:
        expect_callback(ct.journal, "soft_bounce", "b@y.test", within=0)
    assert str(info.value).splitlines()[2] == (
        f"  seq {entry.seq:<4} v2 200  hard_bounce b@y.test meta='m|1'"
        "  <- same address, other event"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"event": "hard-bounce"}, UnknownNameError, "did you mean 'hardbounce' or 'hard_bounce'"),
        ({"email": ""}, ConfigError, "email must be a non-empty address, got ''"),
        ({"within": -1}, ConfigError, "within must be 0 or more seconds, got -1"),
        ({"within": float("nan")}, ConfigError, "within must be a number of seconds, got nan"),
        ({"since": -2}, ConfigError, r"since must be a journal seq \(an int >= 0\), got -2"),
        ({"ts": (5, 1)}, ConfigError, r"ts must be a \(low, high\) pair.*got \(5, 1\)"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], error: type, message: str) -> None:
    args: dict[str, object] = {"event": "hardbounce", "email": "a@example.com", "within": 0}
    args.update(kwargs)
    with pytest.raises(error, match=message):
        expect_callback(MemoryJournal(), **args)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_async_wait_does_not_block_the_loop_serving_the_callback() -> None:
    # Server and client share this event loop: a blocking wait would starve the server.
    async with CleverTapServer() as ct, httpx.AsyncClient(timeout=10) as client:
        import asyncio

        async def later() -> int:
            await asyncio.sleep(0.1)
            answer = await client.post(
                ct.urls.bounce,
                content=legacy("hardbounce", "gone@example.com"),
                headers={"content-type": "application/json"},
            )
            return answer.status_code

        sender = asyncio.ensure_future(later())
        entry = await expect_callback_async(ct.journal, "hardbounce", "gone@example.com", within=10)
        assert await sender == 200
        first = callback(entry).events[0]
        assert (first.event, first.email) == ("hardbounce", "gone@example.com")
        with pytest.raises(ExpectationError, match="same address, other event"):
            await expect_callback_async(ct.journal, "softbounce", "gone@example.com", within=0.05)
        await expect_no_callbacks_async(ct.journal, since=entry.seq, within=0.05)
        with pytest.raises(ExpectationError, match="expected no callbacks with email=gone"):
            await expect_no_callbacks_async(ct.journal, email="gone@example.com")


# -- expect_no_callbacks -----------------------------------------------------------------------


def test_no_callbacks_passes_on_a_quiet_journal(ct: CleverTapServer) -> None:
    expect_no_callbacks(ct.journal)
    expect_no_callbacks(ct.journal, within=0.05)


def test_no_callbacks_lists_what_arrived(ct: CleverTapServer, client: httpx.Client) -> None:
    s = ct.journal.last_seq
    post(client, ct.urls.bounce, legacy("hardbounce", "gone@example.com", "ok@example.com"))
    post(client, ct.urls.bounce, b"")
    with pytest.raises(ExpectationError) as info:
        expect_no_callbacks(ct.journal)
    assert str(info.value).splitlines()[:5] == [
        "expected no callbacks after seq 0",
        "arrived: 2 callbacks:",
        f"  seq {s + 1:<4} bounce 200  hardbounce gone@example.com ts={NOW}",
        f"  seq {s + 1:<4} bounce 200  hardbounce ok@example.com ts={NOW}",
        f"  seq {s + 2:<4} bounce 400  no event could be read",
    ]


def test_no_callbacks_filters_by_event_and_address(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    s = ct.journal.last_seq
    post(client, ct.urls.bounce, legacy("softbounce", "full@example.com"))
    expect_no_callbacks(ct.journal, email="ok@example.com")
    expect_no_callbacks(ct.journal, event="hardbounce")
    expect_no_callbacks(ct.journal, event="hardbounce", email="full@example.com")
    with pytest.raises(ExpectationError) as info:
        expect_no_callbacks(ct.journal, event="softbounce", email="FULL@example.com", within=1)
    assert str(info.value).splitlines() == [
        "expected no callbacks with event=softbounce email=FULL@example.com after seq 0 "
        "(waited up to 1 s)",
        "arrived: 1 callback:",
        f"  seq {s + 1:<4} bounce 200  softbounce full@example.com ts={NOW}",
    ]


def test_no_callbacks_catches_one_arriving_during_the_wait(ct: CleverTapServer) -> None:
    thread = post_later(ct.urls.bounce, legacy("hardbounce", "late@example.com"), 0.2)
    try:
        with pytest.raises(ExpectationError, match=r"hardbounce late@example\.com"):
            expect_no_callbacks(ct.journal, within=10)
    finally:
        thread.join()


# -- violations --------------------------------------------------------------------------------


def test_violations_carry_the_callback_seq_as_evidence(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    s = ct.journal.last_seq
    body = legacy("hardbounce", "gone@example.com")
    post(client, ct.urls.bounce, body)
    post(client, ct.urls.bounce, body)  # CT402, a warning pointing back at the first
    post(client, ct.urls.bounce, legacy("hardbounce", "a@@example.com"))
    found = violations(ct.journal)
    assert [(v.code, v.evidence) for v in found] == [("CT402", (s + 2, s + 1)), ("CT301", (s + 3,))]
    assert violations(ct.journal, since=s + 2) == found[1:]


def test_no_violations_counts_errors_by_default(ct: CleverTapServer, client: httpx.Client) -> None:
    s = ct.journal.last_seq
    body = legacy("hardbounce", "gone@example.com")
    post(client, ct.urls.bounce, body)
    post(client, ct.urls.bounce, body)
    expect_no_violations(ct.journal)
    with pytest.raises(ExpectationError) as info:
        expect_no_violations(ct.journal, severity=Severity.WARNING)
    lines = str(info.value).splitlines()
    assert lines[:2] == ["expected no violations (errors or warnings) after seq 0", "found 1:"]
    # The seq column is padded to a width: one space or more, by how many digits it has.
    assert re.match(
        rf"  seq {s + 2},{s + 1} +warning CT402  \$\[0\]\.data\[0\]  hardbounce for gone@",
        lines[2],
    ), lines[2]
    expect_no_violations(ct.journal, severity=Severity.WARNING, allow=["CT402"])


def test_no_violations_lists_errors_with_allowances(
    ct: CleverTapServer, client: httpx.Client
) -> None:
    s = ct.journal.last_seq
    post(client, ct.urls.bounce, legacy("hardbounce", "a@@example.com"))
    post(client, ct.urls.bounce, legacy("hardbounce", "b@example.com", ts=NOW * 1000))
    expect_no_violations(ct.journal, allow=["CT301", "CT303"])
    with pytest.raises(ExpectationError) as info:
        expect_no_violations(ct.journal, allow=["CT301"])
    lines = str(info.value).splitlines()
    assert lines[:2] == ["expected no violations (errors) after seq 0, allowing CT301", "found 1:"]
    assert lines[2].startswith(f"  seq {s + 2:<4} error   CT303  $[0].data[0].ts  ts looks like mi")
    expect_no_violations(ct.journal, since=s + 2)


def test_cross_check_violations_from_the_journal_count() -> None:
    journal = MemoryJournal()
    cross = Violation(
        "CT501", Severity.ERROR, "mx:a@example.com", "hard bounce without a failure", "x", "y"
    )
    # Without evidence of its own, a cross-check violation points at its own entry.
    journal.append(ViolationFound(violation=cross))
    with_evidence = Violation("CT502", Severity.WARNING, "$", "w", evidence=(1,))
    journal.append(ViolationFound(violation=with_evidence, source="crosscheck", scenario="s"))
    assert [(v.code, v.evidence) for v in violations(journal)] == [("CT501", (1,)), ("CT502", (1,))]
    with pytest.raises(ExpectationError, match=r"CT501  mx:a@example\.com  hard bounce"):
        expect_no_violations(journal)
    expect_no_violations(journal, allow=["CT501"])


@pytest.mark.parametrize(
    ("allow", "message"),
    [
        ("CT301", "allow must be a list of check codes, not the string 'CT301'"),
        (["CT3O1"], "allow: 'CT3O1' is not a check code like 'CT301'"),
        (["CT399"], "unknown check code 'CT399'"),
    ],
)
def test_bad_allow_is_named(allow: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        expect_no_violations(MemoryJournal(), allow=allow)  # type: ignore[arg-type]

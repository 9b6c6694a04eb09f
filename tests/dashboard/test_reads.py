"""The dashboard's journal reads: pages that neither skip nor repeat, and stay fast at 100k."""

from __future__ import annotations

import time

import msgspec
import pytest

from harness.checks import Severity, Violation
from harness.dashboard.reads import Filter, page, story
from harness.dashboard.views import payload_html, transcript
from harness.journal import Journal, MemoryJournal
from harness.records import (
    Callback,
    CallbackEvent,
    Dsn,
    DsnRecipient,
    Kind,
    SmtpClose,
    SmtpReply,
    TranscriptLine,
)


def fill(journal: Journal, n: int) -> None:
    """*n* entries: mostly callbacks for 1000 addresses, SMTP replies, a DSN every 1000."""
    for i in range(n):
        address = f"user{i % 1000}@example.com"
        if i % 1000 == 999:
            journal.append(
                Dsn(to="bounces@brand.test", recipients=(DsnRecipient(address, "failed", "5.1.1"),))
            )
        elif i % 3 == 0:
            journal.append(
                SmtpReply(
                    host="mx",
                    session=f"mx-{i}",
                    recipient=address,
                    sender="news@brand.test",
                    stage="rcpt",
                    code=250,
                    enhanced="2.1.5",
                    reply="250 2.1.5 Ok",
                )
            )
        else:
            flagged = i % 10 == 1
            journal.append(
                Callback(
                    endpoint="bounce",
                    path="/callbacks/bounce",
                    status=200,
                    events=(CallbackEvent("hardbounce" if i % 2 else "softbounce", address, 1),),
                    violations=(Violation("CT303", Severity.ERROR, "$[0].data[0].ts", "ms"),)
                    if flagged
                    else (),
                )
            )


FILTERS = {
    "everything": Filter(),
    "kind dsn (rare)": Filter(kind=Kind.DSN),
    "kind smtp_reply": Filter(kind=Kind.SMTP_REPLY),
    "recipient, callbacks": Filter(kind=Kind.CALLBACK, address="USER7@example.com"),
    "recipient, every kind": Filter(address="user7@example.com"),
    "event": Filter(event="softbounce"),
    "check code": Filter(kind=Kind.CALLBACK, code="CT303"),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_pages_walk_back_without_gaps_or_repeats(name: str) -> None:
    journal = MemoryJournal()
    fill(journal, 5000)
    flt = FILTERS[name]
    expected = [e.seq for e in journal.iter_entries() if flt.matches(e)][::-1]
    seen: list[int] = []
    before = None
    while True:
        found = page(journal, flt, before=before, limit=37)
        seen += [e.seq for e in found.entries]
        if found.older is None:
            break
        assert found.entries or found.scanned_to < (before or 10**9), "a page must make progress"
        before = found.older
    assert seen == expected


@pytest.mark.slow
def test_a_page_is_fast_at_100k_entries(capsys: pytest.CaptureFixture[str]) -> None:
    journal = MemoryJournal()
    fill(journal, 100_000)
    worst = 0.0
    lines = []
    for name, flt in FILTERS.items():
        start = time.perf_counter()
        found = page(journal, flt, limit=100)
        took = time.perf_counter() - start
        worst = max(worst, took)
        lines.append(f"{name:24} {len(found.entries):4} entries  {took * 1000:7.1f} ms")
        assert found.entries, name
    start = time.perf_counter()
    told = story(journal, "user7@example.com")
    lines.append(
        f"{'story of a recipient':24} {len(told.callbacks):4} callbacks "
        f"{(time.perf_counter() - start) * 1000:7.1f} ms"
    )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    # A generous bound for a shared 2-core machine; typical figures are in docs/dashboard.md.
    assert worst < 1.0


def test_a_recipient_across_every_kind_is_found_through_the_index_not_a_walk() -> None:
    # The reply about rare@ lies 30,000 entries back, past what a page may check one by one
    # (the scan budget): the address index finds it on the first page all the same.
    journal = MemoryJournal()
    old = journal.append(
        SmtpReply(
            host="mx",
            session="mx-0",
            recipient="Rare@example.com",
            sender="news@brand.test",
            stage="rcpt",
            code=550,
            enhanced="5.1.1",
            reply="550 5.1.1 no such user",
        )
    )
    fill(journal, 30_000)
    found = page(journal, Filter(address="rare@EXAMPLE.com"))
    assert [e.seq for e in found.entries] == [old.seq]
    assert found.older is None
    assert [
        e.seq
        for e in page(journal, Filter(address="rare@example.com", kind=Kind.SMTP_REPLY)).entries
    ] == [old.seq]
    assert page(journal, Filter(address="rare@example.com", kind=Kind.DSN)).entries == []
    assert [e.seq for e in story(journal, "rare@example.com").replies] == [old.seq]


def test_violating_paths_are_marked() -> None:
    html = payload_html(
        '[{"event": "x", "data": [{"e": "a@b", "ts": 5}], "odd key": 1}]',
        ["$[0].data[0].ts", "$[0]['odd key']"],
    )
    assert '<mark title="$[0].data[0].ts">5</mark>' in html
    assert '<mark title="$[0][&#39;odd key&#39;]">1</mark>' in html
    assert payload_html("not json <b>", []) == "<pre class=payload>not json &lt;b&gt;</pre>"


def test_transcript_pairs_commands_with_replies() -> None:
    record = SmtpClose(
        host="mx",
        session="mx-1",
        peer="127.0.0.1:1",
        commands=("EHLO a", "QUIT"),
        replies=(
            TranscriptLine("greeting", "220 hi"),
            TranscriptLine("ehlo", "250 ok"),
            TranscriptLine("quit", "221 bye"),
        ),
    )
    assert transcript(record) == [
        ("S", "220 hi"),
        ("C", "EHLO a"),
        ("S", "250 ok"),
        ("C", "QUIT"),
        ("S", "221 bye"),
    ]


def test_transcript_puts_multiline_replies_and_data_in_order() -> None:
    lines = [
        ("greeting", "220 hi"),
        ("ehlo", "250-mx"),
        ("ehlo", "250 HELP"),
        ("data", "354 go"),
        ("end_of_data", "250 queued"),
        ("quit", "221 bye"),
    ]
    record = SmtpClose(
        host="mx",
        session="mx-1",
        peer="127.0.0.1:1",
        commands=("EHLO a", "DATA", "QUIT"),
        replies=tuple(TranscriptLine(stage, reply) for stage, reply in lines),
    )
    assert transcript(record) == [
        ("S", "220 hi"),
        ("C", "EHLO a"),
        ("S", "250-mx"),
        ("S", "250 HELP"),
        ("C", "DATA"),
        ("S", "354 go"),
        ("C", "<the message, then .>"),
        ("S", "250 queued"),
        ("C", "QUIT"),
        ("S", "221 bye"),
    ]
    # A session cut in the middle cannot be paired: commands, then replies, and how many left.
    cut = msgspec.structs.replace(record, commands_dropped=5)
    assert transcript(cut)[1] == ("…", "5 commands left out")


@pytest.mark.slow
def test_pages_over_http_are_fast_at_100k_entries(capsys: pytest.CaptureFixture[str]) -> None:
    import httpx

    from harness.clevertap.server import CleverTapServer

    journal = MemoryJournal()
    fill(journal, 100_000)
    lines = []
    with CleverTapServer(journal=journal) as server, httpx.Client(timeout=10) as client:
        for path in (
            "/",
            "/?kind=dsn",
            "/?address=user7@example.com&kind=callback",
            "/?address=user7@example.com",
            "/?code=CT303&kind=callback",
            "/recipient/user7@example.com",
            f"/entry/{journal.last_seq}",
        ):
            client.get(server.url + path)  # warm: templates compiled once
            start = time.perf_counter()
            response = client.get(server.url + path)
            took = time.perf_counter() - start
            assert response.status_code == 200, path
            lines.append(
                f"GET {path:45} {len(response.content) // 1024:4} KiB {took * 1000:7.1f} ms"
            )
            assert took < 2.0, path
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def test_the_story_gathers_the_judges_violations() -> None:
    from harness.records import ViolationFound

    journal = MemoryJournal()
    fill(journal, 10)  # user0..user9: replies, callbacks
    mine = journal.callbacks(address="user1@example.com")[0]
    by_evidence = journal.append(
        ViolationFound(
            violation=Violation("CT510", Severity.ERROR, "$", "softbounce", evidence=(mine.seq,))
        )
    )
    by_name = journal.append(
        ViolationFound(
            violation=Violation(
                "CT511", Severity.ERROR, "mx", "no retry", extra={"recipient": "USER1@example.com"}
            )
        )
    )
    journal.append(ViolationFound(violation=Violation("CT510", Severity.ERROR, "$", "other")))
    told = story(journal, "user1@example.com")
    assert [e.seq for e in told.violations] == [by_evidence.seq, by_name.seq]
    # The live filter finds the one that names the recipient; the code filter finds both CT510.
    newest = page(journal, Filter(address="user1@example.com")).entries[0]
    assert newest.seq == by_name.seq
    assert len(page(journal, Filter(code="CT510")).entries) == 2

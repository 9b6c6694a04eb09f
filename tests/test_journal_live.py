"""The journal written as things happen, over real sockets.

- A client that keeps its SMTP connection open (as Postfix's connection cache does) is judged
  the same before and after it quits: decisions are journaled when they are given.
- A session record is bounded whatever the client sends.
- A journal that cannot write answers "try again later": SMTP 451 4.3.0, HTTP 503.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.errors import JournalWriteError
from harness.journal import Kind, SQLiteJournal
from harness.records import Note, SmtpClose, SmtpMessage, SmtpOpen, SmtpReply
from harness.scenario.judge import judge
from harness.scenario.loader import load_scenario
from harness.smtp.server import MXHost
from harness.world import World

ROOT = Path(__file__).resolve().parent.parent
MESSAGE = b"From: news@brand.test\r\nTo: nobody@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def world() -> Iterator[World]:
    scenario = load_scenario(ROOT / "scenarios" / "invalid-address.yaml")
    with World.from_scenario(scenario) as running:
        yield running


def _mx(world: World) -> tuple[str, int]:
    host = next(iter(world.mail.hosts.values()))
    return host.bind, host.port


def test_a_connection_kept_open_is_judged_as_if_it_had_quit(world: World) -> None:
    scenario = load_scenario(ROOT / "scenarios" / "invalid-address.yaml")
    started = time.time()
    client = smtplib.SMTP(*_mx(world), timeout=10)
    client.ehlo("relay.test")
    client.mail("news@brand.test")
    assert client.rcpt("nobody@example.com")[0] == 550
    assert client.rcpt("ok@example.com")[0] == 250
    client.data(MESSAGE)
    # The relay keeps the connection (Postfix's cache) and reports the bounce meanwhile.
    ts = int(time.time())
    response = httpx.post(
        world.clevertap.urls.bounce,
        json=[{"event": "hardbounce", "data": [{"e": "nobody@example.com", "ts": ts}]}],
    )
    assert response.status_code == 200
    assert not any(isinstance(e.data, SmtpClose) for e in world.journal.entries())
    open_verdict = judge(scenario, world.journal, started=started)

    client.quit()
    world.journal.wait_for(lambda e: isinstance(e.data, SmtpClose), timeout=5)
    closed_verdict = judge(scenario, world.journal, started=started)

    assert open_verdict.passed, [r.reason for r in open_verdict.expectations if not r.met]
    assert [v.code for v in open_verdict.violations] == []
    assert closed_verdict.passed
    assert [r.met for r in open_verdict.expectations] == [
        r.met for r in closed_verdict.expectations
    ]


def test_decisions_are_in_the_journal_before_the_client_reads_them(world: World) -> None:
    client = smtplib.SMTP(*_mx(world), timeout=10)
    client.ehlo("relay.test")
    client.mail("news@brand.test")
    code, _ = client.rcpt("nobody@example.com")
    # No wait: the reply is only sent once its entry is journaled.
    replies = [e.data for e in world.journal.entries(Kind.SMTP_REPLY)]
    assert code == 550
    assert [(r.recipient, r.code, r.bounce_class) for r in replies] == [
        ("nobody@example.com", 550, "hard")
    ]
    assert client.rcpt("ok@example.com")[0] == 250
    client.data(MESSAGE)
    (message,) = [e.data for e in world.journal.entries(Kind.SMTP_MESSAGE)]
    assert isinstance(message, SmtpMessage)
    assert [r.address for r in message.recipients] == ["ok@example.com"]
    opened = [e.data for e in world.journal.entries(Kind.SMTP_OPEN)]
    assert [o.session for o in opened if isinstance(o, SmtpOpen)] == [message.session]
    client.quit()


def test_rcpt_answered_outside_the_rules_is_still_an_attempt(world: World) -> None:
    client = smtplib.SMTP(*_mx(world), timeout=10)
    client.ehlo("relay.test")
    # RCPT before MAIL: 503, a protocol reply; the address was still attempted.
    code, _ = client.docmd("RCPT", "TO:<nobody@example.com>")
    assert code == 503
    (reply,) = [e.data for e in world.journal.entries(Kind.SMTP_REPLY)]
    assert isinstance(reply, SmtpReply)
    assert (reply.recipient, reply.code, reply.bounce_class) == ("nobody@example.com", 503, None)
    client.quit()


def test_a_session_record_is_bounded_whatever_the_client_sends() -> None:
    async def run() -> SmtpClose:
        host = MXHost("mx1", domains=["example.com"], max_transcript=100)
        async with host:
            reader, writer = await asyncio.open_connection(host.bind, host.port)
            await reader.readline()
            writer.write(b"EHLO c.test\r\n" + b"NOOP\r\n" * 5000 + b"QUIT\r\n")
            await writer.drain()
            while await reader.readline():
                pass
            writer.close()
            entry = await host.journal.wait_for_async(
                lambda e: isinstance(e.data, SmtpClose), timeout=10
            )
        assert entry is not None
        assert isinstance(entry.data, SmtpClose)
        return entry.data

    record = asyncio.run(run())
    assert len(record.commands) == 100
    assert record.commands_dropped == 5002 - 100
    assert record.commands[0] == "EHLO c.test"
    assert record.commands[-1] == "QUIT"
    assert len(record.replies) == 100
    assert record.end == "quit"


@pytest.fixture
def full_journal(tmp_path: Path) -> Iterator[SQLiteJournal]:
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    yield journal
    journal.close()


def _fill_up(journal: SQLiteJournal) -> int:
    """Fill the journal's file to a cap; returns the write failures counted so far.

    SQLite's page limit fails writes exactly as a full disk does (SQLITE_FULL): the file is
    capped a little above its size, then tiny entries are written until one no longer fits.
    """
    with journal._lock:
        pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
        journal._db.execute(f"PRAGMA max_page_count = {pages + 2}")
    for i in range(100_000):
        try:
            journal.append(Note(source="test", what="filler", detail=str(i)))
        except JournalWriteError:
            return journal.write_failures
    raise AssertionError("the journal never filled up")


def test_a_full_journal_answers_smtp_with_a_temporary_failure(
    full_journal: SQLiteJournal, capfd: pytest.CaptureFixture[str]
) -> None:
    scenario = load_scenario(ROOT / "scenarios" / "invalid-address.yaml")
    with World.from_scenario(scenario, journal=full_journal) as world:
        client = smtplib.SMTP(*_mx(world), timeout=10)
        client.ehlo("relay.test")
        client.mail("news@brand.test")
        before = _fill_up(full_journal)
        code, text = client.rcpt("nobody@example.com")
        assert (code, text[:5]) == (451, b"4.3.0")
        assert b"Error: (" not in text
        client.quit()
    assert full_journal.write_failures > before
    assert not [e for e in full_journal.entries(Kind.SMTP_REPLY) if e.data.code == 550]  # type: ignore[union-attr]


def test_a_full_journal_answers_callbacks_with_503_and_retry_after(
    full_journal: SQLiteJournal,
) -> None:
    scenario = load_scenario(ROOT / "scenarios" / "invalid-address.yaml")
    with World.from_scenario(scenario, journal=full_journal) as world:
        before = _fill_up(full_journal)
        body = [
            {
                "event": "hardbounce",
                "data": [{"e": f"a{i}@example.com", "ts": 1} for i in range(300)],
            }
        ]
        response = httpx.post(world.clevertap.urls.bounce, json=body)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.json()["status"] == "error"
        assert "could not record" in response.json()["message"]
        health = httpx.get(world.clevertap.urls.control + "/health").json()
        assert health["journal_write_failures"] > before
    assert full_journal.count(Kind.CALLBACK) == 0


def test_answers_wait_for_their_entries_to_be_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With commits held back, neither SMTP nor HTTP answers; once committed, both do."""
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    # Hold every commit until the test makes it (commits normally run at the end of the loop
    # turn that appended).
    monkeypatch.setattr(journal, "_schedule_commit", lambda: None)
    scenario = load_scenario(ROOT / "scenarios" / "invalid-address.yaml")
    with World.from_scenario(scenario, journal=journal) as world:
        with socket.create_connection(_mx(world), timeout=10) as sock:
            lines = sock.makefile("rb")
            lines.readline()  # greeting
            sock.sendall(b"HELO relay.test\r\nMAIL FROM:<news@brand.test>\r\n")
            lines.readline()
            lines.readline()
            sock.sendall(b"RCPT TO:<nobody@example.com>\r\n")
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(1)
            journal.commit()
            sock.settimeout(10)
            assert lines.readline().startswith(b"550 5.1.1")

        body = [{"event": "hardbounce", "data": [{"e": "nobody@example.com", "ts": 1}]}]
        with httpx.Client(timeout=0.5) as http, pytest.raises(httpx.ReadTimeout):
            http.post(world.clevertap.urls.bounce, json=body)
        assert journal.count(Kind.CALLBACK) == 1  # appended, held back, not answered
        journal.commit()
        journal.close()

"""Fixtures for the mail-world tests: real hosts on 127.0.0.1, port 0, real clients."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.journal import Entry, Journal, Kind
from harness.records import SmtpClose, SmtpMessage, SmtpOpen, SmtpReply
from harness.smtp.world import MailWorld


class FakeClock:
    """A clock the test moves by hand, so time windows need no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_world(clock: FakeClock) -> Iterator[Callable[..., MailWorld]]:
    """Build a world, add hosts with the callback, start it in a background thread."""
    worlds: list[MailWorld] = []

    def make(setup: Callable[[MailWorld], Any], **options: Any) -> MailWorld:
        options.setdefault("clock", clock)
        world = MailWorld(**options)
        setup(world)
        world.start_sync()
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.stop_sync()


@pytest.fixture
def mx(make_world: Callable[..., MailWorld]) -> Callable[..., MailWorld]:
    """One host ``mx1`` serving example.com with the given rules and options."""

    def make(rules: Any = None, **options: Any) -> MailWorld:
        return make_world(
            lambda w: w.add_host("mx1", domains=["example.com"], rules=rules, **options)
        )

    return make


def client(world: MailWorld, name: str = "mx1", **kwargs: Any) -> smtplib.SMTP:
    kwargs.setdefault("timeout", 10)
    return smtplib.SMTP("127.0.0.1", world.host(name).port, **kwargs)


def _journal(source: MailWorld | Journal) -> Journal:
    return source.journal if isinstance(source, MailWorld) else source


def sessions(source: MailWorld | Journal) -> list[SmtpClose]:
    """The ended sessions' records (``smtp_session``), in the order they ended."""
    found = _journal(source).entries(Kind.SMTP_SESSION)
    for entry in found:
        assert isinstance(entry.data, SmtpClose), entry
    return [e.data for e in found if isinstance(e.data, SmtpClose)]


def wait_session(source: MailWorld | Journal, count: int = 1) -> list[SmtpClose]:
    """Block (bounded) until *count* sessions are journaled; sessions end asynchronously."""
    journal = _journal(source)
    found = journal.wait_for(lambda e: journal.count(Kind.SMTP_SESSION) >= count, timeout=10)
    assert found is not None, f"fewer than {count} sessions journaled: {sessions(journal)}"
    return sessions(journal)


def messages(source: MailWorld | Journal) -> list[SmtpMessage]:
    """The accepted messages' records, in order."""
    found = _journal(source).entries(Kind.SMTP_MESSAGE)
    for entry in found:
        assert isinstance(entry.data, SmtpMessage), entry
    return [e.data for e in found if isinstance(e.data, SmtpMessage)]


def decisions(source: MailWorld | Journal, session: SmtpClose | str) -> list[SmtpReply]:
    """The ``smtp_reply`` records of *session*, in order.

    Checks the design on the way: each decision was journaled while its connection was open,
    after the session's ``smtp_open`` and before its ``smtp_session``, with the session's host.
    """
    journal = _journal(source)
    sid = session if isinstance(session, str) else session.session
    opened: Entry | None = None
    closed: int | None = None
    found: list[Entry] = []
    for entry in journal.entries():
        data = entry.data
        if isinstance(data, SmtpOpen) and data.session == sid:
            assert opened is None, f"session {sid} opened twice"
            opened = entry
        elif isinstance(data, SmtpClose) and data.session == sid:
            assert closed is None, f"session {sid} closed twice"
            closed = entry.seq
        elif isinstance(data, SmtpReply) and data.session == sid:
            found.append(entry)
    assert opened is not None, f"session {sid} has no smtp_open entry"
    assert isinstance(opened.data, SmtpOpen)
    host = opened.data.host
    for entry in found:
        assert isinstance(entry.data, SmtpReply)
        assert entry.data.host == host, entry
        assert opened.seq < entry.seq, f"decision {entry} journaled before its session opened"
        if closed is not None:
            assert entry.seq < closed, f"decision {entry} journaled after its session ended"
    return [e.data for e in found if isinstance(e.data, SmtpReply)]

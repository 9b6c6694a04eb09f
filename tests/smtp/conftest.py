"""Fixtures for the mail-world tests: real hosts on 127.0.0.1, port 0, real clients."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.journal import Entry, Kind
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


def sessions(world: MailWorld) -> list[Entry]:
    """The session entries, once every open session has been journaled."""
    return world.journal.entries(Kind.SMTP_SESSION)


def wait_session(world: MailWorld, count: int = 1) -> list[Entry]:
    """Block (bounded) until *count* sessions are journaled; sessions end asynchronously."""
    found = world.journal.wait_for(
        lambda e: len(world.journal.entries(Kind.SMTP_SESSION)) >= count, timeout=10
    )
    assert found is not None, f"fewer than {count} sessions journaled: {sessions(world)}"
    return sessions(world)

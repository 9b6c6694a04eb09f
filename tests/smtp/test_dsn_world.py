"""Dialects through the fake MX: accept-then-bounce in several dialects reaches the intake."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from typing import Any

import aiosmtplib
import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP, Envelope, Session

from harness.journal import Journal, Kind
from harness.records import Dsn, DsnSkipped
from harness.smtp.world import MailWorld

pytestmark = pytest.mark.asyncio

MSG = (
    b"From: news@brand.test\r\nTo: a@example.com\r\nSubject: Sale\r\n"
    b"X-CleverTap_META: cmp-1\r\nMessage-ID: <m1@brand.test>\r\n\r\nHi.\r\n"
)
SENDER = "bounces@brand.test"


def dsn_records(journal: Journal) -> list[dict[str, Any]]:
    """dialect, recipients (address, action, status) and ok of every DSN the world sent."""
    found = []
    for entry in journal.entries(Kind.DSN):
        record = entry.data
        assert isinstance(record, Dsn)
        found.append(
            {
                "dialect": record.dialect,
                "recipients": [(r.recipient, r.action, r.status) for r in record.recipients],
                "ok": record.ok,
            }
        )
    return found


class Intake:
    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope.original_content or b"")
        return "250 2.0.0 Ok"


@pytest_asyncio.fixture
async def intake() -> AsyncIterator[tuple[Intake, int]]:
    handler = Intake()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="intake.test", loop=loop, enable_SMTPUTF8=True),
        "127.0.0.1",
        0,
    )
    try:
        yield handler, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_every_dialect_of_accept_then_bounce_reaches_the_intake(
    intake: tuple[Intake, int],
) -> None:
    handler, port = intake
    rules: dict[str, Any] = {
        "q@example.com": {"accept_then_bounce": "invalid_address", "after": 0, "dsn": "qmail"},
        "o@example.com": {"accept_then_bounce": "mailbox_full", "after": 0, "dsn": "office365"},
        "x@example.com": {"accept_then_bounce": "queue_expiry", "after": 0, "dsn": "exim_legacy"},
        # Two recipients rejected together: one Postfix DSN with a block each.
        "s1@example.com": {"accept_then_bounce": "spam_content", "after": 0, "dsn": "postfix"},
        "s2@example.com": {"accept_then_bounce": "spam_content", "after": 0, "dsn": "postfix"},
    }
    world = MailWorld(bounce_intake=("127.0.0.1", port))
    world.add_host("mx1", domains=["example.com"], rules=rules)
    async with world:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=world.host("mx1").port)
        async with client:
            await client.sendmail(SENDER, list(rules), MSG)
        for _ in range(500):
            if len(dsn_records(world.journal)) == 4:
                break
            await asyncio.sleep(0.01)
    records = sorted(dsn_records(world.journal), key=lambda r: str(r["dialect"]))
    assert records == [
        {
            "dialect": "exim_legacy",
            "recipients": [("x@example.com", "failed", "5.0.0")],
            "ok": True,
        },
        {"dialect": "office365", "recipients": [("o@example.com", "failed", "4.2.2")], "ok": True},
        {
            "dialect": "postfix",
            "recipients": [
                ("s1@example.com", "failed", "5.7.1"),
                ("s2@example.com", "failed", "5.7.1"),
            ],
            "ok": True,
        },
        {"dialect": "qmail", "recipients": [("q@example.com", "failed", "5.1.1")], "ok": True},
    ]
    kinds = sorted(
        email.message_from_bytes(data, policy=email.policy.default).get_content_type()
        for data in handler.received
    )
    assert kinds == ["multipart/report", "multipart/report", "text/plain", "text/plain"]
    assert all(b"X-CleverTap_META: cmp-1" in data for data in handler.received)


async def test_a_host_of_an_idn_domain_sends_its_dsns(intake: tuple[Intake, int]) -> None:
    # Its host name and queue ids go into greetings, Message-IDs and MIME boundaries: in
    # A-labels, or building the DSN fails on a non-ASCII boundary and none is sent.
    handler, port = intake
    world = MailWorld(bounce_intake=("127.0.0.1", port))
    rule = {"accept_then_bounce": "invalid_address", "after": 0, "dsn": "postfix"}
    world.add_host(
        "bücher.example", domains=["bücher.example"], rules={"anna@bücher.example": rule}
    )
    async with world:
        host = world.host("bücher.example")
        assert host.hostname == "bücher.example.bücher.example".encode("idna").decode()
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=host.port)
        async with client:
            await client.sendmail(SENDER, ["anna@bücher.example"], MSG, mail_options=["SMTPUTF8"])
        for _ in range(500):
            if dsn_records(world.journal):
                break
            await asyncio.sleep(0.01)
    assert dsn_records(world.journal) == [
        {
            "dialect": "postfix",
            "recipients": [("anna@bücher.example", "failed", "5.1.1")],
            "ok": True,
        }
    ]
    (received,) = handler.received
    assert b"/xn--bcher-kva.example.xn--bcher-kva.example--\r\n" in received  # the boundary


async def test_a_report_that_fails_to_build_is_journaled_as_skipped_and_logged(
    intake: tuple[Intake, int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A bug in building a DSN (here injected into the builder) must not vanish as an
    # unretrieved task exception: the journal says the report was not sent, and why.
    import harness.smtp.dsn

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the builder")

    monkeypatch.setattr(harness.smtp.dsn, "build_dsn", broken)
    handler, port = intake
    world = MailWorld(bounce_intake=("127.0.0.1", port))
    rule = {"accept_then_bounce": "invalid_address", "after": 0, "dsn": "postfix"}
    world.add_host("mx1", domains=["example.com"], rules={"a@example.com": rule})
    async with world:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=world.host("mx1").port)
        async with client:
            await client.sendmail(SENDER, ["a@example.com"], MSG)
        for _ in range(500):
            if world.journal.entries(Kind.DSN_SKIPPED):
                break
            await asyncio.sleep(0.01)
    (entry,) = world.journal.entries(Kind.DSN_SKIPPED)
    assert isinstance(entry.data, DsnSkipped)
    assert entry.data.recipients == ("a@example.com",)
    assert entry.data.reason == "internal error while building or sending it (RuntimeError)"
    assert handler.received == []
    assert "the report on" in caplog.text
    assert "a bug in the builder" in caplog.text

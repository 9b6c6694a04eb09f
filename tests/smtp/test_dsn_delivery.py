"""deliver_dsn over real SMTP to a bare aiosmtpd intake, and into a Maildir."""

from __future__ import annotations

import asyncio
import mailbox
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP, Envelope, Session

from harness.journal import Journal, Kind
from harness.records import Dsn, DsnRecipient
from harness.smtp.dsn import deliver_dsn, dsn_bytes, dsn_for_mode

NOW = 1_700_000_000.0
RCPT = "a@example.com"
VERP = "bounces+a=example.com@sender.test"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    content: bytes


@dataclass
class Intake:
    """What a bare aiosmtpd server saw; it answers every message with *reply*."""

    reply: str = "250 2.0.0 Ok: queued as DSN1"
    messages: list[Received] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 <nobody@sender.test>: no such bounce address"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.original_content, bytes)
        self.messages.append(
            Received(
                str(envelope.mail_from),
                list(envelope.rcpt_tos),
                list(envelope.mail_options),
                envelope.original_content,
            )
        )
        return self.reply


async def start_intake(handler: Intake, *, smtputf8: bool) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(handler, enable_SMTPUTF8=smtputf8, hostname="intake.test"),
        "127.0.0.1",
        0,  # port 0: the kernel picks a free port, read back below
    )


@pytest_asyncio.fixture
async def intake() -> AsyncIterator[tuple[Intake, tuple[str, int]]]:
    handler = Intake()
    server = await start_intake(handler, smtputf8=True)
    port = server.sockets[0].getsockname()[1]
    try:
        yield handler, ("127.0.0.1", port)
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def closed_port() -> Iterator[tuple[str, int]]:
    """A port bound but not listening: connecting is refused, and nobody else can take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()


@pytest.mark.asyncio
async def test_dsn_arrives_from_the_null_sender(intake: tuple[Intake, tuple[str, int]]) -> None:
    handler, address = intake
    journal = Journal()
    dsn = dsn_for_mode("invalid_address", RCPT, dialect="postfix", sender=VERP, now=NOW)

    entry = await deliver_dsn(
        dsn, envelope_to=VERP, intake=address, journal=journal, host="mx1", queue_id="MX1000042"
    )

    [received] = handler.messages
    assert received.mail_from == "<>"  # aiosmtpd's spelling of the null sender
    assert received.rcpt_tos == [VERP]
    assert received.content == dsn_bytes(dsn)
    assert journal.entries() == [entry]
    assert entry.kind is Kind.DSN
    assert entry.data == Dsn(
        to=VERP,
        sender="",
        intake=f"127.0.0.1:{address[1]}",
        transport="smtp",
        dialect="postfix",
        recipients=(DsnRecipient(recipient=RCPT, action="failed", status="5.1.1"),),
        message_id=dsn["Message-ID"],
        size=len(dsn_bytes(dsn)),
        ok=True,
        reply="2.0.0 Ok: queued as DSN1",
        error=None,
        maildir_key=None,
        host="mx1",
        message="MX1000042",
        started=entry.data.started,
    )
    # Delivery began before the entry was journaled (the intake may act on it in between).
    assert entry.data.started is not None
    assert entry.data.started <= entry.at


@pytest.mark.asyncio
async def test_utf8_dsn_is_sent_with_smtputf8(intake: tuple[Intake, tuple[str, int]]) -> None:
    handler, address = intake
    journal = Journal()
    dsn = dsn_for_mode("invalid_address", "jörg@exämple.com", dialect="exim", now=NOW)

    entry = await deliver_dsn(dsn, envelope_to=VERP, intake=address, journal=journal)

    [received] = handler.messages
    assert "SMTPUTF8" in received.mail_options
    assert "BODY=8BITMIME" in received.mail_options
    assert received.content == dsn_bytes(dsn)
    assert isinstance(entry.data, Dsn)
    assert entry.data.ok is True
    assert entry.data.dialect == "exim"
    assert entry.data.recipients == (
        DsnRecipient(recipient="jörg@exämple.com", action="failed", status="5.0.0"),
    )
    assert (entry.data.host, entry.data.message) == (None, None)


@pytest.mark.asyncio
async def test_intake_without_smtputf8_is_a_journaled_failure() -> None:
    handler = Intake()
    server = await start_intake(handler, smtputf8=False)
    port = server.sockets[0].getsockname()[1]
    journal = Journal()
    dsn = dsn_for_mode("invalid_address", "jörg@exämple.com", now=NOW)
    try:
        entry = await deliver_dsn(
            dsn, envelope_to=VERP, intake=("127.0.0.1", port), journal=journal
        )
    finally:
        server.close()
        await server.wait_closed()
    assert handler.messages == []
    assert isinstance(entry.data, Dsn)
    assert entry.data.ok is False
    assert entry.data.error == "SMTPNotSupported: SMTPUTF8 is not supported by this server"


@pytest.mark.asyncio
async def test_unreachable_intake_is_journaled_not_raised(closed_port: tuple[str, int]) -> None:
    journal = Journal()
    dsn = dsn_for_mode("mailbox_full", RCPT, dialect="generic", sender=VERP, now=NOW)

    entry = await deliver_dsn(dsn, envelope_to=VERP, intake=closed_port, journal=journal)

    assert journal.entries(Kind.DSN) == [entry]
    assert isinstance(entry.data, Dsn)
    assert entry.data.ok is False
    assert entry.data.reply is None
    assert entry.data.intake == f"127.0.0.1:{closed_port[1]}"
    assert entry.data.error is not None
    assert entry.data.error.startswith("SMTPConnectError: ")
    assert entry.data.recipients == (DsnRecipient(recipient=RCPT, action="failed", status="4.2.2"),)


@pytest.mark.asyncio
async def test_refused_recipient_is_journaled(intake: tuple[Intake, tuple[str, int]]) -> None:
    handler, address = intake
    journal = Journal()
    dsn = dsn_for_mode("invalid_address", RCPT, now=NOW)

    entry = await deliver_dsn(
        dsn, envelope_to="nobody@sender.test", intake=address, journal=journal
    )

    assert handler.messages == []
    assert isinstance(entry.data, Dsn)
    assert entry.data.ok is False
    assert entry.data.error is not None
    assert entry.data.error.startswith("SMTPRecipientsRefused: ")
    assert "550" in entry.data.error


@pytest.mark.asyncio
async def test_intake_rejecting_the_data_is_journaled(
    intake: tuple[Intake, tuple[str, int]],
) -> None:
    handler, address = intake
    handler.reply = "554 5.6.0 not a bounce I understand"
    journal = Journal()

    entry = await deliver_dsn(
        dsn_for_mode("invalid_address", RCPT, now=NOW),
        envelope_to=VERP,
        intake=address,
        journal=journal,
    )

    assert isinstance(entry.data, Dsn)
    assert entry.data.ok is False
    assert entry.data.error == "SMTPDataError: (554, '5.6.0 not a bounce I understand')"


@pytest.mark.asyncio
async def test_maildir_delivery_writes_one_file(tmp_path: Path) -> None:
    journal = Journal()
    box_path = tmp_path / "bounces"
    dsn = dsn_for_mode("mailbox_full", RCPT, dialect="exim", sender=VERP, now=NOW)

    entry = await deliver_dsn(dsn, envelope_to=VERP, intake=box_path, journal=journal)

    files = list((box_path / "new").iterdir())
    assert len(files) == 1
    assert files[0].read_bytes() == dsn_bytes(dsn, crlf=False)
    assert isinstance(entry.data, Dsn)
    box = mailbox.Maildir(box_path, create=False)
    assert list(box.keys()) == [entry.data.maildir_key]
    box.close()
    assert entry.data.ok is True
    assert entry.data.transport == "maildir"
    assert entry.data.intake == str(box_path)
    assert entry.data.size == files[0].stat().st_size
    assert entry.data.dialect == "exim"


@pytest.mark.asyncio
async def test_maildir_failure_is_journaled(tmp_path: Path) -> None:
    journal = Journal()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the Maildir should be")

    entry = await deliver_dsn(
        dsn_for_mode("mailbox_full", RCPT, now=NOW),
        envelope_to=VERP,
        intake=blocker,
        journal=journal,
    )

    assert journal.entries(Kind.DSN) == [entry]
    assert isinstance(entry.data, Dsn)
    assert entry.data.ok is False
    assert entry.data.error is not None
    assert entry.data.error.startswith("NotADirectoryError: ")

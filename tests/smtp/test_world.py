"""MailWorld: several hosts and a relay, transport maps, accept-then-bounce DSNs end to end."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP, Envelope, Session

from harness.errors import ConfigError, ServerError, UnknownNameError
from harness.journal import Kind
from harness.records import Dsn, DsnRecipient, DsnSkipped, ScheduledBounce
from harness.smtp.world import MailWorld

from .conftest import decisions, messages, sessions

MSG = (
    b"From: news@brand.test\r\nTo: late@example.com\r\nSubject: Sale\r\n"
    b"Message-ID: <m1@brand.test>\r\n\r\nHi.\r\n"
)
VERP = "bounces+late=example.com@brand.test"


def test_transport_maps(make_world: Callable[..., MailWorld]) -> None:
    def setup(w: MailWorld) -> None:
        w.add_host("mx1", domains=["example.com", "example.org"])
        w.add_host("mx2", domains=["other.test"])
        w.add_relay()

    world = make_world(setup)
    p1, p2, pr = (world.host(n).port for n in ("mx1", "mx2", "relay"))
    assert len({p1, p2, pr}) == 3
    assert world.transport_map() == {
        "example.com": f"127.0.0.1:{p1}",
        "example.org": f"127.0.0.1:{p1}",
        "other.test": f"127.0.0.1:{p2}",
        "*": f"127.0.0.1:{pr}",
    }
    assert json.loads(world.transport_map_json()) == world.transport_map()
    assert world.postfix_transport_map() == (
        f"example.com smtp:[127.0.0.1]:{p1}\n"
        f"example.org smtp:[127.0.0.1]:{p1}\n"
        f"other.test smtp:[127.0.0.1]:{p2}\n"
        f"* smtp:[127.0.0.1]:{pr}\n"
    )
    # The map stays valid while a host is down: the port is kept.
    world.down("mx2", "refused")
    assert world.transport_map()["other.test"] == f"127.0.0.1:{p2}"


def test_building_mistakes_are_named() -> None:
    world = MailWorld()
    world.add_host("mx1", domains=["example.com"])
    with pytest.raises(ConfigError, match=r"domain 'EXAMPLE\.com' is served by 'mx1' already"):
        world.add_host("mx2", domains=["EXAMPLE.com"])
    with pytest.raises(ConfigError, match="'mx1' exists already"):
        world.add_host("mx1", domains=["x.test"])
    with pytest.raises(ConfigError, match="at least one domain"):
        world.add_host("mx3", domains=[])
    world.add_relay()
    with pytest.raises(ConfigError, match="has a relay already"):
        world.add_relay("relay2")
    with pytest.raises(UnknownNameError, match="did you mean 'mx1'"):
        world.host("mx")
    with pytest.raises(ServerError, match="not running"):
        world.up("mx1")


class Intake:
    """A bare aiosmtpd server standing in for the integration's bounce intake."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.received.append((str(envelope.mail_from), list(envelope.rcpt_tos), content))
        self.arrived.set()
        return "250 2.0.0 Ok: bounce taken"


@pytest_asyncio.fixture
async def intake() -> AsyncIterator[tuple[Intake, int]]:
    handler = Intake()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="intake.test", loop=loop), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield handler, port
    finally:
        server.close()
        await server.wait_closed()


async def _send(port: int, sender: str, recipients: list[str], **rcpt: Any) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    async with smtp:
        await smtp.ehlo()
        await smtp.mail(sender, options=["RET=HDRS", "ENVID=cmp-42"])
        for address in recipients:
            await smtp.rcpt(address, options=rcpt.get(address, []))
        await smtp.data(MSG)


@pytest.mark.asyncio
async def test_accept_then_bounce_delivers_a_dsn_to_the_intake(
    intake: tuple[Intake, int],
) -> None:
    handler, port = intake
    world = MailWorld(bounce_intake=("127.0.0.1", port))
    world.add_host(
        "mx1",
        domains=["example.com"],
        rules={
            "late@example.com": {
                "accept_then_bounce": "invalid_address",
                "after": "100ms",
                "dsn": "postfix",
            }
        },
    )
    async with world:
        await _send(
            world.host("mx1").port,
            VERP,
            ["late@example.com", "ok@example.com"],
            **{"late@example.com": ["ORCPT=rfc822;late@example.com"]},
        )
        dsn_entry = await world.journal.wait_for_async(lambda e: e.kind is Kind.DSN, timeout=10)
        assert dsn_entry is not None
        dsn = dsn_entry.data
        assert isinstance(dsn, Dsn)
        assert dsn.ok is True
        assert dsn.recipients == (
            DsnRecipient(recipient="late@example.com", action="failed", status="5.1.1"),
        )
        await asyncio.wait_for(handler.arrived.wait(), 10)
    ((mail_from, rcpt_tos, content),) = handler.received
    assert mail_from in ("", "<>")  # the null sender, however aiosmtpd spells it
    assert rcpt_tos == [VERP]
    report = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(report, EmailMessage)
    assert report.get_content_type() == "multipart/report"
    status = report.get_payload()[1]
    text = status.as_string()
    assert "Final-Recipient: rfc822; late@example.com" in text
    assert "Action: failed" in text
    assert "Status: 5.1.1" in text
    assert "Original-Envelope-Id: cmp-42" in text
    assert report.get_payload()[2].get_content_type() == "text/rfc822-headers"
    (message,) = messages(world)
    # The DSN names the host and the message it reports on.
    assert (dsn.host, dsn.message, dsn.to) == ("mx1", message.id, VERP)
    (session,) = sessions(world)
    # The bounce due for an accept-then-bounce recipient lives in its "later" decision.
    (late,) = [d for d in decisions(world, session) if d.recipient == "late@example.com"]
    assert (late.stage, late.code, late.bounce_class, late.mode) == (
        "later",
        250,
        "hard",
        "invalid_address",
    )
    assert late.bounce == ScheduledBounce(
        after=0.1,
        status="5.1.1",
        diagnostic="550 5.1.1 <late@example.com>: Recipient address rejected: User "
        "unknown in local recipient table",
        dialect="postfix",
        action="failed",
    )
    (ok,) = [d for d in decisions(world, session) if d.recipient == "ok@example.com"]
    assert (ok.stage, ok.code, ok.bounce) == ("rcpt", 250, None)


@pytest.mark.asyncio
async def test_dsns_that_cannot_be_sent_are_journaled(intake: tuple[Intake, int]) -> None:
    handler, port = intake
    rules = {
        "never@example.com": {"accept_then_bounce": "mailbox_full", "after": 0},
        "slow@example.com": {"accept_then_bounce": "mailbox_full", "after": "1h"},
    }
    world = MailWorld(bounce_intake=("127.0.0.1", port))
    world.add_host("mx1", domains=["example.com"], rules=rules)
    async with world:
        mx_port = world.host("mx1").port
        await _send(mx_port, VERP, ["never@example.com"], **{"never@example.com": ["NOTIFY=NEVER"]})
        skipped = await world.journal.wait_for_async(
            lambda e: e.kind is Kind.DSN_SKIPPED, timeout=10
        )
        assert skipped is not None
        assert isinstance(skipped.data, DsnSkipped)
        assert skipped.data.reason == "NOTIFY asks for no report"
        await _send(mx_port, VERP, ["slow@example.com"])
        await _send(mx_port, "", ["slow@example.com"])
    found = [e.data for e in world.journal.entries(Kind.DSN_SKIPPED)]
    ids = [m.id for m in messages(world)]
    assert found == [
        DsnSkipped(
            host="mx1",
            message=ids[0],
            recipients=("never@example.com",),
            sender=VERP,
            reason="NOTIFY asks for no report",
        ),
        DsnSkipped(
            host="mx1",
            message=ids[2],
            recipients=("slow@example.com",),
            sender="",
            reason="the message came from the null sender",
        ),
        DsnSkipped(
            host="mx1",
            message=ids[1],
            recipients=("slow@example.com",),
            sender=VERP,
            reason="host stopped first",
        ),
    ]
    assert handler.received == []
    assert world.journal.entries(Kind.DSN) == []


@pytest.mark.asyncio
async def test_no_intake_configured_is_journaled() -> None:
    world = MailWorld()
    world.add_host(
        "mx1", domains=["example.com"], rules={"*": {"accept_then_bounce": "invalid_address"}}
    )
    async with world:
        await _send(world.host("mx1").port, VERP, ["a@example.com"])
    (message,) = messages(world)
    (skipped,) = world.journal.entries(Kind.DSN_SKIPPED)
    assert skipped.data == DsnSkipped(
        host="mx1",
        message=message.id,
        recipients=("a@example.com",),
        sender=VERP,
        reason="no bounce intake is configured",
    )


def test_reset_restarts_sequences(make_world: Callable[..., MailWorld]) -> None:
    import smtplib

    world = make_world(
        lambda w: w.add_host("mx1", domains=["example.com"], rules={"g@example.com": ["greylist"]})
    )

    def attempt() -> int:
        with smtplib.SMTP("127.0.0.1", world.host("mx1").port, timeout=10) as c:
            c.ehlo("client.test")
            c.mail("news@brand.test")
            return c.rcpt("g@example.com")[0]

    assert attempt() == 450
    world.reset()
    assert attempt() == 450

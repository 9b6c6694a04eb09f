"""Reports a fake MX mails back later, through a real MX and a real intake: success DSNs,
aliasing (Final-Recipient other than the address sent to), auto-replies and complaints."""

from __future__ import annotations

import asyncio
import email
import email.policy
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest

from harness.journal import Journal, Kind
from harness.records import Dsn, SmtpReply
from harness.smtp.dialects import DIALECTS
from harness.smtp.world import MailWorld
from harness.vocab import MailReport
from tests.smtp.test_dsn_world import MSG, SENDER, Intake, intake

pytestmark = pytest.mark.asyncio
__all__ = ["intake"]  # the fixture, imported for this module's tests


def reports(journal: Journal) -> list[Dsn]:
    found = []
    for entry in journal.entries(Kind.DSN):
        assert isinstance(entry.data, Dsn)
        found.append(entry.data)
    return found


async def send(rules: dict[str, Any], port: int, *, expect: int) -> tuple[MailWorld, list[Dsn]]:
    world = MailWorld(bounce_intake=("127.0.0.1", port))
    world.add_host("mx1", domains=["example.com"], rules=rules)
    async with world:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=world.host("mx1").port)
        async with client:
            await client.sendmail(SENDER, list(rules), MSG)
        for _ in range(500):
            if len(reports(world.journal)) >= expect:
                break
            await asyncio.sleep(0.01)
    return world, reports(world.journal)


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_success_dsns_reach_the_intake(intake: tuple[Intake, int]) -> None:
    handler, port = intake
    rules: dict[str, Any] = {
        "d@example.com": {"accept_then_report": "delivered", "after": 0, "dsn": "postfix"},
        "r@example.com": {"accept_then_report": "relayed", "after": 0, "dsn": "exim"},
        "e@example.com": {"accept_then_report": "expanded", "after": 0, "dsn": "sendmail"},
    }
    world, sent = await send(rules, port, expect=3)
    got = sorted((r.dialect, r.recipients[0].recipient, r.recipients[0].action) for r in sent)
    assert got == [
        ("exim", "r@example.com", "relayed"),
        ("postfix", "d@example.com", "delivered"),
        ("sendmail", "e@example.com", "expanded"),
    ]
    assert all(r.ok and r.report is MailReport.DSN for r in sent)
    assert all(r.recipients[0].status.startswith("2.") for r in sent)
    # The RCPT is journaled as accepted, with the success DSN it will get.
    later = [e.data for e in world.journal.entries(Kind.SMTP_REPLY)]
    assert {
        (r.recipient, r.bounce.action if r.bounce else None)
        for r in later
        if isinstance(r, SmtpReply)
    } == {
        ("d@example.com", "delivered"),
        ("r@example.com", "relayed"),
        ("e@example.com", "expanded"),
    }
    actions = sorted(
        str(block["Action"])
        for data in handler.received
        for part in parsed(data).walk()
        if part.get_content_type() == "message/delivery-status"
        for block in part.get_payload()[1:]
    )
    assert actions == ["delivered", "expanded", "relayed"]


async def test_an_explicit_notify_without_success_gets_no_success_dsn(
    intake: tuple[Intake, int],
) -> None:
    _, port = intake
    rules = {"d@example.com": {"accept_then_report": "delivered", "after": 0}}
    world = MailWorld(bounce_intake=("127.0.0.1", port))
    world.add_host("mx1", domains=["example.com"], rules=rules)
    async with world:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=world.host("mx1").port)
        async with client:
            await client.sendmail(
                SENDER, ["d@example.com"], MSG, rcpt_options=["NOTIFY=FAILURE,DELAY"]
            )
        for _ in range(300):
            if list(world.journal.entries(Kind.DSN_SKIPPED)):
                break
            await asyncio.sleep(0.01)
    (skipped,) = [e.data for e in world.journal.entries(Kind.DSN_SKIPPED)]
    assert "NOTIFY" in getattr(skipped, "reason", "")
    assert reports(world.journal) == []


CARRY_ORIGINAL = {"generic", "postfix", "sendmail", "exchange"}
"""The dialects whose DSNs have an Original-Recipient field (the others name the alias only)."""


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_aliasing_names_the_alias_and_keeps_the_address_sent_to(
    intake: tuple[Intake, int], dialect: str
) -> None:
    handler, port = intake
    rules: dict[str, Any] = {
        "user@example.com": {
            "accept_then_bounce": "invalid_address",
            "after": 0,
            "dsn": dialect,
            "final_recipient": "alias@other.test",
        }
    }
    _, sent = await send(rules, port, expect=1)
    (dsn,) = sent
    (block,) = dsn.recipients
    assert block.recipient == "alias@other.test"
    assert block.action == "failed"
    data = handler.received[0].replace(b"; ", b";")
    assert b"alias@other.test" in data
    if dialect in CARRY_ORIGINAL:
        assert block.original == "user@example.com"
        assert b"Original-Recipient: rfc822;user@example.com" in data
    else:
        # Only the VERP address (the envelope) still names the address sent to.
        assert block.original is None
        assert b"Original-Recipient" not in data


async def test_auto_reply_and_complaint_reach_the_intake(intake: tuple[Intake, int]) -> None:
    handler, port = intake
    rules: dict[str, Any] = {
        "away@example.com": "auto_reply",
        "ooo@example.com": {"auto_reply": "exchange", "after": 0},
        "angry@example.com": {"complaint": "fraud", "after": 0},
    }
    _, sent = await send(rules, port, expect=3)
    got = sorted((str(r.report), r.recipients[0].recipient, r.style) for r in sent)
    assert got == [
        ("auto_reply", "away@example.com", "vacation"),
        ("auto_reply", "ooo@example.com", "exchange"),
        ("complaint", "angry@example.com", "fraud"),
    ]
    assert all(r.ok and r.to == SENDER and r.dialect == "" for r in sent)
    messages = [parsed(data) for data in handler.received]
    replies = [m for m in messages if m["Auto-Submitted"] == "auto-replied"]
    assert sorted(str(m["From"]) for m in replies) == ["away@example.com", "ooo@example.com"]
    (arf,) = [m for m in messages if m.get_param("report-type") == "feedback-report"]
    report = next(p for p in arf.walk() if p.get_content_type() == "message/feedback-report")
    fields = report.get_payload()[0]
    assert fields["Feedback-Type"] == "fraud"
    assert fields["Original-Rcpt-To"] == "<angry@example.com>"
    # The original (with its X-CleverTap_META) comes back inside the complaint.
    assert b"X-CleverTap_META: cmp-1" in handler.received[messages.index(arf)]

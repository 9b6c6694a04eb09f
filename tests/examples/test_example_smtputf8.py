"""Non-ASCII recipients (RFC 6531) through the example integration, as a real process.

Submitted with SMTPUTF8, relayed with SMTPUTF8 (the VERP sender carries the address too),
refused or accepted by an aiosmtpd MX host, reported under the address exactly as submitted.
A server without SMTPUTF8 cannot take such an address at all: a hard bounce, no retry.
The whole path through the harness (a DSN and a click too) is the shipped ``smtputf8``
scenario.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest
import pytest_asyncio
from example_peers import SUT, campaign_message, eventually
from test_example_integration import META_1, World, legacy, legacy_items, mx_map, wait_items

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    world = World(tmp_path)
    try:
        yield world
    finally:
        await world.close()


async def submit_utf8(sut: SUT, recipients: list[str]) -> None:
    host, port = sut.smtp
    async with aiosmtplib.SMTP(hostname=host, port=port, timeout=10) as client:
        _errors, reply = await client.sendmail(
            "news@brand.test", recipients, campaign_message(META_1), mail_options=["SMTPUTF8"]
        )
    assert reply.startswith("2.0.0 Ok: queued as ")


async def test_non_ascii_recipients_are_relayed_and_reported_as_submitted(world: World) -> None:
    mx = await world.mx({"jürgen@example.com": ["rcpt:550 5.1.1 <jürgen@example.com>: unknown"]})
    idn = await world.mx(smtputf8=True)
    receiver = await world.receiver()
    env = legacy(
        receiver, HARNESS_MX_MAP=mx_map(example_com=mx.address, bücher_example=idn.address)
    )
    sut = await world.sut(env)

    await submit_utf8(sut, ["jürgen@example.com", "anna@bücher.example"])

    await eventually(lambda: len(idn.received) == 1, sut.log)
    (copy,) = idn.received
    assert (copy.mail_from, copy.rcpt) == (
        "bounces+anna=bücher.example@sut.test",
        "anna@bücher.example",
    )
    await wait_items(sut, receiver, 1, lambda: legacy_items(receiver))
    assert [(event, e) for event, e, _ts in legacy_items(receiver)] == [
        ("hardbounce", "jürgen@example.com")
    ]


async def test_a_server_without_smtputf8_is_a_hard_bounce_without_retry(world: World) -> None:
    mx = await world.mx(smtputf8=False)
    receiver = await world.receiver()
    env = legacy(receiver, HARNESS_MX_MAP=mx_map(example_com=mx.address))
    sut = await world.sut(env)

    await submit_utf8(sut, ["zoë@example.com", "ok@example.com"])

    await wait_items(sut, receiver, 1, lambda: legacy_items(receiver))
    assert [(event, e) for event, e, _ts in legacy_items(receiver)] == [
        ("hardbounce", "zoë@example.com")
    ]
    assert [r.rcpt for r in mx.received] == ["ok@example.com"]
    assert mx.attempts["zoë@example.com"] == 0  # refused before MAIL, never retried
    assert "does not offer SMTPUTF8, needed for zoë@example.com" in sut.log()

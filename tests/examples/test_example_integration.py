"""The example integration (examples/integration/gateway.py), tested as a real process.

Each test starts the gateway as a subprocess on port 0, with real peers on 127.0.0.1: aiosmtpd
MX hosts answering from a script, broken servers, and a starlette receiver playing CleverTap.
Mail goes in through aiosmtplib, DSNs are built with the email package, clicks are httpx POSTs.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from subprocess import PIPE
from typing import Any

import aiosmtplib
import httpx
import pytest
import pytest_asyncio
from example_peers import (
    GATEWAY,
    SUT,
    CallbackReceiver,
    RawServer,
    ScriptedMX,
    campaign_message,
    drop_mid_data,
    dsn,
    eventually,
    greeting_421,
    refused_port,
    self_signed_certificate,
    start_sut,
    sut_environment,
    tarpit,
)

pytestmark = pytest.mark.asyncio

META_1 = "alice@example.com|1568798080|1730714617|20241104|0|wzrk_default|-17005904|"
META_2 = "bob@example.com|1568798081|1730714618|20241104|0|wzrk_default|-17005905|"
LIST_UNSUBSCRIBE = re.compile(
    r"^<(http://127\.0\.0\.1:\d+/u/([a-z2-7]{24}))>, <mailto:unsubscribe\+\2@sut\.test>$"
)


class World:
    """Starts peers and SUTs for one test and stops them all (SUTs first) at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._suts: list[SUT] = []
        self._peers: list[ScriptedMX | RawServer | CallbackReceiver] = []

    async def mx(
        self, script: Mapping[str, Sequence[str]] | None = None, **options: Any
    ) -> ScriptedMX:
        server = ScriptedMX(script, **options)
        await server.start()
        self._peers.append(server)
        return server

    async def raw(self, talk: Callable[[Any, Any], Awaitable[None]]) -> RawServer:
        server = RawServer(talk)
        await server.start()
        self._peers.append(server)
        return server

    async def receiver(
        self, responses: Sequence[tuple[int, dict[str, str]]] = ()
    ) -> CallbackReceiver:
        receiver = CallbackReceiver(responses)
        await receiver.start()
        self._peers.append(receiver)
        return receiver

    async def sut(self, env: Mapping[str, str], args: Sequence[str] = ()) -> SUT:
        sut = await start_sut(self.tmp_path, env, args)
        self._suts.append(sut)
        return sut

    async def close(self) -> None:
        problems = []
        try:
            for sut in self._suts:
                # Every run ends the way the harness ends it: SIGTERM, clean exit, no crash on
                # the way (an exception inside a handler would show as a traceback).
                code = await sut.stop()
                if code != 0 or "Traceback" in sut.log():
                    problems.append(f"SUT exit code {code}; its log:\n{sut.log()}")
        finally:
            for peer in reversed(self._peers):
                await peer.stop()
        if problems:
            raise AssertionError("\n".join(problems))


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    world = World(tmp_path)
    try:
        yield world
    finally:
        await world.close()


def legacy(receiver: CallbackReceiver, **env: str) -> dict[str, str]:
    return {
        "HARNESS_CALLBACK_FORMAT": "legacy",
        "HARNESS_BOUNCE_URL": receiver.url("/bounce"),
        "HARNESS_UNSUBSCRIBE_URL": receiver.url("/unsubscribe"),
        **env,
    }


def v2(receiver: CallbackReceiver, **env: str) -> dict[str, str]:
    return {"HARNESS_CALLBACK_FORMAT": "v2", "HARNESS_V2_URL": receiver.url("/v2"), **env}


def mx_map(**domains: str) -> str:
    return json.dumps({domain.replace("_", "."): address for domain, address in domains.items()})


async def submit(
    sut: SUT,
    recipients: Sequence[str],
    *,
    meta: str = META_1,
    **client_options: Any,
) -> str:
    host, port = sut.smtp
    client = aiosmtplib.SMTP(hostname=host, port=port, timeout=10, **client_options)
    async with client:
        _errors, reply = await client.sendmail(
            "news@brand.test", list(recipients), campaign_message(meta)
        )
    return reply


def legacy_items(receiver: CallbackReceiver, path: str = "/bounce") -> list[tuple[str, str, Any]]:
    """(event, e, ts) of every item accepted on *path*, in order."""
    return [
        (group["event"], item["e"], item["ts"])
        for body in receiver.accepted(path)
        for group in body
        for item in group["data"]
    ]


def v2_items(receiver: CallbackReceiver) -> list[dict[str, str]]:
    return [
        item
        for body in receiver.accepted("/v2")
        for bucket in ("success", "failed")
        for item in body["events"][bucket]
    ]


async def wait_items(
    sut: SUT, receiver: CallbackReceiver, count: int, items: Callable[[], Sequence[Any]]
) -> None:
    await eventually(
        lambda: len(items()) >= count,
        lambda: f"callbacks:\n{receiver.describe()}\nSUT log:\n{sut.log()}",
    )


# -- readiness and relaying -------------------------------------------------------------------


async def test_ready_file_names_every_listener(world: World) -> None:
    receiver = await world.receiver()
    sut = await world.sut(legacy(receiver, HARNESS_MX_MAP="{}"))

    assert set(sut.ready) == {"smtp", "bounce_intake", "http"}
    assert re.fullmatch(r"127\.0\.0\.1:\d+", sut.ready["smtp"])
    assert re.fullmatch(r"127\.0\.0\.1:\d+", sut.ready["bounce_intake"])
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sut.ready["http"])
    # Every listener accepts by the time the file exists.
    for host, port in (sut.smtp, sut.intake):
        client = aiosmtplib.SMTP(hostname=host, port=port, timeout=5)
        async with client:
            assert (await client.noop()).code == 250
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{sut.ready['http']}/u/nosuchtoken")).status_code == 404


async def test_relayed_copy_is_verp_addressed_with_one_click_headers(world: World) -> None:
    mx = await world.mx()
    receiver = await world.receiver()
    sut = await world.sut(legacy(receiver, HARNESS_MX_MAP=mx_map(example_com=mx.address)))

    reply = await submit(sut, ["Ann.Lee@example.com", "bob@example.com"])

    assert reply.startswith("2.0.0 Ok: queued as ")
    await eventually(lambda: len(mx.received) == 2, sut.log)
    by_rcpt = {r.rcpt: r for r in mx.received}
    assert by_rcpt["Ann.Lee@example.com"].mail_from == "bounces+Ann.Lee=example.com@sut.test"
    assert by_rcpt["bob@example.com"].mail_from == "bounces+bob=example.com@sut.test"
    original = campaign_message(META_1)
    tokens = set()
    for received in mx.received:
        head, _, rest = received.content.partition(b"\r\n")
        second, _, untouched = rest.partition(b"\r\n")
        match = LIST_UNSUBSCRIBE.match(head.decode().removeprefix("List-Unsubscribe: "))
        assert head.startswith(b"List-Unsubscribe: "), received.content
        assert match, head
        assert second == b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"
        # The submitted message follows byte for byte, X-CleverTap_META included.
        assert untouched == original
        tokens.add(match.group(2))
    assert len(tokens) == 2


@pytest.mark.parametrize("level", ["info", "debug"])
async def test_one_info_line_per_copy_names_its_queue_id(world: World, level: str) -> None:
    mx = await world.mx()
    receiver = await world.receiver()
    env = legacy(receiver, HARNESS_MX_MAP=mx_map(example_com=mx.address))
    sut = await world.sut({**env, "EXAMPLE_LOG_LEVEL": level})

    reply = await submit(sut, ["ann@example.com", "bob@example.com"])

    queue_id = reply.removeprefix("2.0.0 Ok: queued as ")
    await eventually(lambda: sut.log().count(f"{queue_id}: relayed ") == 2, sut.log)
    log = sut.log()
    assert f"INFO {queue_id}: relayed ann@example.com via 127.0.0.1:" in log
    assert f"INFO {queue_id}: relayed bob@example.com via 127.0.0.1:" in log
    queued = f"DEBUG {queue_id}: queued from news@brand.test for 2 recipient(s)"
    assert (queued in log) == (level == "debug")


# -- connection reuse -------------------------------------------------------------------------


async def submit_each(sut: SUT, mx: ScriptedMX, recipients: Sequence[str]) -> None:
    """Submit one message per recipient, each after the previous one was delivered: they go
    one after another, so a cached connection is there for the next one."""
    for recipient in recipients:
        before = len(mx.received)
        await submit(sut, [recipient])
        await eventually(lambda n=before + 1: len(mx.received) == n, sut.log)  # type: ignore[misc]


@pytest.mark.parametrize(("reuse", "connections"), [(None, 1), ("2", 2), ("0", 4)])
async def test_connections_are_reused_up_to_the_cap(
    world: World, reuse: str | None, connections: int
) -> None:
    # Four transactions: ok1, grey refused (451: the RSET after it leaves the connection fit
    # for the next MAIL, else aiosmtpd answers 503 nested MAIL and grey bounces hard), grey
    # retried, ok2. At most two messages per connection take two; none (0) takes four.
    mx = await world.mx({"grey@example.com": ["rcpt:451 4.7.1 Greylisted", "accept"]})
    receiver = await world.receiver()
    env = {"EXAMPLE_MX_REUSE": reuse} if reuse is not None else {}
    sut = await world.sut(
        legacy(
            receiver,
            HARNESS_MX_MAP=mx_map(example_com=mx.address),
            EXAMPLE_MX_REUSE_IDLE="30",
            **env,
        )
    )

    await submit_each(sut, mx, ["ok1@example.com", "grey@example.com", "ok2@example.com"])

    assert mx.connections == connections, sut.log()
    assert mx.attempts == {"ok1@example.com": 1, "grey@example.com": 2, "ok2@example.com": 1}
    assert receiver.calls == []
    assert "deferred grey@example.com (attempt 1): 451 4.7.1 Greylisted" in sut.log()


async def test_idle_connections_are_closed_after_the_idle_time(world: World) -> None:
    mx = await world.mx()
    receiver = await world.receiver()
    sut = await world.sut(
        legacy(receiver, HARNESS_MX_MAP=mx_map(example_com=mx.address), EXAMPLE_MX_REUSE_IDLE="0.3")
    )
    await submit_each(sut, mx, ["a@example.com"])
    await eventually(
        lambda: mx.open_connections == 0, lambda: "the gateway kept its idle connection open"
    )
    await submit_each(sut, mx, ["b@example.com"])
    assert mx.connections == 2


async def test_a_cached_connection_the_server_closed_is_not_an_attempt(world: World) -> None:
    # No retries at all: if the dead cached connection counted as the attempt, the message
    # would bounce soft instead of going out over a new connection.
    mx = await world.mx()
    receiver = await world.receiver()
    sut = await world.sut(
        legacy(
            receiver,
            HARNESS_MX_MAP=mx_map(example_com=mx.address),
            EXAMPLE_RETRY_DELAYS="",
            EXAMPLE_MX_REUSE_IDLE="30",
        )
    )
    await submit_each(sut, mx, ["first@example.com"])

    mx.idle_421 = True  # the server timed the cached connection out: 421 to its next MAIL
    await submit_each(sut, mx, ["second@example.com"])
    assert mx.connections == 2
    assert "cached connection to 127.0.0.1" in sut.log()

    mx.idle_421 = False
    mx.hang_up()  # the server went away and came back: the cached connection is dead
    await submit_each(sut, mx, ["third@example.com"])
    assert mx.connections == 3

    assert mx.attempts == {"first@example.com": 1, "second@example.com": 1, "third@example.com": 1}
    await asyncio.sleep(0.5)  # longer than the batch window: a bounce would be out by now
    assert receiver.calls == [], receiver.describe()
    assert "bounced" not in sut.log()


# -- classification of live SMTP outcomes -----------------------------------------------------


async def test_legacy_bounces_classified_per_reply(world: World) -> None:
    mx = await world.mx(
        {
            "full@example.com": ["rcpt:452 4.2.2 The recipient's inbox is out of storage space"],
            "unknown@example.com": ["rcpt:550 5.1.1 The email account does not exist"],
            "quota@example.com": ["rcpt:552 5.2.2 Mailbox full"],
            "disabled@example.com": ["rcpt:550 5.2.1 The email account is inactive"],
            "bare@example.com": ["rcpt:550 Requested action not taken: mailbox unavailable"],
            "spam@example.com": ["data:554 5.7.1 Message rejected as likely unsolicited mail"],
            "big@example.com": ["data:552 5.3.4 Message size exceeds fixed limit"],
            "route@example.com": ["rcpt:550 5.4.4 Unable to route"],
            "grey@example.com": ["rcpt:451 4.7.1 Greylisted, try again later", "accept"],
        }
    )
    receiver = await world.receiver()
    sut = await world.sut(legacy(receiver, HARNESS_MX_MAP=mx_map(example_com=mx.address)))
    recipients = [
        "ok@example.com",
        "full@example.com",
        "unknown@example.com",
        "quota@example.com",
        "disabled@example.com",
        "bare@example.com",
        "spam@example.com",
        "big@example.com",
        "route@example.com",
        "grey@example.com",
        "someone@nowhere.test",
    ]
    start = int(time.time())

    await submit(sut, recipients)
    await wait_items(sut, receiver, 9, lambda: legacy_items(receiver))
    end = int(time.time())

    items = legacy_items(receiver)
    assert sorted((event, e) for event, e, _ in items) == [
        ("hardbounce", "bare@example.com"),
        ("hardbounce", "disabled@example.com"),
        ("hardbounce", "route@example.com"),
        ("hardbounce", "someone@nowhere.test"),
        ("hardbounce", "unknown@example.com"),
        ("softbounce", "big@example.com"),
        ("softbounce", "full@example.com"),
        ("softbounce", "quota@example.com"),
        ("softbounce", "spam@example.com"),
    ]
    for _event, _e, ts in items:
        assert type(ts) is int
        assert start <= ts <= end
    # 4xx is retried per EXAMPLE_RETRY_DELAYS (two retries); 5xx is never retried.
    assert mx.attempts["full@example.com"] == 3
    assert mx.attempts["grey@example.com"] == 2
    assert mx.attempts["unknown@example.com"] == 1
    assert mx.attempts["spam@example.com"] == 1
    assert sorted(r.rcpt for r in mx.received) == ["grey@example.com", "ok@example.com"]
    # The unknown domain was never looked up nor connected to.
    assert "nowhere.test" not in mx.attempts
    for call in receiver.calls:
        assert call.path == "/bounce"
        assert call.content_type == "application/json"
        body = call.json()
        # Grouped by event: at most one group per class, none empty.
        assert len({g["event"] for g in body}) == len(body)
        assert all(g["data"] for g in body)


async def test_server_down_modes_become_soft_bounces_after_retries(world: World) -> None:
    slow, closed, drop = (
        await world.raw(tarpit),
        await world.raw(greeting_421),
        await world.raw(drop_mid_data),
    )
    receiver = await world.receiver()
    with refused_port() as refused:
        sut = await world.sut(
            legacy(
                receiver,
                HARNESS_MX_MAP=mx_map(
                    tarpit_test=slow.address,
                    greeting_test=closed.address,
                    drop_test=drop.address,
                    refused_test=refused,
                ),
                EXAMPLE_SMTP_TIMEOUT="0.3",
            )
        )
        await submit(sut, ["a@tarpit.test", "b@greeting.test", "c@drop.test", "d@refused.test"])
        await wait_items(sut, receiver, 4, lambda: legacy_items(receiver))

    assert sorted((event, e) for event, e, _ in legacy_items(receiver)) == [
        ("softbounce", "a@tarpit.test"),
        ("softbounce", "b@greeting.test"),
        ("softbounce", "c@drop.test"),
        ("softbounce", "d@refused.test"),
    ]
    # One attempt plus two retries each.
    assert (slow.connections, closed.connections, drop.connections) == (3, 3, 3)
    log = sut.log()
    assert "bounced a@tarpit.test soft after 3 attempt(s): 4.4.2 timed out after 0.3 s" in log
    assert "bounced b@greeting.test soft after 3 attempt(s): 421 4.3.2 Service not" in log
    assert "bounced c@drop.test soft after 3 attempt(s): 4.4.2 connection dropped" in log
    assert "bounced d@refused.test soft after 3 attempt(s): 4.4.1 cannot connect" in log


# -- v2 ---------------------------------------------------------------------------------------


async def test_v2_reports_deliveries_and_bounces_with_meta(world: World) -> None:
    mx = await world.mx(
        {
            "unknown@example.com": ["rcpt:550 5.1.1 The email account does not exist"],
            "full@example.com": ["rcpt:452 4.2.2 Mailbox full"],
        }
    )
    receiver = await world.receiver()
    sut = await world.sut(v2(receiver, HARNESS_MX_MAP=mx_map(example_com=mx.address)))

    await submit(sut, ["ok@example.com", "unknown@example.com"], meta=META_1)
    await submit(sut, ["full@example.com"], meta=META_2)
    await wait_items(sut, receiver, 3, lambda: v2_items(receiver))

    for call in receiver.calls:
        body = call.json()
        assert call.content_type == "application/json"
        assert body["version"] == "v2"
        assert set(body["events"]) == {"success", "failed"}
    success = [i for b in receiver.accepted("/v2") for i in b["events"]["success"]]
    failed = [i for b in receiver.accepted("/v2") for i in b["events"]["failed"]]
    assert success == [{"type": "delivered", "email": "ok@example.com", "meta": META_1}]
    assert sorted(failed, key=lambda i: i["email"]) == [
        {
            "type": "soft_bounce",
            "email": "full@example.com",
            "meta": META_2,
            "description": "452 4.2.2 Mailbox full",
        },
        {
            "type": "hard_bounce",
            "email": "unknown@example.com",
            "meta": META_1,
            "description": "550 5.1.1 The email account does not exist",
        },
    ]


async def test_batches_are_split_at_1000_events_and_sigterm_flushes(world: World) -> None:
    receiver = await world.receiver()
    # A window far longer than the test: only SIGTERM can make these events go out.
    sut = await world.sut(v2(receiver, HARNESS_MX_MAP="{}", EXAMPLE_BATCH_WINDOW="60"))
    recipients = [f"user{n}@nowhere.test" for n in range(1001)]

    await submit(sut, recipients)
    await eventually(lambda: sut.log().count("bounced user") == 1001, sut.log)
    assert receiver.calls == []
    assert await sut.stop() == 0

    sizes = [len(body["events"]["failed"]) for body in receiver.accepted("/v2")]
    assert sizes == [1000, 1]
    reported = [item["email"] for item in v2_items(receiver)]
    assert sorted(reported) == sorted(recipients)
    assert all(item["type"] == "hard_bounce" for item in v2_items(receiver))


# -- DSNs at the bounce intake ----------------------------------------------------------------


async def send_dsn(sut: SUT, to: str, message: bytes) -> None:
    host, port = sut.intake
    client = aiosmtplib.SMTP(hostname=host, port=port, timeout=5)
    async with client:
        # DSNs come from the null sender (RFC 3464).
        await client.sendmail("", [to], message)


def failed(address: str, status: str, diagnostic: str | None = None) -> dict[str, str]:
    block = {"Final-Recipient": f"rfc822; {address}", "Action": "failed", "Status": status}
    if diagnostic:
        block["Diagnostic-Code"] = diagnostic
    return block


async def test_dsns_from_postfix_and_exim_are_classified(world: World) -> None:
    mx = await world.mx()
    receiver = await world.receiver()
    sut = await world.sut(legacy(receiver, HARNESS_MX_MAP=mx_map(example_com=mx.address)))
    names = ["a", "b", "c", "c2", "d", "e", "f"]
    await submit(sut, [f"{n}@example.com" for n in names])
    await eventually(lambda: len(mx.received) == len(names), sut.log)
    verp = {n: f"bounces+{n}=example.com@sut.test" for n in names}

    # Postfix: the real status in Status.
    postfix_a = dsn(
        verp["a"],
        [failed("a@example.com", "5.1.1", "smtp; 550 5.1.1 <a@example.com>: User unknown")],
    )
    await send_dsn(sut, verp["a"], postfix_a)
    # Exim: generic 5.0.0; the real code only in Diagnostic-Code. Final-Recipient is an alias
    # the next hop expanded to: VERP still names the address we sent to.
    await send_dsn(
        sut,
        verp["b"],
        dsn(
            verp["b"],
            [failed("b.alias@mail.example.com", "5.0.0", "smtp; 550 5.1.1 No such user")],
            extra_headers={"X-Failed-Recipients": "b.alias@mail.example.com"},
        ),
    )
    await send_dsn(
        sut,
        verp["c"],
        dsn(verp["c"], [failed("c@example.com", "5.0.0", "smtp; 452 4.2.2 Over quota")]),
    )
    await send_dsn(
        sut,
        verp["c2"],
        dsn(verp["c2"], [failed("c2@example.com", "5.0.0", "X-Exim; retry timeout exceeded")]),
    )
    # Postfix giving up after its queue lifetime: failed, with the last 4.x.x status.
    await send_dsn(
        sut, verp["d"], dsn(verp["d"], [failed("d@example.com", "4.2.2", "smtp; 452 4.2.2 Full")])
    )
    # A delay warning is not a bounce.
    delayed = {"Final-Recipient": "rfc822; e@example.com", "Action": "delayed", "Status": "4.4.1"}
    await send_dsn(sut, verp["e"], dsn(verp["e"], [delayed]))
    # Sent to the plain bounce address: only Final-Recipient says who.
    await send_dsn(
        sut,
        "bounces@sut.test",
        dsn("bounces@sut.test", [failed("f@example.com", "5.1.1", "smtp; 550 5.1.1 Unknown")]),
    )
    # The same report again (MTAs do resend): no second event.
    await send_dsn(sut, verp["a"], postfix_a)
    # Not a report at all: accepted, ignored.
    await send_dsn(sut, verp["a"], campaign_message(META_1))

    await wait_items(sut, receiver, 6, lambda: legacy_items(receiver))
    # A sentinel: once its callback arrived, everything sent before it was processed.
    await send_dsn(
        sut, verp["e"], dsn(verp["e"], [failed("e@example.com", "5.1.1", "smtp; 550 5.1.1 Gone")])
    )
    await wait_items(sut, receiver, 7, lambda: legacy_items(receiver))

    assert sorted((event, e) for event, e, _ in legacy_items(receiver)) == [
        ("hardbounce", "a@example.com"),
        ("hardbounce", "b@example.com"),
        ("hardbounce", "e@example.com"),
        ("hardbounce", "f@example.com"),
        ("softbounce", "c2@example.com"),
        ("softbounce", "c@example.com"),
        ("softbounce", "d@example.com"),
    ]
    assert "is not a delivery status report; ignored" in sut.log()


async def test_v2_dsn_meta_comes_from_the_returned_headers(world: World) -> None:
    mx = await world.mx()
    receiver = await world.receiver()
    sut = await world.sut(v2(receiver, HARNESS_MX_MAP=mx_map(example_com=mx.address)))
    await submit(sut, ["ann@example.com"], meta=META_1)
    await submit(sut, ["ann@example.com"], meta=META_2)
    await wait_items(sut, receiver, 2, lambda: v2_items(receiver))
    verp = "bounces+ann=example.com@sut.test"

    # Accepted then bounced: the report returns the headers of the first message.
    await send_dsn(
        sut,
        verp,
        dsn(
            verp,
            [failed("ann@example.com", "5.1.1", "smtp; 550 5.1.1 Mailbox gone")],
            returned_headers=f"Subject: Spring sale\nX-CleverTap_META: {META_1}\n",
        ),
    )
    await wait_items(sut, receiver, 3, lambda: v2_items(receiver))

    assert v2_items(receiver) == [
        {"type": "delivered", "email": "ann@example.com", "meta": META_1},
        {"type": "delivered", "email": "ann@example.com", "meta": META_2},
        {
            "type": "hard_bounce",
            "email": "ann@example.com",
            "meta": META_1,
            "description": "DSN: 550 5.1.1 Mailbox gone",
        },
    ]


# -- unsubscribes -----------------------------------------------------------------------------


async def tokens_by_recipient(mx: ScriptedMX) -> dict[str, str]:
    tokens = {}
    for received in mx.received:
        first_line = received.content.split(b"\r\n", 1)[0].decode()
        match = LIST_UNSUBSCRIBE.match(first_line.removeprefix("List-Unsubscribe: "))
        assert match, first_line
        tokens[received.rcpt] = match.group(1)
    return tokens


async def test_one_click_unsubscribe_once_and_never_on_get(world: World) -> None:
    mx = await world.mx()
    receiver = await world.receiver()
    sut = await world.sut(legacy(receiver, HARNESS_MX_MAP=mx_map(example_com=mx.address)))
    await submit(sut, ["ann@example.com", "bob@example.com", "cat@example.com"])
    await eventually(lambda: len(mx.received) == 3, sut.log)
    urls = await tokens_by_recipient(mx)
    start = int(time.time())

    async with httpx.AsyncClient() as http:
        page = await http.get(urls["ann@example.com"])
        assert page.status_code == 200
        assert '<form method="post"' in page.text
        assert "ann@example.com" in page.text
        one_click = await http.post(
            urls["ann@example.com"],
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        # 200, never a redirect (httpx does not follow redirects by default).
        assert one_click.status_code == 200
        await wait_items(sut, receiver, 1, lambda: legacy_items(receiver, "/unsubscribe"))
        again = await http.post(urls["ann@example.com"], data={"List-Unsubscribe": "One-Click"})
        assert again.status_code == 200
        # multipart/form-data is allowed by RFC 8058 too.
        multipart = await http.post(
            urls["bob@example.com"], files={"List-Unsubscribe": (None, "One-Click")}
        )
        assert multipart.status_code == 200
        unknown = await http.post(
            urls["ann@example.com"].rsplit("/", 1)[0] + "/" + "a" * 24,
            data={"List-Unsubscribe": "One-Click"},
        )
        assert unknown.status_code == 404
    # The mailto link of the same header works on the bounce intake; it is also the sentinel:
    # once its callback arrived, the clicks before it were all processed.
    cat_token = urls["cat@example.com"].rsplit("/", 1)[1]
    host, port = sut.intake
    client = aiosmtplib.SMTP(hostname=host, port=port, timeout=5)
    async with client:
        await client.sendmail("cat@example.com", [f"unsubscribe+{cat_token}@sut.test"], b"\r\n")
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await client.sendmail("x@example.com", ["unsubscribe+nosuchtoken@sut.test"], b"\r\n")
    assert refused.value.recipients[0].code == 550
    await wait_items(sut, receiver, 3, lambda: legacy_items(receiver, "/unsubscribe"))
    end = int(time.time())

    items = legacy_items(receiver, "/unsubscribe")
    assert [(event, e) for event, e, _ in items] == [
        ("unsubscribe", "ann@example.com"),
        ("unsubscribe", "bob@example.com"),
        ("unsubscribe", "cat@example.com"),
    ]
    assert all(type(ts) is int and start <= ts <= end for _, _, ts in items)
    assert legacy_items(receiver, "/bounce") == []
    log = sut.log()
    assert "unsubscribed ann@example.com via one-click" in log
    assert "unsubscribed bob@example.com via one-click" in log
    assert "unsubscribed cat@example.com via mailto" in log


async def test_v2_unsubscribe_goes_to_failed_with_meta(world: World) -> None:
    mx = await world.mx()
    receiver = await world.receiver()
    sut = await world.sut(v2(receiver, HARNESS_MX_MAP=mx_map(example_com=mx.address)))
    await submit(sut, ["ann@example.com"], meta=META_2)
    await wait_items(sut, receiver, 1, lambda: v2_items(receiver))
    url = (await tokens_by_recipient(mx))["ann@example.com"]

    async with httpx.AsyncClient() as http:
        # The confirm form of the page posts something else than one-click: still a POST.
        assert (await http.post(url, data={"confirm": "yes"})).status_code == 200
    await wait_items(sut, receiver, 2, lambda: v2_items(receiver))

    assert receiver.accepted("/v2")[-1] == {
        "version": "v2",
        "events": {
            "success": [],
            "failed": [
                {
                    "type": "unsubscribed",
                    "email": "ann@example.com",
                    "meta": META_2,
                    "description": "unsubscribed via form",
                }
            ],
        },
    }


# -- callback delivery ------------------------------------------------------------------------


async def test_callbacks_are_retried_after_503_and_429(world: World) -> None:
    receiver = await world.receiver([(503, {}), (429, {"Retry-After": "1"}), (503, {})])
    sut = await world.sut(legacy(receiver, HARNESS_MX_MAP="{}"))

    await submit(sut, ["gone@nowhere.test"])
    await wait_items(sut, receiver, 1, lambda: legacy_items(receiver))

    assert [c.status for c in receiver.calls] == [503, 429, 503, 200]
    # Each retry resends the same body: the same event, not a new one.
    assert len({c.body for c in receiver.calls}) == 1
    assert [(e, a) for e, a, _ in legacy_items(receiver)] == [("hardbounce", "gone@nowhere.test")]


async def test_callbacks_are_not_retried_after_400(world: World) -> None:
    receiver = await world.receiver([(400, {})])
    sut = await world.sut(legacy(receiver, HARNESS_MX_MAP="{}"))

    await submit(sut, ["first@nowhere.test"])
    await eventually(lambda: "callback REJECTED, not retried" in sut.log(), sut.log)
    await submit(sut, ["second@nowhere.test"])
    await wait_items(sut, receiver, 1, lambda: legacy_items(receiver))

    assert [c.status for c in receiver.calls] == [400, 200]
    assert [(e, a) for e, a, _ in legacy_items(receiver)] == [("hardbounce", "second@nowhere.test")]


# -- submission: AUTH and TLS -----------------------------------------------------------------


async def test_submission_requires_auth(world: World) -> None:
    mx = await world.mx()
    receiver = await world.receiver()
    sut = await world.sut(
        legacy(
            receiver,
            HARNESS_MX_MAP=mx_map(example_com=mx.address),
            HARNESS_SUBMISSION_USER="clevertap",
            HARNESS_SUBMISSION_PASSWORD="s3cret",
        )
    )
    host, port = sut.smtp

    client = aiosmtplib.SMTP(hostname=host, port=port, timeout=5)
    async with client:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as no_auth:
            await client.sendmail("news@brand.test", ["a@example.com"], campaign_message(META_1))
        assert no_auth.value.code == 530
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as wrong:
            await client.login("clevertap", "wrong")
        assert wrong.value.code == 535
    await submit(sut, ["a@example.com"], username="clevertap", password="s3cret")
    await eventually(lambda: len(mx.received) == 1, sut.log)


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_submission_over_tls(world: World, tmp_path: Path, mode: str) -> None:
    cert, key = self_signed_certificate(tmp_path)
    mx = await world.mx()
    receiver = await world.receiver()
    sut = await world.sut(
        legacy(
            receiver,
            HARNESS_MX_MAP=mx_map(example_com=mx.address),
            HARNESS_SUBMISSION_USER="clevertap",
            HARNESS_SUBMISSION_PASSWORD="s3cret",
            HARNESS_SUBMISSION_TLS=mode,
            HARNESS_TLS_CERT=str(cert),
            HARNESS_TLS_KEY=str(key),
        )
    )
    host, port = sut.smtp
    if mode == "starttls":
        # Credentials never travel in clear: no AUTH before STARTTLS.
        plain = aiosmtplib.SMTP(hostname=host, port=port, timeout=5, start_tls=False)
        async with plain:
            with pytest.raises(aiosmtplib.SMTPException):
                await plain.login("clevertap", "s3cret")
    tls: dict[str, Any] = {"start_tls": True} if mode == "starttls" else {"use_tls": True}
    await submit(
        sut,
        ["a@example.com"],
        username="clevertap",
        password="s3cret",
        validate_certs=False,
        **tls,
    )
    await eventually(lambda: len(mx.received) == 1, sut.log)


async def test_relay_mode_sends_everything_to_the_smarthost(world: World) -> None:
    relay = await world.mx({"bad@elsewhere.test": ["rcpt:550 5.1.1 User unknown"]})
    receiver = await world.receiver()
    sut = await world.sut(legacy(receiver, HARNESS_RELAY=relay.address))

    await submit(sut, ["a@example.com", "b@nowhere.test", "bad@elsewhere.test"])
    await wait_items(sut, receiver, 1, lambda: legacy_items(receiver))
    await eventually(lambda: len(relay.received) == 2, sut.log)

    assert sorted(r.rcpt for r in relay.received) == ["a@example.com", "b@nowhere.test"]
    assert [(e, a) for e, a, _ in legacy_items(receiver)] == [("hardbounce", "bad@elsewhere.test")]


async def test_relay_with_starttls_and_auth(world: World, tmp_path: Path) -> None:
    relay = await world.mx(tls=self_signed_certificate(tmp_path), credentials=("gw", "relay-pw"))
    receiver = await world.receiver()
    sut = await world.sut(
        legacy(
            receiver,
            HARNESS_RELAY=relay.address,
            HARNESS_RELAY_TLS="starttls",
            HARNESS_RELAY_USER="gw",
            HARNESS_RELAY_PASSWORD="relay-pw",
        )
    )
    await submit(sut, ["a@example.com"])
    await eventually(lambda: len(relay.received) == 1, sut.log)
    await submit(sut, ["b@example.com"])
    await eventually(lambda: len(relay.received) == 2, sut.log)

    # The second message went over the first one's connection, already secured and logged in.
    assert relay.logins == [("gw", True)]
    assert relay.connections == 1
    assert relay.received[0].mail_from == "bounces+a=example.com@sut.test"


# -- configuration errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set HARNESS_RELAY (host:port of a smarthost) or HARNESS_MX_MAP"),
        (
            {"HARNESS_MX_MAP": '{"example.com": 25}'},
            "HARNESS_MX_MAP['example.com']: expected \"host:port\", got 25",
        ),
        ({"HARNESS_MX_MAP": "[1]"}, "HARNESS_MX_MAP: expected a JSON object"),
        ({"HARNESS_RELAY": "localhost"}, 'HARNESS_RELAY: expected "host:port"'),
        (
            {"HARNESS_MX_MAP": "{}", "HARNESS_CALLBACK_FORMAT": "v2"},
            "HARNESS_CALLBACK_FORMAT=v2 needs HARNESS_V2_URL",
        ),
        (
            {"HARNESS_MX_MAP": "{}", "EXAMPLE_RETRY_DELAYS": "1,soon"},
            "EXAMPLE_RETRY_DELAYS: item 2 ('soon') is not a number of seconds",
        ),
        (
            {"HARNESS_MX_MAP": "{}", "EXAMPLE_MX_REUSE": "-1"},
            "EXAMPLE_MX_REUSE: expected a whole number >= 0, got '-1'",
        ),
        (
            {"HARNESS_MX_MAP": "{}", "HARNESS_SUBMISSION_TLS": "starttls"},
            "HARNESS_SUBMISSION_TLS=starttls needs HARNESS_TLS_CERT and HARNESS_TLS_KEY",
        ),
        (
            {"HARNESS_MX_MAP": "{}", "EXAMPLE_LOG_LEVEL": "loud"},
            "EXAMPLE_LOG_LEVEL: expected one of debug, info, warning; got 'loud'",
        ),
    ],
)
async def test_configuration_errors_are_named(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    full = sut_environment(
        tmp_path,
        {
            "HARNESS_BOUNCE_URL": "http://127.0.0.1:9/b",
            "HARNESS_UNSUBSCRIBE_URL": "http://127.0.0.1:9/u",
            **env,
        },
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(GATEWAY), env=full, stdout=PIPE, stderr=PIPE
    )
    _out, err = await asyncio.wait_for(process.communicate(), 20)
    stderr = err.decode()
    assert process.returncode == 2
    assert message in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "ready.json").exists()


# -- the broken variants ----------------------------------------------------------------------


async def test_bug_ms_timestamps(world: World) -> None:
    receiver = await world.receiver()
    sut = await world.sut(legacy(receiver, HARNESS_MX_MAP="{}"), ["--bug", "ms_timestamps"])
    start = time.time()
    await submit(sut, ["gone@nowhere.test"])
    await wait_items(sut, receiver, 1, lambda: legacy_items(receiver))
    end = time.time()

    [(event, e, ts)] = legacy_items(receiver)
    assert (event, e) == ("hardbounce", "gone@nowhere.test")
    assert int(start) * 1000 <= ts <= int(end) * 1000 + 999


async def test_bug_swapped_classes(world: World) -> None:
    mx = await world.mx({"full@example.com": ["rcpt:552 5.2.2 Mailbox full"]})
    receiver = await world.receiver()
    sut = await world.sut(
        legacy(receiver, HARNESS_MX_MAP=mx_map(example_com=mx.address)),
        ["--bug", "swapped_classes"],
    )
    await submit(sut, ["full@example.com", "gone@nowhere.test"])
    await wait_items(sut, receiver, 2, lambda: legacy_items(receiver))

    assert sorted((event, e) for event, e, _ in legacy_items(receiver)) == [
        ("hardbounce", "full@example.com"),
        ("softbounce", "gone@nowhere.test"),
    ]


async def test_bug_double_report(world: World) -> None:
    receiver = await world.receiver()
    sut = await world.sut(v2(receiver, HARNESS_MX_MAP="{}"), ["--bug", "double_report"])
    await submit(sut, ["gone@nowhere.test"])
    await wait_items(sut, receiver, 2, lambda: v2_items(receiver))

    assert len(receiver.calls) == 2
    assert receiver.calls[0].body == receiver.calls[1].body
    assert [i["email"] for i in v2_items(receiver)] == ["gone@nowhere.test"] * 2


async def test_bug_no_unsubscribe(world: World) -> None:
    mx = await world.mx()
    receiver = await world.receiver()
    sut = await world.sut(
        legacy(receiver, HARNESS_MX_MAP=mx_map(example_com=mx.address)),
        ["--bug", "no_unsubscribe"],
    )
    await submit(sut, ["ann@example.com"])
    await eventually(lambda: len(mx.received) == 1, sut.log)
    url = (await tokens_by_recipient(mx))["ann@example.com"]
    async with httpx.AsyncClient() as http:
        response = await http.post(url, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    # Sentinel: a bounce submitted after the click arrives; the unsubscribe never does.
    await submit(sut, ["gone@nowhere.test"])
    await wait_items(sut, receiver, 1, lambda: legacy_items(receiver))

    assert [c.path for c in receiver.calls] == ["/bounce"]
    assert "unsubscribed ann@example.com via one-click" in sut.log()


async def test_bug_no_retry(world: World) -> None:
    receiver = await world.receiver([(503, {})])
    sut = await world.sut(legacy(receiver, HARNESS_MX_MAP="{}"), ["--bug", "no_retry"])
    await submit(sut, ["first@nowhere.test"])
    await eventually(lambda: "callback FAILED after 1 attempt(s)" in sut.log(), sut.log)
    await submit(sut, ["second@nowhere.test"])
    await wait_items(sut, receiver, 1, lambda: legacy_items(receiver))

    assert [c.status for c in receiver.calls] == [503, 200]
    assert [(e, a) for e, a, _ in legacy_items(receiver)] == [("hardbounce", "second@nowhere.test")]

"""Server-down variants: each one seen by a real client, switched on and off on the same port."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
from collections.abc import Callable

import pytest

from harness.errors import ConfigError, ServerError, UnknownNameError
from harness.journal import Kind
from harness.records import DroppedMessage, HostChange, TranscriptLine
from harness.smtp.catalog import CATALOG
from harness.smtp.server import SERVER_DOWN
from harness.smtp.world import MailWorld

from .conftest import client, messages, sessions, wait_session

MSG = b"Subject: hi\r\n\r\nbody\r\n"


def test_the_variants_are_the_server_down_catalog_rows() -> None:
    assert SERVER_DOWN == (
        "refused",
        "greeting_421",
        "tarpit",
        "drop_mid_data",
        "drop_after_dot",
        "slow",
        "tls_broken",
    )


def test_refused_keeps_the_port_and_up_serves_on_it_again(mx: Callable[..., MailWorld]) -> None:
    world = mx()
    host = world.host("mx1")
    port = host.port
    world.down("mx1", "refused")
    assert host.state == "refused"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    # The port stays ours while down: nobody else can bind it.
    other = socket.socket()
    with pytest.raises(OSError, match="already in use"), other:
        other.bind(("127.0.0.1", port))
    world.up("mx1")
    assert (host.state, host.port) == ("up", port)
    with client(world) as c:
        assert c.noop() == (250, b"2.0.0 Ok")
    changes = [e.data for e in world.journal.entries(Kind.HOST)]
    assert changes == [
        HostChange(host="mx1", state="down", port=port, variant="refused", delay=None),
        HostChange(host="mx1", state="up", port=port, variant="refused", delay=None),
    ]


def test_refused_ends_open_sessions(mx: Callable[..., MailWorld]) -> None:
    world = mx()
    c = client(world)
    try:
        c.ehlo("client.test")
        world.down("mx1", "refused")
        (session,) = wait_session(world)
        assert session.end == "server_dropped"
    finally:
        c.close()


def test_greeting_421(mx: Callable[..., MailWorld]) -> None:
    world = mx(None, server_down="greeting_421")
    with pytest.raises(smtplib.SMTPConnectError) as info:
        client(world)
    expected = CATALOG["greeting_421"].reply("postfix", host="mx1.example.com")
    assert f"{info.value.smtp_code} {info.value.smtp_error.decode()}" == str(expected)
    (session,) = wait_session(world)
    assert session.variant == "greeting_421"
    assert session.replies == (TranscriptLine(stage="greeting", reply=str(expected)),)
    assert session.end == "server_dropped"


def test_tarpit_accepts_and_never_greets(mx: Callable[..., MailWorld]) -> None:
    world = mx()
    world.down("mx1", "tarpit")
    with socket.create_connection(("127.0.0.1", world.host("mx1").port), timeout=5) as sock:
        sock.settimeout(0.3)
        sock.sendall(b"EHLO impatient.test\r\n")
        with pytest.raises(TimeoutError):
            sock.recv(1024)
    (session,) = wait_session(world)
    assert session.variant == "tarpit"
    assert session.replies == ()
    assert session.commands == ("EHLO impatient.test",)
    assert session.end == "client_dropped"


def test_tarpit_sessions_end_when_the_world_stops(make_world: Callable[..., MailWorld]) -> None:
    world = make_world(lambda w: w.add_host("mx1", domains=["example.com"], server_down="tarpit"))
    with socket.create_connection(("127.0.0.1", world.host("mx1").port), timeout=5) as sock:
        world.journal.wait_for(lambda e: False, timeout=0.05)  # let the server accept it
        world.stop_sync()
        assert sock.recv(1024) == b""
    (session,) = sessions(world)
    assert session.end == "server_stopped"


def _start_data(world: MailWorld) -> smtplib.SMTP:
    c = client(world)
    c.ehlo("client.test")
    c.mail("news@brand.test")
    c.rcpt("a@example.com")
    return c


def test_drop_mid_data_hangs_up_before_the_final_dot(mx: Callable[..., MailWorld]) -> None:
    world = mx()
    world.down("mx1", "drop_mid_data")
    c = _start_data(world)
    try:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            c.data(MSG)
    finally:
        c.close()
    (session,) = wait_session(world)
    assert session.end == "server_dropped"
    assert session.dropped_message == DroppedMessage(
        sender="news@brand.test",
        recipients=("a@example.com",),
        after_dot=False,
        size=None,
        transaction=1,
    )
    assert session.replies[-1] == TranscriptLine(
        stage="data", reply="354 End data with <CR><LF>.<CR><LF>"
    )
    assert messages(world) == []


def test_drop_after_dot_hangs_up_without_a_reply(mx: Callable[..., MailWorld]) -> None:
    world = mx(None, server_down="drop_after_dot")
    c = _start_data(world)
    try:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            c.data(MSG)
    finally:
        c.close()
    (session,) = wait_session(world)
    assert session.dropped_message == DroppedMessage(
        sender="news@brand.test",
        recipients=("a@example.com",),
        after_dot=True,
        size=len(MSG),
        transaction=1,
    )
    assert session.replies[-1].reply.startswith("354 ")
    assert messages(world) == []


def test_slow_delays_every_reply(mx: Callable[..., MailWorld]) -> None:
    world = mx()
    world.down("mx1", "slow", delay=0.5)
    # A client that waits less than the delay gives up at the greeting ...
    with pytest.raises((TimeoutError, smtplib.SMTPServerDisconnected)):
        smtplib.SMTP("127.0.0.1", world.host("mx1").port, timeout=0.05)
    # ... a patient one gets through.
    with client(world) as c:
        assert c.noop() == (250, b"2.0.0 Ok")
    (change,) = world.journal.entries(Kind.HOST)
    assert change.data == HostChange(
        host="mx1", state="down", port=world.host("mx1").port, variant="slow", delay=0.5
    )
    last = wait_session(world, 2)[-1]
    assert last.variant == "slow"
    assert last.end == "quit"


def test_tls_broken_advertises_starttls_and_fails_the_handshake(
    mx: Callable[..., MailWorld],
) -> None:
    world = mx()
    world.down("mx1", "tls_broken")
    with client(world) as c:
        c.ehlo("client.test")
        assert c.has_extn("starttls")
        with pytest.raises(ssl.SSLError):
            c.starttls(context=ssl.create_default_context())
        c.close()
    (session,) = wait_session(world)
    assert session.replies[-1] == TranscriptLine(
        stage="starttls", reply="220 2.0.0 Ready to start TLS"
    )
    assert (session.tls, session.end) == (None, "server_dropped")


def test_down_checks_its_arguments(mx: Callable[..., MailWorld]) -> None:
    world = mx(None, tls="implicit")
    with pytest.raises(UnknownNameError, match="did you mean 'tarpit'"):
        world.down("mx1", "tarpitt")
    with pytest.raises(ConfigError, match="takes no options"):
        world.down("mx1", "tarpit", delay=1)
    with pytest.raises(ConfigError, match="implicit TLS"):
        world.down("mx1", "tls_broken")
    with pytest.raises(UnknownNameError, match="did you mean 'mx1'"):
        world.down("mx2", "tarpit")


@pytest.mark.asyncio
async def test_down_and_up_inside_the_running_loop() -> None:
    world = MailWorld()
    world.add_host("mx1", domains=["example.com"])
    async with world:
        host = world.host("mx1")
        port = host.port
        world.down("mx1", "refused")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        world.up("mx1")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reader.readline()).startswith(b"220 mx1.example.com")
        writer.write(b"QUIT\r\n")
        assert await reader.readline() == b"221 2.0.0 Bye\r\n"
        writer.close()
        await writer.wait_closed()
    with pytest.raises(ServerError, match="not running"):
        world.down("mx1", "tarpit")

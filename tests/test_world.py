"""The World: both fake servers on one journal, sync and async, over real sockets."""

from __future__ import annotations

import json
import smtplib
import time
from pathlib import Path

import httpx
import pytest

from harness.clevertap.server import CleverTapServer
from harness.clevertap.settings import ServerSettings
from harness.errors import ConfigError, ExpectationError, ServerError
from harness.journal import Kind, MemoryJournal
from harness.records import Callback, CallbackEvent, Dsn, HostChange, SmtpClose, SmtpOpen
from harness.scenario.loader import parse_scenario
from harness.smtp.world import MailWorld
from harness.world import World

SCENARIO = """
name: world-test
clevertap: {format: v2, endpoints: {v2: /ct/v2}}
mx:
  example.com:
    also: [example.org]
    grey@example.com: [greylist, accept]
    late@example.com: {accept_then_bounce: invalid_address, after: 0.05s}
  yahoo.test: {flavour: yahoo, tls: starttls}
campaign:
  from: news@brand.test
  to: [grey@example.com, late@example.com, a@yahoo.test, b@other.test]
"""

RELAY = """
name: relay-test
relay:
  tls: starttls
  auth: {username: gw, password: s3cret}
  "*@yahoo.test": throttle
campaign: {from: news@brand.test, to: [a@yahoo.test, b@example.com]}
"""


def _send(port: int, rcpt: str, sender: str = "bounces@sut.test") -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.ehlo("sut.test")
        client.mail(sender)
        code, reply = client.rcpt(rcpt)
        if code != 250:
            return code, reply
        return client.data(b"Subject: hi\r\nX-CleverTap_META: m|1|\r\n\r\nhello\r\n")


def test_from_scenario_builds_hosts_and_env() -> None:
    scenario = parse_scenario(SCENARIO, source="w.yaml")
    with World.from_scenario(scenario) as world:
        assert sorted(world.mail.hosts) == ["example.com", "other.test", "yahoo.test"]
        example, yahoo, other = (
            world.mail.host(n) for n in ("example.com", "yahoo.test", "other.test")
        )
        assert example.domains == ("example.com", "example.org")
        assert (yahoo.flavour, yahoo.tls) == ("yahoo", "starttls")
        urls = world.clevertap.urls
        assert world.sut_env() == {
            "HARNESS_HOST": "127.0.0.1",
            "HARNESS_CALLBACK_FORMAT": "v2",
            "HARNESS_BOUNCE_URL": urls.bounce,
            "HARNESS_UNSUBSCRIBE_URL": urls.unsubscribe,
            "HARNESS_V2_URL": urls.v2,
            "HARNESS_MX_MAP": json.dumps(
                {
                    "example.com": f"127.0.0.1:{example.port}",
                    "example.org": f"127.0.0.1:{example.port}",
                    "other.test": f"127.0.0.1:{other.port}",
                    "yahoo.test": f"127.0.0.1:{yahoo.port}",
                },
                separators=(",", ":"),
            ),
        }
        assert urls.v2.endswith("/ct/v2")


def test_relay_env_carries_credentials_and_tls() -> None:
    with World.from_scenario(parse_scenario(RELAY, source="r.yaml")) as world:
        relay = world.mail.relay
        assert relay is not None
        env = world.sut_env()
        assert "HARNESS_MX_MAP" not in env
        assert env["HARNESS_RELAY"] == f"127.0.0.1:{relay.port}"
        assert (env["HARNESS_RELAY_TLS"], env["HARNESS_RELAY_USER"]) == ("starttls", "gw")
        assert env["HARNESS_RELAY_PASSWORD"] == "s3cret"
        assert env["HARNESS_CALLBACK_FORMAT"] == "legacy"


def test_both_servers_journal_into_one_journal_and_reset_forgets_attempts() -> None:
    world = World.from_scenario(parse_scenario(SCENARIO, source="w.yaml"))
    with world:
        port = world.mail.host("example.com").port
        code, reply = _send(port, "grey@example.com")
        assert (code, reply[:5]) == (450, b"4.2.0")
        assert _send(port, "grey@example.com")[0] == 250
        # A session ends (smtp_session) when its connection does, just after the client's QUIT:
        # wait for the second one, so that the callback comes after it.
        assert world.journal.wait_for(
            lambda e: world.journal.count(Kind.SMTP_SESSION) >= 2, timeout=5
        )
        response = httpx.post(
            world.clevertap.urls.v2,
            json={
                "version": "v2",
                "events": {
                    "success": [{"type": "delivered", "email": "a@yahoo.test", "meta": "m"}]
                },
            },
        )
        assert response.status_code == 200
        kinds = [e.kind for e in world.journal.entries()]
        assert kinds == [
            Kind.SMTP_OPEN,
            Kind.SMTP_REPLY,  # 450, greylisted
            Kind.SMTP_SESSION,
            Kind.SMTP_OPEN,
            Kind.SMTP_REPLY,  # 250 at RCPT
            Kind.SMTP_MESSAGE,
            Kind.SMTP_SESSION,
            Kind.CALLBACK,
        ]
        callback = world.journal.entries(Kind.CALLBACK)[0].data
        assert isinstance(callback, Callback)
        assert callback.events == (CallbackEvent("delivered", "a@yahoo.test", None, "m"),)
        earlier = {
            e.data.session
            for e in world.journal.entries(Kind.SMTP_OPEN)
            if isinstance(e.data, SmtpOpen)
        }
        assert len(earlier) == 2
        last = world.journal.last_seq

        world.reset()

        assert world.journal.entries() == []
        # Attempts start again: greylisted on the first try, as in a fresh world.
        assert _send(port, "grey@example.com")[0] == 450
        session = world.journal.wait_for(lambda e: e.kind is Kind.SMTP_SESSION, timeout=5)
        assert session is not None
        assert isinstance(session.data, SmtpClose)
        # Numbering goes on after a reset, and session ids are never given twice.
        first = world.journal.entries()[0]
        assert first.seq == last + 1
        assert isinstance(first.data, SmtpOpen)
        assert first.data.session == session.data.session
        assert session.data.session not in earlier


def test_bounce_intake_set_after_start_receives_the_dsn(tmp_path: Path) -> None:
    maildir = tmp_path / "intake"
    with World.from_scenario(parse_scenario(SCENARIO, source="w.yaml")) as world:
        assert world.bounce_intake is None
        world.bounce_intake = maildir
        assert _send(world.mail.host("example.com").port, "late@example.com")[0] == 250
        dsn = world.journal.wait_for(lambda e: e.kind is Kind.DSN, timeout=5)
        assert dsn is not None
        assert isinstance(dsn.data, Dsn)
        assert (dsn.data.ok, dsn.data.transport, dsn.data.to) == (
            True,
            "maildir",
            "bounces@sut.test",
        )
        assert dsn.data.host == "example.com"
        assert len(list((maildir / "new").iterdir())) == 1


def test_expect_helpers_read_this_worlds_journal() -> None:
    with World() as world:
        payload = [
            {"event": "hardbounce", "data": [{"e": "x@example.com", "ts": int(time.time())}]}
        ]
        assert httpx.post(world.clevertap.urls.bounce, json=payload).status_code == 200
        entry = world.expect_callback("hardbounce", "x@example.com", within=2)
        assert entry.kind is Kind.CALLBACK
        with pytest.raises(ExpectationError):
            world.expect_no_callbacks(email="x@example.com")
        world.expect_no_callbacks(email="y@example.com")


@pytest.mark.asyncio
async def test_async_world_in_the_running_loop() -> None:
    async with World() as world:
        assert world.running
        env = world.sut_env()
        async with httpx.AsyncClient() as client:
            health = await client.get(world.clevertap.urls.control + "/health")
        assert health.status_code == 200
        assert env["HARNESS_BOUNCE_URL"] == world.clevertap.urls.bounce
    assert not world.running
    with pytest.raises(ServerError, match="start the world first"):
        world.sut_env()


def test_parts_must_share_the_journal() -> None:
    journal = MemoryJournal()
    with pytest.raises(ConfigError, match="mail world must journal into the same journal"):
        World(journal=journal, mail=MailWorld())
    with pytest.raises(ConfigError, match="server must journal into the same journal"):
        World(journal=journal, clevertap=CleverTapServer(ServerSettings()))
    mail = MailWorld()
    world = World(mail=mail, clevertap=ServerSettings(strict=False))
    assert world.journal is mail.journal is world.clevertap.journal
    with pytest.raises(ConfigError, match="callback_format"):
        World(callback_format="v3")  # type: ignore[arg-type]


def test_down_up_from_sync_code_and_reset_restores_hosts() -> None:
    scenario = parse_scenario(SCENARIO, source="w.yaml")
    with World.from_scenario(scenario) as world:
        port = world.mail.host("example.com").port
        world.down("example.com", "refused")
        with pytest.raises(ConnectionRefusedError):
            _send(port, "a@example.com")
        world.up("example.com")
        assert _send(port, "a@example.com")[0] == 250

        world.down("example.com", "greeting_421")
        world.reset()  # back as configured: serving normally, on the same port
        assert world.mail.drifted == []
        assert world.mail.host("example.com").port == port
        assert _send(port, "a@example.com")[0] == 250
        # The journal was reset with the world; bringing the host back up is journaled after.
        changes = [e.data for e in world.journal.entries(Kind.HOST)]
        assert changes == [
            HostChange(host="example.com", state="up", port=port, variant="greeting_421")
        ]


def test_reset_can_keep_the_journal() -> None:
    scenario = parse_scenario(SCENARIO, source="w.yaml")
    with World.from_scenario(scenario) as world:
        assert world.thread is not None
        assert world.thread.ident is not None
        _send(world.mail.host("example.com").port, "a@example.com")
        kept = len(world.journal)
        assert kept > 0
        world.reset(journal=False)
        assert len(world.journal) == kept
        world.reset()
        assert len(world.journal) == 0


def test_down_before_start_is_a_clear_error() -> None:
    world = World.from_scenario(parse_scenario(SCENARIO, source="w.yaml"))
    with pytest.raises(ServerError, match="not running; start it first"):
        world.down("example.com", "tarpit")


def test_starting_twice_is_an_error_for_every_server_object() -> None:
    world = World.from_scenario(parse_scenario(SCENARIO, source="w.yaml"))
    with world:
        with pytest.raises(ServerError, match="already running in a background thread"):
            world.start_sync()
        with pytest.raises(ServerError, match="the mail world is already running"):
            world.mail.start_sync()  # the world runs it, in the world's own thread
    mail = MailWorld()
    mail.add_host("mx1", domains=["example.com"])
    with mail:
        assert mail.thread is not None
        with pytest.raises(ServerError, match="already running"):
            mail.thread.run(mail.start())
    assert mail.thread is None

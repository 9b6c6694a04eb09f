"""STARTTLS, implicit TLS and AUTH (PLAIN, LOGIN) against real clients."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable

import aiosmtplib
import pytest

from harness.journal import Kind
from harness.records import SmtpClose, SmtpReply
from harness.smtp.server import MXHost
from harness.smtp.tls import make_certificate
from harness.smtp.world import MailWorld

from .conftest import client, decisions, messages, wait_session

USERS = {"campaign": "s3cret"}


def test_starttls_with_a_verified_certificate(mx: Callable[..., MailWorld]) -> None:
    world = mx(None, tls="starttls", require_tls=True)
    cert = world.host("mx1").certificate
    assert cert is not None
    with client(world) as c:
        c.ehlo("client.test")
        assert c.has_extn("starttls")
        assert c.docmd("MAIL FROM:<a@b.test>") == (
            530,
            b"5.7.0 Must issue a STARTTLS command first",
        )
        context = cert.client_context()
        assert c.starttls(context=context)[0] == 220
        c.ehlo("client.test")
        assert not c.has_extn("starttls")
        assert c.sendmail("news@brand.test", ["a@example.com"], b"Subject: x\r\n\r\ny\r\n") == {}
    (session,) = wait_session(world)
    assert session.tls == "starttls"
    (message,) = messages(world)
    assert message.tls == "starttls"
    assert message.session == session.session


def test_implicit_tls(mx: Callable[..., MailWorld]) -> None:
    cert = make_certificate(("mx1.example.com",))
    world = mx(None, tls="implicit", certificate=cert)
    port = world.host("mx1").port
    with smtplib.SMTP_SSL("127.0.0.1", port, context=cert.client_context()) as c:
        c.ehlo("client.test")
        assert not c.has_extn("starttls")
        assert c.noop() == (250, b"2.0.0 Ok")
    (session,) = wait_session(world)
    assert session.tls == "implicit"


def test_a_client_that_does_not_trust_the_certificate_fails_verification(
    mx: Callable[..., MailWorld],
) -> None:
    world = mx(None, tls="starttls")
    with client(world) as c:
        c.ehlo("client.test")
        with pytest.raises(ssl.SSLCertVerificationError):
            c.starttls(context=ssl.create_default_context())
        c.close()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_mechanisms_and_the_user_is_recorded(
    mx: Callable[..., MailWorld], mechanism: str
) -> None:
    world = mx(None, auth=USERS, auth_required=True)
    with client(world) as c:
        c.ehlo("client.test")
        assert c.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
        c.user, c.password = "campaign", "s3cret"
        authobject = c.auth_plain if mechanism == "PLAIN" else c.auth_login
        assert c.auth(mechanism, authobject) == (235, b"2.7.0 Authentication successful")
        assert c.sendmail("news@brand.test", ["a@example.com"], b"Subject: x\r\n\r\ny\r\n") == {}
    (session,) = wait_session(world)
    assert session.auth == "campaign"
    assert messages(world)[0].auth == "campaign"
    assert all("s3cret" not in command for command in session.commands)


def test_wrong_password_and_missing_auth(mx: Callable[..., MailWorld]) -> None:
    world = mx(None, auth=USERS, auth_required=True)
    with client(world) as c:
        c.ehlo("client.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            c.login("campaign", "wrong")
        assert (info.value.smtp_code, info.value.smtp_error) == (
            535,
            b"5.7.8 Authentication credentials invalid",
        )
        assert c.docmd("MAIL FROM:<a@b.test>") == (530, b"5.7.0 Authentication required")
        assert c.docmd("RCPT TO:<a@example.com>") == (530, b"5.7.0 Authentication required")
    (session,) = wait_session(world)
    assert session.auth is None
    assert "AUTH PLAIN ***" in session.commands
    # A protocol reply to RCPT is an attempt at the address that decides nothing about it.
    assert decisions(world, session) == [
        SmtpReply(
            host="mx1",
            session=session.session,
            recipient="a@example.com",
            sender="",
            stage="rcpt",
            code=530,
            enhanced="5.7.0",
            reply="530 5.7.0 Authentication required",
            mode=None,
            rule=None,
            bounce_class=None,
            attempt=None,
        )
    ]


def test_auth_on_a_host_without_users_is_refused(mx: Callable[..., MailWorld]) -> None:
    world = mx()
    with client(world) as c:
        c.ehlo("client.test")
        assert c.docmd("AUTH PLAIN AGZvbwBiYXI=") == (
            503,
            b"5.5.1 Error: authentication not enabled",
        )


@pytest.mark.asyncio
async def test_aiosmtplib_starttls_and_login() -> None:
    cert = make_certificate(("localhost",))
    async with MXHost(
        "sub", tls="starttls", certificate=cert, auth=USERS, auth_required=True
    ) as host:
        smtp = aiosmtplib.SMTP(
            hostname="localhost", port=host.port, tls_context=cert.client_context()
        )
        async with smtp:
            await smtp.login("campaign", "s3cret")
            errors, _ = await smtp.sendmail(
                "news@brand.test", ["x@anywhere.test"], b"Subject: x\r\n\r\ny\r\n"
            )
            assert errors == {}
        entry = await host.journal.wait_for_async(lambda e: e.kind is Kind.SMTP_SESSION, timeout=10)
        assert entry is not None
        assert isinstance(entry.data, SmtpClose)
        assert (entry.data.tls, entry.data.auth) == ("starttls", "campaign")

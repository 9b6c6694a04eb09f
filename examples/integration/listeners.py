"""The two SMTP listeners: submission (mail from CleverTap) and bounce intake (DSNs, mailto)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import ssl
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from core import Gateway, unquote_local
from settings import Settings

__all__ = ["start_intake", "start_submission"]

log = logging.getLogger("gateway")

# RFC 5322 atext, with \w for the letters and digits of every script (RFC 6531); dot-atoms of it
# on both sides of the "@", in angle brackets: the shape of nearly every MAIL and RCPT argument.
_ATEXT = r"[\w!#$%&'*+/=?^`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"<({_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*)>")


class _SMTP(SMTP):
    """aiosmtpd's server, with a quicker reading of the plain addresses in MAIL and RCPT.

    aiosmtpd parses every address with the email package's RFC 5322 header parser, which builds
    a token tree (~80 us per address, the largest cost of a submission in a campaign). An
    address of the plain shape above gives the same result whatever parses it, so it is read
    with one regular expression; anything else (quoted local parts, comments, source routes,
    address literals, ``<>``, malformed input) still goes to aiosmtpd's parser. aiosmtpd has no
    public hook for this: ``_getaddr`` is its private method, and
    tests/examples/test_example_addresses.py checks that both readings agree.
    """

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        match = _PLAIN_ADDRESS.match(arg)
        rest = arg[match.end() :] if match else ""
        if match is None or "(" in rest:  # a comment after the address: the parser's to strip
            try:
                return super()._getaddr(arg)
            except Exception:
                # The email package's parser crashes on some malformed addresses (IndexError,
                # AttributeError on ``<"`` or ``<9@[``) where it should raise
                # HeaderParseError; aiosmtpd would answer with the exception's text.
                return None, None  # 553 5.1.3 Error: malformed address
        address = match.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        # Like the parser, skip the blanks between the address and its parameters.
        return address, rest.lstrip() if rest[:1] in (" ", "\t") else rest


class _Submission:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        queue_id = self._gateway.accept(envelope.mail_from or "<>", envelope.rcpt_tos, raw)
        # 250 only once the message is queued: from here on, losing it is our fault.
        return f"250 2.0.0 Ok: queued as {queue_id}"


class _Intake:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        local = unquote_local(address.rpartition("@")[0]).lower()
        if local.startswith("unsubscribe+"):
            if self._gateway.lookup(local.partition("+")[2]) is None:
                return "550 5.1.1 unknown unsubscribe token"
        elif local != "bounces" and not local.startswith("bounces+"):
            return "550 5.1.1 no such mailbox: this host takes bounces and unsubscribes only"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        for rcpt in envelope.rcpt_tos:
            local = rcpt.rpartition("@")[0]
            if local.lower().startswith("unsubscribe+"):
                self._gateway.unsubscribe(local.partition("+")[2], "mailto")
            else:
                self._gateway.handle_dsn(rcpt, raw)
        return "250 2.0.0 Ok"


def _tls_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    return context


async def _serve(
    factory: Any, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> asyncio.Server:
    return await asyncio.get_running_loop().create_server(factory, host, port, ssl=ssl_context)


async def start_submission(settings: Settings, gateway: Gateway) -> asyncio.Server:
    """Bind the submission listener (AUTH, STARTTLS or implicit TLS as configured)."""
    loop = asyncio.get_running_loop()
    handler = _Submission(gateway)
    user, password = settings.submission_user, settings.submission_password
    tls = settings.submission_tls
    context = _tls_context(settings) if tls != "none" else None

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and user is not None
            and password is not None
            and hmac.compare_digest(auth_data.login, user.encode())
            and hmac.compare_digest(auth_data.password, password.encode())
        )
        # BUG(any_password): a login was given, that is all that is checked.
        if settings.bug == "any_password":
            ok = isinstance(auth_data, LoginPassword) and bool(auth_data.login)
        if not ok:
            log.warning("submission: AUTH %s failed", mechanism)
        # handled=False: aiosmtpd itself answers 235 or 535.
        return AuthResult(success=ok, handled=False)

    def factory() -> SMTP:
        return _SMTP(
            handler,
            loop=loop,
            hostname=settings.domain,
            enable_SMTPUTF8=True,
            authenticator=authenticate if user else None,
            # BUG(auth_optional): AUTH offered, never required.
            auth_required=user is not None and settings.bug != "auth_optional",
            # With implicit TLS the socket is already encrypted, but aiosmtpd only knows about
            # TLS it negotiated itself (STARTTLS): tell it not to insist.
            auth_require_tls=tls == "starttls",
            tls_context=context if tls == "starttls" else None,
            require_starttls=tls == "starttls",
        )

    return await _serve(
        factory, settings.host, settings.smtp_port, context if tls == "implicit" else None
    )


class _LenientSMTP(_SMTP):
    # A bounce must never be refused: some senders write bare LF line ends (a report copied out
    # of a mailbox file, a home-made bounce tool), and aiosmtpd reads DATA up to CRLF, so such
    # a message is one "line" that the RFC 5321 limit of 1001 octets would answer with "500
    # Line too long". ``line_length_limit`` is aiosmtpd's documented class attribute for it.
    line_length_limit = 10 * 1024 * 1024


async def start_intake(settings: Settings, gateway: Gateway) -> asyncio.Server:
    """Bind the bounce intake: DSNs to VERP addresses and mailto unsubscribes. No AUTH."""
    loop = asyncio.get_running_loop()
    handler = _Intake(gateway)

    def factory() -> SMTP:
        return _LenientSMTP(handler, loop=loop, hostname=settings.domain, enable_SMTPUTF8=True)

    return await _serve(factory, settings.host, settings.intake_port)

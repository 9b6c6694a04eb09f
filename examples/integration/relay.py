"""Outbound SMTP: one attempt to hand one recipient's copy to its MX host or the relay."""

from __future__ import annotations

from dataclasses import dataclass

import aiosmtplib

from classify import Verdict, classify_reply
from settings import Settings

__all__ = ["Attempt", "attempt_delivery", "route"]


@dataclass(frozen=True, slots=True)
class Attempt:
    verdict: Verdict
    description: str
    """The server's reply (``"550 5.1.1 ..."``) or what went wrong with the connection."""


def route(settings: Settings, recipient: str) -> tuple[str, int] | None:
    """Where mail for *recipient* goes: the relay, or its domain's MX; None for no such domain."""
    if settings.relay is not None:
        return settings.relay
    domain = recipient.rpartition("@")[2].lower()
    return settings.mx_map.get(domain)


def _reply(settings: Settings, code: int, message: str) -> Attempt:
    text = " ".join(message.split())
    verdict = classify_reply(code, text)
    # BUG(reply_code_only): "5xx means permanent", the enhanced status unread.
    if settings.bug == "reply_code_only" and code >= 500:
        verdict = Verdict.HARD
    return Attempt(verdict, f"{code} {text}")


async def attempt_delivery(
    settings: Settings, target: tuple[str, int], sender: str, recipient: str, message: bytes
) -> Attempt:
    """Try once; the verdict is TEMPORARY for 4xx replies and every connection failure."""
    host, port = target
    where = f"{host}:{port}"
    relaying = settings.relay is not None
    tls = settings.relay_tls if relaying else "opportunistic" if settings.mx_starttls else "none"
    client = aiosmtplib.SMTP(
        hostname=host,
        port=port,
        local_hostname=settings.domain,
        timeout=settings.smtp_timeout,
        use_tls=tls == "implicit",
        # MX hosts get STARTTLS when they offer it (None), unless EXAMPLE_MX_STARTTLS=off (the
        # contract makes it optional); a relay gets exactly what was asked.
        start_tls={"starttls": True, "none": False}.get(tls),
        # The harness's servers use self-signed certificates.
        validate_certs=False,
        username=settings.relay_user if relaying else None,
        password=settings.relay_password if relaying else None,
    )
    try:
        return await _exchange(client, where, settings, sender, recipient, message)
    finally:
        # Whatever happened, the socket is closed here (close() is a no-op once QUIT ran).
        client.close()


async def _exchange(
    client: aiosmtplib.SMTP,
    where: str,
    settings: Settings,
    sender: str,
    recipient: str,
    message: bytes,
) -> Attempt:
    timeout = settings.smtp_timeout
    # An internationalised address (RFC 6531) needs SMTPUTF8 on MAIL, and so does the VERP
    # sender that carries it; the bytes of the message go as submitted either way.
    utf8 = not (sender.isascii() and recipient.isascii())
    try:
        await client.connect()
        if utf8 and not client.supports_extension("smtputf8"):
            # Nothing else can carry a non-ASCII address (RFC 6531 section 3.2): the address
            # cannot be reached through this server, now or on a retry.
            return Attempt(
                Verdict.HARD, f"550 5.6.7 {where} does not offer SMTPUTF8, needed for {recipient}"
            )
        encoding = "utf-8" if utf8 else "ascii"
        await client.mail(sender, options=["SMTPUTF8"] if utf8 else None, encoding=encoding)
        await client.rcpt(recipient, encoding=encoding)
        response = await client.data(message)
    except aiosmtplib.SMTPTimeoutError:
        return Attempt(Verdict.TEMPORARY, f"4.4.2 timed out after {timeout:g} s ({where})")
    except aiosmtplib.SMTPConnectResponseError as exc:
        # A refusal in the greeting is about the server, not the address (Postfix also treats a
        # 5xx greeting as 4xx): retry.
        return Attempt(Verdict.TEMPORARY, f"{exc.code} {' '.join(exc.message.split())}")
    except aiosmtplib.SMTPConnectError as exc:
        return Attempt(Verdict.TEMPORARY, f"4.4.1 cannot connect to {where}: {exc}")
    except aiosmtplib.SMTPServerDisconnected:
        # A drop after DATA may mean the message was delivered anyway; the retry risks a
        # duplicate, which is what every MTA does too (RFC 5321 section 6.1).
        return Attempt(Verdict.TEMPORARY, f"4.4.2 connection dropped by {where}")
    except aiosmtplib.SMTPResponseException as exc:  # MAIL, RCPT or DATA refused
        return _reply(settings, exc.code, exc.message)
    except (aiosmtplib.SMTPException, OSError) as exc:
        return Attempt(Verdict.TEMPORARY, f"4.4.0 {type(exc).__name__} with {where}: {exc}")
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError):
        pass  # The message was accepted; a rude goodbye changes nothing.
    return _reply(settings, response.code, response.message)

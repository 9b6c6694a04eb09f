"""Outbound SMTP: one attempt to hand one recipient's copy to its MX host or the relay.

Connections are reused as a real MTA reuses them (Postfix's connection cache): once a message
is through, the connection stays open for the next message to the same destination, for up to
``EXAMPLE_MX_REUSE`` messages and ``EXAMPLE_MX_REUSE_IDLE`` seconds of idleness. A cached
connection the server closed meanwhile (a drop, a 421) is found out at the latest when MAIL
fails; that is the cache's failure, not the recipient's, so the attempt goes on over a new
connection, as Postfix does for a cached connection that fails before MAIL.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiosmtplib

from classify import Verdict, classify_reply
from settings import Settings

__all__ = ["MAX_IDLE_PER_DESTINATION", "Attempt", "Relay", "route"]

log = logging.getLogger("gateway")

MAX_IDLE_PER_DESTINATION = 20
"""Idle connections kept open to one destination; one more is closed instead of kept.
Postfix's default destination concurrency is 20 too."""

_QUIT_GRACE = 1.0
"""Seconds the connections still open at shutdown get to say QUIT."""

Target = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Attempt:
    verdict: Verdict
    description: str
    """The server's reply (``"550 5.1.1 ..."``) or what went wrong with the connection."""


class _Stale(Exception):
    """A cached connection the server had closed (a drop, or 421 to MAIL)."""


@dataclass(slots=True, eq=False)
class _Connection:
    client: aiosmtplib.SMTP
    messages: int = 0
    """Transactions begun on it."""
    expiry: asyncio.TimerHandle | None = None
    """Closes it when it stays idle too long; set while it waits in the cache."""


def route(settings: Settings, recipient: str) -> Target | None:
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


def _closed_by_server(exc: Exception) -> bool:
    """True when *exc* says the server is done with the connection (a drop, or 421: RFC 5321
    section 3.8), not that it refused the message."""
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return False  # a server that hangs: the attempt's own failure
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.code == 421
    return isinstance(exc, aiosmtplib.SMTPServerDisconnected | OSError)


class Relay:
    """Outbound SMTP with a cache of open connections per destination (host, port).

    Used from one event loop; a connection serves one delivery at a time.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._idle: dict[Target, list[_Connection]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def attempt(self, target: Target, sender: str, recipient: str, message: bytes) -> Attempt:
        """Try once; the verdict is TEMPORARY for 4xx replies and every connection failure."""
        while (cached := self._take(target)) is not None:
            try:
                return await self._deliver(cached, target, sender, recipient, message, reused=True)
            except _Stale:
                log.info(
                    "cached connection to %s:%d was closed by the server; connecting anew", *target
                )
        fresh = _Connection(self._client(target))
        return await self._deliver(fresh, target, sender, recipient, message, reused=False)

    async def close(self) -> None:
        """QUIT every cached connection (and wait, briefly, for the ones already quitting)."""
        for connections in self._idle.values():
            for conn in connections:
                if conn.expiry is not None:
                    conn.expiry.cancel()
                self._retire(conn)
        self._idle.clear()
        if self._closing:
            _, late = await asyncio.wait(set(self._closing), timeout=_QUIT_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # -- the cache -----------------------------------------------------------------------------

    def _client(self, target: Target) -> aiosmtplib.SMTP:
        settings = self.settings
        relaying = settings.relay is not None
        mx_tls = "opportunistic" if settings.mx_starttls else "none"
        tls = settings.relay_tls if relaying else mx_tls
        return aiosmtplib.SMTP(
            hostname=target[0],
            port=target[1],
            local_hostname=settings.domain,
            timeout=settings.smtp_timeout,
            use_tls=tls == "implicit",
            # MX hosts get STARTTLS when they offer it (None), unless EXAMPLE_MX_STARTTLS=off
            # (the contract makes it optional); a relay gets exactly what was asked.
            start_tls={"starttls": True, "none": False}.get(tls),
            # The harness's servers use self-signed certificates.
            validate_certs=False,
            username=settings.relay_user if relaying else None,
            password=settings.relay_password if relaying else None,
        )

    def _take(self, target: Target) -> _Connection | None:
        idle = self._idle.get(target)
        while idle:
            # The most recently used first: the least likely to have been closed meanwhile.
            conn = idle.pop()
            if conn.expiry is not None:
                conn.expiry.cancel()
                conn.expiry = None
            if conn.client.is_connected:
                return conn
            conn.client.close()
        return None

    def _release(self, target: Target, conn: _Connection, reusable: bool) -> None:
        """Cache *conn* for the next message to *target*, or close it."""
        idle = self._idle.setdefault(target, [])
        if (
            reusable
            and conn.client.is_connected
            and conn.messages < self.settings.mx_reuse
            and len(idle) < MAX_IDLE_PER_DESTINATION
        ):
            loop = asyncio.get_running_loop()
            conn.expiry = loop.call_later(self.settings.mx_reuse_idle, self._expire, target, conn)
            idle.append(conn)
        else:
            self._retire(conn)

    def _expire(self, target: Target, conn: _Connection) -> None:
        idle = self._idle.get(target, [])
        if conn in idle:
            idle.remove(conn)
            conn.expiry = None
            self._retire(conn)

    def _retire(self, conn: _Connection) -> None:
        """Say QUIT in the background (nobody waits for the goodbye), or just close."""
        if not conn.client.is_connected:
            conn.client.close()
            return
        task = asyncio.create_task(_quit(conn.client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- one transaction -----------------------------------------------------------------------

    async def _deliver(
        self,
        conn: _Connection,
        target: Target,
        sender: str,
        recipient: str,
        message: bytes,
        *,
        reused: bool,
    ) -> Attempt:
        """One transaction on *conn*; raises :class:`_Stale` when *conn*, a cached connection,
        turned out closed by the server before its MAIL was accepted: nothing was tried for
        *recipient*."""
        client = conn.client
        where = f"{target[0]}:{target[1]}"
        timeout = self.settings.smtp_timeout
        # An internationalised address (RFC 6531) needs SMTPUTF8 on MAIL, and so does the VERP
        # sender that carries it; the bytes of the message go as submitted either way.
        utf8 = not (sender.isascii() and recipient.isascii())
        reusable = False
        try:
            if not reused:
                await client.connect()
            if utf8 and not client.supports_extension("smtputf8"):
                reusable = True  # nothing was said for this recipient
                # Nothing else can carry a non-ASCII address (RFC 6531 section 3.2): the
                # address cannot be reached through this server, now or on a retry.
                return Attempt(
                    Verdict.HARD,
                    f"550 5.6.7 {where} does not offer SMTPUTF8, needed for {recipient}",
                )
            encoding = "utf-8" if utf8 else "ascii"
            conn.messages += 1
            try:
                await client.mail(sender, options=["SMTPUTF8"] if utf8 else None, encoding=encoding)
            except (aiosmtplib.SMTPException, OSError) as exc:
                if reused and _closed_by_server(exc):
                    raise _Stale from exc
                raise
            await client.rcpt(recipient, encoding=encoding)
            response = await client.data(message)
            reusable = True
        except aiosmtplib.SMTPTimeoutError:
            return Attempt(Verdict.TEMPORARY, f"4.4.2 timed out after {timeout:g} s ({where})")
        except aiosmtplib.SMTPConnectResponseError as exc:
            # A refusal in the greeting is about the server, not the address (Postfix also
            # treats a 5xx greeting as 4xx): retry.
            return Attempt(Verdict.TEMPORARY, f"{exc.code} {' '.join(exc.message.split())}")
        except aiosmtplib.SMTPConnectError as exc:
            return Attempt(Verdict.TEMPORARY, f"4.4.1 cannot connect to {where}: {exc}")
        except aiosmtplib.SMTPServerDisconnected:
            # A drop after DATA may mean the message was delivered anyway; the retry risks a
            # duplicate, which is what every MTA does too (RFC 5321 section 6.1).
            return Attempt(Verdict.TEMPORARY, f"4.4.2 connection dropped by {where}")
        except aiosmtplib.SMTPResponseException as exc:  # MAIL, RCPT or DATA refused
            # The transaction may still be open on the server: RSET before anyone reuses it.
            reusable = self.settings.mx_reuse > conn.messages and await _reset(client)
            return _reply(self.settings, exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Attempt(Verdict.TEMPORARY, f"4.4.0 {type(exc).__name__} with {where}: {exc}")
        except asyncio.CancelledError:
            # Cancelled mid-command (shutdown): the conversation is in no state for a QUIT.
            client.close()
            raise
        finally:
            self._release(target, conn, reusable)
        # The message was accepted whatever happens to the connection next.
        return _reply(self.settings, response.code, response.message)


async def _reset(client: aiosmtplib.SMTP) -> bool:
    """RSET; False when the connection is no good any more."""
    if not client.is_connected:
        return False
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        return False
    return True


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError):
        pass  # A rude goodbye changes nothing: every message on it has its outcome.
    finally:
        # Whatever happened, the socket is closed here (close() is a no-op once QUIT ran).
        client.close()

"""The campaign driver: plays CleverTap, submitting a scenario's campaign to the integration.

One message per recipient (as CleverTap sends them), each with its own ``X-CleverTap_META``
from the scenario's template, over SMTP with AUTH and STARTTLS or implicit TLS as the scenario's
``integration`` block says, ``campaign.per_connection`` messages per connection, several
connections at once. Every message is journaled as one :class:`~harness.records.Sent` entry
(documented in docs/runner.md)::

    {"message_id", "from", "to": [recipient], "meta", "subject", "n",
     "ok": bool, "reply": "250 ..." | None, "error": str | None}
"""

from __future__ import annotations

import asyncio
import email.policy
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate

import aiosmtplib

from harness.journal import Journal
from harness.records import Sent
from harness.scenario.model import Campaign, Credentials

__all__ = ["Submission", "build_message", "submit_campaign"]

# Headers are never folded below the RFC 5321 line limit: an X-CleverTap_META value has no
# spaces to fold at, and the integration must echo it byte for byte.
_POLICY = SMTP_POLICY.clone(max_line_length=998)
# A non-ASCII address (RFC 6531) travels as UTF-8 in the header fields too; the submission says
# SMTPUTF8 for it.
_UTF8_POLICY = _POLICY.clone(utf8=True)
UNSUBSCRIBE_PLACEHOLDER = "*|UNSUBSCRIBE|*"


@dataclass(frozen=True, slots=True)
class Submission:
    """How to reach the integration's SMTP submission port."""

    host: str
    port: int
    tls: str = "none"
    """none | starttls | implicit"""
    auth: Credentials | None = None
    tls_context: ssl.SSLContext | None = None
    """Trusts the integration's certificate (the runner made it); None skips verification."""
    timeout: float = 30.0

    def client(self, local_hostname: str) -> aiosmtplib.SMTP:
        """An unconnected SMTP client for this port, with its TLS and AUTH settings."""
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            use_tls=self.tls == "implicit",
            start_tls=self.tls == "starttls",
            validate_certs=self.tls_context is not None,
            tls_context=self.tls_context,
            username=self.auth.username if self.auth else None,
            password=self.auth.password if self.auth else None,
            local_hostname=local_hostname,
        )


def _policy(*addresses: str) -> email.policy.EmailPolicy[EmailMessage]:
    return _POLICY if all(a.isascii() for a in addresses) else _UTF8_POLICY


def build_message(campaign: Campaign, recipient: str, n: int, ts: int, token: str) -> EmailMessage:
    """The message CleverTap would submit for recipient number *n* (from 1)."""
    message = EmailMessage(policy=_policy(campaign.sender, recipient))
    message["From"] = campaign.sender
    message["To"] = recipient
    message["Subject"] = campaign.subject
    message["Date"] = formatdate(ts, localtime=False, usegmt=True)
    message["Message-ID"] = f"<{campaign.campaign_id}.{n}.{token}@harness.invalid>"
    message["X-CleverTap_META"] = campaign.meta_for(recipient, n, ts)
    for name, value in campaign.headers.items():
        message[name] = value
    message.set_content(campaign.text)
    return message


async def submit_campaign(
    campaign: Campaign,
    submission: Submission,
    journal: Journal,
    *,
    connections: int = 8,
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Submit every message of *campaign*; returns how many the integration accepted.

    Failures never raise: each message's outcome (the reply, or what went wrong) is journaled.
    *on_sent* is called with the running count of messages submitted (for progress).
    """
    recipients = campaign.recipients
    per = campaign.per_connection
    batches = [
        list(enumerate(recipients[i : i + per], start=i + 1))
        for i in range(0, len(recipients), per)
    ]
    queue: asyncio.Queue[list[tuple[int, str]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    run = secrets.token_hex(4)
    counts = {"done": 0, "ok": 0}

    def record(n: int, recipient: str, meta: str, message_id: str, **outcome: object) -> None:
        reply, error = outcome.get("reply"), outcome.get("error")
        journal.append(
            Sent(
                message_id=message_id,
                sender=campaign.sender,
                to=(recipient,),
                meta=meta,
                subject=campaign.subject,
                n=n,
                ok=bool(outcome.get("ok", False)),
                reply=None if reply is None else str(reply),
                error=None if error is None else str(error),
            )
        )
        counts["done"] += 1
        if outcome.get("ok"):
            counts["ok"] += 1
        if on_sent is not None:
            on_sent(counts["done"])

    async def worker() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            await _send_batch(campaign, submission, batch, run, record)

    workers = max(1, min(connections, len(batches)))
    await asyncio.gather(*(worker() for _ in range(workers)))
    return counts["ok"]


async def _send_batch(
    campaign: Campaign,
    submission: Submission,
    batch: list[tuple[int, str]],
    run: str,
    record: Callable[..., None],
) -> None:
    client: aiosmtplib.SMTP | None = None
    try:
        for n, recipient in batch:
            ts = int(time.time())
            message = build_message(campaign, recipient, n, ts, f"{run}{n:x}")
            meta = str(message["X-CleverTap_META"])
            message_id = str(message["Message-ID"])
            if client is None or not client.is_connected:
                client = submission.client("harness.invalid")
                try:
                    await client.connect()
                except (aiosmtplib.SMTPException, OSError) as exc:
                    record(n, recipient, meta, message_id, error=_describe(exc, submission))
                    client = None
                    continue
            utf8 = not (campaign.sender.isascii() and recipient.isascii())
            if utf8 and client.is_ehlo_or_helo_needed:
                try:
                    await client.ehlo()
                except (aiosmtplib.SMTPException, OSError) as exc:
                    record(n, recipient, meta, message_id, error=_describe(exc, submission))
                    client.close()
                    client = None
                    continue
            if utf8 and not client.supports_extension("smtputf8"):
                # Without SMTPUTF8 a non-ASCII address cannot be submitted at all (RFC 6531 3.4):
                # the integration refused it as surely as with a 5xx.
                record(
                    n,
                    recipient,
                    meta,
                    message_id,
                    error=f"{submission.host}:{submission.port} does not offer SMTPUTF8, "
                    f"needed for {recipient if not recipient.isascii() else campaign.sender}",
                )
                continue
            try:
                await client.mail(
                    campaign.sender,
                    options=["SMTPUTF8"] if utf8 else None,
                    encoding="utf-8" if utf8 else "ascii",
                )
                await client.rcpt(recipient, encoding="utf-8" if utf8 else "ascii")
                policy = _UTF8_POLICY if utf8 else _POLICY
                response = await client.data(message.as_bytes(policy=policy))
            except aiosmtplib.SMTPResponseException as exc:  # MAIL, RCPT or DATA refused
                record(n, recipient, meta, message_id, reply=f"{exc.code} {exc.message}")
                try:
                    await client.rset()  # the next message starts a clean transaction
                except (aiosmtplib.SMTPException, OSError):
                    client.close()
                    client = None
            except (aiosmtplib.SMTPException, OSError) as exc:
                record(n, recipient, meta, message_id, error=_describe(exc, submission))
                client.close()
                client = None
            else:
                reply = f"{response.code} {response.message}"
                record(n, recipient, meta, message_id, ok=True, reply=reply)
    finally:
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()


def _describe(exc: BaseException, submission: Submission) -> str:
    return f"{type(exc).__name__} with {submission.host}:{submission.port}: {exc}"

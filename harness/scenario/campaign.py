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
import functools
import re
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate

import aiosmtplib

from harness.records import Sent
from harness.scenario.model import Campaign, Credentials

__all__ = ["MessageTemplate", "Submission", "build_message", "submit_campaign"]

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
    return _compose(
        campaign,
        recipient,
        formatdate(ts, localtime=False, usegmt=True),
        _message_id(campaign, n, token),
        campaign.meta_for(recipient, n, ts),
    )


def _message_id(campaign: Campaign, n: int, token: str) -> str:
    return f"<{campaign.campaign_id}.{n}.{token}@harness.invalid>"


def _compose(
    campaign: Campaign, recipient: str, date: str, message_id: str, meta: str
) -> EmailMessage:
    message = EmailMessage(policy=_policy(campaign.sender, recipient))
    message["From"] = campaign.sender
    message["To"] = recipient
    message["Subject"] = campaign.subject
    message["Date"] = date
    message["Message-ID"] = message_id
    message["X-CleverTap_META"] = meta
    for name, value in campaign.headers.items():
        message[name] = value
    message.set_content(campaign.text)
    return message


# Values the template takes as they are: what the email policy would write unchanged (no
# quoting, folding or encoded words). Anything else goes through build_message().
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)
_PLAIN_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*")
_PLAIN_ID = re.compile(r"<[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*@harness\.invalid>")
# Placeholders the template is cut at: values the policy writes as they are.
_HOLES = {
    "to": "template.to@template.invalid",
    "date": formatdate(0, localtime=False, usegmt=True),
    "id": "<template.id@harness.invalid>",
    "meta": "template-meta-value",
}


class MessageTemplate:
    """A campaign's message as bytes with four holes (To, Date, Message-ID, X-CleverTap_META),
    filled per recipient in microseconds where ``EmailMessage`` takes most of a millisecond.

    The bytes are those of :func:`build_message` (``tests/scenario/test_campaign_template.py``
    compares them on generated campaigns); a recipient or value the email policy would quote,
    fold or encode is built by :func:`build_message` itself.
    """

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self._parts: list[bytes] | None = None
        self._order: list[str] = []
        if not campaign.sender.isascii():
            return  # the UTF-8 policy throughout: build_message() it is
        raw = _compose(
            campaign, _HOLES["to"], _HOLES["date"], _HOLES["id"], _HOLES["meta"]
        ).as_bytes(policy=_POLICY)
        head = raw[: raw.find(b"\r\n\r\n") + 2]
        cuts: list[tuple[int, str]] = []
        for key, given in _HOLES.items():
            value = _date_text(0) if key == "date" else given
            line = f"{_FIELD_NAMES[key]}: {value}\r\n".encode()
            whole_line = head.startswith(line) or b"\r\n" + line in head
            if not whole_line or head.count(value.encode()) != 1:
                return  # the policy wrote it otherwise: build_message() it is
            cuts.append((head.find(value.encode()), key))
        parts, last = [], 0
        for at, key in sorted(cuts):
            parts.append(raw[last:at])
            self._order.append(key)
            last = at + len(_date_text(0) if key == "date" else _HOLES[key])
        parts.append(raw[last:])
        self._parts = parts

    def render(self, recipient: str, n: int, ts: int, token: str) -> tuple[bytes, str, str]:
        """Message *n* for *recipient*: (its bytes, its Message-ID, its X-CleverTap_META)."""
        campaign = self.campaign
        message_id = _message_id(campaign, n, token)
        meta = campaign.meta_for(recipient, n, ts)
        parts = self._parts
        limit = _MAX_LINE - len("X-CleverTap_META: ")
        if (
            parts is None
            or not (_PLAIN_ADDRESS.fullmatch(recipient) and len(recipient) <= limit)
            or not _PLAIN_ID.fullmatch(message_id)
            or not (_PLAIN_TEXT.fullmatch(meta) and "=?" not in meta and len(meta) <= limit)
        ):
            message = build_message(campaign, recipient, n, ts, token)
            policy = _policy(campaign.sender, recipient)
            return (
                message.as_bytes(policy=policy),
                str(message["Message-ID"]),
                str(message["X-CleverTap_META"]),
            )
        values = {
            "to": recipient,
            "date": _date_text(ts),
            "id": message_id,
            "meta": meta,
        }
        out = [parts[0]]
        for key, part in zip(self._order, parts[1:], strict=True):
            out.append(values[key].encode())
            out.append(part)
        return b"".join(out), message_id, meta


_MAX_LINE = 998


@functools.lru_cache(maxsize=4)
def _date_text(ts: int) -> str:
    """The Date field's value as the policy writes it for *ts* (it rewrites "GMT" as "+0000");
    cached: a campaign sends many messages a second."""
    field = _POLICY.header_factory("Date", formatdate(ts, localtime=False, usegmt=True))
    return str(field.fold(policy=_POLICY)).partition(": ")[2].rstrip("\r\n")


_FIELD_NAMES = {"to": "To", "date": "Date", "id": "Message-ID", "meta": "X-CleverTap_META"}


async def submit_campaign(
    campaign: Campaign,
    submission: Submission,
    emit: Callable[[Sent], object],
    *,
    connections: int = 8,
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Submit every message of *campaign*; returns how many the integration accepted.

    Failures never raise: each message's outcome (the reply, or what went wrong) is given to
    *emit* as a :class:`Sent` record the moment it is known (``journal.append``, or the pipe of
    :mod:`harness.scenario.driver`). *on_sent* is called with the running count of messages
    submitted (for progress).
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
    template = MessageTemplate(campaign)
    counts = {"done": 0, "ok": 0}

    def record(n: int, recipient: str, meta: str, message_id: str, **outcome: object) -> None:
        reply, error = outcome.get("reply"), outcome.get("error")
        emit(
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
            await _send_batch(template, submission, batch, run, record)

    workers = max(1, min(connections, len(batches)))
    await asyncio.gather(*(worker() for _ in range(workers)))
    return counts["ok"]


async def _send_batch(
    template: MessageTemplate,
    submission: Submission,
    batch: list[tuple[int, str]],
    run: str,
    record: Callable[..., None],
) -> None:
    campaign = template.campaign
    plain_sender = _PLAIN_ADDRESS.fullmatch(campaign.sender) is not None
    client: aiosmtplib.SMTP | None = None
    try:
        for n, recipient in batch:
            ts = int(time.time())
            content, message_id, meta = template.render(recipient, n, ts, f"{run}{n:x}")
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
                if utf8 or client.is_ehlo_or_helo_needed or not plain_sender:
                    await client.mail(
                        campaign.sender,
                        options=["SMTPUTF8"] if utf8 else None,
                        encoding="utf-8" if utf8 else "ascii",
                    )
                else:
                    await _plain_mail(client, campaign.sender)
                if utf8 or not _PLAIN_ADDRESS.fullmatch(recipient):
                    await client.rcpt(recipient, encoding="utf-8" if utf8 else "ascii")
                else:
                    await _plain_rcpt(client, recipient)
                response = await client.data(content)
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


# aiosmtplib's mail() and rcpt() parse the address with email.utils every time (a quarter of
# the driver's CPU in a large campaign); a plain address (the same test as the template's) is
# sent as it is, with the same replies refused the same way.


async def _plain_mail(client: aiosmtplib.SMTP, sender: str) -> None:
    response = await client.execute_command(b"MAIL", b"FROM:<" + sender.encode() + b">")
    if response.code != 250:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)


async def _plain_rcpt(client: aiosmtplib.SMTP, recipient: str) -> None:
    response = await client.execute_command(b"RCPT", b"TO:<" + recipient.encode() + b">")
    if response.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)


def _describe(exc: BaseException, submission: Submission) -> str:
    return f"{type(exc).__name__} with {submission.host}:{submission.port}: {exc}"

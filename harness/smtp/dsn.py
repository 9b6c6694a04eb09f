"""RFC 3464 delivery status notifications: build them as real mail systems do, and deliver them.

A fake MX that accepts a message and bounces it later ("accept-then-bounce") calls
:func:`build_dsn` with what it accepted (:class:`OriginalMessage`) and one
:class:`RecipientReport` per recipient, then :func:`deliver_dsn` to hand the report to the bounce
intake of the integration under test, over SMTP from the null sender or into a Maildir.

Twelve dialects (:mod:`harness.smtp.dialects`), because a bounce processor meets all of them
(see ``docs/dsn.md``): ``generic`` RFC 3464; ``postfix`` and ``exim`` field by field after the
real DSNs of Postfix 3.7 and Exim 4.96; ``sendmail``, ``gmail``, ``office365``, ``exchange``,
``amazon_ses`` and ``opensmtpd`` after the structure of real samples; ``qmail``,
``exim_legacy`` and ``yahoo`` as plain text with no delivery-status part. Each dialect is a
``_Layout`` function (headers, parts, fields in the order that mail system writes them) or, for
plain text, a branch of ``_plain``.

RFC 3461 parameters are honoured: NOTIFY filters which reports produce a DSN (none at all with
NEVER), RET picks the third part, ENVID and ORCPT are echoed.
"""

from __future__ import annotations

import asyncio
import base64
import email.policy
import hashlib
import html
import mailbox
import pathlib
import quopri
import re
import textwrap
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from email.utils import format_datetime
from typing import Any

import aiosmtplib

from harness.errors import ConfigError, UnknownNameError
from harness.journal import Entry, Journal
from harness.records import Dsn, DsnRecipient
from harness.smtp.catalog import Stage, get_mode
from harness.smtp.dialects import (
    EXPANDING_DIALECTS,
    NO_DELAY_WARNINGS,
    PLAIN_TEXT_DIALECTS,
    SUCCESS_ACTIONS,
    SUCCESS_DIALECTS,
    Dialect,
)
from harness.vocab import MailReport, address_key

__all__ = [
    "ACTIONS",
    "SUCCESS_ACTIONS",
    "Dialect",
    "OriginalMessage",
    "RecipientReport",
    "build_dsn",
    "deliver_dsn",
    "dsn_bytes",
    "dsn_for_mode",
    "get_dialect",
    "recipients_of",
]


ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
NOTIFY_KEYWORDS = frozenset({"NEVER", "SUCCESS", "FAILURE", "DELAY"})
DEFAULT_NOTIFY = frozenset({"FAILURE", "DELAY"})
"""RFC 3461 lets a server assume FAILURE,DELAY when RCPT TO carried no NOTIFY."""

# Which NOTIFY keyword asks for a report with this action.
_NOTIFY_FOR_ACTION = {
    "failed": "FAILURE",
    "delayed": "DELAY",
    "delivered": "SUCCESS",
    "relayed": "SUCCESS",
    "expanded": "SUCCESS",
}
_STATUS_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
# An SMTP reply as a diagnostic: "550 5.1.1 ...". Anything else (for example "connect to
# mx[127.0.0.1]:25: Connection refused") is the reporting MTA's own words, not a remote reply.
_REPLY_RE = re.compile(r"^[2-5]\d\d(?:[ -]|$)")
_LIFETIME = timedelta(days=5)
"""How long a delayed message will still be retried: Postfix's maximal_queue_lifetime default."""
_STATUS_FIRST = {"failed": "45", "delayed": "4", "delivered": "2", "relayed": "2", "expanded": "2"}


@dataclass(frozen=True)
class OriginalMessage:
    """The message the MX accepted and now reports on.

    ``ret`` is the RFC 3461 ``RET`` of ``MAIL FROM`` (``"FULL"`` or ``"HDRS"``, any case), ``envid``
    its ``ENVID``; ``arrival`` is when it was accepted (``time.time()``); ``smtputf8`` tells that it
    came with ``MAIL FROM:<...> SMTPUTF8``.
    """

    envelope_sender: str
    content: bytes
    envid: str | None = None
    ret: str | None = None
    arrival: float | None = None
    smtputf8: bool = False

    def __post_init__(self) -> None:
        if not self.envelope_sender:
            raise ConfigError(
                "OriginalMessage.envelope_sender is empty: a message from the null sender "
                "never gets a DSN (RFC 3461 section 6.2)"
            )
        if self.ret is not None:
            if self.ret.upper() not in ("FULL", "HDRS"):
                raise ConfigError(
                    f"OriginalMessage.ret must be 'FULL', 'HDRS' or None, not {self.ret!r}"
                )
            object.__setattr__(self, "ret", self.ret.upper())
        if self.envid is not None and len(self.envid) > 100:
            raise ConfigError(
                f"OriginalMessage.envid is {len(self.envid)} characters long; RFC 3461 allows "
                "at most 100"
            )


@dataclass(frozen=True)
class RecipientReport:
    """What happened to one recipient.

    ``status`` is the RFC 3463 enhanced code; ``diagnostic`` the remote reply (``"550 5.1.1
    ..."``) or, when it does not start with a reply code, the reporting MTA's own explanation (a
    connection failure). ``orcpt`` is the RFC 3461 ``ORCPT`` as given (``"rfc822;a@x"``),
    ``notify`` the ``NOTIFY`` keywords (None: none were given). ``remote_mta`` may carry the
    address too: ``"mx.example.com[127.0.0.1]"``. ``in_reply_to`` names the SMTP command the
    reply answered (``"RCPT TO"``, ``"end of DATA"``); ``will_retry_until`` (for delayed reports)
    defaults to five days after the DSN.
    """

    recipient: str
    action: str
    status: str
    diagnostic: str | None = None
    orcpt: str | None = None
    notify: frozenset[str] | None = None
    remote_mta: str | None = None
    in_reply_to: str | None = None
    will_retry_until: float | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigError(
                f"RecipientReport.action for {self.recipient!r} must be one of "
                f"{', '.join(ACTIONS)}, not {self.action!r}"
            )
        if not _STATUS_RE.match(self.status):
            raise ConfigError(
                f"RecipientReport.status for {self.recipient!r} must be an RFC 3463 code like "
                f"'5.1.1', not {self.status!r}"
            )
        if self.status[0] not in _STATUS_FIRST[self.action]:
            expected = " or ".join(f"{d}.x.x" for d in _STATUS_FIRST[self.action])
            raise ConfigError(
                f"RecipientReport for {self.recipient!r}: action {self.action!r} needs a status "
                f"{expected}, not {self.status!r}"
            )
        if self.notify is not None:
            keywords = frozenset(k.upper() for k in self.notify)
            unknown = sorted(keywords - NOTIFY_KEYWORDS)
            if unknown or not keywords or ("NEVER" in keywords and len(keywords) > 1):
                raise ConfigError(
                    f"RecipientReport.notify for {self.recipient!r} must be NEVER alone or a "
                    f"non-empty set of SUCCESS, FAILURE, DELAY; seen {sorted(self.notify)!r}"
                )
            object.__setattr__(self, "notify", keywords)

    @property
    def wanted(self) -> bool:
        """Whether the sender's NOTIFY asks for this report."""
        notify = DEFAULT_NOTIFY if self.notify is None else self.notify
        return _NOTIFY_FOR_ACTION[self.action] in notify


# -- building ----------------------------------------------------------------------------------


def _as_datetime(now: float | datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC).replace(microsecond=0)
    if isinstance(now, datetime):
        return now if now.tzinfo else now.replace(tzinfo=UTC)
    return datetime.fromtimestamp(now, UTC)


def _date(when: datetime) -> str:
    return format_datetime(when.replace(microsecond=0))


def _postfix_date(when: datetime) -> str:
    # Postfix appends the zone's name in a comment: "+0000 (UTC)".
    offset = when.utcoffset()
    return _date(when) + (" (UTC)" if offset is not None and not offset else "")


def _is_ascii(text: str) -> bool:
    return text.isascii()


def _split_host(remote_mta: str) -> tuple[str, str]:
    """``"mx.x[1.2.3.4]"`` -> ``("mx.x", "1.2.3.4")``; the fake MX hosts all live on loopback."""
    name, sep, rest = remote_mta.partition("[")
    return name, rest.rstrip("]") if sep else "127.0.0.1"


def _is_reply(diagnostic: str | None) -> bool:
    return diagnostic is not None and _REPLY_RE.match(diagnostic) is not None


def _orcpt(value: str) -> str:
    # ORCPT is kept verbatim (as Postfix does, xtext and all); only a bare address gets its type.
    return value if ";" in value else f"rfc822;{value}"


def _fingerprint(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    return digest.hexdigest()


def _headers_of(content: bytes) -> bytes:
    normal = content.replace(b"\r\n", b"\n")
    head, sep, _ = normal.partition(b"\n\n")
    return head + b"\n" if sep else normal


def _raw(data: bytes) -> str:
    # The email package carries 8-bit payloads as surrogate-escaped str and writes them back
    # byte for byte, which keeps the returned message exactly as it was accepted.
    return data.replace(b"\r\n", b"\n").decode("ascii", "surrogateescape")


def _wrap(text: str, width: int = 79, indent: str = "    ") -> str:
    return textwrap.fill(
        text, width=width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


@dataclass(frozen=True)
class _Context:
    original: OriginalMessage
    reports: tuple[RecipientReport, ...]
    dialect: Dialect
    mta: str
    now: datetime
    fingerprint: str
    utf8: bool

    @property
    def queue_id(self) -> str:
        """The original message's queue id at the reporting MTA."""
        return self.fingerprint[:10].upper()

    @property
    def dsn_id(self) -> str:
        """The DSN's own queue id (Postfix queues its bounces like any other mail)."""
        return self.fingerprint[40:50].upper()

    @property
    def exim_id(self) -> str:
        # Exim message ids look like 1qXyZa-000Abc-12; ours are shaped alike, from the hash.
        f = self.fingerprint
        return f"1{f[10:15]}-{f[15:21]}-{f[21:23]}".upper()

    @property
    def exim_dsn_id(self) -> str:
        f = self.fingerprint
        return f"1{f[50:55]}-{f[55:61]}-{f[61:63]}".upper()

    @property
    def arrival(self) -> datetime:
        arrival = self.original.arrival
        return _as_datetime(arrival) if arrival is not None else self.now

    @property
    def stamp(self) -> int:
        return int(self.now.timestamp())

    @property
    def number(self) -> int:
        return int(self.fingerprint[24:32], 16)

    @property
    def kind(self) -> str:
        actions = {r.action for r in self.reports}
        if "failed" in actions:
            return "failed"
        if "delayed" in actions:
            return "delayed"
        return "success"

    @property
    def headers_only(self) -> bool:
        # Delay warnings return the headers only (Postfix and Exim alike, whatever RET says);
        # OpenSMTPD never returns more than the headers.
        return (
            self.original.ret == "HDRS"
            or self.kind == "delayed"
            or self.dialect is Dialect.OPENSMTPD
        )

    @property
    def original_headers(self) -> Message:
        return HeaderParser(policy=email.policy.compat32).parsestr(
            _raw(_headers_of(self.original.content))
        )

    def original_header(self, name: str) -> str | None:
        value = self.original_headers.get(name)
        return " ".join(str(value).split()) if value is not None else None

    @property
    def original_subject(self) -> str:
        return self.original_header("Subject") or ""

    def failed(self) -> list[RecipientReport]:
        return [r for r in self.reports if r.action == "failed"]

    def delayed(self) -> list[RecipientReport]:
        return [r for r in self.reports if r.action == "delayed"]

    def succeeded(self) -> list[RecipientReport]:
        return [r for r in self.reports if r.action in SUCCESS_ACTIONS]


def _expired(report: RecipientReport) -> bool:
    """A failed report with a transient status: the queue lifetime ran out."""
    return report.action == "failed" and report.status.startswith("4")


def _connected(report: RecipientReport) -> bool:
    """Whether a remote server was talked to (and so replied something we can quote)."""
    return report.remote_mta is not None and _is_reply(report.diagnostic)


def _will_retry_until(ctx: _Context, report: RecipientReport) -> datetime:
    if report.will_retry_until is not None:
        return _as_datetime(report.will_retry_until)
    return ctx.now + _LIFETIME


def _address_field(address: str, sep: str = "; ") -> str:
    # RFC 6533 section 3: a non-ASCII address is typed utf-8 instead of rfc822.
    kind = "rfc822" if _is_ascii(address) else "utf-8"
    return f"{kind}{sep}{address}"


def _diagnostic_field(report: RecipientReport, smtp: str = "smtp; ") -> list[tuple[str, str]]:
    if _is_reply(report.diagnostic):
        return [("Diagnostic-Code", f"{smtp}{report.diagnostic}")]
    return []


def _remote_field(report: RecipientReport, dns: str = "dns; ") -> list[tuple[str, str]]:
    if report.remote_mta:
        return [("Remote-MTA", f"{dns}{_split_host(report.remote_mta)[0]}")]
    return []


def _will_retry_field(ctx: _Context, report: RecipientReport) -> list[tuple[str, str]]:
    if report.action == "delayed":
        return [("Will-Retry-Until", _date(_will_retry_until(ctx, report)))]
    return []


def _reported_status(dialect: Dialect, report: RecipientReport) -> str:
    if dialect in (Dialect.EXIM, Dialect.EXIM_LEGACY):
        # Exim reports only the class; the real code survives in Diagnostic-Code alone.
        return {"failed": "5.0.0", "delayed": "4.0.0"}.get(report.action, "2.0.0")
    return report.status


def _status_for(ctx: _Context, report: RecipientReport) -> str:
    return _reported_status(ctx.dialect, report)


_CT = ("Content-Type", "{type}")


@dataclass(frozen=True)
class _Layout:
    """What one dialect puts where; :func:`_assemble` turns it into a message."""

    headers: list[tuple[str, str]]
    """Top-level headers in order, values pre-folded, without the Content-Type."""
    content_type: str
    """The top-level Content-Type value (boundary included), as the MTA writes it."""
    preamble: str | None
    human: list[Message]
    per_message: list[tuple[str, str]]
    per_recipient: list[list[tuple[str, str]]]
    status_headers: list[tuple[str, str]] = field(default_factory=lambda: [_CT])
    """Headers of the status part; ``{type}`` stands for its content type."""
    returned_headers: list[tuple[str, str]] = field(default_factory=lambda: [_CT])
    """Headers of the returned message part; ``{type}`` stands for its content type."""
    trailer: list[tuple[str, str]] = field(default_factory=list)
    """Top-level headers after the Content-Type."""
    trace: str = ""
    """Trace header lines the reporting MTA added to the message it stored (Return-Path,
    Received), put back in front of the returned copy."""
    fold_width: int | None = 79
    """Where the status fields are folded (Postfix folds at 79 columns; Exim never folds)."""
    extra_blank_after_headers: bool = False


def _text_part(
    headers: list[tuple[str, str]], text: str, policy: email.policy.Policy
) -> EmailMessage:
    part = EmailMessage(policy=policy)
    for name, value in headers:
        part.set_raw(name, value)
    encoding = next((v for k, v in headers if k.lower() == "content-transfer-encoding"), "")
    if encoding.lower() == "quoted-printable":
        part.set_payload(quopri.encodestring(text.encode("utf-8")).decode("ascii"))
    else:
        part.set_payload(_raw(text.encode("utf-8")))
    return part


def _alternative(
    plain: str, html: str, policy: email.policy.Policy, boundary: str, *, charset: str
) -> EmailMessage:
    """``multipart/alternative`` with a text and an HTML version, quoted-printable as Exchange."""
    outer = EmailMessage(policy=policy)
    outer.set_raw(
        "Content-Type", f'multipart/alternative; differences=Content-Type;\n\tboundary="{boundary}"'
    )
    cte = ("Content-Transfer-Encoding", "quoted-printable")
    outer.set_payload(
        [
            _text_part([("Content-Type", f'text/plain; charset="{charset}"'), cte], plain, policy),
            _text_part([("Content-Type", f'text/html; charset="{charset}"'), cte], html, policy),
        ]
    )
    return outer


def _html(paragraphs: Sequence[str], charset: str = "utf-8") -> str:
    body = "\n".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    return (
        f'<html>\n<head><meta http-equiv="Content-Type" content="text/html; charset={charset}">'
        f"</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


# 1x1 transparent PNG: Google's bounces carry an icon in multipart/related.
_ICON = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


# -- Postfix ------------------------------------------------------------------------------------

_POSTFIX_HELP = (
    "For further assistance, please send mail to postmaster.\n\n"
    "If you do so, please include this problem report. You can\n"
    "delete your own text from the attached returned message.\n"
)
_POSTFIX_WARNING = (
    "####################################################################\n"
    "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
    "####################################################################\n"
)


def _postfix_quoted(address: str) -> str:
    """*address* as Postfix 3.7 writes a sender it quotes: a UTF-8 local part in double quotes
    with a backslash before each of its 8-bit bytes (``"j\\\xc3\\\xbcrgen"@x``), which is not
    valid UTF-8 (real-dsns/postfix-12). The bytes travel as surrogate escapes, so the DSN
    carries them verbatim."""
    local, at, domain = address.rpartition("@")
    if local.isascii():
        return address
    quoted = "".join(
        c if c.isascii() else "".join(f"\\{chr(0xDC00 + b)}" for b in c.encode("utf-8"))
        for c in local
    )
    return f'"{quoted}"{at}{domain}'


def _postfix_reason(report: RecipientReport) -> str:
    diagnostic = report.diagnostic or f"delivery status {report.status}"
    if _is_reply(report.diagnostic) and report.remote_mta:
        name, ip = _split_host(report.remote_mta)
        if report.action in SUCCESS_ACTIONS:
            return f"delivery via {name}[{ip}]:25: {diagnostic}"
        reason = f"host {name}[{ip}] said: {diagnostic}"
        if report.in_reply_to:
            reason += f" (in reply to {report.in_reply_to} command)"
        return reason
    return diagnostic


def _postfix_text(ctx: _Context) -> str:
    if ctx.kind == "failed":
        lead = (
            "I'm sorry to have to inform you that your message could not\n"
            "be delivered to one or more recipients. It's attached below.\n\n" + _POSTFIX_HELP
        )
    elif ctx.kind == "delayed":
        hours = int((ctx.now - ctx.arrival).total_seconds() // 3600)
        until = max(_will_retry_until(ctx, r) for r in ctx.delayed())
        days = int((until - ctx.arrival).total_seconds() // 86400)
        lead = (
            f"{_POSTFIX_WARNING}\n"
            f"Your message could not be delivered for more than {hours} hour(s).\n"
            f"It will be retried until it is {days} day(s) old.\n\n" + _POSTFIX_HELP
        )
    else:
        lead = (
            "Your message was successfully delivered to the destination(s)\n"
            "listed below. If the message was delivered to mailbox you will\n"
            "receive no further notifications. Otherwise you may still receive\n"
            "notifications of mail delivery errors from other systems.\n"
        )
    lines = [
        f"This is the mail system at host {ctx.mta}.",
        "",
        lead,
        "                   The mail system",
        "",
    ]
    for report in ctx.reports:
        lines += [_wrap(f"<{report.recipient}>: {_postfix_reason(report)}"), ""]
    return "\n".join(lines)


def _postfix(ctx: _Context, policy: email.policy.Policy) -> _Layout:
    original = ctx.original
    date = _postfix_date(ctx.now)
    boundary = f"{ctx.queue_id}.{ctx.stamp}/{ctx.mta}"
    subject = {
        "failed": "Undelivered Mail Returned to Sender",
        "delayed": "Delayed Mail (still being retried)",
        "success": "Successful Mail Delivery Report",
    }[ctx.kind]
    headers = [
        ("Received", f"by {ctx.mta} (Postfix)\n\tid {ctx.dsn_id}; {date}"),
        ("Date", date),
        ("From", f"Mail Delivery System <MAILER-DAEMON@{ctx.mta}>"),
        ("Subject", subject),
        ("To", original.envelope_sender),
        ("Auto-Submitted", "auto-replied"),
        ("MIME-Version", "1.0"),
    ]
    per_message = [("Reporting-MTA", f"dns; {ctx.mta}")]
    if original.envid is not None:
        per_message.append(("Original-Envelope-Id", original.envid))
    per_message += [
        ("X-Postfix-Queue-ID", ctx.queue_id),
        ("X-Postfix-Sender", f"rfc822; {_postfix_quoted(original.envelope_sender)}"),
        ("Arrival-Date", _postfix_date(ctx.arrival)),
    ]
    blocks = []
    for report in ctx.reports:
        fields = [("Final-Recipient", _address_field(report.recipient))]
        # Postfix names the address it was given even without ORCPT (before any rewriting).
        orcpt = report.orcpt or _address_field(report.recipient, ";")
        fields += [("Original-Recipient", _orcpt(orcpt))]
        fields += [("Action", report.action), ("Status", report.status)]
        if _connected(report):
            # Postfix names the remote MTA only beside a reply it quotes: a host that timed
            # out or dropped the connection said nothing, and its DSN has no Remote-MTA.
            fields += _remote_field(report)
        if _is_reply(report.diagnostic):
            fields += _diagnostic_field(report)
        elif report.diagnostic:
            fields.append(("Diagnostic-Code", f"X-Postfix; {report.diagnostic}"))
        if report.action == "delayed":
            fields.append(("Will-Retry-Until", _postfix_date(_will_retry_until(ctx, report))))
        blocks.append(fields)
    if ctx.kind == "success":
        description = "Message Headers" if ctx.headers_only else "Message"
    else:
        description = "Undelivered Message Headers" if ctx.headers_only else "Undelivered Message"
    rcpt = ctx.reports[0].recipient if len(ctx.reports) == 1 else None
    trace = (
        f"Return-Path: <{_postfix_quoted(original.envelope_sender)}>\n"
        f"Received: from client.sender.test (localhost [127.0.0.1])\n"
        f"\tby {ctx.mta} (Postfix) with {'UTF8SMTP' if original.smtputf8 else 'ESMTP'} "
        f"id {ctx.queue_id}"
        + (f"\n\tfor <{rcpt}>; " if rcpt else ";\n\t")
        + f"{_postfix_date(ctx.arrival)}\n"
    )
    return _Layout(
        headers=headers,
        content_type=f'multipart/report; report-type=delivery-status;\n\tboundary="{boundary}"',
        preamble="This is a MIME-encapsulated message.\n",
        human=[
            _text_part(
                [
                    ("Content-Description", "Notification"),
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Transfer-Encoding", "8bit"),
                ],
                _postfix_text(ctx),
                policy,
            )
        ],
        status_headers=[("Content-Description", "Delivery report"), _CT],
        per_message=per_message,
        per_recipient=blocks,
        returned_headers=[
            ("Content-Description", description),
            _CT,
            ("Content-Transfer-Encoding", "8bit"),
        ],
        trailer=[
            ("Content-Transfer-Encoding", "8bit"),
            ("Message-Id", f"<{ctx.now:%Y%m%d%H%M%S}.{ctx.dsn_id}@{ctx.mta}>"),
        ],
        trace=trace,
    )


# -- Exim ---------------------------------------------------------------------------------------

_EXIM_LEAD = b"This message was created automatically by mail delivery software."


def _exim_error(text: str) -> list[str]:
    """*text* as Exim prints an address error: broken after ': ' once a line passes 45."""
    lines, current = [], ""
    for i, char in enumerate(text):
        current += char
        if char == ":" and text[i + 1 : i + 2] == " " and len(current) > 45:
            lines.append(current)
            current = ""
    lines.append(current.strip())
    return ["    " + line.strip() for line in lines if line.strip()]


def _exim_delay(ctx: _Context) -> str:
    """How long the message has waited, the way Exim words it in delay warnings."""
    seconds = max(0, int((ctx.now - ctx.arrival).total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} minutes"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} hours"
    return f"{seconds // 86400} days"


def _exim_after(report: RecipientReport) -> str:
    after = report.in_reply_to or "RCPT TO"
    if after == "RCPT TO":
        return f"RCPT TO:<{report.recipient}>"
    return after.replace("end of DATA", "end of data")


def _exim_address_lines(report: RecipientReport, *, delayed: bool = False) -> list[str]:
    lines = [f"  {report.recipient}"]
    if not _connected(report):
        if _expired(report):
            lines.append("    retry timeout exceeded")
        elif report.diagnostic and not delayed:
            lines += _exim_error(report.diagnostic)
        return lines
    name, ip = _split_host(report.remote_mta or "")
    lines.append(f"    host {name} [{ip}]")
    error = f"SMTP error from remote mail server after {_exim_after(report)}: {report.diagnostic}"
    if _expired(report):
        error += ": retry timeout exceeded"
    if delayed:
        error = f"Delay reason: {error}"
    return lines + _exim_error(error)


def _exim_text(ctx: _Context) -> str:
    lead = _EXIM_LEAD.decode()
    if ctx.kind == "failed":
        lines = [
            lead,
            "",
            "A message that you sent could not be delivered to one or more of its",
            "recipients. This is a permanent error. The following address(es) failed:",
            "",
        ]
        for report in ctx.failed():
            lines += _exim_address_lines(report)
        return "\n".join(lines) + "\n"
    if ctx.kind == "delayed":
        delayed = ctx.delayed()
        date = ctx.original_header("Date")
        which = (
            "The address to which the message has not yet been delivered is:"
            if len(delayed) == 1
            else "The addresses to which the message has not yet been delivered are:"
        )
        lines = [
            lead,
            "A message that you sent has not yet been delivered to one or more of its",
            f"recipients after more than {_exim_delay(ctx)} on the queue on {ctx.mta}.",
            "",
            f"The message identifier is:     {ctx.exim_id}",
            *([f"The date of the message is:    {date}"] if date else []),
            f"The subject of the message is: {ctx.original_subject}",
            "",
            which,
            "",
        ]
        for report in delayed:
            lines += _exim_address_lines(report, delayed=True)
        lines += [
            "",
            "No action is required on your part. Delivery attempts will continue for",
            "some time, and this warning may be repeated at intervals if the message",
            "remains undelivered. Eventually the mail delivery software will give up,",
            "and when that happens, the message will be returned to you.",
        ]
        return "\n".join(lines) + "\n"
    lines = [lead, " ----- The following addresses had successful delivery notifications -----"]
    lines += [f"<{r.recipient}> (relayed to non-DSN-aware mailer)" for r in ctx.succeeded()]
    return "\n".join(lines) + "\n"


def _exim_headers(ctx: _Context, content_type: str, subject: str) -> list[tuple[str, str]]:
    sender = ctx.original.envelope_sender
    received = (
        f"from Debian-exim by {ctx.mta} with local (Exim 4.96)\n\tid {ctx.exim_dsn_id}\n"
        f"\tfor {sender};\n\t{_date(ctx.now)}"
    )
    references = ctx.original_header("Message-ID")
    refs = [("References", references)] if references else []
    frm = ("From", f"Mail Delivery System <Mailer-Daemon@{ctx.mta}>")
    tail = [
        ("Content-Type", content_type),
        ("MIME-Version", "1.0"),
    ]
    ids = [("Message-Id", f"<E{ctx.exim_dsn_id}@{ctx.mta}>"), ("Date", _date(ctx.now))]
    if ctx.kind == "success":
        return [
            ("Received", received),
            frm,
            ("Auto-Submitted", "auto-generated"),
            ("To", sender),
            ("Subject", subject),
            *refs,
            *tail,
            *ids,
        ]
    failed = [("X-Failed-Recipients", ", ".join(r.recipient for r in ctx.failed()))]
    return [
        ("Received", received),
        *(failed if ctx.kind == "failed" else []),
        ("Auto-Submitted", "auto-replied"),
        frm,
        ("To", sender),
        *refs,
        *tail,
        ("Subject", subject),
        *ids,
    ]


def _exim(ctx: _Context, policy: email.policy.Policy) -> _Layout:
    original = ctx.original
    boundary = f"{ctx.stamp}-eximdsn-{ctx.number % 2_000_000_000}"
    content_type = f"multipart/report; report-type=delivery-status; boundary={boundary}"
    subject = {
        "failed": "Mail delivery failed: returning message to sender",
        "delayed": f"Warning: message {ctx.exim_id} delayed {_exim_delay(ctx)}",
        "success": "Delivery Status Notification",
    }[ctx.kind]
    per_message = [("Reporting-MTA", f"dns; {ctx.mta}")]
    if original.envid is not None:
        per_message.append(("Original-Envelope-ID", original.envid))
    blocks = []
    # Exim writes the recipient blocks in the reverse of the order it lists them in the text
    # and in X-Failed-Recipients (real-dsns/exim-05).
    for report in reversed(ctx.reports):
        # Exim's order, no Original-Recipient, and no Will-Retry-Until even in delays.
        fields = [
            ("Action", report.action),
            ("Final-Recipient", _address_field(report.recipient, ";")),
            ("Status", _status_for(ctx, report)),
        ]
        if _connected(report):
            fields += _remote_field(report)
            diagnostic = f"smtp; {report.diagnostic}"
            if _expired(report):
                diagnostic += ": retry timeout exceeded"
            fields.append(("Diagnostic-Code", diagnostic))
        blocks.append(fields)
    charset = "us-ascii" if _exim_text(ctx).isascii() else "utf-8"
    trace = (
        f"Return-path: <{original.envelope_sender}>\n"
        "Received: from [127.0.0.1] (port=40000 helo=client.sender.test)\n"
        f"\tby {ctx.mta} with esmtp (Exim 4.96)\n"
        f"\t(envelope-from <{original.envelope_sender}>)\n"
        f"\tid {ctx.exim_id};\n\t{_date(ctx.arrival)}\n"
    )
    return _Layout(
        headers=_exim_headers(ctx, content_type, subject),
        content_type=content_type,
        preamble=None,
        human=[
            _text_part(
                [("Content-type", f"text/plain; charset={charset}")], _exim_text(ctx), policy
            )
        ],
        status_headers=[("Content-type", "{type}")],
        per_message=per_message,
        per_recipient=blocks,
        returned_headers=[("Content-type", "{type}")],
        trace=trace,
        fold_width=None,
        extra_blank_after_headers=True,
    )


# -- generic RFC 3464 ---------------------------------------------------------------------------


def _generic_text(ctx: _Context) -> str:
    lines = [
        f"This is an automatically generated delivery status notification from {ctx.mta}.",
        "",
    ]
    for report in ctx.reports:
        what = {
            "failed": "Delivery failed",
            "delayed": "Delivery is delayed; the mail system will keep trying",
            "delivered": "Delivered",
            "relayed": "Relayed onwards",
            "expanded": "Delivered to the members of a list or alias",
        }[report.action]
        lines.append(f"{what}: <{report.recipient}>")
        lines.append(f"    Status: {report.status}")
        if report.diagnostic:
            lines.append(_wrap(f"    Reason: {report.diagnostic}", 76, indent="        "))
        lines.append("")
    lines.append(f"The original message was sent by <{ctx.original.envelope_sender}>.")
    return "\n".join(lines) + "\n"


def _generic(ctx: _Context, policy: email.policy.Policy) -> _Layout:
    original = ctx.original
    subject = {
        "failed": "Delivery Status Notification (Failure)",
        "delayed": "Delivery Status Notification (Delay)",
        "success": "Delivery Status Notification (Success)",
    }[ctx.kind]
    headers = [
        ("Auto-Submitted", "auto-replied"),
        ("From", f"Mail Delivery Subsystem <MAILER-DAEMON@{ctx.mta}>"),
        ("To", original.envelope_sender),
        ("Subject", subject),
        ("Date", _date(ctx.now)),
        ("Message-ID", f"<{ctx.fingerprint[:24]}@{ctx.mta}>"),
        ("MIME-Version", "1.0"),
    ]
    per_message = [("Reporting-MTA", f"dns; {ctx.mta}")]
    if original.envid is not None:
        per_message.append(("Original-Envelope-Id", original.envid))
    per_message.append(("Arrival-Date", _date(ctx.arrival)))
    blocks = []
    for report in ctx.reports:
        fields = [("Final-Recipient", _address_field(report.recipient))]
        if report.orcpt is not None:
            fields.append(("Original-Recipient", _orcpt(report.orcpt)))
        fields += [("Action", report.action), ("Status", report.status)]
        fields += _remote_field(report) + _diagnostic_field(report)
        fields.append(("Last-Attempt-Date", _date(ctx.now)))
        fields += _will_retry_field(ctx, report)
        blocks.append(fields)
    text = _generic_text(ctx)
    charset = "utf-8" if ctx.utf8 or not text.isascii() else "us-ascii"
    cte = "8bit" if charset == "utf-8" else "7bit"
    return _Layout(
        headers=headers,
        content_type="multipart/report; report-type=delivery-status;\n"
        f'\tboundary="{ctx.fingerprint[24:40]}/{ctx.mta}"',
        preamble="This is a MIME-encapsulated message.\n",
        human=[
            _text_part(
                [
                    ("Content-Type", f'text/plain; charset="{charset}"'),
                    ("Content-Transfer-Encoding", cte),
                ],
                text,
                policy,
            )
        ],
        per_message=per_message,
        per_recipient=blocks,
        fold_width=76,
    )


# -- Sendmail -----------------------------------------------------------------------------------


def _sendmail_text(ctx: _Context) -> str:
    lines: list[str] = []
    if ctx.kind == "delayed":
        lines += [
            "    **********************************************",
            "    **      THIS IS A WARNING MESSAGE ONLY      **",
            "    **  YOU DO NOT NEED TO RESEND YOUR MESSAGE  **",
            "    **********************************************",
            "",
        ]
    lines += [
        f"The original message was received at {_date(ctx.arrival)}",
        "from localhost [127.0.0.1]",
        "",
    ]
    heading = {
        "failed": "   ----- The following addresses had permanent fatal errors -----",
        "delayed": "   ----- The following addresses had transient non-fatal errors -----",
        "success": "   ----- The following addresses had successful delivery notifications -----",
    }[ctx.kind]
    lines.append(heading)
    for report in ctx.reports:
        lines.append(f"<{report.recipient}>")
        if report.action in SUCCESS_ACTIONS:
            host = _split_host(report.remote_mta or ctx.mta)[0]
            lines.append(f"    (relayed to mailer esmtp, host {host})")
        elif report.diagnostic:
            lines.append(_wrap(f"    (reason: {report.diagnostic})", 79))
    lines += ["", "   ----- Transcript of session follows -----"]
    for report in ctx.reports:
        if report.action in SUCCESS_ACTIONS:
            continue
        if _connected(report):
            name = _split_host(report.remote_mta or "")[0]
            command = {
                "end of DATA": ">>> DATA",
                "RCPT TO": f">>> RCPT To:<{report.recipient}>",
            }.get(report.in_reply_to or "RCPT TO", f">>> {report.in_reply_to}")
            lines += [f"... while talking to {name}.:", command, f"<<< {report.diagnostic}"]
        elif report.diagnostic:
            lines.append(f"{report.recipient}... {report.diagnostic}")
        if report.action == "delayed":
            lines += [
                f"<{report.recipient}>... Deferred",
                "Warning: message still undelivered after 4 hours",
                "Will keep trying until message is 5 days old",
            ]
        elif _expired(report):
            lines.append(f"<{report.recipient}>... Message could not be delivered for too long")
    return "\n".join(lines) + "\n"


def _sendmail(ctx: _Context, policy: email.policy.Policy) -> _Layout:
    original = ctx.original
    qid = f"{ctx.now:%Y%m%d}{ctx.queue_id[:6].lower()}"
    subject = {
        "failed": "Returned mail: see transcript for details",
        "delayed": "Warning: could not send message for past 4 hours",
        "success": "Return receipt",
    }[ctx.kind]
    boundary = f"{qid}.{ctx.stamp}/{ctx.mta}"
    headers = [
        ("Return-Path", "<>"),
        (
            "Received",
            f"from localhost (localhost)\n\tby {ctx.mta} (8.17.1/8.17.1) id {qid};\n"
            f"\t{_date(ctx.now)}",
        ),
        ("Date", _date(ctx.now)),
        ("From", f"Mail Delivery Subsystem <MAILER-DAEMON@{ctx.mta}>"),
        ("Message-Id", f"<{ctx.now:%Y%m%d%H%M}.{qid}@{ctx.mta}>"),
        ("To", f"<{original.envelope_sender}>"),
        ("MIME-Version", "1.0"),
    ]
    trailer = [("Subject", subject), ("Auto-Submitted", "auto-generated (failure)")]
    per_message = [("Reporting-MTA", f"dns; {ctx.mta}")]
    if original.envid is not None:
        per_message.append(("Original-Envelope-Id", original.envid))
    per_message += [("Received-From-MTA", "DNS; localhost"), ("Arrival-Date", _date(ctx.arrival))]
    blocks = []
    for report in ctx.reports:
        fields = []
        if report.orcpt is not None:
            fields.append(("Original-Recipient", _orcpt(report.orcpt)))
        address = _address_field(report.recipient).replace("rfc822;", "RFC822;")
        fields += [
            ("Final-Recipient", address),
            # Sendmail's name for the address after its own aliasing: here, the same one.
            ("X-Actual-Recipient", address),
            ("Action", report.action),
            ("Status", report.status),
        ]
        fields += _remote_field(report, "DNS; ") + _diagnostic_field(report, "SMTP; ")
        fields.append(("Last-Attempt-Date", _date(ctx.now)))
        fields += _will_retry_field(ctx, report)
        blocks.append(fields)
    return _Layout(
        headers=headers,
        content_type=f'multipart/report; report-type=delivery-status;\n\tboundary="{boundary}"',
        preamble="This is a MIME-encapsulated message\n",
        human=[_text_part([], _sendmail_text(ctx), policy)],
        per_message=per_message,
        per_recipient=blocks,
        trailer=trailer,
        fold_width=None,
    )


# -- Gmail --------------------------------------------------------------------------------------


def _gmail_paragraphs(ctx: _Context, report: RecipientReport) -> list[str]:
    if report.action == "delayed":
        title = "** Message not delivered yet **"
        what = (
            f"Delivery to {report.recipient} is taking longer than expected. "
            "Delivery will be attempted again; you will be told if it fails for good."
        )
    elif report.status.startswith("5.1."):
        title = "** Address not found **"
        what = (
            f"Your message could not reach {report.recipient}: the address was not found. "
            "Look for a misspelling or stray spaces, then try again."
        )
    elif report.status in ("5.2.2", "4.2.2"):
        title = "** Mailbox full **"
        what = f"Your message could not reach {report.recipient}: the mailbox has no room left."
    else:
        title = (
            "** Message blocked **"
            if report.status.startswith("5.7")
            else "** Message not delivered **"
        )
        what = f"Your message could not be delivered to {report.recipient}."
    paragraphs = [title, what]
    if report.diagnostic:
        paragraphs += [f"The response from the remote server was:\n{report.diagnostic}"]
    return paragraphs


def _gmail(ctx: _Context, policy: email.policy.Policy) -> _Layout:
    original = ctx.original
    subject = {
        "failed": "Delivery Status Notification (Failure)",
        "delayed": "Delivery Status Notification (Delay)",
        "success": "Delivery Status Notification (Success)",
    }[ctx.kind]
    outer = f"0000000000{ctx.fingerprint[24:38]}"
    msgid = ctx.original_header("Message-ID")
    refs = [("References", msgid), ("In-Reply-To", msgid)] if msgid else []
    failed = [r.recipient for r in ctx.failed()]
    headers = [
        ("MIME-Version", "1.0"),
        # The provider's own mailer-daemon: parsers key on it (sisimai, flufl.bounce).
        ("From", "Mail Delivery Subsystem <mailer-daemon@googlemail.com>"),
        ("To", original.envelope_sender),
        ("Auto-Submitted", "auto-replied"),
        ("Subject", subject),
        *refs,
        *([("X-Failed-Recipients", ", ".join(failed))] if failed else []),
        ("Message-ID", f"<{ctx.fingerprint[:12]}.{ctx.fingerprint[12:24]}@{ctx.mta}>"),
        ("Date", _date(ctx.now)),
    ]
    paragraphs = [p for r in ctx.reports for p in _gmail_paragraphs(ctx, r)]
    alternative = _alternative(
        "\n\n".join(paragraphs) + "\n", _html(paragraphs), policy, f"{outer}b", charset="UTF-8"
    )
    # Google wraps the alternatives with an icon in multipart/related.
    related = EmailMessage(policy=policy)
    related.set_raw("Content-Type", f'multipart/related; boundary="{outer}a"')
    icon = EmailMessage(policy=policy)
    icon.set_raw("Content-Type", 'image/png; name="icon.png"')
    icon.set_raw("Content-Disposition", 'attachment; filename="icon.png"')
    icon.set_raw("Content-Transfer-Encoding", "base64")
    icon.set_raw("Content-ID", "<icon.png>")
    icon.set_payload(base64.encodebytes(_ICON).decode("ascii"))
    related.set_payload([alternative, icon])
    per_message = [("Reporting-MTA", f"dns; {ctx.mta}")]
    if original.envid is not None:
        per_message.append(("Original-Envelope-Id", original.envid))
    per_message.append(("Arrival-Date", _date(ctx.arrival)))
    if msgid:
        per_message.append(("X-Original-Message-ID", msgid))
    blocks = []
    for report in ctx.reports:
        fields = [
            ("Final-Recipient", _address_field(report.recipient)),
            ("Action", report.action),
            ("Status", report.status),
        ]
        if report.remote_mta:
            name, ip = _split_host(report.remote_mta)
            fields.append(("Remote-MTA", f"dns; {name}. ({ip}, the server for the domain.)"))
        fields += _diagnostic_field(report)
        fields.append(("Last-Attempt-Date", _date(ctx.now)))
        fields += _will_retry_field(ctx, report)
        blocks.append(fields)
    return _Layout(
        headers=headers,
        content_type=f'multipart/report; boundary="{outer}"; report-type=delivery-status',
        preamble=None,
        human=[related],
        per_message=per_message,
        per_recipient=blocks,
        fold_width=None,
    )


# -- Exchange Online and Exchange Server ---------------------------------------------------------


def _exchange_explanation(report: RecipientReport) -> str:
    if report.action == "delayed":
        return "Delivery to this recipient has not completed yet. The server will keep trying."
    if report.status.startswith("5.1."):
        return (
            "The address could not be found at the destination. It may be misspelled or may "
            "no longer exist; check it and send the message again."
        )
    if report.status in ("5.2.2", "4.2.2"):
        return "The recipient's mailbox is full and cannot take more messages right now."
    if report.status.startswith("5.7"):
        return "The destination refused the message for policy reasons."
    return "The message could not be delivered to this recipient."


def _exchange_common(ctx: _Context, policy: email.policy.Policy, *, online: bool) -> _Layout:
    original = ctx.original
    delayed = ctx.kind == "delayed"
    lead = (
        "Delivery is delayed to these recipients or groups:"
        if delayed
        else "Delivery has failed to these recipients or groups:"
    )
    plain = [lead, ""]
    for report in ctx.reports:
        plain += [f"{report.recipient}<mailto:{report.recipient}>" if online else report.recipient]
        plain += [_exchange_explanation(report), ""]
    plain += [
        "",
        "Diagnostic information for administrators:",
        "",
        f"Generating server: {ctx.mta}",
        "",
    ]
    for report in ctx.reports:
        plain.append(report.recipient)
        reply = report.diagnostic or report.status
        if online:
            plain.append(f"Remote Server returned '{reply}'")
        else:
            plain.append(f"#{reply} ##")
        plain.append("")
    head = _headers_of(original.content).decode("utf-8", "replace")
    plain += ["Original message headers:", "", head.rstrip("\n")]
    text = "\n".join(plain) + "\n"
    prefix = "Delivery delayed" if delayed else "Undeliverable"
    subject = f"{prefix}: {ctx.original_subject}".rstrip()
    boundary = f"_{ctx.fingerprint[:24]}_"
    msgid = ctx.original_header("Message-ID")
    refs = [("In-Reply-To", msgid), ("References", msgid)] if msgid else []
    frm = (
        f"Microsoft Outlook <postmaster@{ctx.mta}>"
        if online
        else f"Microsoft Exchange Server <postmaster@{ctx.mta}>"
    )
    headers = [
        ("From", frm),
        ("To", f"<{original.envelope_sender}>"),
        ("Date", _date(ctx.now)),
    ]
    trailer: list[tuple[str, str]] = []
    if online:
        trailer.append(("X-MS-Exchange-Message-Is-Ndr", ""))
    trailer += [
        ("Content-Language", "en-US"),
        ("Message-ID", f"<{ctx.fingerprint[:32]}@{ctx.mta}>"),
        *refs,
        ("Subject", subject),
        ("Auto-Submitted", "auto-replied"),
        ("MIME-Version", "1.0"),
    ]
    per_message = [("Reporting-MTA", f"dns;{ctx.mta}")]
    if original.envid is not None:
        per_message.append(("Original-Envelope-Id", original.envid))
    per_message += [("Received-From-MTA", f"dns;{ctx.mta}"), ("Arrival-Date", _date(ctx.arrival))]
    blocks = []
    for report in ctx.reports:
        fields = []
        if not online:
            fields.append(("Original-Recipient", _orcpt(report.orcpt or report.recipient)))
        fields += [
            ("Final-Recipient", _address_field(report.recipient, ";")),
            ("Action", report.action),
            ("Status", report.status),
        ]
        fields += _diagnostic_field(report, "smtp;")
        if online:
            fields += _remote_field(report, "dns;")
            fields.append(("X-Display-Name", report.recipient))
        fields += _will_retry_field(ctx, report)
        blocks.append(fields)
    paragraphs = [p for p in "\n".join(plain).split("\n\n") if p.strip()]
    charset = "us-ascii" if text.isascii() else "utf-8"
    return _Layout(
        headers=headers,
        content_type=f'multipart/report; report-type=delivery-status;\n\tboundary="{boundary}"',
        preamble=None,
        human=[
            _alternative(
                text, _html(paragraphs, charset), policy, f"{boundary}alt", charset=charset
            )
        ],
        per_message=per_message,
        per_recipient=blocks,
        trailer=trailer,
        fold_width=None,
    )


def _office365(ctx: _Context, policy: email.policy.Policy) -> _Layout:
    return _exchange_common(ctx, policy, online=True)


def _exchange(ctx: _Context, policy: email.policy.Policy) -> _Layout:
    return _exchange_common(ctx, policy, online=False)


# -- Amazon SES ---------------------------------------------------------------------------------


def _amazon_ses(ctx: _Context, policy: email.policy.Policy) -> _Layout:
    original = ctx.original
    subject = {
        "failed": "Delivery Status Notification (Failure)",
        "delayed": "Delivery Status Notification (Delay)",
        "success": "Delivery Status Notification (Success)",
    }[ctx.kind]
    boundary = f"{ctx.fingerprint[:5]}.{ctx.fingerprint[5:12]}.{ctx.fingerprint[12:18]}"
    headers = [
        ("From", "MAILER-DAEMON@amazonses.com"),
        ("To", original.envelope_sender),
        ("Subject", subject),
        ("Message-ID", f"<{ctx.fingerprint[:16]}-{ctx.fingerprint[16:28]}-000000@{ctx.mta}>"),
        ("Date", _date(ctx.now)),
        ("MIME-Version", "1.0"),
    ]
    trailer = [("X-SES-Outgoing", f"{ctx.now:%Y.%m.%d}-127.0.0.1")]
    lines = ["An error occurred while trying to deliver the mail to the following recipients:"]
    if ctx.kind == "delayed":
        lines = ["Delivery to the following recipients is delayed; Amazon SES keeps trying:"]
    elif ctx.kind == "success":
        lines = ["The mail was delivered to the following recipients:"]
    lines += [r.recipient for r in ctx.reports]
    per_message = [("Reporting-MTA", f"dns; {ctx.mta}")]
    if original.envid is not None:
        per_message.append(("Original-Envelope-Id", original.envid))
    blocks = []
    for report in ctx.reports:
        fields = [
            ("Action", report.action),
            ("Final-Recipient", _address_field(report.recipient)),
        ]
        fields += _diagnostic_field(report)
        fields.append(("Status", report.status))
        fields += _will_retry_field(ctx, report)
        blocks.append(fields)
    return _Layout(
        headers=headers,
        content_type=f'multipart/report; report-type=delivery-status; boundary="{boundary}"',
        preamble=None,
        human=[
            _text_part(
                [
                    ("content-type", "text/plain;\n charset=us-ascii"),
                    ("Content-Transfer-Encoding", "7bit"),
                ],
                "\n".join(lines) + "\n",
                policy,
            )
        ],
        status_headers=[("content-type", "{type}"), ("Content-Transfer-Encoding", "7bit")],
        per_message=per_message,
        per_recipient=blocks,
        returned_headers=[("content-type", "{type}")],
        trailer=trailer,
        fold_width=None,
    )


# -- OpenSMTPD ----------------------------------------------------------------------------------


def _opensmtpd(ctx: _Context, policy: email.policy.Policy) -> _Layout:
    original = ctx.original
    delayed = ctx.kind == "delayed"
    subject = f"Delivery status notification: {'delay' if delayed else 'error'}"
    lines = [
        "    Hi!",
        "",
        "    This is the MAILER-DAEMON, please DO NOT REPLY to this email.",
        "",
    ]
    if delayed:
        lines += [
            "    A message is delayed for more than 4 hours for the following",
            "    list of recipients:",
        ]
    else:
        lines += [
            "    An error has occurred while attempting to deliver a message for",
            "    the following list of recipients:",
        ]
    lines.append("")
    for report in ctx.reports:
        lines.append(f"{report.recipient}: {report.diagnostic or report.status}")
    lines += ["", "    Below is a copy of the original message:", ""]
    boundary = f"{ctx.fingerprint[:16]}/{ctx.mta}"
    headers = [
        ("Subject", subject),
        ("From", f"Mailer Daemon <MAILER-DAEMON@{ctx.mta}>"),
        ("To", original.envelope_sender),
        ("Date", _date(ctx.now)),
        ("MIME-Version", "1.0"),
    ]
    trailer = [("Message-ID", f"<{ctx.fingerprint[:16]}@{ctx.mta}>")]
    per_message = [("Reporting-MTA", f"dns; {ctx.mta}")]
    if original.envid is not None:
        per_message.append(("Original-Envelope-Id", original.envid))
    blocks = [
        [
            ("Final-Recipient", _address_field(r.recipient)),
            ("Action", r.action),
            ("Status", r.status),
        ]
        for r in ctx.reports
    ]
    return _Layout(
        headers=headers,
        content_type=f'multipart/mixed; boundary="{boundary}"',
        preamble="This is a MIME-encapsulated message.\n",
        human=[
            _text_part(
                [
                    ("Content-Description", "Notification"),
                    ("Content-Type", "text/plain; charset=us-ascii"),
                ],
                "\n".join(lines) + "\n",
                policy,
            )
        ],
        status_headers=[("Content-Description", "Delivery Status"), _CT],
        per_message=per_message,
        per_recipient=blocks,
        returned_headers=[("Content-Description", "Message headers"), _CT],
        trailer=trailer,
        fold_width=None,
    )


# -- plain-text bounces: qmail, legacy Exim, Yahoo ---------------------------------------------


def _host_ip(report: RecipientReport) -> tuple[str, str]:
    return _split_host(report.remote_mta or "127.0.0.1")


def _qmail_text(ctx: _Context) -> str:
    lines = [
        f"Hi. This is the qmail-send program at {ctx.mta}.",
        "I could not deliver your message to the addresses listed below.",
        "No more attempts will be made; each address says why.",
        "",
    ]
    for report in ctx.reports:
        lines.append(f"<{report.recipient}>:")
        ip = _host_ip(report)[1]
        if _connected(report):
            if report.in_reply_to == "end of DATA":
                lines.append(f"{ip} failed after I sent the message.")
            else:
                lines.append(f"{ip} does not like recipient.")
            lines.append(f"Remote host said: {report.diagnostic}")
            if _expired(report):
                lines.append(
                    "I'm not going to try again; this message has been in the queue too long."
                )
            else:
                lines.append(f"Giving up on {ip}.")
        else:
            if report.diagnostic:
                lines.append(
                    f"Sorry, I wasn't able to establish an SMTP connection. ({report.diagnostic})"
                )
            lines.append("I'm not going to try again; this message has been in the queue too long.")
        lines.append("")
    lines += ["--- Below this line is a copy of the message.", "", ""]
    return "\n".join(lines)


def _yahoo_text(ctx: _Context) -> str:
    lines = [
        "Sorry, we were unable to deliver your message to the following address.",
        "",
    ]
    for report in ctx.reports:
        lines.append(f"<{report.recipient}>:")
        command = "[BODY]" if report.in_reply_to == "end of DATA" else "[RCPT_TO]"
        if _connected(report):
            text = f"Remote host said: {report.diagnostic} {command}"
        else:
            text = f"Message expired: {report.diagnostic or 'no answer from the remote host'}"
        lines += [text, ""]
    lines += ["--- Below this line is a copy of the message.", "", ""]
    return "\n".join(lines)


def _exim_legacy_text(ctx: _Context) -> str:
    lead = _EXIM_LEAD.decode()
    if ctx.kind == "delayed":
        lines = [
            lead,
            "A message that you sent has not yet been delivered to one or more of its",
            "recipients after more than 24 hours on the queue on " + ctx.mta + ".",
            "",
            f"The message identifier is:     {ctx.exim_id}",
            "",
            "The address to which the message has not yet been delivered is:",
            "",
        ]
        for report in ctx.delayed():
            lines.append(f"  {report.recipient}")
            if _connected(report):
                name, ip = _host_ip(report)
                lines += _exim_error(f"Delay reason: host {name} [{ip}]: {report.diagnostic}")
        lines += [
            "",
            "No action is required on your part. Delivery attempts will continue for",
            "some time, and this warning may be repeated at intervals if the message",
            "remains undelivered.",
            "",
            "------ This is a copy of the message's headers. ------",
            "",
            "",
        ]
        return "\n".join(lines)
    lines = [
        lead,
        "",
        "A message that you sent could not be delivered to one or more of its",
        "recipients. This is a permanent error. The following address(es) failed:",
        "",
    ]
    for report in ctx.failed():
        lines.append(f"  {report.recipient}")
        if _connected(report):
            name, ip = _host_ip(report)
            lines.append(f"    SMTP error from remote mail server after {_exim_after(report)}:")
            lines.append(f"    host {name} [{ip}]: {report.diagnostic}")
        if _expired(report) or not _connected(report):
            lines.append("    retry timeout exceeded")
    lines += ["", "------ This is a copy of the message, including all the headers. ------", "", ""]
    return "\n".join(lines)


def _plain(ctx: _Context, policy: email.policy.Policy) -> EmailMessage:
    """A bounce without MIME structure: explanation, a separator line, then the message."""
    original = ctx.original
    sender = original.envelope_sender
    date = _date(ctx.now)
    if ctx.dialect is Dialect.QMAIL:
        headers = [
            ("Return-Path", "<>"),
            ("Received", f"(qmail {ctx.number % 90000 + 10000} invoked for bounce); {date}"),
            ("Date", date),
            ("From", f"MAILER-DAEMON@{ctx.mta}"),
            ("To", sender),
            ("Subject", "failure notice"),
        ]
        text = _qmail_text(ctx)
    elif ctx.dialect is Dialect.YAHOO:
        headers = [
            # The provider's own mailer-daemon: parsers key on it (flufl.bounce does).
            ("From", "MAILER-DAEMON@yahoo.com"),
            ("To", sender),
            ("Subject", "Failure Notice"),
            ("Date", date),
            ("Message-ID", f"<{ctx.fingerprint[:20]}@{ctx.mta}>"),
        ]
        text = _yahoo_text(ctx)
    else:
        failed = [r.recipient for r in ctx.failed()]
        subject = (
            f"Warning: message {ctx.exim_id} delayed 24 hours"
            if ctx.kind == "delayed"
            else "Mail delivery failed: returning message to sender"
        )
        headers = [
            (
                "Received",
                f"from mail by {ctx.mta} with local (Exim 4.69)\n"
                f"\tid {ctx.exim_dsn_id}\n\tfor {sender}; {date}",
            ),
            *([("X-Failed-Recipients", ", ".join(failed))] if failed else []),
            ("Auto-Submitted", "auto-replied"),
            ("From", f"Mail Delivery System <Mailer-Daemon@{ctx.mta}>"),
            ("To", sender),
            ("Subject", subject),
            ("Message-Id", f"<E{ctx.exim_dsn_id}@{ctx.mta}>"),
            ("Date", date),
        ]
        text = _exim_legacy_text(ctx)
    returned = _headers_of(original.content) if ctx.kind == "delayed" else original.content
    message = EmailMessage(policy=policy)
    for name, value in headers:
        message.set_raw(name, value)
    message.set_payload(_raw(text.encode("utf-8") + returned.replace(b"\r\n", b"\n")))
    return message


# -- assembling ---------------------------------------------------------------------------------

_LAYOUTS = {
    Dialect.GENERIC: _generic,
    Dialect.POSTFIX: _postfix,
    Dialect.EXIM: _exim,
    Dialect.SENDMAIL: _sendmail,
    Dialect.GMAIL: _gmail,
    Dialect.OFFICE365: _office365,
    Dialect.EXCHANGE: _exchange,
    Dialect.AMAZON_SES: _amazon_ses,
    Dialect.OPENSMTPD: _opensmtpd,
}


def _fold(name: str, value: str, width: int | None) -> str:
    """*value* folded at *width* columns with a four-space indent, as Postfix folds fields."""
    if width is None:
        return value
    lines = textwrap.wrap(
        f"{name}: {value}",
        width=width,
        subsequent_indent="    ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    return "\n".join(lines)[len(name) + 2 :]


def _block(
    fields: Iterable[tuple[str, str]], policy: email.policy.Policy, width: int | None
) -> Message:
    block: Message = Message(policy=policy)
    for name, value in fields:
        # Stored raw and pre-folded: the email package would otherwise move a long value whole
        # onto a continuation line, leaving "Diagnostic-Code:" empty on the first one.
        block.set_raw(name, _fold(name, value, width))
    return block


def _filled(
    headers: list[tuple[str, str]], content_type: str, cte: str | None
) -> list[tuple[str, str]]:
    out = [(n, content_type if v == "{type}" else v) for n, v in headers]
    if cte and not any(n.lower() == "content-transfer-encoding" for n, _ in out):
        out.append(("Content-Transfer-Encoding", cte))
    return out


def _assemble(ctx: _Context, layout: _Layout, policy: email.policy.Policy) -> EmailMessage:
    original = ctx.original
    message = EmailMessage(policy=policy)
    for name, value in layout.headers:
        message.set_raw(name, value)
    if "Content-Type" not in message:  # Exim writes it among the others
        message.set_raw("Content-Type", layout.content_type)
    for name, value in layout.trailer:
        message.set_raw(name, value)
    message.preamble = layout.preamble

    blocks = [layout.per_message, *layout.per_recipient]
    status = EmailMessage(policy=policy)
    if ctx.utf8:
        for name, value in _filled(layout.status_headers, "message/global-delivery-status", "8bit"):
            status.set_raw(name, value)
        # The email package parses every message/* type it does not know as an embedded
        # message: here the per-message block becomes its headers and the recipient blocks its
        # body. Building it the same way keeps memory and wire forms alike.
        first = _block(blocks[0], policy, layout.fold_width)
        rest = "\n\n".join(
            "\n".join(f"{k}: {_fold(k, v, layout.fold_width)}" for k, v in b) for b in blocks[1:]
        )
        first.set_payload(_raw((rest + "\n").encode("utf-8")))
        status.set_payload([first])
    else:
        for name, value in _filled(layout.status_headers, "message/delivery-status", None):
            status.set_raw(name, value)
        # A list of header blocks is what the email package's parser produces for this type,
        # so a DSN used in memory looks exactly like one parsed from the wire.
        status.set_payload([_block(b, policy, layout.fold_width) for b in blocks])

    trace = layout.trace.encode("utf-8", "surrogateescape")
    content = trace + original.content.replace(b"\r\n", b"\n")
    returned = EmailMessage(policy=policy)
    eight_bit = None if content.isascii() else "8bit"
    if ctx.headers_only and not ctx.utf8:
        head = _headers_of(content) + (b"\n" if layout.extra_blank_after_headers else b"")
        for name, value in _filled(layout.returned_headers, "text/rfc822-headers", eight_bit):
            returned.set_raw(name, value)
        returned.set_payload(_raw(head))
    else:
        kind = (
            ("message/global-headers" if ctx.headers_only else "message/global")
            if ctx.utf8
            else "message/rfc822"
        )
        for name, value in _filled(layout.returned_headers, kind, eight_bit):
            returned.set_raw(name, value)
        body = _headers_of(content) + b"\n" if ctx.headers_only else content
        returned.set_payload([BytesParser(policy=policy).parsebytes(body)])
    message.set_payload([*layout.human, status, returned])
    return message


_BUILT: weakref.WeakKeyDictionary[Message, tuple[Dialect, tuple[RecipientReport, ...]]] = (
    weakref.WeakKeyDictionary()
)
"""Which dialect and reports each DSN built here came from: plain-text bounces have no
delivery-status part to read them back from."""


def build_dsn(
    original: OriginalMessage,
    reports: Sequence[RecipientReport],
    *,
    dialect: Dialect | str = Dialect.GENERIC,
    reporting_mta: str = "mx.harness.test",
    now: float | datetime | None = None,
) -> EmailMessage | None:
    """Build the DSN an MTA would send about *original*; None when NOTIFY wants none of it.

    Only the reports whose NOTIFY asks for them are included (no NOTIFY: FAILURE,DELAY; NEVER:
    nothing); several reports give one DSN with one block per recipient, as Postfix sends for a
    message rejected at end of DATA. Most dialects give ``multipart/report;
    report-type=delivery-status`` addressed to the envelope sender (VERP addresses kept
    exactly): the explanation (plain text, or text and HTML alternatives), a
    ``message/delivery-status`` part and the original message (RET=FULL, the default) or its
    headers (RET=HDRS, and always for delay warnings). ``qmail``, ``exim_legacy`` and ``yahoo``
    give one plain-text message with the original appended; ``opensmtpd`` a ``multipart/mixed``.
    When the sender or a recipient is not ASCII, and for Postfix and Exim whenever the original
    came with SMTPUTF8, it is the RFC 6533 variant: ``message/global-delivery-status`` then
    ``message/global`` or ``message/global-headers``. *now* (epoch seconds or a datetime) fixes
    every date, and with the same inputs the output is byte-identical.
    """
    dialect = get_dialect(dialect)
    if not reports:
        raise ConfigError("build_dsn needs at least one RecipientReport; reports is empty")
    wanted = tuple(r for r in reports if r.wanted)
    if not wanted:
        return None
    for report in wanted:
        if report.action == "delayed" and dialect in NO_DELAY_WARNINGS:
            raise ConfigError(
                f"the {dialect} dialect cannot report {report.recipient!r} as delayed: "
                f"{NO_DELAY_WARNINGS[dialect]}; use action 'failed' or "
                "another dialect"
            )
        if report.action in SUCCESS_ACTIONS and dialect not in SUCCESS_DIALECTS:
            raise ConfigError(
                f"the {dialect} dialect cannot report {report.recipient!r} as "
                f"{report.action}: it sends no success notifications; use one of "
                f"{', '.join(sorted(SUCCESS_DIALECTS))}"
            )
        if report.action == "expanded" and dialect not in EXPANDING_DIALECTS:
            raise ConfigError(
                f"the {dialect} dialect cannot report {report.recipient!r} as expanded: it "
                "never reports alias or list expansion; use one of "
                f"{', '.join(sorted(EXPANDING_DIALECTS))}"
            )
    when = _as_datetime(now)
    addresses = [original.envelope_sender, *(r.recipient for r in wanted)]
    utf8 = not all(_is_ascii(a) for a in addresses)
    if dialect in (Dialect.POSTFIX, Dialect.EXIM) and original.smtputf8:
        # Both send the RFC 6533 form whenever the message came with SMTPUTF8.
        utf8 = True
    ctx = _Context(
        original=original,
        reports=wanted,
        dialect=dialect,
        mta=reporting_mta,
        now=when,
        fingerprint=_fingerprint(reporting_mta, dialect, when, original, wanted),
        utf8=utf8,
    )
    # refold_source="none": the returned message keeps its header lines exactly as they came
    # (a bounce processor may read X-CleverTap_META back out of it), and the DSN's own headers
    # keep the folding each MTA uses.
    policy = email.policy.default.clone(utf8=utf8, refold_source="none")
    if dialect in PLAIN_TEXT_DIALECTS:
        message = _plain(ctx, policy)
    else:
        message = _assemble(ctx, _LAYOUTS[dialect](ctx, policy), policy)
    _BUILT[message] = (dialect, wanted)
    return message


def get_dialect(value: Dialect | str) -> Dialect:
    """The dialect called *value*, or :class:`UnknownNameError` with a "did you mean"."""
    try:
        return Dialect(value)
    except ValueError:
        raise UnknownNameError("DSN dialect", str(value), [d.value for d in Dialect]) from None


def dsn_bytes(message: EmailMessage, *, crlf: bool = True) -> bytes:
    """*message* as RFC 5322 bytes, with CRLF line ends (as sent over SMTP) or LF (as on disk)."""
    policy = message.policy
    if not isinstance(policy, email.policy.EmailPolicy):
        policy = email.policy.default
    data = message.as_bytes(policy=policy.clone(linesep="\n"))
    # Payloads kept verbatim may have come with either line end; normalise all of them.
    data = data.replace(b"\r\n", b"\n")
    return data.replace(b"\n", b"\r\n") if crlf else data


# -- catalog convenience -----------------------------------------------------------------------

_IN_REPLY_TO = {
    Stage.EHLO: "EHLO",
    Stage.AUTH: "AUTH",
    Stage.MAIL: "MAIL FROM",
    Stage.RCPT: "RCPT TO",
    Stage.DATA: "DATA",
    Stage.END_OF_DATA: "end of DATA",
}


_NATURAL_FLAVOUR = {
    Dialect.GMAIL: "gmail",
    Dialect.OFFICE365: "outlook",
    Dialect.EXCHANGE: "outlook",
    Dialect.YAHOO: "yahoo",
}
"""The catalog flavour whose reply texts a provider's own bounces quote (default: postfix)."""


def dsn_for_mode(
    mode_name: str,
    recipient: str | Sequence[str],
    *,
    dialect: Dialect | str = Dialect.GENERIC,
    action: str = "failed",
    sender: str = "bounces@sender.test",
    flavour: str | None = None,
    ret: str | None = None,
    envid: str | None = None,
    orcpt: str | None = None,
    content: bytes | None = None,
    remote_mta: str | None = None,
    reporting_mta: str = "mx.harness.test",
    now: float | datetime | None = None,
    smtputf8: bool | None = None,
) -> EmailMessage:
    """A DSN reporting that *recipient* (one address, or several in one DSN) met *mode_name*.

    The status is the mode's enhanced code and the diagnostic its reply in *flavour* (default:
    the dialect's own provider, else ``postfix``); modes where the server says nothing (refused,
    tarpit, drops) get the reporting MTA's own connection diagnostic. A ``delayed`` report of a
    5xx mode is turned into 4.x.x, as Postfix's ``soft_bounce`` does; ``delivered``/``relayed``
    reports ask for NOTIFY=SUCCESS so that a DSN is always produced, and quote the end-of-DATA
    reply. Several recipients give one DSN with one block each (all on the same host), as
    Postfix sends for a message rejected at end of DATA. *smtputf8* (default: whether any
    address is non-ASCII) tells that the original came with ``MAIL FROM:<...> SMTPUTF8``.
    """
    mode = get_mode(mode_name)
    dialect = get_dialect(dialect)
    recipients = [recipient] if isinstance(recipient, str) else list(recipient)
    if not recipients:
        raise ConfigError("dsn_for_mode needs at least one recipient; none was given")
    if action not in ACTIONS:
        raise ConfigError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    if mode.code is not None and mode.code < 400 and action in ("failed", "delayed"):
        raise ConfigError(
            f"mode {mode_name!r} delivers the message ({mode.code}); it can only be reported "
            f"with action 'delivered' or 'relayed', not {action!r}"
        )
    flavour = flavour or _NATURAL_FLAVOUR.get(dialect, "postfix")
    domain = recipients[0].rpartition("@")[2] or "example.com"
    mta = remote_mta or f"mx.{domain}"
    host = mta if "[" in mta else f"{mta}[127.0.0.1]"
    reports = []
    for address in recipients:
        # {peer} is the client the MX saw: the reporting MTA, on loopback like every fake host.
        fill = {"rcpt": address, "host": host, "peer": "127.0.0.1"}
        if mode.stage is Stage.CONNECT:
            fill["host"] = f"{host}:25"  # Postfix names the port it could not connect to
        reply = mode.reply(flavour, **fill)
        if reply is not None:
            diagnostic = str(reply)
            status = reply.enhanced or mode.enhanced or _fallback_status(reply.code, mode.stage)
        else:
            # The server said nothing: the diagnostic is the reporting MTA's own (Postfix) words.
            diagnostic = mode.text("postfix", **fill)
            status = mode.enhanced or _fallback_status(None, mode.stage)
        # Remote-MTA names a host that was talked to: not when it refused the connection, and
        # not when the message expired in the reporting MTA's own queue.
        connected = mode.stage not in (Stage.CONNECT, Stage.LATER)
        in_reply_to = _IN_REPLY_TO.get(mode.stage)
        if action == "delayed":
            status = "4" + status[1:]
        elif action in SUCCESS_ACTIONS:
            # A success report quotes the reply to the final dot, not the one to RCPT.
            status = "2.0.0"
            diagnostic = f"250 2.0.0 Ok: queued as {_fingerprint(address, now)[:12].upper()}"
            connected, in_reply_to = True, "end of DATA"
        reports.append(
            RecipientReport(
                recipient=address,
                action=action,
                status=status,
                diagnostic=diagnostic,
                orcpt=orcpt,
                notify=frozenset({"SUCCESS"}) if action in SUCCESS_ACTIONS else None,
                remote_mta=host if connected else None,
                in_reply_to=in_reply_to,
            )
        )
    if content is None:
        content = (
            f"From: <{sender}>\r\nTo: {', '.join(f'<{r}>' for r in recipients)}\r\n"
            "Subject: Hello from the campaign\r\n"
            f"Message-ID: <campaign.1@{sender.rpartition('@')[2] or 'sender.test'}>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            "Hello.\r\n"
        ).encode()
    if smtputf8 is None:
        smtputf8 = not all(a.isascii() for a in (sender, *recipients))
    original = OriginalMessage(
        envelope_sender=sender, content=content, envid=envid, ret=ret, smtputf8=smtputf8
    )
    message = build_dsn(original, reports, dialect=dialect, reporting_mta=reporting_mta, now=now)
    # Every report asks for itself through NOTIFY, so a DSN is always built.
    if message is None:  # pragma: no cover - guarded by the NOTIFY chosen above
        raise ConfigError(f"no DSN for mode {mode_name!r} with action {action!r}")
    return message


def _fallback_status(code: int | None, stage: Stage) -> str:
    if code is None:
        return "4.4.1" if stage is Stage.CONNECT else "4.4.2"
    return f"{str(code)[0]}.0.0"


# -- delivery ----------------------------------------------------------------------------------


def _orcpt_address(value: object) -> str | None:
    """``"rfc822;a@x.test"`` (an ``Original-Recipient`` or ORCPT) -> ``"a@x.test"``."""
    if value is None:
        return None
    address = " ".join(str(value).split()).partition(";")[2].strip()
    return address or None


def _found(recipient: str, action: str, status: str, orcpt: object) -> dict[str, str]:
    found = {"recipient": recipient, "action": action, "status": status}
    original = _orcpt_address(orcpt)
    if original is not None and address_key(original) != address_key(recipient):
        found["original"] = original
    return found


def recipients_of(message: Message) -> list[dict[str, str]]:
    """``[{"recipient", "action", "status"}, ...]`` read from any DSN's delivery-status part,
    with ``"original"`` too when the block's ``Original-Recipient`` names another address
    (aliasing: the address sent to).

    A plain-text bounce has none: for one built by :func:`build_dsn` the reports it was built
    from are given instead (Exim's generic status, as its status part would say).
    """
    built = _BUILT.get(message)
    if built is not None and built[0] in PLAIN_TEXT_DIALECTS:
        dialect, reports = built
        # No Original-Recipient either: only what the message says is reported.
        return [_found(r.recipient, r.action, _reported_status(dialect, r), None) for r in reports]
    found: list[dict[str, str]] = []
    for part in message.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            payload = part.get_payload()
            blocks = (
                [b for b in payload[1:] if isinstance(b, Message)]
                if isinstance(payload, list)
                else []
            )
        elif ctype == "message/global-delivery-status":
            # Parsed as an embedded message: block one is its headers, the rest its body.
            inner = part.get_payload(0) if part.is_multipart() else None
            raw = inner.get_payload(decode=True) if isinstance(inner, Message) else None
            if not isinstance(raw, bytes):
                continue
            text = raw.decode("utf-8", "replace")
            chunks = [c for c in re.split(r"\r?\n\r?\n", text) if c.strip()]
            blocks = [HeaderParser().parsestr(c + "\n") for c in chunks]
        else:
            continue
        for block in blocks:
            final = str(block.get("Final-Recipient", ""))
            found.append(
                _found(
                    final.partition(";")[2].strip(),
                    str(block.get("Action", "")).strip().lower(),
                    str(block.get("Status", "")).strip(),
                    block.get("Original-Recipient"),
                )
            )
    return found


def _dialect_of(message: Message) -> Dialect:
    """Which dialect *message* was built in, or looks like from the marks each MTA leaves."""
    built = _BUILT.get(message)
    if built is not None:
        return built[0]
    if "X-Failed-Recipients" in message:
        return Dialect.EXIM
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and "X-Postfix-Queue-ID" in payload[0]:
                return Dialect.POSTFIX
        elif part.get_content_type() == "message/global-delivery-status":
            inner = part.get_payload(0) if part.is_multipart() else None
            if isinstance(inner, Message) and "X-Postfix-Queue-ID" in inner:
                return Dialect.POSTFIX
        elif part.get_content_type() == "text/plain":
            text = part.get_payload(decode=True) or b""
            if isinstance(text, bytes) and text.startswith(_EXIM_LEAD):
                return Dialect.EXIM
    return Dialect.GENERIC


async def deliver_dsn(
    message: EmailMessage,
    *,
    envelope_to: str,
    intake: tuple[str, int] | pathlib.Path,
    journal: Journal,
    host: str | None = None,
    queue_id: str | None = None,
    timeout: float = 10.0,
    report: MailReport = MailReport.DSN,
    about: str | None = None,
    style: str | None = None,
) -> Entry:
    """Send *message* from the null sender to *envelope_to* at *intake*, and journal it.

    *intake* is ``(host, port)`` for SMTP (``MAIL FROM:<>``, STARTTLS when offered, SMTPUTF8
    when the DSN needs it) or a :class:`pathlib.Path` to a Maildir (created if missing). The
    :class:`~harness.records.Dsn` entry is returned; it says ``ok`` and the reply, or the error
    when delivery failed: delivery failures never raise. *host* and *queue_id* name the fake MX
    host that bounced the message and the message's queue id.

    An auto-reply or a complaint (:mod:`harness.smtp.reports`) goes the same way: *report*
    says which, *about* names the recipient who replied or complained, *style* the reply's
    style or the complaint's feedback type; the entry is a ``Dsn`` with that ``report``.
    """
    started = time.time()
    data = dsn_bytes(message, crlf=True)
    is_maildir = isinstance(intake, pathlib.Path)
    fields: dict[str, Any] = {
        "to": envelope_to,
        "intake": str(intake) if isinstance(intake, pathlib.Path) else f"{intake[0]}:{intake[1]}",
        "transport": "maildir" if is_maildir else "smtp",
        "dialect": str(_dialect_of(message)) if report is MailReport.DSN else "",
        "recipients": tuple(
            DsnRecipient(
                recipient=r["recipient"],
                action=r["action"],
                status=r["status"],
                original=r.get("original"),
            )
            for r in recipients_of(message)
        )
        if report is MailReport.DSN
        else (DsnRecipient(recipient=about or ""),),
        "report": report,
        "style": style,
        "started": started,
        "message_id": str(message.get("Message-ID", "")) or None,
        "size": len(data),
        "host": host,
        "message": queue_id,
    }
    try:
        if isinstance(intake, pathlib.Path):
            fields["size"] = len(data.replace(b"\r\n", b"\n"))
            fields["maildir_key"] = await asyncio.to_thread(_to_maildir, intake, data)
        else:
            utf8 = _needs_smtputf8(message, envelope_to, data)
            fields["reply"] = await _to_smtp(intake, envelope_to, data, utf8, timeout)
        fields["ok"] = True
    except asyncio.CancelledError:
        fields["error"] = "cancelled before the DSN was delivered"
        journal.append(Dsn(**fields))
        raise
    except Exception as exc:  # every delivery failure is journaled, none raised
        fields["error"] = f"{type(exc).__name__}: {exc}"
    return journal.append(Dsn(**fields))


def _to_maildir(path: pathlib.Path, data: bytes) -> str:
    box = mailbox.Maildir(path, create=True)
    try:
        # Files on disk use the local line end; mailbox converts LF, so hand it LF only.
        return box.add(data.replace(b"\r\n", b"\n"))
    finally:
        box.close()


def _needs_smtputf8(message: EmailMessage, envelope_to: str, data: bytes) -> bool:
    # RFC 6531/6533: a UTF-8 address or header, or a message/global* part, needs SMTPUTF8.
    head = data.partition(b"\r\n\r\n")[0]
    if not envelope_to.isascii() or not head.isascii():
        return True
    return any(p.get_content_type().startswith("message/global") for p in message.walk())


async def _to_smtp(
    intake: tuple[str, int], envelope_to: str, data: bytes, utf8: bool, timeout: float
) -> str:
    host, port = intake
    # Like an MTA's opportunistic TLS: use STARTTLS when offered, without verifying the
    # certificate (fake intakes use self-signed ones).
    client = aiosmtplib.SMTP(
        hostname=host, port=port, timeout=timeout, start_tls=None, validate_certs=False
    )
    options: list[str] = []
    async with client:
        if utf8:
            options.append("SMTPUTF8")
        if not data.isascii() and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        _, reply = await client.sendmail("", [envelope_to], data, mail_options=options)
    return reply

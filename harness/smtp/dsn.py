"""RFC 3464 delivery status notifications: build them as real MTAs do, and deliver them.

A fake MX that accepts a message and bounces it later ("accept-then-bounce") calls
:func:`build_dsn` with what it accepted (:class:`OriginalMessage`) and one
:class:`RecipientReport` per recipient, then :func:`deliver_dsn` to hand the report to the bounce
intake of the integration under test, over SMTP from the null sender or into a Maildir.

Three dialects, because a bounce processor meets all of them (see ``docs/dsn.md``):

- ``generic``: RFC 3464 as written.
- ``postfix``: ``X-Postfix-Queue-ID``/``X-Postfix-Sender`` in the per-message block, an
  ``Original-Recipient`` for every recipient, "(in reply to RCPT TO command)" texts, ``Action:
  failed`` keeping the 4.x.x status when a deferred message expires, ``X-Postfix;`` diagnostics
  for connection failures (and then no ``Remote-MTA``).
- ``exim``: a generic ``Status`` (5.0.0, 4.0.0, 2.0.0) with the real code only in
  ``Diagnostic-Code``, an ``X-Failed-Recipients`` header, "retry timeout exceeded" for an expired
  4xx.

RFC 3461 parameters are honoured: NOTIFY filters which reports produce a DSN (none at all with
NEVER), RET picks the third part, ENVID and ORCPT are echoed.
"""

from __future__ import annotations

import asyncio
import email.policy
import hashlib
import mailbox
import pathlib
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from email.utils import format_datetime
from enum import StrEnum
from typing import Any

import aiosmtplib

from harness.errors import ConfigError, UnknownNameError
from harness.journal import Entry, Journal
from harness.records import Dsn, DsnRecipient
from harness.smtp.catalog import Stage, get_mode

__all__ = [
    "ACTIONS",
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


class Dialect(StrEnum):
    """Which MTA a DSN should look like."""

    GENERIC = "generic"
    POSTFIX = "postfix"
    EXIM = "exim"


ACTIONS = ("failed", "delayed", "delivered", "relayed")
NOTIFY_KEYWORDS = frozenset({"NEVER", "SUCCESS", "FAILURE", "DELAY"})
DEFAULT_NOTIFY = frozenset({"FAILURE", "DELAY"})
"""RFC 3461 lets a server assume FAILURE,DELAY when RCPT TO carried no NOTIFY."""

# Which NOTIFY keyword asks for a report with this action.
_NOTIFY_FOR_ACTION = {
    "failed": "FAILURE",
    "delayed": "DELAY",
    "delivered": "SUCCESS",
    "relayed": "SUCCESS",
}
_STATUS_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
# An SMTP reply as a diagnostic: "550 5.1.1 ...". Anything else (for example "connect to
# mx[127.0.0.1]:25: Connection refused") is the reporting MTA's own words, not a remote reply.
_REPLY_RE = re.compile(r"^[2-5]\d\d(?:[ -]|$)")
_LIFETIME = timedelta(days=5)
"""How long a delayed message will still be retried: Postfix's maximal_queue_lifetime default."""
_STATUS_FIRST = {"failed": "45", "delayed": "4", "delivered": "2", "relayed": "2"}


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
        return self.fingerprint[:10].upper()

    @property
    def exim_id(self) -> str:
        # Exim message ids look like 1qXyZa-000Abc-12; ours are shaped alike, from the hash.
        f = self.fingerprint
        return f"1{f[10:15]}-{f[15:21]}-{f[21:23]}".upper()

    @property
    def message_id(self) -> str:
        if self.dialect is Dialect.POSTFIX:
            return f"<{self.now:%Y%m%d%H%M%S}.{self.queue_id}@{self.mta}>"
        if self.dialect is Dialect.EXIM:
            return f"<E{self.exim_id}@{self.mta}>"
        return f"<{self.fingerprint[:24]}@{self.mta}>"

    @property
    def kind(self) -> str:
        actions = {r.action for r in self.reports}
        if "failed" in actions:
            return "failed"
        if "delayed" in actions:
            return "delayed"
        return "success"


def _status(ctx: _Context, report: RecipientReport) -> str:
    if ctx.dialect is Dialect.EXIM:
        # Exim reports only the class; the real code survives in Diagnostic-Code alone.
        return {"failed": "5.0.0", "delayed": "4.0.0"}.get(report.action, "2.0.0")
    return report.status


def _expired(report: RecipientReport) -> bool:
    """A failed report with a transient status: the queue lifetime ran out."""
    return report.action == "failed" and report.status.startswith("4")


def _subject(ctx: _Context) -> str:
    kind = ctx.kind
    if ctx.dialect is Dialect.POSTFIX:
        return {
            "failed": "Undelivered Mail Returned to Sender",
            "delayed": "Delayed Mail (still being retried)",
            "success": "Successful Mail Delivery Report",
        }[kind]
    if ctx.dialect is Dialect.EXIM:
        return {
            "failed": "Mail delivery failed: returning message to sender",
            "delayed": f"Warning: message {ctx.exim_id} delayed 24 hours",
            "success": "Delivery Status Notification",
        }[kind]
    return {
        "failed": "Delivery Status Notification (Failure)",
        "delayed": "Delivery Status Notification (Delay)",
        "success": "Delivery Status Notification (Success)",
    }[kind]


def _from(ctx: _Context) -> str:
    if ctx.dialect is Dialect.POSTFIX:
        return f"MAILER-DAEMON@{ctx.mta} (Mail Delivery System)"
    if ctx.dialect is Dialect.EXIM:
        return f"Mail Delivery System <Mailer-Daemon@{ctx.mta}>"
    return f"Mail Delivery Subsystem <MAILER-DAEMON@{ctx.mta}>"


def _wrap(text: str, indent: str = "    ") -> str:
    return textwrap.fill(
        text, width=76, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def _postfix_reason(report: RecipientReport) -> str:
    diagnostic = report.diagnostic or f"delivery status {report.status}"
    if _is_reply(report.diagnostic) and report.remote_mta:
        name, ip = _split_host(report.remote_mta)
        reason = f"host {name}[{ip}] said: {diagnostic}"
        if report.in_reply_to:
            reason += f" (in reply to {report.in_reply_to} command)"
        return reason
    return diagnostic


def _human_text(ctx: _Context) -> str:
    original = ctx.original
    if ctx.dialect is Dialect.POSTFIX:
        lead = {
            "failed": "I'm sorry to have to inform you that your message could not\n"
            "be delivered to one or more recipients. It's attached below.",
            "delayed": "Your message could not be delivered for some time yet. The mail\n"
            "system will keep trying until the message expires.",
            "success": "Your message was successfully delivered to the destination(s)\n"
            "listed below.",
        }[ctx.kind]
        lines = [
            f"This is the mail system at host {ctx.mta}.",
            "",
            lead,
            "",
            "                   The mail system",
            "",
        ]
        for report in ctx.reports:
            lines.append(_wrap(f"<{report.recipient}>: {_postfix_reason(report)}"))
            lines.append("")
        return "\n".join(lines)
    if ctx.dialect is Dialect.EXIM:
        lines = [_EXIM_LEAD.decode(), ""]
        failed = [r for r in ctx.reports if r.action == "failed"]
        delayed = [r for r in ctx.reports if r.action == "delayed"]
        if failed:
            lines += [
                "A message that you sent could not be delivered to one or more of its",
                "recipients. This is a permanent error. The following address(es) failed:",
                "",
            ]
            for report in failed:
                lines += _exim_address_lines(report)
        if delayed:
            lines += [
                "A message that you sent has not yet been delivered to one or more of its",
                "recipients after more than 24 hours on the queue. The address(es) still",
                "being tried:",
                "",
            ]
            for report in delayed:
                lines += _exim_address_lines(report)
            lines += ["No action is required on your part. Delivery attempts will continue.", ""]
        for report in ctx.reports:
            if report.action in ("delivered", "relayed"):
                lines += [f"  {report.recipient}", "    delivered", ""]
        return "\n".join(lines)
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
        }[report.action]
        lines.append(f"{what}: <{report.recipient}>")
        lines.append(f"    Status: {report.status}")
        if report.diagnostic:
            lines.append(_wrap(f"    Reason: {report.diagnostic}", indent="        "))
        lines.append("")
    lines.append(f"The original message was sent by <{original.envelope_sender}>.")
    return "\n".join(lines) + "\n"


_EXIM_LEAD = b"This message was created automatically by mail delivery software."


def _exim_address_lines(report: RecipientReport) -> list[str]:
    lines = [f"  {report.recipient}"]
    if report.remote_mta:
        name, ip = _split_host(report.remote_mta)
        lines.append(f"    host {name} [{ip}]")
    if _expired(report):
        lines.append("    retry timeout exceeded")
    elif _is_reply(report.diagnostic) and report.diagnostic:
        after = report.in_reply_to or "RCPT TO"
        if after == "RCPT TO":
            after = f"RCPT TO:<{report.recipient}>"
        lines.append(f"    SMTP error from remote mail server after {after}:")
        lines.append(_wrap(f"    {report.diagnostic}"))
    elif report.diagnostic:
        lines.append(_wrap(f"    {report.diagnostic}"))
    lines.append("")
    return lines


def _address_field(ctx: _Context, address: str) -> str:
    # RFC 6533 section 3: a non-ASCII address is typed utf-8 instead of rfc822.
    kind = "rfc822" if _is_ascii(address) else "utf-8"
    sep = ";" if ctx.dialect is Dialect.EXIM else "; "
    return f"{kind}{sep}{address}"


def _per_message(ctx: _Context) -> list[tuple[str, str]]:
    original = ctx.original
    fields = [("Reporting-MTA", f"dns; {ctx.mta}")]
    if original.envid is not None:
        fields.append(("Original-Envelope-Id", original.envid))
    arrival = _date(_as_datetime(original.arrival if original.arrival is not None else ctx.now))
    if ctx.dialect is Dialect.POSTFIX:
        fields.append(("X-Postfix-Queue-ID", ctx.queue_id))
        fields.append(("X-Postfix-Sender", _address_field(ctx, original.envelope_sender)))
        fields.append(("Arrival-Date", arrival))
    elif ctx.dialect is Dialect.GENERIC:
        fields.append(("Arrival-Date", arrival))
    return fields


def _per_recipient(ctx: _Context, report: RecipientReport) -> list[tuple[str, str]]:
    dialect = ctx.dialect
    final = ("Final-Recipient", _address_field(ctx, report.recipient))
    action = ("Action", report.action)
    status = ("Status", _status(ctx, report))
    if dialect is Dialect.EXIM:
        # Exim's order, and no Original-Recipient.
        fields = [action, final, status]
    else:
        fields = [final]
        if report.orcpt is not None:
            fields.append(("Original-Recipient", _orcpt(report.orcpt)))
        elif dialect is Dialect.POSTFIX:
            # Postfix names the address it was given even without ORCPT (before any rewriting).
            kind = "rfc822" if _is_ascii(report.recipient) else "utf-8"
            fields.append(("Original-Recipient", f"{kind};{report.recipient}"))
        fields += [action, status]
    if report.remote_mta:
        fields.append(("Remote-MTA", f"dns; {_split_host(report.remote_mta)[0]}"))
    if report.diagnostic:
        if _is_reply(report.diagnostic):
            fields.append(("Diagnostic-Code", f"smtp; {report.diagnostic}"))
        elif dialect is Dialect.POSTFIX:
            fields.append(("Diagnostic-Code", f"X-Postfix; {report.diagnostic}"))
        # Exim and plain RFC 3464 carry no Diagnostic-Code without a remote reply: the
        # explanation is only in the human-readable part.
    if dialect is Dialect.GENERIC:
        fields.append(("Last-Attempt-Date", _date(ctx.now)))
    if report.action == "delayed":
        until = (
            _as_datetime(report.will_retry_until)
            if report.will_retry_until is not None
            else ctx.now + _LIFETIME
        )
        fields.append(("Will-Retry-Until", _date(until)))
    return fields


def _fold(name: str, value: str) -> str:
    """*value* folded at 76 columns with a four-space indent, the way Postfix folds fields."""
    lines = textwrap.wrap(
        f"{name}: {value}",
        width=76,
        subsequent_indent="    ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    return "\n".join(lines)[len(name) + 2 :]


def _block(fields: Iterable[tuple[str, str]], policy: email.policy.Policy) -> Message:
    block: Message = Message(policy=policy)
    for name, value in fields:
        # Stored raw and pre-folded: the email package would otherwise move a long value whole
        # onto a continuation line, leaving "Diagnostic-Code:" empty on the first one.
        block.set_raw(name, _fold(name, value))
    return block


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
    nothing). The result is ``multipart/report; report-type=delivery-status`` addressed to the
    envelope sender (VERP addresses kept exactly), with a text part, a ``message/delivery-status``
    part and the original message (RET=FULL, the default) or its headers (RET=HDRS). When the
    sender or a recipient is not ASCII (for Exim: whenever the original came with SMTPUTF8) it is
    the RFC 6533 variant: ``message/global-delivery-status`` then ``message/global`` or
    ``message/global-headers``. *now* (epoch seconds or a datetime) fixes every date, and with the
    same inputs the output is byte-identical.
    """
    dialect = get_dialect(dialect)
    if not reports:
        raise ConfigError("build_dsn needs at least one RecipientReport; reports is empty")
    wanted = tuple(r for r in reports if r.wanted)
    if not wanted:
        return None
    when = _as_datetime(now)
    addresses = [original.envelope_sender, *(r.recipient for r in wanted)]
    utf8 = not all(_is_ascii(a) for a in addresses)
    if dialect is Dialect.EXIM and original.smtputf8:
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
    # (a bounce processor may read X-CleverTap_META back out of it).
    policy = email.policy.default.clone(utf8=utf8, refold_source="none")

    message = EmailMessage(policy=policy)
    if dialect is Dialect.EXIM:
        failed = [r.recipient for r in wanted if r.action == "failed"]
        if failed:
            message["X-Failed-Recipients"] = ", ".join(failed)
    message["Auto-Submitted"] = "auto-replied"
    message["From"] = _from(ctx)
    message["To"] = original.envelope_sender
    message["Subject"] = _subject(ctx)
    message["Date"] = _date(when)
    message["Message-ID"] = ctx.message_id
    message["MIME-Version"] = "1.0"
    message.set_type("multipart/report")
    message.set_param("report-type", "delivery-status")
    message.set_boundary(f"{ctx.fingerprint[24:40]}/{reporting_mta}")
    message.preamble = "This is a MIME-encapsulated message.\n"

    text = EmailMessage(policy=policy)
    text.set_content(_human_text(ctx), charset="utf-8" if utf8 else "us-ascii")
    del text["MIME-Version"]
    message.attach(text)

    blocks = [_per_message(ctx), *(_per_recipient(ctx, r) for r in wanted)]
    status = EmailMessage(policy=policy)
    if utf8:
        status["Content-Type"] = "message/global-delivery-status"
        status["Content-Transfer-Encoding"] = "8bit"
        # The email package parses every message/* type it does not know as an embedded
        # message: here the per-message block becomes its headers and the recipient blocks its
        # body. Building it the same way keeps memory and wire forms alike.
        first = _block(blocks[0], policy)
        rest = "\n\n".join("\n".join(f"{k}: {_fold(k, v)}" for k, v in b) for b in blocks[1:])
        rest += "\n"
        first.set_payload(_raw(rest.encode("utf-8")))
        status.set_payload([first])
    else:
        status["Content-Type"] = "message/delivery-status"
        # A list of header blocks is what the email package's parser produces for this type,
        # so a DSN used in memory looks exactly like one parsed from the wire.
        status.set_payload([_block(b, policy) for b in blocks])
    message.attach(status)

    returned = EmailMessage(policy=policy)
    headers_only = original.ret == "HDRS"
    if headers_only and not utf8:
        returned["Content-Type"] = "text/rfc822-headers"
        head = _headers_of(original.content)
        if not head.isascii():
            returned["Content-Transfer-Encoding"] = "8bit"
        returned.set_payload(_raw(head))
    else:
        returned["Content-Type"] = (
            ("message/global-headers" if headers_only else "message/global")
            if utf8
            else "message/rfc822"
        )
        if not original.content.isascii():
            returned["Content-Transfer-Encoding"] = "8bit"
        content = _headers_of(original.content) + b"\n" if headers_only else original.content
        returned.set_payload([BytesParser(policy=policy).parsebytes(content)])
    message.attach(returned)

    if dialect is Dialect.POSTFIX:
        text["Content-Description"] = "Notification"
        status["Content-Description"] = "Delivery report"
        returned["Content-Description"] = (
            "Undelivered Message Headers" if headers_only else "Undelivered Message"
        )
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


def dsn_for_mode(
    mode_name: str,
    recipient: str,
    *,
    dialect: Dialect | str = Dialect.GENERIC,
    action: str = "failed",
    sender: str = "bounces@sender.test",
    flavour: str = "postfix",
    ret: str | None = None,
    envid: str | None = None,
    orcpt: str | None = None,
    content: bytes | None = None,
    remote_mta: str | None = None,
    reporting_mta: str = "mx.harness.test",
    now: float | datetime | None = None,
) -> EmailMessage:
    """A DSN reporting that *recipient* met the catalog mode *mode_name*.

    The status is the mode's enhanced code and the diagnostic its reply in *flavour*; modes where
    the server says nothing (refused, tarpit, drops) get the reporting MTA's own connection
    diagnostic. A ``delayed`` report of a 5xx mode is turned into 4.x.x, as Postfix's
    ``soft_bounce`` does; ``delivered``/``relayed`` reports ask for NOTIFY=SUCCESS so that a DSN
    is always produced.
    """
    mode = get_mode(mode_name)
    if action not in ACTIONS:
        raise ConfigError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    if mode.code is not None and mode.code < 400 and action in ("failed", "delayed"):
        raise ConfigError(
            f"mode {mode_name!r} delivers the message ({mode.code}); it can only be reported "
            f"with action 'delivered' or 'relayed', not {action!r}"
        )
    domain = recipient.rpartition("@")[2] or "example.com"
    mta = remote_mta or f"mx.{domain}"
    host = mta if "[" in mta else f"{mta}[127.0.0.1]"
    # {peer} is the client the MX saw: the reporting MTA, on loopback like every fake host.
    fill = {"rcpt": recipient, "host": host, "peer": "127.0.0.1"}
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
    # Remote-MTA names a host that was talked to: not when it refused the connection, and not
    # when the message expired in the reporting MTA's own queue.
    connected = mode.stage not in (Stage.CONNECT, Stage.LATER)
    if action == "delayed":
        status = "4" + status[1:]
    elif action in ("delivered", "relayed"):
        status = "2.0.0"
    report = RecipientReport(
        recipient=recipient,
        action=action,
        status=status,
        diagnostic=diagnostic,
        orcpt=orcpt,
        notify=frozenset({"SUCCESS"}) if action in ("delivered", "relayed") else None,
        remote_mta=host if connected else None,
        in_reply_to=_IN_REPLY_TO.get(mode.stage),
    )
    if content is None:
        content = (
            f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: Hello from the campaign\r\n"
            f"Message-ID: <campaign.1@{sender.rpartition('@')[2] or 'sender.test'}>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            "Hello.\r\n"
        ).encode()
    original = OriginalMessage(
        envelope_sender=sender,
        content=content,
        envid=envid,
        ret=ret,
        smtputf8=not (sender.isascii() and recipient.isascii()),
    )
    message = build_dsn(original, [report], dialect=dialect, reporting_mta=reporting_mta, now=now)
    # Every report asks for itself through NOTIFY, so a DSN is always built.
    if message is None:  # pragma: no cover - guarded by the NOTIFY chosen above
        raise ConfigError(f"no DSN for mode {mode_name!r} with action {action!r}")
    return message


def _fallback_status(code: int | None, stage: Stage) -> str:
    if code is None:
        return "4.4.1" if stage is Stage.CONNECT else "4.4.2"
    return f"{str(code)[0]}.0.0"


# -- delivery ----------------------------------------------------------------------------------


def recipients_of(message: Message) -> list[dict[str, str]]:
    """``[{"recipient", "action", "status"}, ...]`` read from any DSN's delivery-status part."""
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
                {
                    "recipient": final.partition(";")[2].strip(),
                    "action": str(block.get("Action", "")).strip().lower(),
                    "status": str(block.get("Status", "")).strip(),
                }
            )
    return found


def _dialect_of(message: Message) -> Dialect:
    """Which dialect *message* looks like, from the marks each MTA leaves."""
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
) -> Entry:
    """Send *message* from the null sender to *envelope_to* at *intake*, and journal it.

    *intake* is ``(host, port)`` for SMTP (``MAIL FROM:<>``, STARTTLS when offered, SMTPUTF8
    when the DSN needs it) or a :class:`pathlib.Path` to a Maildir (created if missing). The
    :class:`~harness.records.Dsn` entry is returned; it says ``ok`` and the reply, or the error
    when delivery failed: delivery failures never raise. *host* and *queue_id* name the fake MX
    host that bounced the message and the message's queue id.
    """
    data = dsn_bytes(message, crlf=True)
    is_maildir = isinstance(intake, pathlib.Path)
    fields: dict[str, Any] = {
        "to": envelope_to,
        "intake": str(intake) if isinstance(intake, pathlib.Path) else f"{intake[0]}:{intake[1]}",
        "transport": "maildir" if is_maildir else "smtp",
        "dialect": str(_dialect_of(message)),
        "recipients": tuple(
            DsnRecipient(recipient=r["recipient"], action=r["action"], status=r["status"])
            for r in recipients_of(message)
        ),
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

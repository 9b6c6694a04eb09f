"""Reading what arrives at the bounce intake, with the standard ``email`` package.

Four kinds of mail come back to a sender's bounce address, and :func:`read_mail` tells them
apart:

- a delivery status notification (RFC 3464 ``multipart/report``, or its RFC 6533 form with
  ``message/global-delivery-status``; OpenSMTPD wraps the same parts in ``multipart/mixed``);
- a plain-text bounce with no status part at all (qmail, Exim without DSN support, Yahoo): the
  explanation, a separator line, then the returned message;
- a complaint (RFC 5965 ARF, ``report-type=feedback-report``): the recipient marked the mail as
  spam;
- an auto-reply (RFC 3834 ``Auto-Submitted: auto-replied``, out of office): not a bounce.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

__all__ = [
    "AutoReply",
    "Complaint",
    "RecipientBlock",
    "Report",
    "explanation_for",
    "parse_report",
    "read_mail",
    "unfold",
]

_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_BLANK_LINE = re.compile(r"\r?\n[ \t]*\r?\n")
_DAEMON = re.compile(r"^(?:mailer-daemon|postmaster)@", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"failure notice|mail delivery failed|undeliver|returned mail|delivery status notification"
    r"|delivery failure|delayed mail",
    re.IGNORECASE,
)
# Where plain-text bounces put the returned message (qmail and Yahoo, legacy Exim, OpenSMTPD).
_SEPARATOR = re.compile(
    r"^(?:-+ ?Below this line is a copy of the message\.?"
    r"|-+ This is a copy of the message.*-+"
    r"|\s*Below is a copy of the original message:)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_ADDRESS_LINE = re.compile(r"^(?:<([^<>\s]+@[^<>\s]+)>:?|  ([^<>\s]+@[^<>\s]+))\s*$")
_DELAYED_TEXT = re.compile(r"has not yet been delivered|not been delivered yet", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RecipientBlock:
    """One per-recipient block of a DSN, with the address-type prefixes removed."""

    final_recipient: str | None
    original_recipient: str | None
    action: str
    status: str | None
    diagnostic: str | None


@dataclass(frozen=True, slots=True)
class Report:
    blocks: list[RecipientBlock]
    meta: str | None
    """``X-CleverTap_META`` of the returned message (or headers), when the DSN includes them."""
    text: str = ""
    """The explanation written for people: what the status fields leave out (Exim says only
    there that a server-down message expired) and all a plain-text bounce has."""


@dataclass(frozen=True, slots=True)
class Complaint:
    """An RFC 5965 feedback report: someone marked the message as unwanted."""

    recipient: str | None
    """``Original-Rcpt-To``: who complained (VERP names them too)."""
    feedback_type: str
    meta: str | None


@dataclass(frozen=True, slots=True)
class AutoReply:
    """An RFC 3834 automatic reply (out of office): the message arrived; not a bounce."""

    sender: str
    subject: str


def unfold(value: str) -> str:
    """Undo RFC 5322 folding: a line break followed by white space is not part of the value."""
    return re.sub(r"\r?\n(?=[ \t])", "", value).strip()


def _text(value: object) -> str:
    """A compat32 value as text: 8-bit bytes (kept surrogate-escaped) decoded as UTF-8."""
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _typed_value(value: str | None) -> str | None:
    """``"rfc822; a@x.test"`` -> ``"a@x.test"``, ``"smtp; 550 ..."`` -> ``"550 ..."``."""
    if value is None:
        return None
    value = " ".join(unfold(_text(value)).split())
    _type, sep, rest = value.partition(";")
    return (rest if sep else value).strip() or None


def _blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if part.get_content_type() == "message/global-delivery-status" and isinstance(payload, list):
        # The email package parses message/global-delivery-status (RFC 6533) like a message:
        # the per-message block becomes the headers, the recipient blocks the body.
        head = payload[0] if payload and isinstance(payload[0], Message) else None
        if head is None:
            return []
        body = _text(head.get_payload())
        rest = [HeaderParser().parsestr(c) for c in _BLANK_LINE.split(body) if c.strip()]
        return [head, *rest]
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    return [HeaderParser().parsestr(chunk) for chunk in _BLANK_LINE.split(text) if chunk.strip()]


def _meta_of_headers(text: str) -> str | None:
    value = HeaderParser().parsestr(text, headersonly=True).get("X-CleverTap_META")
    return unfold(str(value)) if value is not None else None


def _returned_meta(message: Message) -> str | None:
    for part in message.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                value = inner[0].get("X-CleverTap_META")
                return unfold(str(value)) if value is not None else None
        elif ctype in ("text/rfc822-headers", "message/global-headers"):
            raw = part.get_payload(decode=True)
            return _meta_of_headers(
                raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
            )
    return None


def _first_text(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return raw.decode(part.get_content_charset() or "utf-8", "replace")
    return ""


def explanation_for(text: str, address: str) -> str | None:
    """What the explanation *text* says about *address*: the lines after it, indented or not
    yet at a blank line (Exim: ``"  a@x\\n    retry timeout exceeded"``)."""
    lines = text.replace("\r\n", "\n").split("\n")
    wanted = address.lower()
    for index, line in enumerate(lines):
        if wanted not in line.lower() or not _ADDRESS_LINE.match(line):
            continue
        reason = []
        for following in lines[index + 1 :]:
            if not following.strip() or _ADDRESS_LINE.match(following):
                break
            reason.append(following.strip())
        return " ".join(reason) or None
    return None


def parse_report(raw: bytes) -> Report | None:
    """Parse *raw* as a DSN; None when it has no delivery-status part."""
    # compat32 keeps header values as sent (no RFC 2047 decoding, no refolding): we need
    # X-CleverTap_META byte for byte.
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if message.get_content_maintype() != "multipart":
        return None
    status_part = next(
        (part for part in message.walk() if part.get_content_type() in _STATUS_TYPES), None
    )
    if status_part is None:
        return None
    # The first block is per-message (Reporting-MTA, ...); the others are per-recipient.
    blocks = []
    for block in _blocks(status_part)[1:]:
        action = _typed_value(block.get("Action")) or ""
        blocks.append(
            RecipientBlock(
                final_recipient=_typed_value(block.get("Final-Recipient")),
                original_recipient=_typed_value(block.get("Original-Recipient")),
                action=action.lower(),  # empty when the block has none
                status=_typed_value(block.get("Status")),
                diagnostic=_typed_value(block.get("Diagnostic-Code")),
            )
        )
    return Report(blocks=blocks, meta=_returned_meta(message), text=_first_text(message))


def _plain_bounce(message: Message) -> Report | None:
    """A bounce without a status part: read who failed and why from its text."""
    sender = _text(message.get("From", ""))
    address = email.utils.parseaddr(sender)[1]
    subject = _text(message.get("Subject", ""))
    if not _DAEMON.match(address) and not _BOUNCE_SUBJECT.search(subject):
        return None
    text = _first_text(message)
    found = _SEPARATOR.search(text)
    explanation = text[: found.start()] if found else text
    returned = text[found.end() :].lstrip("\r\n") if found else ""
    meta = _meta_of_headers(returned.split("\n\n")[0]) if returned else None
    failed = message.get("X-Failed-Recipients")
    addresses = [a.strip() for a in _text(failed).split(",")] if failed else []
    if not addresses:
        for line in explanation.split("\n"):
            match = _ADDRESS_LINE.match(line.rstrip("\r"))
            if match:
                addresses.append(match.group(1) or match.group(2))
    action = "delayed" if _DELAYED_TEXT.search(explanation) else "failed"
    blocks = [
        RecipientBlock(a, None, action, None, explanation_for(explanation, a))
        for a in addresses or [""]
    ]
    if not addresses:
        # Nobody named: the VERP address says who; the whole explanation says why.
        blocks = [RecipientBlock(None, None, action, None, " ".join(explanation.split()))]
    return Report(blocks=blocks, meta=meta, text=explanation)


def _complaint(message: Message) -> Complaint | None:
    for part in message.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        payload = part.get_payload()
        fields = payload[0] if isinstance(payload, list) and payload else None
        if not isinstance(fields, Message):
            fields = HeaderParser().parsestr(_text(payload))
        rcpt = fields.get("Original-Rcpt-To")
        return Complaint(
            recipient=email.utils.parseaddr(_text(rcpt))[1] or None if rcpt else None,
            feedback_type=_text(fields.get("Feedback-Type", "")).strip().lower(),
            meta=_returned_meta(message),
        )
    return None


def read_mail(raw: bytes) -> Report | Complaint | AutoReply | None:
    """What arrived: a DSN or plain bounce (:class:`Report`), a complaint, an auto-reply, or
    None for anything else."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if message.get_content_type() == "multipart/report":
        kind = str(message.get_param("report-type") or "").lower()
        if kind == "feedback-report":
            return _complaint(message)
    report = parse_report(raw)
    if report is not None:
        return report
    bounce = _plain_bounce(message)
    if bounce is not None:
        return bounce
    if _text(message.get("Auto-Submitted", "no")).strip().lower().startswith("auto-replied"):
        sender = email.utils.parseaddr(_text(message.get("From", "")))[1]
        return AutoReply(sender=sender, subject=_text(message.get("Subject", "")))
    return None

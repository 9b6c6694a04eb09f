"""Reading delivery status notifications (RFC 3464) with the standard ``email`` package."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

__all__ = ["RecipientBlock", "Report", "parse_report", "unfold"]

_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_BLANK_LINE = re.compile(r"\r?\n[ \t]*\r?\n")


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


def unfold(value: str) -> str:
    """Undo RFC 5322 folding: a line break followed by white space is not part of the value."""
    return re.sub(r"\r?\n(?=[ \t])", "", value).strip()


def _typed_value(value: str | None) -> str | None:
    """``"rfc822; a@x.test"`` -> ``"a@x.test"``, ``"smtp; 550 ..."`` -> ``"550 ..."``."""
    if value is None:
        return None
    value = " ".join(unfold(str(value)).split())
    _type, sep, rest = value.partition(";")
    return (rest if sep else value).strip() or None


def _blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    # message/global-delivery-status (RFC 6533) arrives as text: split the blocks ourselves.
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    return [HeaderParser().parsestr(chunk) for chunk in _BLANK_LINE.split(text) if chunk.strip()]


def _returned_meta(message: Message) -> str | None:
    for part in message.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                value = inner[0].get("X-CleverTap_META")
                return unfold(str(value)) if value is not None else None
        elif ctype == "text/rfc822-headers":
            raw = part.get_payload(decode=True)
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
            value = HeaderParser().parsestr(text, headersonly=True).get("X-CleverTap_META")
            return unfold(str(value)) if value is not None else None
    return None


def parse_report(raw: bytes) -> Report | None:
    """Parse *raw* as a DSN; None when it is not a ``multipart/report`` with a status part."""
    # compat32 keeps header values as sent (no RFC 2047 decoding, no refolding): we need
    # X-CleverTap_META byte for byte.
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if message.get_content_type() != "multipart/report":
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
    return Report(blocks=blocks, meta=_returned_meta(message))

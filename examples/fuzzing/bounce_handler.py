"""An integration's bounce handler: classify SMTP replies and read DSNs (what a user fuzzes).

Hard bounces are the permanent address failures (RFC 3463 ``5.1.x`` "bad destination
address" and ``5.2.1`` "mailbox disabled"); every other failure, permanent ones included
(mailbox full, policy and spam rejections), is soft, as CleverTap counts them.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import Message
from email.parser import HeaderParser

_REPLY = re.compile(r"^(?P<code>[245]\d\d)[ -](?:(?P<status>[245]\.\d{1,3}\.\d{1,3})\b)?")


def classify(code: int, status: str | None) -> str | None:
    """``"hard"``, ``"soft"`` or None (delivered) for a reply code and enhanced status."""
    if code < 400:
        return None
    if status is not None and (status.startswith("5.1.") or status == "5.2.1"):
        return "hard"
    return "soft"


def classify_reply(reply: str) -> str | None:
    """Classify an SMTP reply line such as ``550 5.1.1 no such user``."""
    match = _REPLY.match(reply)
    if match is None:
        raise ValueError(f"not an SMTP reply: {reply!r}")
    return classify(int(match["code"]), match["status"])


def _blocks(part: Message) -> list[Message]:
    if part.get_content_type() == "message/delivery-status":
        payload = part.get_payload()
        return (
            [b for b in payload[1:] if isinstance(b, Message)] if isinstance(payload, list) else []
        )
    # RFC 6533 (non-ASCII addresses): the email package parses the report as one embedded
    # message, so read its raw text again as header blocks.
    inner = part.get_payload(0)
    raw = inner.get_payload(decode=True) if isinstance(inner, Message) else None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
    return [HeaderParser().parsestr(c + "\n") for c in re.split(r"\r?\n\r?\n", text) if c.strip()]


def read_dsn(data: bytes) -> list[tuple[str, str | None]]:
    """``[(recipient, class)]`` for each failed recipient of a DSN (delays are not bounces)."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    found = []
    for part in message.walk():
        if part.get_content_type() not in (
            "message/delivery-status",
            "message/global-delivery-status",
        ):
            continue
        for block in _blocks(part):
            if str(block.get("Action", "")).strip().lower() != "failed":
                continue
            recipient = str(block.get("Final-Recipient", "")).partition(";")[2].strip()
            # Exim reports a generic Status (5.0.0): the remote reply in Diagnostic-Code is
            # the one to classify when there is one.
            diagnostic = str(block.get("Diagnostic-Code", "")).partition(";")[2].strip()
            match = _REPLY.match(diagnostic)
            if match is not None and match["status"]:
                found.append((recipient, classify(int(match["code"]), match["status"])))
            else:
                status = str(block.get("Status", "")).strip()
                found.append((recipient, classify(int(status[0]) * 100, status)))
    return found

"""Soft or hard? The gateway's classification policy, as one small table.

CleverTap's docs fix only three things: mailbox full and server down are soft, permanent address
failures are hard. Everything else is policy; this one follows RFC 3463: a 5xx reply is hard
*unless* its enhanced status names a problem that is not the address's fault.

====================  ========  ===================================================
enhanced status       class     why
====================  ========  ===================================================
2.x.x                 delivered
4.x.x                 soft      transient (only after the retry schedule ran out)
5.2.2                 soft      mailbox full: RFC 3463 calls it persistent transient
5.3.4                 soft      message too large: the message's fault, not the address's
5.4.4                 hard      unable to route: the domain does not exist
5.4.x (other)         soft      network / routing trouble (5.4.7: delivery time expired)
5.5.3                 soft      too many recipients: send the rest later
5.7.x                 soft      policy: DNSBL, DMARC/SPF/DKIM, spam content, relay denied
5.x.x (other)         hard      5.1.1 user unknown, 5.1.2 no such domain, 5.2.1 disabled, ...
====================  ========  ===================================================

Without an enhanced status the reply code decides: 2xx delivered, 4xx soft, 5xx hard.
"""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = [
    "Verdict",
    "classify_dsn_failure",
    "classify_reply",
    "classify_status",
    "enhanced_status",
    "reply_code",
]


class Verdict(StrEnum):
    DELIVERED = "delivered"
    SOFT = "soft"
    HARD = "hard"
    TEMPORARY = "temporary"
    """A 4xx reply or a connection failure: retry, and soft bounce once the schedule ran out."""


_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_REPLY = re.compile(r"^\s*([245]\d\d)(?:[ -]|$)")
_EXPIRED = re.compile(
    r"retry timeout exceeded|in the queue too long|message expired|delivery time expired",
    re.IGNORECASE,
)

# (subject, detail) of 5.x.x statuses that are soft; None as detail means "any detail".
_SOFT_5XX: dict[tuple[int, int | None], str] = {
    (2, 2): "mailbox full",
    (3, 4): "message too large",
    (4, None): "network or routing problem",
    (5, 3): "too many recipients",
    (7, None): "policy (DNSBL, DMARC, spam, relay denied)",
}
_HARD_5XX: dict[tuple[int, int], str] = {
    (4, 4): "unable to route: no such domain",
}


def enhanced_status(text: str | None) -> str | None:
    """The first RFC 3463 enhanced status code in *text* (``"5.1.1"``), if any."""
    if not text:
        return None
    match = _ENHANCED.search(text)
    return ".".join(match.groups()) if match else None


def reply_code(text: str | None) -> int | None:
    """The SMTP reply code at the start of *text* (``550`` in ``"550 5.1.1 ..."``), if any."""
    match = _REPLY.match(text or "")
    return int(match.group(1)) if match else None


def classify_status(status: str) -> Verdict:
    """Classify an enhanced status ``c.s.d`` with the table above."""
    klass, subject, detail = (int(part) for part in status.split("."))
    if klass == 2:
        return Verdict.DELIVERED
    if klass == 4:
        return Verdict.SOFT
    if (subject, detail) in _HARD_5XX:
        return Verdict.HARD
    if (subject, detail) in _SOFT_5XX or (subject, None) in _SOFT_5XX:
        return Verdict.SOFT
    return Verdict.HARD


def classify_reply(code: int, text: str) -> Verdict:
    """Classify a live SMTP reply. 4xx is TEMPORARY (the caller retries), never SOFT yet."""
    if 200 <= code < 300:
        return Verdict.DELIVERED
    if 400 <= code < 500:
        return Verdict.TEMPORARY
    status = enhanced_status(text)
    # Servers are supposed to keep both codes' classes equal (Postfix forces it); when one
    # does not, the reply code wins because that is what the SMTP client acted on.
    if status is None or not status.startswith("5."):
        return Verdict.HARD
    return classify_status(status)


def classify_dsn_failure(status: str | None, diagnostic: str | None) -> Verdict:
    """Classify one ``Action: failed`` block of a delivery status notification.

    - A 4.x.x Status on a failed block is Postfix giving up after its queue lifetime: soft.
    - Exim writes a generic 5.0.0 for every failure and keeps the real code in
      Diagnostic-Code, so 5.0.0 (or no usable Status) sends us to the diagnostic instead.
    - When a server never answered, Exim writes no Diagnostic-Code at all and says "retry
      timeout exceeded" only in its text; the caller passes that text as *diagnostic*. qmail
      and Yahoo say the same in their own words ("in the queue too long", "Message expired").
    """
    code = enhanced_status(status)
    if code is None or code == "5.0.0":
        code = enhanced_status(diagnostic)
    if code is not None:
        verdict = classify_status(code)
        # The block says "failed" whatever its code claims: never count it as delivered.
        return Verdict.HARD if verdict is Verdict.DELIVERED else verdict
    reply = reply_code(diagnostic)
    if reply is not None:
        return Verdict.SOFT if reply < 500 else Verdict.HARD
    if diagnostic and _EXPIRED.search(diagnostic):
        # A temporary failure that never cleared until the queue lifetime ran out: soft, like
        # Postfix's expired 4.x.x.
        return Verdict.SOFT
    return Verdict.HARD

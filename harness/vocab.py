"""The harness's vocabulary, defined once: every module above imports these names from here.

Event names and what they report, the callback endpoints, SMTP stages, bounce classes and the
one rule for comparing addresses. Nothing here imports anything of the harness: this is the
bottom of the import graph (see ``STYLE.md``, "one home per fact").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum

__all__ = [
    "BOUNCE_EVENTS",
    "CLASS_OF_EVENT",
    "CLICK_VIAS",
    "LEGACY_BOUNCE_EVENTS",
    "LEGACY_EVENTS",
    "LEGACY_UNSUBSCRIBE_EVENTS",
    "MAX_V2_EVENTS",
    "SCAN",
    "SUBMISSION_PROBES",
    "UNSUBSCRIBE_EVENTS",
    "V2_TYPES",
    "BounceClass",
    "Endpoint",
    "MailReport",
    "Stage",
    "address_key",
    "complaint_event",
]


class Endpoint(StrEnum):
    """Which callback URL a request arrived at."""

    BOUNCE = "bounce"
    UNSUBSCRIBE = "unsubscribe"
    V2 = "v2"


LEGACY_EVENTS: tuple[str, ...] = ("softbounce", "hardbounce", "unsubscribe")
"""Event names of the legacy callback format."""
LEGACY_BOUNCE_EVENTS: frozenset[str] = frozenset({"softbounce", "hardbounce"})
"""Legacy events that belong on the bounce callback URL."""
LEGACY_UNSUBSCRIBE_EVENTS: frozenset[str] = frozenset({"unsubscribe"})
"""Legacy events that belong on the unsubscribe callback URL."""
V2_TYPES: tuple[str, ...] = ("delivered", "soft_bounce", "hard_bounce", "spam", "unsubscribed")
"""Event ``type`` names of the v2 callback format."""
MAX_V2_EVENTS = 1000
"""CleverTap rejects a v2 call with more events than this (400 "More than allowed events")."""

CLASS_OF_EVENT: Mapping[str, str] = {
    "hardbounce": "hard",
    "hard_bounce": "hard",
    "softbounce": "soft",
    "soft_bounce": "soft",
    "unsubscribe": "unsubscribe",
    "unsubscribed": "unsubscribe",
    "delivered": "delivered",
    "spam": "spam",
}
"""Every event name of both formats, mapped to what it reports: ``hard``, ``soft``,
``unsubscribe``, ``delivered`` or ``spam``."""
BOUNCE_EVENTS: frozenset[str] = frozenset(
    e for e, c in CLASS_OF_EVENT.items() if c in ("hard", "soft")
)
"""Bounce events of both formats."""
UNSUBSCRIBE_EVENTS: frozenset[str] = frozenset(
    e for e, c in CLASS_OF_EVENT.items() if c == "unsubscribe"
)
"""Unsubscribe events of both formats (``unsubscribe``, ``unsubscribed``)."""


def complaint_event(callback_format: str, complaint_as: str | None = None) -> str:
    """The event a complaint (an RFC 5965 feedback report) must be reported as in
    *callback_format* (``legacy`` or ``v2``): CleverTap unsubscribes who marks mail as spam.
    *complaint_as* is a scenario's ``clevertap.complaint_as``; by default v2 says ``spam`` and
    legacy, which has no spam event, ``unsubscribe``."""
    if callback_format == "legacy":
        return "unsubscribe"
    return "unsubscribed" if complaint_as == "unsubscribe" else "spam"


CLICK_VIAS: tuple[str, ...] = ("one_click", "get", "mailto", "scan")
"""How the runner acts as a recipient (``unsubscribe[].via``): an RFC 8058 one-click POST, the
link opened by a person (its confirm form submitted), a mail to the ``mailto:`` address, or a
link scanner's fetches (:data:`SCAN`)."""
SCAN = "scan"
"""The ``via`` of a mail security scanner that GETs the message's links without submitting
anything: it is not an unsubscribe action, and must not unsubscribe anybody."""
SUBMISSION_PROBES: tuple[str, ...] = ("wrong_password", "wrong_user", "no_auth")
"""Submissions the runner tries with bad credentials after the campaign
(``integration.submission_probes``); the integration must refuse every one."""


class Stage(StrEnum):
    """Where in the SMTP dialogue a reply was given (or a failure shows)."""

    CONNECT = "connect"
    GREETING = "greeting"
    EHLO = "ehlo"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    """The reply to the DATA command itself (before the message is sent)."""
    END_OF_DATA = "end_of_data"
    """The reply after the final dot."""
    LATER = "later"
    """Accepted now, bounced later by DSN."""
    STARTTLS = "starttls"
    """The TLS handshake after STARTTLS (or at connect, for implicit TLS)."""


class BounceClass(StrEnum):
    """How an integration should report a failure to CleverTap."""

    SOFT = "soft"
    HARD = "hard"
    NONE = "none"
    """Not a bounce: the message is (or will be) delivered."""


class MailReport(StrEnum):
    """What the mail world mails back to the sender about a message it accepted."""

    DSN = "dsn"
    """A delivery status notification (RFC 3464): failed, delayed, or a success."""
    AUTO_REPLY = "auto_reply"
    """An automatic reply (RFC 3834: out of office): the message arrived; no callback is due."""
    COMPLAINT = "complaint"
    """A feedback-loop report (RFC 5965 ARF): the recipient marked the message as spam."""


address_key: Callable[[str], str] = str.casefold
"""The one rule for "the same address" everywhere in the harness: case-insensitive, by
``str.casefold`` (``address_key("Ann@Example.COM") == "ann@example.com"``).

CleverTap's own rule for case is not public; mail systems treat domains case-insensitively and, in
practice, local parts too. ``casefold`` (not ``lower``) so that ``ß`` and ``SS``-style folds agree
with what ``expect`` has always done. The method itself, not a function calling it: the callback
hot path keys every address of every callback several times, and a function around it was one
Python call more each time.
"""

"""The failure catalog: named ways a recipient mail server fails, with real-looking replies.

Every row of ``shared/reference/smtp-failures.md`` is a :class:`FailureMode`: the SMTP stage where
it shows, the reply code, the RFC 3463 enhanced status, its default class for CleverTap (soft,
hard or none) and reply texts in several provider flavours, written in our own words after the
real ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from harness.errors import UnknownNameError

__all__ = [
    "CATALOG",
    "FLAVOURS",
    "BounceClass",
    "FailureMode",
    "Reply",
    "Stage",
    "get_mode",
]


class Stage(StrEnum):
    """Where in the SMTP dialogue a failure shows."""

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


class BounceClass(StrEnum):
    """How an integration should report the failure to CleverTap."""

    SOFT = "soft"
    HARD = "hard"
    NONE = "none"
    """Not a bounce: the message is (or will be) delivered."""


FLAVOURS = ("gmail", "outlook", "yahoo", "icloud", "postfix")


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: ``550 5.1.1 text``. ``enhanced`` is None for replies without one."""

    code: int
    enhanced: str | None
    text: str

    def __str__(self) -> str:
        if self.enhanced:
            return f"{self.code} {self.enhanced} {self.text}"
        return f"{self.code} {self.text}"


@dataclass(frozen=True, slots=True)
class FailureMode:
    """One named failure mode of the catalog."""

    name: str
    stage: Stage
    code: int | None
    """The SMTP reply code, or None where the server says nothing (refused, tarpit, drop)."""
    enhanced: str | None
    """The RFC 3463 enhanced status (also what a DSN reports for modes without a reply)."""
    bounce_class: BounceClass
    texts: Mapping[str, str] = field(default_factory=dict)
    """Reply text by provider flavour (keys from :data:`FLAVOURS`); at least ``postfix``."""
    description: str = ""

    def reply(self, flavour: str = "postfix") -> Reply | None:
        """The reply this mode gives in *flavour* (falling back to ``postfix``), or None."""
        if self.code is None:
            return None
        text = self.texts.get(flavour) or self.texts.get("postfix") or self.description
        return Reply(self.code, self.enhanced, text)


CATALOG: dict[str, FailureMode] = {}
"""Every failure mode by name. Filled in below."""


def get_mode(name: str) -> FailureMode:
    """The mode called *name*, or :class:`UnknownNameError` with a "did you mean"."""
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownNameError("failure mode", name, CATALOG) from None

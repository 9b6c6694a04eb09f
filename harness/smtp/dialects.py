"""The DSN dialects: which mail system a bounce imitates. Vocabulary only, imported by all.

Defined here, at the bottom, so the DSN builder (:mod:`harness.smtp.dsn`), the behaviour grammar
(:mod:`harness.smtp.rules`), the scenario model and the ``harness dsn`` command share one list.
What each dialect looks like is described in ``docs/dsn.md``.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AUTO_REPLY_STYLES",
    "COMPLAINT_TYPES",
    "DIALECTS",
    "EXPANDING_DIALECTS",
    "FEEDBACK_TYPES",
    "NO_DELAY_WARNINGS",
    "PLAIN_TEXT_DIALECTS",
    "SUCCESS_ACTIONS",
    "SUCCESS_DIALECTS",
    "Dialect",
]


class Dialect(StrEnum):
    """Which MTA or mailbox provider a DSN should look like."""

    GENERIC = "generic"
    """RFC 3464 as written."""
    POSTFIX = "postfix"
    """Postfix 3.7, field by field."""
    EXIM = "exim"
    """Exim 4.96 ``multipart/report``, field by field."""
    SENDMAIL = "sendmail"
    """Sendmail 8: ``Received-From-MTA``, ``X-Actual-Recipient``, a session transcript."""
    QMAIL = "qmail"
    """qmail-send: plain text, no delivery-status part."""
    EXIM_LEGACY = "exim_legacy"
    """Exim without DSN support (most Exim bounces in the wild): plain text."""
    GMAIL = "gmail"
    """Google's mail service: HTML and text alternatives, ``X-Original-Message-ID``."""
    OFFICE365 = "office365"
    """Exchange Online: HTML and text alternatives, ``X-Display-Name``, an NDR header."""
    EXCHANGE = "exchange"
    """Exchange Server on premises: alternatives, ``Original-Recipient`` first."""
    YAHOO = "yahoo"
    """Yahoo Mail: plain text, "Remote host said:"."""
    AMAZON_SES = "amazon_ses"
    """Amazon SES: RFC 3464 with SES's own field order and status comments."""
    OPENSMTPD = "opensmtpd"
    """OpenSMTPD: ``multipart/mixed`` around a delivery-status part."""


DIALECTS: tuple[str, ...] = tuple(d.value for d in Dialect)
"""Every dialect name, in the order of :class:`Dialect` (what scenarios and the CLI accept)."""

PLAIN_TEXT_DIALECTS = frozenset({Dialect.QMAIL, Dialect.EXIM_LEGACY, Dialect.YAHOO})
"""Dialects whose bounces have no ``message/delivery-status`` part: one text/plain message."""

NO_DELAY_WARNINGS: dict[Dialect, str] = {
    Dialect.QMAIL: "qmail-send never sends delay warnings",
    Dialect.YAHOO: "Yahoo Mail sends no delay warnings",
}
"""Dialects that cannot report ``Action: delayed``, and why."""

SUCCESS_DIALECTS = frozenset(
    {Dialect.GENERIC, Dialect.POSTFIX, Dialect.EXIM, Dialect.SENDMAIL, Dialect.AMAZON_SES}
)
"""The dialects of mail systems that send success DSNs (NOTIFY=SUCCESS); the others never do."""

EXPANDING_DIALECTS = frozenset({Dialect.GENERIC, Dialect.POSTFIX, Dialect.SENDMAIL})
"""The dialects that report ``Action: expanded`` (a success DSN for an alias or list that was
expanded, RFC 3464 section 2.3.3): Postfix and Sendmail do for a local alias; Exim and Amazon SES
only ever say delivered or relayed."""

FEEDBACK_TYPES = ("abuse", "fraud", "virus", "other", "not-spam")
"""RFC 5965 section 7.3 feedback types (``not-spam`` from RFC 6430)."""

COMPLAINT_TYPES = ("abuse", "fraud", "virus", "other")
"""The feedback types that are complaints (``not-spam`` says the opposite)."""

AUTO_REPLY_STYLES = ("vacation", "exchange")
"""``vacation``: a Unix vacation(1)/Sieve-style reply; ``exchange``: Outlook's "Automatic
reply" with ``X-Auto-Response-Suppress``."""

SUCCESS_ACTIONS: tuple[str, ...] = ("delivered", "relayed", "expanded")
"""The ``Action`` values of a success DSN (RFC 3464 section 2.3.3): the message got through."""

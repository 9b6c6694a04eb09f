"""The failure catalog: named ways a recipient mail server fails, with real-looking replies.

Every row of ``shared/reference/smtp-failures.md`` is a :class:`FailureMode`: the SMTP stage where
it shows, the reply code, the RFC 3463 enhanced status, its default class for CleverTap (soft,
hard or none) and reply texts in several provider flavours, written in our own words after the
real ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from harness.errors import UnknownNameError
from harness.vocab import BounceClass, Stage

__all__ = [
    "CATALOG",
    "FLAVOURS",
    "SERVER_DOWN",
    "BounceClass",
    "FailureMode",
    "Reply",
    "Stage",
    "get_mode",
]


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
    codes: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    """Per-flavour ``(code, enhanced)`` where a provider answers with other numbers (Yahoo
    throttles with ``421 4.7.0``, Gmail with ``450 4.2.1``); other flavours use the defaults."""
    server_down: bool = False
    """A whole-host failure (refused, tarpit, ...) rather than a per-recipient reply."""

    def reply(self, flavour: str = "postfix", **values: str) -> Reply | None:
        """The reply this mode gives in *flavour* (falling back to ``postfix``), or None.

        *values* fill the ``{rcpt}``, ``{peer}`` and ``{host}`` placeholders of the text;
        placeholders without a value are left as they are.
        """
        if self.code is None:
            return None
        text = self.text(flavour, **values)
        code, enhanced = self.codes.get(flavour, (self.code, self.enhanced))
        return Reply(code, enhanced, text)

    def text(self, flavour: str = "postfix", **values: str) -> str:
        """The text of this mode in *flavour* (falling back to ``postfix``), placeholders filled."""
        text = self.texts.get(flavour) or self.texts.get("postfix") or self.description
        if "{" not in text:
            return text  # most texts have no placeholder: this runs for every recipient
        for key, value in values.items():
            text = text.replace("{" + key + "}", value)
        return text


_S, _H, _N = BounceClass.SOFT, BounceClass.HARD, BounceClass.NONE


def _mode(
    name: str,
    stage: Stage,
    code: int | None,
    enhanced: str | None,
    bounce_class: BounceClass,
    description: str,
    *,
    codes: Mapping[str, tuple[int, str]] | None = None,
    server_down: bool = False,
    **texts: str,
) -> FailureMode:
    return FailureMode(
        name=name,
        stage=stage,
        code=code,
        enhanced=enhanced,
        bounce_class=bounce_class,
        texts=texts,
        description=description,
        codes=codes or {},
        server_down=server_down,
    )


# The texts paraphrase what each provider says (Google Workspace, Yahoo, Microsoft and iCloud
# docs, Postfix's smtpd_check.c and cleanup_strerror.c, Postgrey); none is a verbatim quote.
# Classes follow CleverTap: mailbox full and server down are soft, permanent address failures
# are hard, sender-side problems (blocklists, authentication, content) are soft.
_MODES = [
    _mode(
        "accept",
        Stage.RCPT,
        250,
        "2.1.5",
        _N,
        "the recipient is accepted and the message delivered",
        postfix="Ok",
        gmail="OK, recipient accepted",
        outlook="Recipient OK",
        yahoo="recipient ok",
        icloud="recipient accepted",
    ),
    _mode(
        "mailbox_full",
        Stage.RCPT,
        452,
        "4.2.2",
        _S,
        "the mailbox is over quota for now; retry later",
        postfix="<{rcpt}>: Recipient address rejected: Mailbox full",
        gmail="The inbox of the recipient has run out of storage space. Please direct the "
        "recipient to its storage settings.",
        outlook="Mailbox is full: the recipient's mailbox has exceeded its storage limit",
        yahoo="Recipient mailbox is over its storage quota, try again later",
        icloud="The user's mailbox is over quota",
    ),
    _mode(
        "mailbox_full_permanent",
        Stage.RCPT,
        552,
        "5.2.2",
        _S,
        "the mailbox is full and the account looks abandoned (x.2.2 stays transient per RFC 3463)",
        postfix="<{rcpt}>: Recipient address rejected: Mailbox full, quota exceeded",
        gmail="The inbox of the recipient has run out of storage space and the account is "
        "inactive.",
        outlook="Mailbox full: the recipient's mailbox cannot take more messages",
        yahoo="Mailbox is over quota and cannot accept messages",
        icloud="The user is over their storage quota",
    ),
    _mode(
        "invalid_address",
        Stage.RCPT,
        550,
        "5.1.1",
        _H,
        "no such user at this domain",
        postfix="<{rcpt}>: Recipient address rejected: User unknown in local recipient table",
        gmail="The email account you are writing to does not exist. Please check the address "
        "for typos or extra spaces.",
        outlook="Requested action not taken: mailbox unavailable (recipient not found)",
        yahoo="delivery error: dd This user has no account here",
        icloud="<{rcpt}>: user does not exist",
        codes={"yahoo": (554, "5.1.1")},
    ),
    _mode(
        "mailbox_disabled",
        Stage.RCPT,
        550,
        "5.2.1",
        _H,
        "the account exists but is disabled or suspended (hard by CleverTap's rule)",
        postfix="<{rcpt}>: Recipient address rejected: Account disabled",
        gmail="The email account you are writing to is inactive.",
        outlook="Recipient mailbox is disabled and cannot receive mail",
        yahoo="This mailbox has been disabled (554.30)",
        icloud="<{rcpt}>: this account is disabled",
        codes={"yahoo": (554, "5.2.1")},
    ),
    _mode(
        "no_such_domain",
        Stage.RCPT,
        553,
        "5.1.2",
        _H,
        "the recipient's domain does not exist (as a relay reports it)",
        postfix="<{rcpt}>: Recipient address rejected: Domain name not found",
        gmail="We could not find the domain of the recipient. Check the address for typos.",
        outlook="The recipient's domain could not be found in DNS",
        yahoo="Recipient domain does not exist",
        icloud="Domain of the recipient address not found",
    ),
    _mode(
        "null_mx",
        Stage.RCPT,
        556,
        "5.1.10",
        _H,
        "the recipient's domain publishes a null MX (RFC 7505): it takes no mail",
        postfix="<{rcpt}>: Recipient address rejected: Domain does not accept mail (null MX)",
        gmail="The domain of the recipient says it accepts no email (null MX).",
        outlook="Recipient domain has a null MX record and accepts no mail",
        yahoo="Recipient domain accepts no mail (null MX)",
        icloud="Domain accepts no mail (null MX)",
    ),
    _mode(
        "greylist",
        Stage.RCPT,
        450,
        "4.2.0",
        _S,
        "greylisted: a first attempt from an unknown triplet is deferred; retry in a few minutes",
        postfix="<{rcpt}>: Recipient address rejected: Greylisted for 300 seconds, retry later",
        gmail="Greylisted: please try again in a few minutes",
        outlook="Temporarily deferred by greylisting, try again later",
        yahoo="Greylisted, come back later",
        icloud="Greylisted, try again shortly",
        codes={"outlook": (451, "4.7.1"), "icloud": (451, "4.7.1")},
    ),
    _mode(
        "throttle",
        Stage.RCPT,
        450,
        "4.2.1",
        _S,
        "the sender is sending too fast: deferred (421 closes the connection)",
        postfix="<{rcpt}>: Recipient address rejected: Too many messages, slow down",
        gmail="The recipient is getting mail too quickly; please retry later.",
        outlook="Server busy, please try again later",
        yahoo="[TSS04] Messages from this sender are deferred for now due to user complaints "
        "or volume",
        icloud="Too many messages from this sender; rate limited",
        codes={"yahoo": (421, "4.7.0"), "outlook": (451, "4.7.500"), "icloud": (450, "4.7.28")},
    ),
    _mode(
        "too_large",
        Stage.END_OF_DATA,
        552,
        "5.3.4",
        _S,
        "the message is larger than the server takes (also at MAIL with SIZE=)",
        postfix="Message size exceeds fixed limit",
        gmail="Your message is bigger than the size limit this server allows.",
        outlook="Message size exceeds the maximum the recipient's server accepts",
        yahoo="Message too large",
        icloud="Message is larger than the allowed maximum size",
    ),
    _mode(
        "dnsbl_blocked",
        Stage.RCPT,
        554,
        "5.7.1",
        _S,
        "the sending host is on a DNS blocklist: a sender-side problem, not the address",
        postfix="Service unavailable; Client host [{peer}] blocked using zen.spamhaus.org",
        gmail="The IP you are sending from has poor reputation; this message was blocked.",
        outlook="Access denied, the sending IP is on a block list",
        yahoo="[BL21] Connections refused: the sending IP is listed by Spamhaus",
        icloud="Sending host is on a block list",
        codes={"yahoo": (553, "5.7.1"), "outlook": (550, "5.7.1")},
    ),
    _mode(
        "dmarc_fail",
        Stage.END_OF_DATA,
        550,
        "5.7.26",
        _S,
        "the message failed DMARC (or SPF/DKIM) authentication checks",
        postfix="Message rejected: sender domain DMARC policy is reject",
        gmail="This message is unauthenticated and the sending domain's DMARC policy says to "
        "refuse it.",
        outlook="Access denied, the sending domain does not meet the required authentication level",
        yahoo="Message not accepted: it fails the sending domain's DMARC policy",
        icloud="Message rejected: DMARC authentication failed",
        codes={"outlook": (550, "5.7.515")},
    ),
    _mode(
        "relay_denied",
        Stage.RCPT,
        554,
        "5.7.1",
        _S,
        "the server will not relay for this sender (a configuration problem)",
        postfix="<{rcpt}>: Relay access denied",
        gmail="This server does not relay mail for you; authenticate first.",
        outlook="Unable to relay: this sender is not allowed to relay",
        yahoo="Relaying is not permitted",
        icloud="Relaying denied",
        codes={"outlook": (550, "5.7.1")},
    ),
    _mode(
        "spam_content",
        Stage.END_OF_DATA,
        550,
        "5.7.1",
        _S,
        "the content looks like unsolicited mail and was refused",
        postfix="Message content rejected: looks like spam",
        gmail="This message looks likely to be unsolicited mail and was refused.",
        outlook="Message rejected as spam by content filtering",
        yahoo="Message not accepted for policy reasons: content looks like spam",
        icloud="Message rejected due to content restrictions",
        codes={"yahoo": (554, "5.7.9")},
    ),
    _mode(
        "too_many_recipients",
        Stage.RCPT,
        452,
        "4.5.3",
        _S,
        "too many recipients in one transaction: send the rest in another",
        postfix="Error: too many recipients",
        gmail="Your message has more recipients than allowed; send the rest separately.",
        outlook="Too many recipients in this message",
        yahoo="Too many recipients",
        icloud="Recipient limit reached for this message",
    ),
    _mode(
        "queue_expiry",
        Stage.LATER,
        None,
        "4.4.7",
        _S,
        "accepted upstream then given up after retries (only ever seen in a DSN)",
        postfix="delivery temporarily suspended; message expired in queue",
        gmail="Message delivery expired after repeated temporary failures",
        outlook="Message expired: the destination kept deferring it",
        yahoo="Message expired after retries",
        icloud="Message expired in queue",
    ),
    # -- server-down variants: the whole host, not one recipient ------------------------------
    _mode(
        "refused",
        Stage.CONNECT,
        None,
        "4.4.1",
        _S,
        "nothing listens on the port: connect gets ECONNREFUSED",
        server_down=True,
        postfix="connect to {host}: Connection refused",
    ),
    _mode(
        "greeting_421",
        Stage.GREETING,
        421,
        "4.3.2",
        _S,
        "the server greets with 421 and closes the connection",
        server_down=True,
        postfix="{host} Service not available, closing transmission channel",
        gmail="Service temporarily unavailable, please try again later",
        outlook="Service not available, closing transmission channel",
        yahoo="Service temporarily unavailable, try again later",
        icloud="Service unavailable, try again later",
    ),
    _mode(
        "tarpit",
        Stage.GREETING,
        None,
        "4.4.2",
        _S,
        "accepts the TCP connection and never says anything",
        server_down=True,
        postfix="conversation with {host} timed out while receiving the initial server greeting",
    ),
    _mode(
        "drop_mid_data",
        Stage.DATA,
        None,
        "4.4.2",
        _S,
        "closes the connection while the message is being sent, before the final dot",
        server_down=True,
        # What Postfix reports (measured by tests/realmta): a message that fits in the socket
        # buffers is written whole before the drop is noticed, at the reply to the final dot.
        postfix="lost connection with {host} while sending end of data -- message may be "
        "sent more than once",
    ),
    _mode(
        "drop_after_dot",
        Stage.END_OF_DATA,
        None,
        "4.4.2",
        _S,
        "closes the connection after the final dot without replying (risks a duplicate)",
        server_down=True,
        postfix="lost connection with {host} while sending end of data -- message may be "
        "sent more than once",
    ),
    _mode(
        "slow",
        Stage.GREETING,
        None,
        "4.4.2",
        _N,
        "answers every command, but only after a delay (times out impatient clients)",
        server_down=True,
        postfix="conversation with {host} timed out",
    ),
    _mode(
        "tls_broken",
        Stage.STARTTLS,
        None,
        "4.7.5",
        _S,
        "advertises STARTTLS, then the TLS handshake fails; a plaintext retry is refused at RCPT "
        "(530 5.7.0, soft)",
        server_down=True,
        postfix="Cannot start TLS: handshake failure with {host}",
    ),
]

CATALOG: dict[str, FailureMode] = {m.name: m for m in _MODES}

SLOW_DELAY = 1.0
"""Seconds the ``slow`` variant waits before every reply, its greeting included, unless told
otherwise (``slow_delay``): a per-reply timeout must be longer (the contract asks for 2 s)."""

SERVER_DOWN: tuple[str, ...] = tuple(m.name for m in _MODES if m.server_down)
"""The server-down variants (host-level failure modes): ``refused``, ``greeting_421``, ``tarpit``,
``drop_mid_data``, ``drop_after_dot``, ``slow``, ``tls_broken``."""
"""Every failure mode by name, in the order of ``shared/reference/smtp-failures.md``.

Texts may hold ``{rcpt}``, ``{peer}`` and ``{host}`` placeholders, which the servers fill
through :meth:`FailureMode.reply`.
"""


def get_mode(name: str) -> FailureMode:
    """The mode called *name*, or :class:`UnknownNameError` with a "did you mean"."""
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownNameError("failure mode", name, CATALOG) from None

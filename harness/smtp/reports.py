"""Mail about a message that is not a bounce: RFC 3834 auto-replies and RFC 5965 complaints.

A bounce processor meets both at its bounce address and must tell them from DSNs:

- an **auto-reply** (out of office, vacation notice: RFC 3834 ``Auto-Submitted: auto-replied``)
  says the message arrived; it is no bounce and no callback is due;
- a **complaint** (an ARF feedback report, RFC 5965 ``multipart/report;
  report-type=feedback-report``) says the recipient marked the message as spam; CleverTap
  unsubscribes such users (v2 ``spam``, legacy ``unsubscribe``).

:func:`build_auto_reply` and :func:`build_complaint` build them the way the providers in the
Sisimai corpus do, in our own words; :func:`harness.smtp.dsn.deliver_dsn` delivers them like
DSNs (from the null sender, as RFC 3834 section 3.1.7 asks of auto-replies).
"""

from __future__ import annotations

import email.policy
from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesParser, HeaderParser

from harness.errors import ConfigError
from harness.records import SmtpMessage
from harness.smtp.dialects import AUTO_REPLY_STYLES, FEEDBACK_TYPES
from harness.smtp.dsn import OriginalMessage, _as_datetime, _date, _fingerprint, _headers_of, _raw
from harness.vocab import MailReport

__all__ = [
    "AUTO_REPLY_STYLES",
    "FEEDBACK_TYPES",
    "build_auto_reply",
    "build_complaint",
    "build_mail_report",
]


def _original_header(original: OriginalMessage, name: str) -> str | None:
    head = _raw(_headers_of(original.content))
    value = HeaderParser(policy=email.policy.compat32).parsestr(head).get(name)
    return " ".join(str(value).split()) if value is not None else None


def build_auto_reply(
    original: OriginalMessage,
    recipient: str,
    *,
    style: str = "vacation",
    until: str = "Monday",
    now: float | datetime | None = None,
) -> EmailMessage:
    """The out-of-office reply *recipient* sends to the sender of *original* (RFC 3834).

    ``Auto-Submitted: auto-replied``, ``In-Reply-To``/``References`` naming the original, a
    subject built from the original's, and a short plain text body saying the person is away
    until *until*. It goes to the envelope sender (``To:``) and, as RFC 3834 asks, should be
    sent from the null sender. With the same inputs and *now* the output is byte-identical.
    """
    if style not in AUTO_REPLY_STYLES:
        raise ConfigError(
            f"auto-reply style must be one of {', '.join(AUTO_REPLY_STYLES)}, not {style!r}"
        )
    when = _as_datetime(now)
    fingerprint = _fingerprint("auto-reply", style, recipient, when, original)
    domain = recipient.rpartition("@")[2] or "example.com"
    subject = _original_header(original, "Subject") or ""
    msgid = _original_header(original, "Message-ID")
    utf8 = not (recipient.isascii() and original.envelope_sender.isascii())
    policy = email.policy.default.clone(utf8=utf8)
    message = EmailMessage(policy=policy)
    message["From"] = recipient
    message["To"] = original.envelope_sender
    message["Subject"] = (
        f"Automatic reply: {subject}" if style == "exchange" else f"Away until {until}"
    )
    message["Date"] = _date(when)
    message["Message-ID"] = f"<{fingerprint[:24]}@{domain}>"
    if msgid:
        message["In-Reply-To"] = msgid
        message["References"] = msgid
    message["Auto-Submitted"] = "auto-replied"
    if style == "exchange":
        # Outlook's way of asking other responders not to answer this one.
        message["X-Auto-Response-Suppress"] = "All"
    else:
        message["Precedence"] = "bulk"
    message.set_content(
        f"Hello,\n\nI am away from my desk until {until} and will read your message "
        "when I am back.\nThis is an automatic reply; there is no need to answer it.\n",
        charset="utf-8" if utf8 else "us-ascii",
    )
    return message


def build_complaint(
    original: OriginalMessage,
    recipient: str,
    *,
    feedback_type: str = "abuse",
    reporter: str = "fbl.harness.test",
    to: str | None = None,
    headers_only: bool = False,
    source_ip: str = "127.0.0.1",
    now: float | datetime | None = None,
) -> EmailMessage:
    """The feedback-loop report a mailbox provider sends when *recipient* marks *original* as spam.

    RFC 5965: ``multipart/report; report-type=feedback-report`` with a text part, a
    ``message/feedback-report`` part (``Feedback-Type``, ``User-Agent``, ``Version``,
    ``Original-Mail-From``, ``Original-Rcpt-To``, ``Arrival-Date``, ``Source-IP``,
    ``Reported-Domain``) and the original message (or its headers with *headers_only*). It goes
    to *to*, by default the original's envelope sender (the VERP address a bounce processor
    reads the recipient from), from ``feedback@``\\ *reporter*.
    """
    if feedback_type not in FEEDBACK_TYPES:
        raise ConfigError(
            f"feedback_type must be one of {', '.join(FEEDBACK_TYPES)}, not {feedback_type!r}"
        )
    when = _as_datetime(now)
    arrival = _as_datetime(original.arrival) if original.arrival is not None else when
    fingerprint = _fingerprint("complaint", feedback_type, recipient, reporter, when, original)
    subject = _original_header(original, "Subject") or ""
    sender_domain = original.envelope_sender.rpartition("@")[2]
    utf8 = not (recipient.isascii() and original.envelope_sender.isascii())
    policy = email.policy.default.clone(utf8=utf8, refold_source="none")

    message = EmailMessage(policy=policy)
    message["From"] = f"Feedback Loop <feedback@{reporter}>"
    message["To"] = to or original.envelope_sender
    message["Subject"] = f"Complaint about a message to {recipient}: {subject}".rstrip(": ")
    message["Date"] = _date(when)
    message["Message-ID"] = f"<{fingerprint[:24]}@{reporter}>"
    message["MIME-Version"] = "1.0"
    # Written as the providers write it: report-type unquoted.
    message.set_raw(
        "Content-Type",
        f'multipart/report; report-type=feedback-report;\n\tboundary="fbl-{fingerprint[24:40]}"',
    )

    text = EmailMessage(policy=policy)
    text.set_content(
        f"This is a feedback report from {reporter}.\n"
        f"A user of ours marked the message below as unwanted ({feedback_type}).\n"
        f"It was received from {source_ip} on {_date(arrival)}.\n"
        "Please stop sending mail to this address.\n",
        charset="us-ascii",
    )
    del text["MIME-Version"]

    report = EmailMessage(policy=policy)
    report["Content-Type"] = "message/feedback-report"
    fields = [
        ("Feedback-Type", feedback_type),
        ("User-Agent", "harness-fbl/1.0"),
        ("Version", "1"),
        ("Original-Mail-From", f"<{original.envelope_sender}>"),
        ("Original-Rcpt-To", f"<{recipient}>"),
        ("Arrival-Date", _date(arrival)),
        ("Source-IP", source_ip),
        ("Reported-Domain", sender_domain),
    ]
    block = "\n".join(f"{k}: {v}" for k, v in fields) + "\n"
    report.set_payload([BytesParser(policy=policy).parsebytes(block.encode("utf-8") + b"\n")])

    returned = EmailMessage(policy=policy)
    if headers_only:
        returned["Content-Type"] = "text/rfc822-headers"
        returned.set_payload(_raw(_headers_of(original.content)))
    else:
        returned["Content-Type"] = "message/rfc822"
        returned.set_payload([BytesParser(policy=policy).parsebytes(original.content)])
    if not original.content.isascii():
        returned["Content-Transfer-Encoding"] = "8bit"
    message.set_payload([text, report, returned])
    return message


def build_mail_report(
    report: MailReport,
    message: SmtpMessage,
    content: bytes,
    recipient: str,
    *,
    style: str | None = None,
    now: float | datetime | None = None,
) -> EmailMessage:
    """The auto-reply or complaint a fake MX host sends about *message* (accepted with
    *content*) for *recipient*: what the ``auto_reply`` and ``complaint`` behaviours mail back
    (:mod:`harness.smtp.rules`). *style* is the reply's style or the complaint's feedback type.
    """
    original = OriginalMessage(
        envelope_sender=message.sender,
        content=content,
        envid=message.envid,
        ret=message.ret,
        smtputf8=message.smtputf8,
    )
    if report is MailReport.AUTO_REPLY:
        return build_auto_reply(original, recipient, style=style or AUTO_REPLY_STYLES[0], now=now)
    if report is MailReport.COMPLAINT:
        return build_complaint(original, recipient, feedback_type=style or "abuse", now=now)
    raise ConfigError(f"build_mail_report builds auto-replies and complaints, not {report!r}")

"""The dialects beyond RFC 3464 as written: each one's structure and marks, and what it refuses.

Field-by-field fidelity of ``postfix`` and ``exim`` is in test_dsn_fidelity.py; what independent
parsers make of every dialect is in test_dsn_oracles.py.
"""

from __future__ import annotations

import email
import email.policy
from email.message import Message

import pytest

from harness.errors import ConfigError
from harness.smtp.dialects import (
    DIALECTS,
    NO_DELAY_WARNINGS,
    PLAIN_TEXT_DIALECTS,
    SUCCESS_DIALECTS,
    Dialect,
)
from harness.smtp.dsn import (
    OriginalMessage,
    RecipientReport,
    build_dsn,
    dsn_bytes,
    dsn_for_mode,
    recipients_of,
)
from harness.smtp.reports import build_auto_reply, build_complaint

NOW = 1_700_000_000
RCPT = "a@example.com"
VERP = "bounces+a=example.com@sut.test"
META = "X-CleverTap_META: campaign=42;user=7"

# The MIME tree of a failure report (content types, depth first), after real samples.
TREES = {
    Dialect.SENDMAIL: [
        "multipart/report",
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ],
    Dialect.GMAIL: [
        "multipart/report",
        "multipart/related",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "image/png",
        "message/delivery-status",
        "message/rfc822",
    ],
    Dialect.OFFICE365: [
        "multipart/report",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "message/delivery-status",
        "message/rfc822",
    ],
    Dialect.AMAZON_SES: [
        "multipart/report",
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ],
    Dialect.OPENSMTPD: [
        "multipart/mixed",
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ],
}
TREES[Dialect.EXCHANGE] = TREES[Dialect.OFFICE365]
MARKS: dict[Dialect, list[str]] = {
    Dialect.SENDMAIL: ["Received-From-MTA: DNS; localhost", "X-Actual-Recipient: RFC822; a@"],
    Dialect.GMAIL: [
        "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
        "X-Original-Message-ID:",
    ],
    Dialect.OFFICE365: [
        "X-MS-Exchange-Message-Is-Ndr:",
        "X-Display-Name: a@example.com",
        "Subject: Undeliverable: Hi",
    ],
    Dialect.EXCHANGE: [
        "Original-Recipient: rfc822;a@example.com",
        "Received-From-MTA:",
        "#550 5.1.1",
    ],
    Dialect.AMAZON_SES: ["From: MAILER-DAEMON@amazonses.com", "X-SES-Outgoing:"],
    Dialect.OPENSMTPD: [
        "Subject: Delivery status notification: error",
        "This is the MAILER-DAEMON",
    ],
    Dialect.QMAIL: [
        "Subject: failure notice",
        "Hi. This is the qmail-send program at",
        "does not like recipient.",
    ],
    Dialect.EXIM_LEGACY: [
        "X-Failed-Recipients: a@example.com",
        "------ This is a copy of the message, including all the headers. ------",
    ],
    Dialect.YAHOO: ["From: MAILER-DAEMON@yahoo.com", "Remote host said: 550 5.1.1", "[RCPT_TO]"],
}


def content() -> bytes:
    return (
        f"From: <news@brand.test>\r\nTo: <{RCPT}>\r\nSubject: Hi\r\n{META}\r\n"
        "Message-ID: <m1@brand.test>\r\n\r\nHello.\r\n"
    ).encode()


def built(dialect: str, action: str = "failed", **kwargs: object) -> bytes:
    original = OriginalMessage(envelope_sender=VERP, content=content())
    report = RecipientReport(
        recipient=RCPT,
        action=action,
        status="5.1.1" if action == "failed" else "4.2.2",
        diagnostic="550 5.1.1 no such user" if action == "failed" else "452 4.2.2 full",
        remote_mta="mx.example.com",
        in_reply_to="RCPT TO",
        **kwargs,  # type: ignore[arg-type]
    )
    message = build_dsn(original, [report], dialect=dialect, now=NOW)
    assert message is not None
    return dsn_bytes(message)


def tree(message: Message) -> list[str]:
    out = [message.get_content_type()]
    if message.get_content_maintype() == "multipart":
        for part in message.get_payload():
            out += tree(part)
    return out


@pytest.mark.parametrize("dialect", sorted(TREES))
def test_mime_tree_after_the_real_samples(dialect: Dialect) -> None:
    parsed = email.message_from_bytes(built(dialect), policy=email.policy.default)
    assert tree(parsed) == TREES[dialect]
    assert [r["recipient"] for r in recipients_of(parsed)] == [RCPT]


@pytest.mark.parametrize("dialect", sorted(PLAIN_TEXT_DIALECTS))
def test_plain_text_dialects_have_no_status_part_and_return_the_message(dialect: Dialect) -> None:
    data = built(dialect)
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert tree(parsed) == ["text/plain"]
    assert recipients_of(parsed) == []  # nothing to read back but the text
    assert f"<{RCPT}>".encode() in data or f"  {RCPT}\r\n".encode() in data
    # The returned message follows the separator, X-CleverTap_META and body included.
    assert META.encode() + b"\r\n" in data
    assert data.endswith(b"\r\nHello.\r\n")


@pytest.mark.parametrize("dialect", sorted(MARKS))
def test_each_dialect_leaves_its_marks(dialect: Dialect) -> None:
    text = built(dialect).decode("utf-8", "replace").replace("\r\n", "\n")
    for mark in MARKS[dialect]:
        assert mark in text, f"{dialect}: {mark!r} missing"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_returned_message_keeps_the_meta_header(dialect: str) -> None:
    assert META.encode() + b"\r\n" in built(dialect)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_same_inputs_same_bytes(dialect: str) -> None:
    assert built(dialect) == built(dialect)


@pytest.mark.parametrize("dialect", sorted(NO_DELAY_WARNINGS))
def test_no_delay_warnings_where_the_mail_system_sends_none(dialect: Dialect) -> None:
    with pytest.raises(ConfigError, match=f"the {dialect} dialect cannot report .* as delayed"):
        built(dialect, "delayed")


@pytest.mark.parametrize("dialect", sorted(set(Dialect) - SUCCESS_DIALECTS))
def test_no_success_reports_where_the_mail_system_sends_none(dialect: Dialect) -> None:
    with pytest.raises(ConfigError, match="sends no success notifications"):
        dsn_for_mode("accept", RCPT, dialect=dialect, action="relayed", now=NOW)


@pytest.mark.parametrize("dialect", sorted(set(Dialect) - set(NO_DELAY_WARNINGS)))
def test_delay_warnings_return_the_headers_only(dialect: Dialect) -> None:
    data = built(dialect, "delayed")
    assert META.encode() in data
    assert not data.endswith(b"Hello.\r\n")


def test_provider_dialects_quote_their_own_reply_texts() -> None:
    gmail = dsn_bytes(dsn_for_mode("mailbox_full", RCPT, dialect="gmail", now=NOW))
    postfix = dsn_bytes(dsn_for_mode("mailbox_full", RCPT, dialect="postfix", now=NOW))
    assert b"run out of storage space" in gmail
    assert b"run out of storage space" not in postfix


def test_one_dsn_for_several_recipients_from_dsn_for_mode() -> None:
    message = dsn_for_mode("spam_content", ["a@x.test", "b@x.test"], dialect="postfix", now=NOW)
    parsed = email.message_from_bytes(dsn_bytes(message), policy=email.policy.default)
    assert [r["recipient"] for r in recipients_of(parsed)] == ["a@x.test", "b@x.test"]


def test_dsn_for_mode_needs_a_recipient() -> None:
    with pytest.raises(ConfigError, match="at least one recipient"):
        dsn_for_mode("invalid_address", [], now=NOW)


# -- auto-replies and complaints --------------------------------------------------------------


def original() -> OriginalMessage:
    return OriginalMessage(envelope_sender=VERP, content=content())


@pytest.mark.parametrize("style", ["vacation", "exchange"])
def test_auto_reply_is_rfc3834(style: str) -> None:
    reply = email.message_from_bytes(
        dsn_bytes(build_auto_reply(original(), RCPT, style=style, now=NOW)),
        policy=email.policy.default,
    )
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["In-Reply-To"] == "<m1@brand.test>"
    assert reply["From"] == RCPT
    assert reply["To"] == VERP
    assert reply.get_content_type() == "text/plain"
    assert ("X-Auto-Response-Suppress" in reply) is (style == "exchange")


def test_auto_reply_style_is_checked() -> None:
    with pytest.raises(ConfigError, match="auto-reply style must be one of vacation, exchange"):
        build_auto_reply(original(), RCPT, style="holiday")


@pytest.mark.parametrize("headers_only", [False, True])
def test_complaint_is_an_rfc5965_feedback_report(headers_only: bool) -> None:
    data = dsn_bytes(build_complaint(original(), RCPT, headers_only=headers_only, now=NOW))
    report = email.message_from_bytes(data, policy=email.policy.compat32)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "feedback-report"
    assert b"report-type=feedback-report;" in data  # unquoted, as providers write it
    parts = report.get_payload()
    assert isinstance(parts, list)
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/feedback-report",
        "text/rfc822-headers" if headers_only else "message/rfc822",
    ]
    (fields,) = parts[1].get_payload()
    assert fields["Feedback-Type"] == "abuse"
    assert fields["Version"] == "1"
    assert fields["User-Agent"]
    assert fields["Original-Rcpt-To"] == f"<{RCPT}>"
    assert fields["Original-Mail-From"] == f"<{VERP}>"
    assert report["To"] == VERP
    assert META.encode() in data


def test_complaint_feedback_type_is_checked() -> None:
    with pytest.raises(ConfigError, match="feedback_type must be one of abuse"):
        build_complaint(original(), RCPT, feedback_type="spam")


def test_postfix_quotes_a_utf8_sender_byte_by_byte_as_postfix_37_does() -> None:
    # real-dsns/postfix-12: X-Postfix-Sender and the returned Return-Path carry the local part
    # quoted with a backslash before each 8-bit byte: the report is not valid UTF-8.
    message = dsn_for_mode("invalid_address", RCPT, dialect="postfix", sender="jürgen@sender.test")
    data = dsn_bytes(message)
    assert b'X-Postfix-Sender: rfc822; "j\\\xc3\\\xbcrgen"@sender.test\r\n' in data
    assert b'Return-Path: <"j\\\xc3\\\xbcrgen"@sender.test>\r\n' in data
    assert "To: jürgen@sender.test\r\n".encode() in data  # the DSN still goes to the sender
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert recipients_of(parsed) == [{"recipient": RCPT, "action": "failed", "status": "5.1.1"}]

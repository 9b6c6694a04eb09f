"""build_dsn and dsn_for_mode: structure, dialects, RFC 3461 parameters, an independent parser."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage, Message

import pytest
from flufl.bounce import all_failures, scan_message

from harness.errors import ConfigError, UnknownNameError
from harness.smtp.catalog import CATALOG, Stage
from harness.smtp.dsn import (
    Dialect,
    OriginalMessage,
    RecipientReport,
    build_dsn,
    dsn_bytes,
    dsn_for_mode,
    recipients_of,
)

NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 +0000
RCPT = "a@example.com"
VERP = "bounces+a=example.com@sender.test"
CONTENT = b"From: <news@sender.test>\r\nTo: <a@example.com>\r\nSubject: Hi\r\n\r\nHello.\r\n"
FILL = {"rcpt": RCPT, "host": "mx.example.com[127.0.0.1]", "peer": "127.0.0.1"}
CONNECT_FILL = {**FILL, "host": "mx.example.com[127.0.0.1]:25"}
MODES = [name for name in CATALOG if name != "accept"]
RFC3464 = [Dialect.GENERIC, Dialect.POSTFIX, Dialect.EXIM]
"""The dialects this file checks field by field (the others: test_dsn_dialects.py)."""

# The per-recipient field names, in order, each dialect writes for a failure answered by the
# remote server (the majority shape of real Postfix and Exim DSNs, see test_dsn_corpus.py).
FIELDS = {
    Dialect.GENERIC: [
        "Final-Recipient",
        "Action",
        "Status",
        "Remote-MTA",
        "Diagnostic-Code",
        "Last-Attempt-Date",
    ],
    Dialect.POSTFIX: [
        "Final-Recipient",
        "Original-Recipient",
        "Action",
        "Status",
        "Remote-MTA",
        "Diagnostic-Code",
    ],
    Dialect.EXIM: ["Action", "Final-Recipient", "Status", "Remote-MTA", "Diagnostic-Code"],
}


def wire(message: EmailMessage) -> Message:
    """Serialize and parse back, as a bounce processor receives it."""
    return email.message_from_bytes(dsn_bytes(message), policy=email.policy.default)


def text_of(message: Message, index: int = 0) -> str:
    """A text part's content with LF line ends (the wire form has CRLF)."""
    part = message.get_payload(index)
    assert isinstance(part, EmailMessage)
    return str(part.get_content()).replace("\r\n", "\n")


def status_blocks(message: Message) -> list[Message]:
    parts = message.get_payload()
    assert isinstance(parts, list)
    payload = parts[1].get_payload()
    assert isinstance(payload, list)
    return payload


def original(**kwargs: object) -> OriginalMessage:
    values: dict[str, object] = {
        "envelope_sender": VERP,
        "content": CONTENT,
    }
    values.update(kwargs)
    return OriginalMessage(**values)  # type: ignore[arg-type]


def report(**kwargs: object) -> RecipientReport:
    values: dict[str, object] = {
        "recipient": RCPT,
        "action": "failed",
        "status": "5.1.1",
        "diagnostic": "550 5.1.1 no such user",
        "remote_mta": "mx.example.com",
    }
    values.update(kwargs)
    return RecipientReport(**values)  # type: ignore[arg-type]


def expected_status(dialect: Dialect, action: str, enhanced: str) -> str:
    if dialect is Dialect.EXIM:
        return "5.0.0" if action == "failed" else "4.0.0"
    return enhanced if action == "failed" else "4" + enhanced[1:]


@pytest.mark.parametrize("action", ["failed", "delayed"])
@pytest.mark.parametrize("dialect", RFC3464)
@pytest.mark.parametrize("mode_name", MODES)
def test_every_catalog_mode_gives_a_well_formed_dsn(
    mode_name: str, dialect: Dialect, action: str
) -> None:
    mode = CATALOG[mode_name]
    dsn = wire(dsn_for_mode(mode_name, RCPT, dialect=dialect, action=action, sender=VERP, now=NOW))

    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["To"] == VERP
    # Delay warnings return the headers only, as real Postfix and Exim do.
    assert [p.get_content_type() for p in dsn.iter_parts()] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822" if action == "failed" else "text/rfc822-headers",
    ]
    per_message, block = status_blocks(dsn)
    assert per_message["Reporting-MTA"] == "dns; mx.harness.test"

    reply = mode.reply("postfix", **FILL)
    enhanced = reply.enhanced if reply is not None and reply.enhanced else mode.enhanced
    assert enhanced is not None
    assert block["Action"] == action
    assert block["Status"] == expected_status(dialect, action, enhanced)
    final = "rfc822;" + RCPT if dialect is Dialect.EXIM else "rfc822; " + RCPT
    assert block["Final-Recipient"] == final

    names = list(block.keys())
    if reply is not None:
        # The real reply code and text survive only in Diagnostic-Code (all that Exim keeps).
        diagnostic = " ".join(str(block["Diagnostic-Code"]).split())
        if dialect is Dialect.EXIM and reply.code < 500 and action == "failed":
            # Exim tells an expired 4xx this way (its Status is 5.0.0 like any failure).
            assert diagnostic == f"smtp; {reply}: retry timeout exceeded"
        else:
            assert diagnostic == f"smtp; {reply}"
        expected = list(FIELDS[dialect])
    else:
        expected = [n for n in FIELDS[dialect] if n != "Diagnostic-Code"]
        if mode.stage in (Stage.CONNECT, Stage.LATER) or dialect in (Dialect.EXIM, Dialect.POSTFIX):
            # Exim names a remote MTA only next to its reply (real-dsns/exim-06, -12), and so
            # does Postfix (tests/realmta: a tarpit or a dropped connection gets none).
            expected.remove("Remote-MTA")
        if dialect is Dialect.POSTFIX:
            # Postfix explains a silent server in its own words, typed X-Postfix.
            text = mode.text("postfix", **(CONNECT_FILL if mode.stage is Stage.CONNECT else FILL))
            assert " ".join(str(block["Diagnostic-Code"]).split()) == f"X-Postfix; {text}"
            expected.insert(
                expected.index("Status") + 1 + ("Remote-MTA" in expected), "Diagnostic-Code"
            )
        else:
            assert "Diagnostic-Code" not in block
    if action == "delayed" and dialect is not Dialect.EXIM:  # Exim's delays never carry it
        expected.append("Will-Retry-Until")
    assert names == expected


@pytest.mark.parametrize("dialect", RFC3464)
@pytest.mark.parametrize("mode_name", MODES)
def test_flufl_bounce_finds_the_failed_recipient(mode_name: str, dialect: Dialect) -> None:
    dsn = wire(dsn_for_mode(mode_name, RCPT, dialect=dialect, now=NOW))
    # flufl's "permanent" means the message will not arrive: every failed report, even a
    # mailbox-full one that CleverTap counts as a soft bounce.
    assert all_failures(dsn) == (frozenset(), frozenset({RCPT.encode()}))
    assert scan_message(dsn) == frozenset({RCPT.encode()})


@pytest.mark.parametrize("dialect", RFC3464)
@pytest.mark.parametrize("mode_name", ["invalid_address", "mailbox_full", "refused"])
def test_flufl_bounce_calls_delayed_reports_temporary(mode_name: str, dialect: Dialect) -> None:
    dsn = dsn_for_mode(mode_name, RCPT, dialect=dialect, action="delayed", now=NOW)
    assert all_failures(wire(dsn)) == (frozenset({RCPT.encode()}), frozenset())
    assert scan_message(wire(dsn)) == frozenset()


def test_flufl_bounce_reads_the_dsn_in_memory_too() -> None:
    dsn = dsn_for_mode("mailbox_full", RCPT, dialect="postfix", now=NOW)
    assert all_failures(dsn) == (frozenset(), frozenset({RCPT.encode()}))


def test_flufl_reports_orcpt_when_given() -> None:
    dsn = dsn_for_mode("invalid_address", RCPT, orcpt="rfc822;list-member@example.com", now=NOW)
    assert scan_message(wire(dsn)) == frozenset({b"list-member@example.com"})


def test_postfix_dialect_fields_and_texts() -> None:
    dsn = wire(dsn_for_mode("invalid_address", RCPT, dialect="postfix", sender=VERP, now=NOW))
    assert dsn["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.harness.test"
    assert "From: Mail Delivery System <MAILER-DAEMON@mx.harness.test>\n" in dsn.as_string()
    assert dsn["Subject"] == "Undelivered Mail Returned to Sender"
    assert dsn["Message-ID"].startswith("<20231114221320.")
    per_message, block = status_blocks(dsn)
    # The original's queue id names the boundary too; the DSN's own id is in Message-Id.
    queue_id = str(dsn.get_boundary()).split(".")[0]
    assert dict(per_message.items()) == {
        "Reporting-MTA": "dns; mx.harness.test",
        "X-Postfix-Queue-ID": queue_id,
        "X-Postfix-Sender": f"rfc822; {VERP}",
        "Arrival-Date": "Tue, 14 Nov 2023 22:13:20 +0000 (UTC)",
    }
    assert block["Original-Recipient"] == f"rfc822;{RCPT}"
    assert block["Remote-MTA"] == "dns; mx.example.com"
    text = " ".join(text_of(dsn).split())
    assert "This is the mail system at host mx.harness.test." in text
    assert (
        f"<{RCPT}>: host mx.example.com[127.0.0.1] said: 550 5.1.1 <{RCPT}>: Recipient address "
        "rejected: User unknown in local recipient table (in reply to RCPT TO command)"
    ) in text
    descriptions = [p["Content-Description"] for p in dsn.iter_parts()]
    assert descriptions == ["Notification", "Delivery report", "Undelivered Message"]


def test_postfix_end_of_data_text() -> None:
    dsn = wire(dsn_for_mode("spam_content", RCPT, dialect="postfix", now=NOW))
    assert "(in reply to end of DATA command)" in " ".join(text_of(dsn).split())


def test_postfix_expiry_keeps_the_transient_status() -> None:
    dsn = wire(dsn_for_mode("mailbox_full", RCPT, dialect="postfix", now=NOW))
    _, block = status_blocks(dsn)
    assert (block["Action"], block["Status"]) == ("failed", "4.2.2")


def test_postfix_connection_refused() -> None:
    dsn = wire(dsn_for_mode("refused", RCPT, dialect="postfix", action="delayed", now=NOW))
    _, block = status_blocks(dsn)
    assert dsn["Subject"] == "Delayed Mail (still being retried)"
    assert block["Status"] == "4.4.1"
    # Long fields are folded; unfolding keeps the indent, so compare words.
    assert " ".join(block["Diagnostic-Code"].split()) == (
        "X-Postfix; connect to mx.example.com[127.0.0.1]:25: Connection refused"
    )
    assert "Remote-MTA" not in block
    assert block["Will-Retry-Until"] == "Sun, 19 Nov 2023 22:13:20 +0000 (UTC)"


def test_exim_dialect_is_generic_in_status_and_names_failed_recipients() -> None:
    dsn = wire(dsn_for_mode("mailbox_full", RCPT, dialect="exim", now=NOW))
    assert dsn["X-Failed-Recipients"] == RCPT
    assert dsn["From"] == "Mail Delivery System <Mailer-Daemon@mx.harness.test>"
    assert dsn["Subject"] == "Mail delivery failed: returning message to sender"
    per_message, block = status_blocks(dsn)
    assert list(per_message.keys()) == ["Reporting-MTA"]
    assert block["Status"] == "5.0.0"
    assert "452 4.2.2" in block["Diagnostic-Code"]
    text = text_of(dsn)
    assert f"  {RCPT}\n    host mx.example.com [127.0.0.1]\n" in text
    assert "    Mailbox full: retry timeout exceeded\n" in text


def test_exim_permanent_failure_text() -> None:
    dsn = wire(dsn_for_mode("invalid_address", RCPT, dialect="exim", now=NOW))
    text = text_of(dsn)
    assert f"SMTP error from remote mail server after RCPT TO:<{RCPT}>:" in text
    assert "X-Failed-Recipients" in dsn


def test_exim_delay_warning() -> None:
    # Exim says how long the message has waited: from its arrival to the warning.
    reports = [report(action="delayed", status="4.2.2", diagnostic="452 4.2.2 full")]
    built = build_dsn(original(arrival=NOW - 86_400), reports, dialect="exim", now=NOW)
    assert built is not None
    dsn = wire(built)
    assert "X-Failed-Recipients" not in dsn
    assert dsn["Subject"].startswith("Warning: message ")
    assert dsn["Subject"].endswith(" delayed 24 hours")
    assert "recipients after more than 24 hours on the queue on mx.harness.test." in text_of(dsn)
    _, block = status_blocks(dsn)
    assert (block["Action"], block["Status"]) == ("delayed", "4.0.0")


def test_generic_dialect_per_message_block() -> None:
    dsn = wire(dsn_for_mode("invalid_address", RCPT, envid="QQ314159", now=NOW))
    per_message, block = status_blocks(dsn)
    assert dict(per_message.items()) == {
        "Reporting-MTA": "dns; mx.harness.test",
        "Original-Envelope-Id": "QQ314159",
        "Arrival-Date": "Tue, 14 Nov 2023 22:13:20 +0000",
    }
    assert block["Last-Attempt-Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert dsn["Auto-Submitted"] == "auto-replied"


@pytest.mark.parametrize("dialect", RFC3464)
def test_envid_and_orcpt_are_echoed_verbatim(dialect: Dialect) -> None:
    orcpt = "rfc822;first+2Blast@example.com"
    dsn = wire(
        dsn_for_mode("invalid_address", RCPT, dialect=dialect, envid="E+2B1", orcpt=orcpt, now=NOW)
    )
    per_message, block = status_blocks(dsn)
    # Exim spells it Original-Envelope-ID; field names are case-insensitive.
    assert per_message["Original-Envelope-Id"] == "E+2B1"
    if dialect is Dialect.EXIM:
        assert "Original-Recipient" not in block  # Exim does not write it
    else:
        assert block["Original-Recipient"] == orcpt


def test_arrival_date_comes_from_the_original() -> None:
    dsn = build_dsn(original(arrival=NOW - 3600), [report()], now=NOW)
    assert dsn is not None
    per_message, _ = status_blocks(wire(dsn))
    assert per_message["Arrival-Date"] == "Tue, 14 Nov 2023 21:13:20 +0000"


def test_ret_full_returns_the_original_byte_for_byte() -> None:
    meta = '{"wzrk_id":"0_0","wzrk_pivot":"default","cid":"' + "x" * 120 + '"}'
    content = (
        f"From: <news@sender.test>\r\nTo: <{RCPT}>\r\nX-CleverTap_META: {meta}\r\n"
        "Subject: Hi\r\n\r\nHello.\r\n"
    ).encode()
    dsn = build_dsn(original(content=content, ret="full"), [report()], now=NOW)
    assert dsn is not None
    data = dsn_bytes(dsn)
    assert content in data  # the over-long header line is not refolded
    returned = wire(dsn).get_payload(2)
    assert returned.get_content_type() == "message/rfc822"
    assert returned.get_payload(0)["X-CleverTap_META"] == meta


def test_ret_hdrs_returns_only_the_headers() -> None:
    dsn = build_dsn(original(ret="HDRS"), [report()], dialect="postfix", now=NOW)
    assert dsn is not None
    part = wire(dsn).get_payload(2)
    assert part.get_content_type() == "text/rfc822-headers"
    assert part["Content-Description"] == "Undelivered Message Headers"
    # Postfix returns the headers as it stored them: its own trace lines first.
    returned = text_of(wire(dsn), 2)
    assert returned.startswith(f"Return-Path: <{VERP}>\nReceived: from ")
    assert returned.endswith("\nFrom: <news@sender.test>\nTo: <a@example.com>\nSubject: Hi\n")
    generic = build_dsn(original(ret="HDRS"), [report()], dialect="generic", now=NOW)
    assert generic is not None
    head = "From: <news@sender.test>\nTo: <a@example.com>\nSubject: Hi\n"
    assert text_of(wire(generic), 2) == head


def test_notify_never_gives_no_dsn() -> None:
    assert build_dsn(original(), [report(notify=frozenset({"NEVER"}))]) is None


@pytest.mark.parametrize(
    ("notify", "included"),
    [
        (None, ["f@x.test", "d@x.test"]),
        (frozenset({"FAILURE"}), ["f@x.test"]),
        (frozenset({"delay"}), ["d@x.test"]),
        (frozenset({"SUCCESS"}), ["s@x.test"]),
        (frozenset({"SUCCESS", "FAILURE", "DELAY"}), ["f@x.test", "d@x.test", "s@x.test"]),
    ],
)
def test_notify_filters_the_reports(notify: frozenset[str] | None, included: list[str]) -> None:
    reports = [
        report(recipient="f@x.test", notify=notify),
        report(recipient="d@x.test", action="delayed", status="4.2.2", notify=notify),
        report(recipient="s@x.test", action="delivered", status="2.0.0", notify=notify),
    ]
    dsn = build_dsn(original(), reports, now=NOW)
    assert dsn is not None
    assert [r["recipient"] for r in recipients_of(wire(dsn))] == included


def test_notify_excluding_every_report_gives_no_dsn() -> None:
    assert build_dsn(original(), [report(notify=frozenset({"SUCCESS"}))]) is None


def test_one_dsn_for_several_recipients() -> None:
    reports = [report(recipient="one@x.test"), report(recipient="two@x.test", status="5.2.1")]
    dsn = build_dsn(original(), reports, dialect="exim", now=NOW)
    assert dsn is not None
    parsed = wire(dsn)
    assert parsed["X-Failed-Recipients"] == "one@x.test, two@x.test"
    # Exim writes the status blocks the other way round (real-dsns/exim-05).
    assert recipients_of(parsed) == [
        {"recipient": "two@x.test", "action": "failed", "status": "5.0.0"},
        {"recipient": "one@x.test", "action": "failed", "status": "5.0.0"},
    ]
    postfix = build_dsn(original(), reports, dialect="postfix", now=NOW)
    assert postfix is not None
    assert [r["recipient"] for r in recipients_of(wire(postfix))] == ["one@x.test", "two@x.test"]


def test_success_dsn() -> None:
    dsn = dsn_for_mode("accept", RCPT, dialect="postfix", action="relayed", now=NOW)
    parsed = wire(dsn)
    assert parsed["Subject"] == "Successful Mail Delivery Report"
    assert recipients_of(parsed) == [{"recipient": RCPT, "action": "relayed", "status": "2.0.0"}]
    assert all_failures(parsed) == (frozenset(), frozenset())


@pytest.mark.parametrize("dialect", RFC3464)
def test_utf8_recipient_gives_the_rfc6533_variant(dialect: Dialect) -> None:
    rcpt = "jörg@exämple.com"
    dsn = dsn_for_mode("invalid_address", rcpt, dialect=dialect, now=NOW)
    data = dsn_bytes(dsn)
    assert "jörg@exämple.com".encode() in data
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert [p.get_content_type() for p in parsed.iter_parts()] == [
        "text/plain",
        "message/global-delivery-status",
        "message/global",
    ]
    sep = ";" if dialect is Dialect.EXIM else "; "
    assert f"Final-Recipient: utf-8{sep}{rcpt}".encode() in data
    assert recipients_of(parsed) == [
        {
            "recipient": rcpt,
            "action": "failed",
            "status": expected_status(dialect, "failed", "5.1.1"),
        }
    ]


def test_utf8_headers_only_is_message_global_headers() -> None:
    dsn = build_dsn(original(envelope_sender="bounces@sénder.test", ret="HDRS"), [report()])
    assert dsn is not None
    assert wire(dsn).get_payload(2).get_content_type() == "message/global-headers"


def test_postfix_and_exim_use_the_rfc6533_variant_for_any_smtputf8_message() -> None:
    # Real Postfix 3.7 does (real-dsns/postfix-12), even when every address is ASCII.
    for dialect in ("postfix", "exim"):
        dsn = build_dsn(original(smtputf8=True), [report()], dialect=dialect, now=NOW)
        assert dsn is not None
        assert wire(dsn).get_payload(1).get_content_type() == "message/global-delivery-status"
    generic = build_dsn(original(smtputf8=True), [report()], dialect="generic", now=NOW)
    assert generic is not None
    assert wire(generic).get_payload(1).get_content_type() == "message/delivery-status"


def test_same_inputs_give_the_same_bytes() -> None:
    first = dsn_bytes(dsn_for_mode("mailbox_full", RCPT, dialect="postfix", now=NOW))
    second = dsn_bytes(dsn_for_mode("mailbox_full", RCPT, dialect="postfix", now=NOW))
    other = dsn_bytes(dsn_for_mode("mailbox_full", RCPT, dialect="postfix", now=NOW + 1))
    assert first == second
    assert first != other


def test_dsn_bytes_line_endings() -> None:
    dsn = dsn_for_mode("invalid_address", RCPT, dialect="postfix", now=NOW)
    crlf, lf = dsn_bytes(dsn), dsn_bytes(dsn, crlf=False)
    assert b"\r" not in lf
    assert crlf.count(b"\n") == crlf.count(b"\r\n")
    assert crlf == lf.replace(b"\n", b"\r\n")


def test_delayed_report_of_a_5xx_mode_becomes_4xx() -> None:
    dsn = wire(dsn_for_mode("invalid_address", RCPT, action="delayed", now=NOW))
    _, block = status_blocks(dsn)
    assert block["Status"] == "4.1.1"
    assert block["Diagnostic-Code"].startswith("smtp; 550 5.1.1 ")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "bounced"}, "action for 'a@example.com' must be one of failed, delayed"),
        ({"status": "5.1"}, "must be an RFC 3463 code like '5.1.1', not '5.1'"),
        ({"action": "delayed", "status": "5.1.1"}, "action 'delayed' needs a status 4.x.x"),
        ({"action": "delivered", "status": "5.1.1"}, "needs a status 2.x.x, not '5.1.1'"),
        ({"notify": frozenset({"NEVER", "FAILURE"})}, "must be NEVER alone"),
        ({"notify": frozenset({"SOMETIMES"})}, "seen ['SOMETIMES']"),
    ],
)
def test_bad_reports_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="RecipientReport") as info:
        report(**kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ret": "BODY"}, "OriginalMessage.ret must be 'FULL', 'HDRS' or None, not 'BODY'"),
        ({"envid": "x" * 101}, "OriginalMessage.envid is 101 characters long"),
        ({"envelope_sender": ""}, "OriginalMessage.envelope_sender is empty"),
    ],
)
def test_bad_originals_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        original(**kwargs)
    assert message in str(info.value)


def test_no_reports_is_an_error() -> None:
    with pytest.raises(ConfigError, match="at least one RecipientReport"):
        build_dsn(original(), [])


def test_unknown_dialect_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError) as info:
        build_dsn(original(), [report()], dialect="postfx")
    assert str(info.value) == "unknown DSN dialect 'postfx'; did you mean 'postfix'?"


def test_unknown_mode_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'invalid_address'"):
        dsn_for_mode("invalid_adress", RCPT)


def test_accept_mode_cannot_fail() -> None:
    with pytest.raises(ConfigError, match="mode 'accept' delivers the message"):
        dsn_for_mode("accept", RCPT)

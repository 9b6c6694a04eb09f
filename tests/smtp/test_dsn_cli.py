"""``harness dsn``: exact output and exit codes."""

from __future__ import annotations

import email
import email.policy
from datetime import datetime

from click.testing import CliRunner

from harness.cli import main
from harness.smtp.dsn import dsn_bytes, dsn_for_mode

DATE = "2024-05-01T12:00:00+00:00"


def run(*args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(main, ["dsn", *args])
    return result.exit_code, result.stdout_bytes, result.stderr


def test_prints_the_dsn_of_the_mode_byte_for_byte() -> None:
    code, out, err = run(
        "--mode",
        "invalid_address",
        "--dialect",
        "postfix",
        "--recipient",
        "a@example.com",
        "--sender",
        "bounces+a=example.com@sender.test",
        "--date",
        DATE,
    )
    expected = dsn_for_mode(
        "invalid_address",
        "a@example.com",
        dialect="postfix",
        sender="bounces+a=example.com@sender.test",
        now=datetime.fromisoformat(DATE),
    )
    assert (code, err) == (0, "")
    assert out == dsn_bytes(expected, crlf=False)
    assert b"\nDate: Wed, 01 May 2024 12:00:00 +0000 (UTC)\n" in out
    assert b"\nFrom: Mail Delivery System <MAILER-DAEMON@mx.harness.test>\n" in out
    assert b"\nTo: bounces+a=example.com@sender.test\n" in out


def test_crlf_option() -> None:
    args = ("--mode", "mailbox_full", "--recipient", "a@example.com", "--date", DATE)
    _, lf, _ = run(*args)
    code, crlf, _ = run(*args, "--crlf")
    assert code == 0
    assert b"\r" not in lf
    assert crlf == lf.replace(b"\n", b"\r\n")


def test_rfc3461_options_reach_the_dsn() -> None:
    code, out, _ = run(
        "--mode",
        "greylist",
        "--dialect",
        "exim",
        "--recipient",
        "a@example.com",
        "--action",
        "delayed",
        "--ret",
        "hdrs",
        "--envid",
        "ENV42",
        "--orcpt",
        "rfc822;x@y.test",
        "--date",
        DATE,
    )
    assert code == 0
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    per_message, block = parts[1].get_payload()
    assert per_message["Original-Envelope-Id"] == "ENV42"
    assert (block["Action"], block["Status"]) == ("delayed", "4.0.0")
    assert "Will-Retry-Until" not in block  # real Exim delays never carry it


def test_unknown_mode_exits_2_with_a_suggestion() -> None:
    code, out, err = run("--mode", "invalid_adress", "--recipient", "a@example.com")
    assert (code, out) == (2, b"")
    assert err.splitlines()[-1] == (
        "Error: unknown failure mode 'invalid_adress'; did you mean 'invalid_address'?"
    )


def test_unknown_dialect_exits_2_with_a_suggestion() -> None:
    code, out, err = run("--mode", "mailbox_full", "--recipient", "a@x.test", "--dialect", "exm")
    assert (code, out) == (2, b"")
    assert err.splitlines()[-1] == (
        "Error: Invalid value for '--dialect': unknown DSN dialect 'exm'; did you mean 'exim'?"
    )


def test_mode_that_does_not_fail_exits_2() -> None:
    code, _, err = run("--mode", "accept", "--recipient", "a@example.com")
    assert code == 2
    assert err.splitlines()[-1] == (
        "Error: mode 'accept' delivers the message (250); it can only be reported with action "
        "'delivered' or 'relayed', not 'failed'"
    )


def test_bad_date_exits_2() -> None:
    code, _, err = run("--mode", "mailbox_full", "--recipient", "a@x.test", "--date", "May 1st")
    assert code == 2
    assert "expected an ISO 8601 date like 2024-05-01T12:00:00+00:00, seen 'May 1st'" in err


def test_recipient_is_required() -> None:
    code, _, err = run("--mode", "mailbox_full")
    assert code == 2
    assert "Missing option '--recipient'" in err


def test_repeated_recipients_give_one_dsn_with_a_block_each() -> None:
    code, out, err = run(
        *("--mode", "spam_content", "--dialect", "postfix", "--date", DATE),
        *("--recipient", "a@x.test", "--recipient", "b@x.test"),
    )
    assert (code, err) == (0, "")
    expected = dsn_for_mode(
        "spam_content",
        ["a@x.test", "b@x.test"],
        dialect="postfix",
        now=datetime.fromisoformat(DATE),
    )
    assert out == dsn_bytes(expected, crlf=False)
    assert out.count(b"\nFinal-Recipient: rfc822; ") == 2


def test_every_dialect_is_offered() -> None:
    for dialect in ("sendmail", "qmail", "exim_legacy", "gmail", "office365", "yahoo"):
        code, out, err = run(
            "--mode", "invalid_address", "--dialect", dialect, "--recipient", "a@x.test"
        )
        assert (code, err) == (0, ""), dialect
        assert b"a@x.test" in out


def test_a_dialect_that_cannot_say_it_exits_2() -> None:
    code, _, err = run(
        "--mode",
        "mailbox_full",
        "--dialect",
        "qmail",
        "--action",
        "delayed",
        "--recipient",
        "a@x.test",
    )
    assert code == 2
    assert "qmail-send never sends delay warnings" in err


def test_complaint_and_auto_reply() -> None:
    sender = "bounces+a=x.test@sut.test"
    code, out, err = run("--kind", "complaint", "--recipient", "a@x.test", "--sender", sender)
    assert (code, err) == (0, "")
    complaint = email.message_from_bytes(out, policy=email.policy.default)
    assert complaint.get_param("report-type") == "feedback-report"
    assert complaint["To"] == sender
    code, out, err = run("--kind", "auto_reply", "--recipient", "a@x.test", "--sender", sender)
    assert (code, err) == (0, "")
    reply = email.message_from_bytes(out, policy=email.policy.default)
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["From"] == "a@x.test"


def test_a_bounce_needs_a_mode_and_a_complaint_one_recipient() -> None:
    code, _, err = run("--recipient", "a@x.test")
    assert code == 2
    assert "--mode is required for a bounce" in err
    code, _, err = run("--kind", "complaint", "--recipient", "a@x.test", "--recipient", "b@x.test")
    assert code == 2
    assert "a complaint is about one recipient; 2 given" in err


def test_the_auto_reply_style_is_chosen_with_style() -> None:
    code, out, err = run("--kind", "auto_reply", "--style", "exchange", "--recipient", "a@x.test")
    assert (code, err) == (0, "")
    reply = email.message_from_bytes(out, policy=email.policy.default)
    assert reply["X-Auto-Response-Suppress"] == "All"
    assert str(reply["Subject"]).startswith("Automatic reply: ")


def test_an_option_of_another_kind_is_refused_not_ignored() -> None:
    code, _, err = run("--kind", "auto_reply", "--mode", "invalid_address", "--recipient", "a@x")
    assert code == 2
    assert "--mode means nothing for --kind auto_reply; it shapes --kind bounce only" in err
    code, _, err = run("--mode", "mailbox_full", "--feedback-type", "fraud", "--recipient", "a@x")
    assert code == 2
    assert "--feedback-type means nothing for --kind bounce" in err
    code, _, err = run("--kind", "complaint", "--style", "exchange", "--recipient", "a@x")
    assert code == 2
    assert "--style means nothing for --kind complaint" in err
    # --ret shapes a complaint too (the original, or its headers only).
    code, _, err = run("--kind", "complaint", "--ret", "hdrs", "--recipient", "a@x.test")
    assert (code, err) == (0, "")

"""The report behaviours of the rule grammar: success DSNs, aliasing, auto-replies and
complaints, parsed from what YAML gives, and every bad spelling refused where it is."""

from __future__ import annotations

import pytest

from harness.smtp.catalog import BounceClass, Stage
from harness.smtp.rules import RuleError, Rules, parse_behaviour
from harness.vocab import MailReport

S = "news@brand.test"


def later(data: object, rcpt: str = "a@x.test"):  # type: ignore[no-untyped-def]
    outcome = Rules.parse({rcpt: data}).decide(S, rcpt, now=0.0)
    assert outcome.stage is Stage.LATER
    assert outcome.accepted
    assert outcome.bounce is not None
    return outcome


@pytest.mark.parametrize(
    ("action", "dialect"),
    [
        ("delivered", "postfix"),
        ("relayed", "exim"),
        ("expanded", "sendmail"),
        ("delivered", "amazon_ses"),
        ("expanded", "generic"),
    ],
)
def test_accept_then_report_accepts_and_plans_a_success_dsn(action: str, dialect: str) -> None:
    outcome = later({"accept_then_report": action, "after": "2s", "dsn": dialect})
    assert outcome.bounce_class is BounceClass.NONE
    bounce = outcome.bounce
    assert (bounce.action, bounce.dialect, bounce.after) == (action, dialect, 2.0)
    assert bounce.status == "2.0.0"
    assert bounce.report is MailReport.DSN
    assert bounce.final_recipient is None


def test_final_recipient_on_a_bounce_and_a_success_report() -> None:
    failed = later({"accept_then_bounce": "invalid_address", "final_recipient": "old@forward.test"})
    assert failed.bounce_class is BounceClass.HARD
    assert failed.bounce.final_recipient == "old@forward.test"
    assert failed.bounce.status == "5.1.1"
    assert (
        "for old@forward.test"
        in parse_behaviour(
            {"accept_then_bounce": "invalid_address", "final_recipient": "old@forward.test"}
        ).describe()
    )
    relayed = later({"accept_then_report": "relayed", "final_recipient": "desk@forward.test"})
    assert relayed.bounce.final_recipient == "desk@forward.test"


@pytest.mark.parametrize(
    ("data", "report", "style", "after"),
    [
        ("auto_reply", MailReport.AUTO_REPLY, "vacation", 0.0),
        ({"auto_reply": "exchange", "after": "1s"}, MailReport.AUTO_REPLY, "exchange", 1.0),
        ({"auto_reply": None}, MailReport.AUTO_REPLY, "vacation", 0.0),
        ("complaint", MailReport.COMPLAINT, "abuse", 0.0),
        ({"complaint": "fraud", "after": 3}, MailReport.COMPLAINT, "fraud", 3.0),
    ],
)
def test_auto_reply_and_complaint_accept_and_plan_their_report(
    data: object, report: MailReport, style: str, after: float
) -> None:
    outcome = later(data)
    assert outcome.bounce_class is BounceClass.NONE
    bounce = outcome.bounce
    assert (bounce.report, bounce.style, bounce.after) == (report, style, after)
    assert (bounce.status, bounce.dialect, bounce.action) == ("", "", "")
    assert parse_behaviour(data).reports() == {report}


def test_reports_are_found_inside_sequences_windows_and_chances() -> None:
    assert parse_behaviour(["greylist", "complaint"]).reports() == {MailReport.COMPLAINT}
    windowed = {"mode": "throttle", "for": "1m", "then": {"auto_reply": "vacation"}}
    assert parse_behaviour(windowed).reports() == {MailReport.AUTO_REPLY}
    chance = {"probability": 0.5, "complaint": "abuse", "else": {"accept_then_bounce": "x_bad"}}
    with pytest.raises(RuleError):
        parse_behaviour(chance)  # the else branch names no mode
    chance["else"] = {"accept_then_bounce": "invalid_address"}
    assert parse_behaviour(chance).reports() == {MailReport.COMPLAINT, MailReport.DSN}
    assert parse_behaviour("mailbox_full").reports() == frozenset()
    # A sequence of attempts: the complaint comes with the attempt that is accepted.
    rules = Rules.parse({"a@x.test": ["greylist", "complaint"]})
    first = rules.decide(S, "a@x.test", now=0.0)
    second = rules.decide(S, "a@x.test", now=1.0)
    assert (first.reply.code, first.bounce) == (450, None)
    assert second.bounce is not None
    assert second.bounce.report is MailReport.COMPLAINT


@pytest.mark.parametrize(
    ("data", "path", "expected_in", "seen"),
    [
        (
            {"accept_then_report": "failed"},
            ("accept_then_report",),
            "unknown success DSN action",
            "failed",
        ),
        (
            {"accept_then_report": "delivered", "dsn": "gmail"},
            ("dsn",),
            "the gmail dialect sends no success DSNs",
            "gmail",
        ),
        (
            {"accept_then_report": "expanded", "dsn": "exim"},
            ("dsn",),
            "the exim dialect never reports alias or list expansion",
            "exim",
        ),
        (
            {"accept_then_report": "delivered", "action": "failed"},
            ("action",),
            "unknown key for accept_then_report",
            "action",
        ),
        (
            {"accept_then_bounce": "invalid_address", "final_recipient": "nobody"},
            ("final_recipient",),
            "not an address",
            "nobody",
        ),
        (
            {"accept_then_report": "relayed", "final_recipient": 7},
            ("final_recipient",),
            "not an address",
            7,
        ),
        ({"auto_reply": "holiday"}, ("auto_reply",), "unknown auto-reply style", "holiday"),
        (
            {"auto_reply": "vacation", "dsn": "postfix"},
            ("dsn",),
            "unknown key for auto_reply",
            "dsn",
        ),
        ({"complaint": "spam"}, ("complaint",), "unknown feedback type", "spam"),
        ("auto_replies", (), "did you mean 'auto_reply'", "auto_replies"),
        ({"complaint": "not-spam"}, ("complaint",), "not a complaint", "not-spam"),
        ({"complaint": "abuse", "after": "soon"}, ("after",), "not a duration", "soon"),
        (
            {"complaint": "abuse", "auto_reply": "vacation"},
            (),
            "give only one of auto_reply, complaint",
            {"complaint": "abuse", "auto_reply": "vacation"},
        ),
        (
            {"accept_then_bounce": "invalid_address", "accept_then_report": "delivered"},
            (),
            "give only one of accept_then_bounce, accept_then_report",
            {"accept_then_bounce": "invalid_address", "accept_then_report": "delivered"},
        ),
    ],
)
def test_bad_report_behaviours_are_refused_where_they_are(
    data: object, path: tuple[object, ...], expected_in: str, seen: object
) -> None:
    with pytest.raises(RuleError) as info:
        Rules.parse({"a@x.test": data}, ("mx", "x.test"))
    error = info.value
    assert error.path == ("mx", "x.test", "a@x.test", *path)
    assert error.seen == seen
    assert error.expected
    assert expected_in in str(error)

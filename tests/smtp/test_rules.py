from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.smtp.catalog import CATALOG, BounceClass, Reply, Stage
from harness.smtp.rules import (
    Bounce,
    RuleError,
    Rules,
    class_of,
    parse_behaviour,
    parse_duration,
    parse_reply,
)

S = "news@brand.test"


def decide(rules: Rules, rcpt: str, *, sender: str = S, now: float = 0.0):  # type: ignore[no-untyped-def]
    return rules.decide(sender, rcpt, now=now, values={"rcpt": rcpt})


def test_a_mode_name_gives_the_catalog_reply_at_its_stage_and_class() -> None:
    outcome = decide(Rules.parse({"a@x.test": "mailbox_full"}), "a@x.test")
    assert outcome.reply == Reply(
        452, "4.2.2", "<a@x.test>: Recipient address rejected: Mailbox full"
    )
    assert (outcome.stage, outcome.bounce_class, outcome.mode, outcome.rule) == (
        Stage.RCPT,
        BounceClass.SOFT,
        "mailbox_full",
        "a@x.test",
    )
    spam = decide(Rules.parse({"a@x.test": "spam_content"}), "a@x.test")
    assert (spam.stage, spam.reply.code, spam.reply.enhanced) == (Stage.END_OF_DATA, 550, "5.7.1")


def test_a_raw_reply_applies_at_rcpt_with_a_class_from_its_status() -> None:
    rules = Rules.parse(
        {"a@x.test": "550 5.7.1 go away", "b@x.test": "550 5.1.1 gone", "c@x.test": "451 later"}
    )
    a, b, c = (decide(rules, r) for r in ("a@x.test", "b@x.test", "c@x.test"))
    assert (a.stage, a.reply, a.bounce_class, a.mode) == (
        Stage.RCPT,
        Reply(550, "5.7.1", "go away"),
        BounceClass.SOFT,
        None,
    )
    assert b.bounce_class is BounceClass.HARD
    assert (c.reply, c.bounce_class) == (Reply(451, None, "later"), BounceClass.SOFT)
    assert class_of(Reply(550, "5.9.9", "x")) is BounceClass.HARD
    assert class_of(Reply(250, None, "ok")) is BounceClass.NONE


def test_mapping_overrides_flavour_stage_and_class() -> None:
    rules = Rules.parse(
        {
            "a@x.test": {"mode": "mailbox_full", "flavour": "yahoo", "class": "hard"},
            "b@x.test": {"reply": "550 5.7.1 x", "stage": "end_of_data", "class": "soft"},
            "c@x.test": {"mode": "throttle", "flavour": "yahoo", "stage": "data"},
        }
    )
    a = decide(rules, "a@x.test")
    assert (a.reply.text, a.bounce_class) == (CATALOG["mailbox_full"].texts["yahoo"], "hard")
    b = decide(rules, "b@x.test")
    assert (b.stage, b.reply, b.bounce_class) == (
        Stage.END_OF_DATA,
        Reply(550, "5.7.1", "x"),
        BounceClass.SOFT,
    )
    c = decide(rules, "c@x.test")
    assert (c.stage, c.reply.code, c.reply.enhanced) == (Stage.DATA, 421, "4.7.0")


def test_matching_order_is_exact_then_patterns_in_order_then_domain_then_default() -> None:
    rules = Rules.parse(
        {
            "x.test": "mailbox_disabled",
            "bounce-*@x.test": "invalid_address",
            "*@x.test": "greylist",
            "VIP@X.test": "accept",
            "*.sub.test": "null_mx",
        }
    )
    assert rules.match("vip@x.test")[0] == "VIP@X.test"
    assert rules.match("Bounce-1@X.TEST")[0] == "bounce-*@x.test"
    assert rules.match("someone@x.test")[0] == "*@x.test"
    assert rules.match("a@deep.sub.test")[0] == "*.sub.test"
    assert rules.match("a@other.test") == (None, rules.default)
    only_domain = Rules.parse({"x.test": "mailbox_disabled"})
    assert decide(only_domain, "a@x.test").mode == "mailbox_disabled"
    assert decide(only_domain, "a@y.test").mode == "accept"


def test_sequences_count_attempts_per_sender_and_recipient_and_repeat_the_last() -> None:
    rules = Rules.parse({"g@x.test": ["greylist", "mailbox_full", "accept"]})
    modes = [decide(rules, "g@x.test").mode for _ in range(5)]
    assert modes == ["greylist", "mailbox_full", "accept", "accept", "accept"]
    assert [decide(rules, "g@x.test").attempt for _ in range(2)] == [6, 7]
    # Another sender is another triplet: it starts again.
    assert decide(rules, "g@x.test", sender="other@brand.test").mode == "greylist"
    rules.reset()
    assert decide(rules, "g@x.test").mode == "greylist"


def test_windows_run_from_the_first_attempt_then_hand_over() -> None:
    rules = Rules.parse(
        {"w@x.test": {"mode": "mailbox_full", "for": "10m", "then": ["greylist", "accept"]}}
    )
    assert decide(rules, "w@x.test", now=100.0).mode == "mailbox_full"
    assert decide(rules, "w@x.test", now=699.9).mode == "mailbox_full"
    # The window closes 600 s after the first attempt; the nested sequence starts counting then.
    assert decide(rules, "w@x.test", now=700.0).mode == "greylist"
    assert decide(rules, "w@x.test", now=701.0).mode == "accept"
    # Windows are per (sender, recipient) too.
    assert decide(rules, "w@x.test", sender="b@brand.test", now=701.0).mode == "mailbox_full"


def test_chances_are_seeded_and_independent_of_order() -> None:
    spec = {"*@x.test": {"probability": 0.3, "mode": "throttle", "else": "accept", "seed": 7}}
    recipients = [f"u{i}@x.test" for i in range(400)]
    first = [decide(Rules.parse(spec), r).mode for r in recipients]
    # Same seed, recipients asked in the opposite order: the same decision for each one.
    again_rules = Rules.parse(spec)
    again = {r: decide(again_rules, r).mode for r in reversed(recipients)}
    assert first == [again[r] for r in recipients]
    hits = first.count("throttle")
    assert 80 <= hits <= 160, hits  # 0.3 of 400 is 120
    other_seed = Rules.parse({"*@x.test": {**spec["*@x.test"], "seed": 8}})
    assert [decide(other_seed, r).mode for r in recipients] != first
    never = Rules.parse({"*@x.test": {"probability": 0, "mode": "throttle"}})
    assert {decide(never, r).mode for r in recipients} == {"accept"}


def test_accept_then_bounce_accepts_and_carries_the_dsn_plan() -> None:
    rules = Rules.parse(
        {
            "late@x.test": {
                "accept_then_bounce": "invalid_address",
                "after": "2s",
                "dsn": "postfix",
                "action": "failed",
            },
            "exp@x.test": {"accept_then_bounce": "queue_expiry", "after": 0.5, "dsn": "exim"},
        }
    )
    late = decide(rules, "late@x.test")
    assert late.accepted
    assert (late.stage, late.bounce_class, late.mode) == (
        Stage.LATER,
        BounceClass.HARD,
        "invalid_address",
    )
    assert late.bounce == Bounce(
        status="5.1.1",
        diagnostic="550 5.1.1 <late@x.test>: Recipient address rejected: User unknown in local "
        "recipient table",
        after=2.0,
        dialect="postfix",
        action="failed",
    )
    exp = decide(rules, "exp@x.test")
    assert exp.bounce == Bounce("4.4.7", None, 0.5, "exim", "failed")
    assert exp.bounce_class is BounceClass.SOFT


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2s", 2.0),
        ("500ms", 0.5),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (3, 3.0),
        ("7", 7.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("data", "path", "expected_in", "seen"),
    [
        (
            {"a@x.test": "mailbox_ful"},
            ("mx", "a@x.test"),
            "did you mean 'mailbox_full'",
            "mailbox_ful",
        ),
        (
            {"a@x.test": {"mode": "greylist", "stag": "rcpt"}},
            ("mx", "a@x.test", "stag"),
            "did you mean 'stage'",
            "stag",
        ),
        (
            {"a@x.test": {"mode": "greylist", "stage": "connect"}},
            ("mx", "a@x.test", "stage"),
            "unknown stage",
            "connect",
        ),
        (
            {"a@x.test": ["accept", {"probability": 1.5, "mode": "throttle"}]},
            ("mx", "a@x.test", 1, "probability"),
            "not a probability",
            1.5,
        ),
        (
            {"a@x.test": {"mode": "greylist", "for": "ten minutes", "then": "accept"}},
            ("mx", "a@x.test", "for"),
            "not a duration",
            "ten minutes",
        ),
        ({"a@x.test": "550 4.1.1 nope"}, ("mx", "a@x.test"), "must match", "4.1.1"),
        ({"a@x.test": "tarpit"}, ("mx", "a@x.test"), "server-down variant", "tarpit"),
        ({"a@x.test": "queue_expiry"}, ("mx", "a@x.test"), "accept_then_bounce", "queue_expiry"),
        (
            {
                "a@x.test": {
                    "accept_then_bounce": "mailbox_full",
                    "dsn": "qmail",
                    "action": "delayed",
                }
            },
            ("mx", "a@x.test", "action"),
            "the qmail dialect cannot report it as delayed: qmail-send never sends delay warnings",
            "delayed",
        ),
        (
            {"a@x.test": {"accept_then_bounce": "invalid_address", "dsn": "courier"}},
            ("mx", "a@x.test", "dsn"),
            "unknown DSN dialect",
            "courier",
        ),
        (
            {"a@x.test": {"reply": "250 fine", "class": "hard"}},
            ("mx", "a@x.test", "class"),
            "not a bounce",
            "hard",
        ),
        ({"a@x.test": []}, ("mx", "a@x.test"), "empty sequence", []),
        (
            {"a@x.test": {"flavour": "yahoo"}},
            ("mx", "a@x.test"),
            "needs 'mode'",
            {"flavour": "yahoo"},
        ),
        ({"a b@x.test": "accept"}, ("mx", "a b@x.test"), "not a rule key", "a b@x.test"),
        (["accept"], ("mx",), "rules are a mapping", ["accept"]),
    ],
)
def test_errors_say_where_what_was_expected_and_what_was_seen(
    data: object, path: tuple[object, ...], expected_in: str, seen: object
) -> None:
    with pytest.raises(RuleError) as info:
        Rules.parse(data, ("mx",))
    error = info.value
    assert isinstance(error, ConfigError)
    assert error.path == path
    assert error.seen == seen
    assert error.expected
    assert expected_in in str(error)
    assert str(error).startswith(".".join(str(p) for p in path) + ": ")


def test_parse_reply_and_describe() -> None:
    assert parse_reply("421 4.7.0 slow down") == Reply(421, "4.7.0", "slow down")
    assert parse_reply("250") == Reply(250, None, "Ok")
    with pytest.raises(RuleError, match="not an SMTP reply"):
        parse_reply("hello")
    behaviour = parse_behaviour({"probability": 0.5, "mode": "throttle", "seed": 3})
    assert behaviour.describe() == (
        "throttle at rcpt (soft) with probability 0.5 (seed 3), else accept at rcpt (none)"
    )

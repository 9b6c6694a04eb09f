from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import UnknownNameError
from harness.smtp.catalog import CATALOG, FLAVOURS, BounceClass, Reply, Stage, get_mode

# The rows of shared/reference/smtp-failures.md: (stage, code, enhanced, class) by mode.
EXPECTED = {
    "accept": (Stage.RCPT, 250, "2.1.5", BounceClass.NONE),
    "mailbox_full": (Stage.RCPT, 452, "4.2.2", BounceClass.SOFT),
    "mailbox_full_permanent": (Stage.RCPT, 552, "5.2.2", BounceClass.SOFT),
    "invalid_address": (Stage.RCPT, 550, "5.1.1", BounceClass.HARD),
    "mailbox_disabled": (Stage.RCPT, 550, "5.2.1", BounceClass.HARD),
    "no_such_domain": (Stage.RCPT, 553, "5.1.2", BounceClass.HARD),
    "null_mx": (Stage.RCPT, 556, "5.1.10", BounceClass.HARD),
    "greylist": (Stage.RCPT, 450, "4.2.0", BounceClass.SOFT),
    "throttle": (Stage.RCPT, 450, "4.2.1", BounceClass.SOFT),
    "too_large": (Stage.END_OF_DATA, 552, "5.3.4", BounceClass.SOFT),
    "dnsbl_blocked": (Stage.RCPT, 554, "5.7.1", BounceClass.SOFT),
    "dmarc_fail": (Stage.END_OF_DATA, 550, "5.7.26", BounceClass.SOFT),
    "relay_denied": (Stage.RCPT, 554, "5.7.1", BounceClass.SOFT),
    "spam_content": (Stage.END_OF_DATA, 550, "5.7.1", BounceClass.SOFT),
    "too_many_recipients": (Stage.RCPT, 452, "4.5.3", BounceClass.SOFT),
    "queue_expiry": (Stage.LATER, None, "4.4.7", BounceClass.SOFT),
    "refused": (Stage.CONNECT, None, "4.4.1", BounceClass.SOFT),
    "greeting_421": (Stage.GREETING, 421, "4.3.2", BounceClass.SOFT),
    "tarpit": (Stage.GREETING, None, "4.4.2", BounceClass.SOFT),
    "drop_mid_data": (Stage.DATA, None, "4.4.2", BounceClass.SOFT),
    "drop_after_dot": (Stage.END_OF_DATA, None, "4.4.2", BounceClass.SOFT),
    "slow": (Stage.GREETING, None, "4.4.2", BounceClass.NONE),
    "tls_broken": (Stage.STARTTLS, None, "4.7.5", BounceClass.SOFT),
}


def test_catalog_has_exactly_the_reference_rows() -> None:
    assert list(CATALOG) == list(EXPECTED)
    for name, (stage, code, enhanced, bounce_class) in EXPECTED.items():
        mode = CATALOG[name]
        assert (mode.stage, mode.code, mode.enhanced, mode.bounce_class) == (
            stage,
            code,
            enhanced,
            bounce_class,
        ), name


@pytest.mark.parametrize("name", [n for n, m in CATALOG.items() if m.code is not None])
def test_every_replying_mode_has_all_flavours_and_a_matching_first_digit(name: str) -> None:
    mode = CATALOG[name]
    assert set(mode.texts) == set(FLAVOURS)
    for flavour in FLAVOURS:
        reply = mode.reply(flavour)
        assert reply is not None
        # Postfix forces the enhanced code's class digit to match the reply code's.
        assert reply.enhanced is not None
        assert reply.enhanced[0] == str(reply.code)[0], (name, flavour)


def test_flavours_change_codes_where_providers_differ() -> None:
    throttle = get_mode("throttle")
    assert throttle.reply("gmail") == Reply(450, "4.2.1", throttle.texts["gmail"])
    yahoo = throttle.reply("yahoo")
    assert yahoo is not None
    assert (yahoo.code, yahoo.enhanced) == (421, "4.7.0")
    assert str(get_mode("greylist").reply("outlook")).startswith("451 4.7.1 ")


def test_placeholders_are_filled_and_unknown_flavour_falls_back_to_postfix() -> None:
    reply = get_mode("invalid_address").reply("nosuch", rcpt="a@x.test")
    assert str(reply) == (
        "550 5.1.1 <a@x.test>: Recipient address rejected: User unknown in local recipient table"
    )
    assert get_mode("tarpit").reply() is None


def test_unknown_mode_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match=r"did you mean 'mailbox_full'"):
        get_mode("mailbox_ful")


def test_catalog_command_json() -> None:
    result = CliRunner().invoke(main, ["catalog", "--json", "--flavour", "yahoo"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["mode"] for r in rows] == list(CATALOG)
    throttle = next(r for r in rows if r["mode"] == "throttle")
    assert (throttle["code"], throttle["enhanced"], throttle["class"]) == (421, "4.7.0", "soft")


def test_catalog_command_table() -> None:
    result = CliRunner().invoke(main, ["catalog"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "mailbox_full_permanent" in result.output
    assert "Relay access denied" in result.output
    bad = CliRunner().invoke(main, ["catalog", "--flavour", "aol"])
    assert bad.exit_code == 2

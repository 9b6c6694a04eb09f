"""The scenario loader: every kind of bad input gives exact file:line:column lines, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError, ScenarioError
from harness.scenario.loader import load_scenario, load_scenarios, parse_scenario
from harness.scenario.model import RecipientGenerator, Scenario

DATA = Path(__file__).parent / "data"
F = "tests/scenario/data/"

EXPECTED: dict[str, list[str]] = {
    "syntax-error": [
        "5:7: YAML: expected ',' or ']', but got ':' (while parsing a flow sequence at 4:7)"
    ],
    "duplicate-key": [
        '5:5: YAML: found duplicate key "a@example.com" with value "accept" (original value: '
        '"mailbox_full") (while constructing a mapping at 4:5)'
    ],
    "not-a-mapping": ["1:1: (top): not a scenario (expected a mapping of keys, seen a list)"],
    "missing-campaign": ["1:1: campaign: missing required key 'campaign'"],
    "wrong-type": [
        "4:23: campaign.to[1]: wrong type (expected a string, seen 42)",
        "5:19: campaign.per_connection: wrong type (expected an integer, seen 'many')",
        "7:17: expect.nothing_else: wrong type (expected true or false, seen 'maybe')",
    ],
    "unknown-key": [
        "3:3: clevertap.fromat: unknown key 'fromat'; did you mean 'format'?",
        "6:5: mx[\"example.com\"].sever_down: unknown key 'sever_down'; did you mean "
        "'server_down'?",
    ],
    "bad-duration": [
        "6:11: expect.within: not a duration (expected a number of seconds or a string like "
        '"200ms", "2s", "1.5m", "1h", seen \'30 seconds\')'
    ],
    "unknown-mode": [
        '4:20: mx["example.com"]["a@example.com"]: unknown failure mode; did you mean '
        "'mailbox_full' or 'mailbox_full_permanent'? (expected a catalog mode (see `harness "
        "catalog`) or a reply like '550 5.1.1 text', seen 'mailbox_ful')",
        '5:31: mx["example.com"]["b@example.com"][1]: unknown failure mode; did you mean '
        "'accept'? (expected a catalog mode (see `harness catalog`) or a reply like "
        "'550 5.1.1 text', seen 'acept')",
        '6:63: mx["example.com"]["c@example.com"].dsn: unknown DSN dialect (expected one of '
        "generic, postfix, exim, sendmail, qmail, exim_legacy, gmail, office365, exchange, "
        "yahoo, amazon_ses, opensmtpd, seen 'courier')",
        "7:28: mx[\"down.test\"].server_down: unknown server-down mode 'tarpitt'; did you mean "
        "'tarpit'? (expected one of refused, greeting_421, tarpit, drop_mid_data, "
        "drop_after_dot, slow, tls_broken)",
    ],
    "v2-event-in-legacy": [
        "7:15: expect.callbacks[0].event: 'soft_bounce' is not a legacy event (clevertap.format "
        "is legacy) (expected one of softbounce, hardbounce, unsubscribe, seen 'soft_bounce')"
    ],
    "outside-campaign": [
        "6:17: unsubscribe[0].recipient: raeder@example.com is not a campaign recipient; did you "
        "mean 'reader@example.com'?",
        "9:30: expect.callbacks[0].e: someone@else.test is not a campaign recipient",
    ],
}


def test_every_fixture_has_its_expected_lines() -> None:
    assert sorted(EXPECTED) == sorted(p.stem for p in DATA.glob("*.yaml"))


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_bad_scenario_gives_exact_lines(stem: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(F + stem + ".yaml")
    assert info.value.problems == [f"{F}{stem}.yaml:{line}" for line in EXPECTED[stem]]
    assert str(info.value) == "\n".join(info.value.problems)


def test_scenario_error_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        load_scenario(DATA / "wrong-type.yaml")


def test_missing_file() -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(F + "nope.yaml")
    assert info.value.problems == [f"{F}nope.yaml: no such scenario file"]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.problems == [f"{path}: not UTF-8 text (invalid continuation byte at byte 9)"]


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# only a comment\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.problems == [
        f"{path}:1:1: (top): not a scenario (expected a mapping of keys, seen an empty file)"
    ]


def test_directory_without_scenarios(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a scenario")
    with pytest.raises(ScenarioError) as info:
        load_scenarios([tmp_path])
    assert info.value.problems == [
        f"{tmp_path}: no scenario files (*.yaml, *.yml) in this directory"
    ]


def test_load_scenarios_reports_every_file_at_once(tmp_path: Path) -> None:
    good = "campaign: {from: a@brand.test, to: [x@example.com]}\n"
    (tmp_path / "a.yaml").write_text(good)
    (tmp_path / "b.yml").write_text("campaign: {from: a@brand.test, to: []}\n")
    (tmp_path / "c.yaml").write_text("name: a\n" + good)
    with pytest.raises(ScenarioError) as info:
        load_scenarios([tmp_path])
    assert info.value.problems == [
        f"{tmp_path / 'b.yml'}:1:36: campaign.to: no recipients (expected at least one "
        "address, seen [])",
        f"{tmp_path / 'c.yaml'}:1:1: name: scenario name 'a' is also used by {tmp_path / 'a.yaml'}",
    ]


def test_name_defaults_to_file_stem_and_source_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "my-test.yaml"
    path.write_text("campaign: {from: a@brand.test, to: [x@example.com]}\n")
    scenario = load_scenario(path)
    assert scenario.name == "my-test"
    assert scenario.source == path.resolve()
    assert scenario.base_dir == tmp_path.resolve()


def test_durations_in_every_spelling() -> None:
    text = """
campaign: {from: a@brand.test, to: [x@example.com]}
unsubscribe:
  - {recipient: x@example.com, after: 500ms}
integration: {command: "python gw.py --fast", ready_timeout: 2m}
expect:
  within: 1.5
  callbacks: [{event: unsubscribe, e: x@example.com, ts: {within: 1h}}]
"""
    scenario = parse_scenario(text)
    assert scenario.unsubscribe[0].after == 0.5
    assert scenario.integration is not None
    assert scenario.integration.ready_timeout == 120.0
    assert scenario.integration.command == ["python", "gw.py", "--fast"]
    assert scenario.expect.within == 1.5
    assert scenario.expect.callbacks[0].ts is not None
    assert scenario.expect.callbacks[0].ts.within == 3600.0


def test_problems_inside_a_generator_point_at_the_range() -> None:
    text = """campaign:
  from: a@brand.test
  to:
    count: 10
    pattern: "u{n}@example.com"
    behaviours:
      1-3: mailbox_full
      3-4: invalid_adress
      12: greylist
"""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="gen.yaml")
    assert info.value.problems == [
        'gen.yaml:8:7: campaign.to.behaviours["3-4"]: recipient 3 already has a behaviour '
        "(from '1-3')",
        'gen.yaml:8:12: campaign.to.behaviours["3-4"]: unknown failure mode; did you mean '
        "'invalid_address'? (expected a catalog mode (see `harness catalog`) or a reply like "
        "'550 5.1.1 text', seen 'invalid_adress')",
        'gen.yaml:9:7: campaign.to.behaviours["12"]: bad recipient range (expected "n" or '
        "\"a-b\" with 1 <= a <= b <= 10, seen '12')",
    ]


def test_generator_behaviours_become_host_rules() -> None:
    scenario = parse_scenario(
        """campaign:
  from: a@brand.test
  to:
    count: 4
    pattern: "u{n}@example.com"
    behaviours: {2-3: mailbox_full, 4: [greylist, accept]}
"""
    )
    assert isinstance(scenario.campaign.to, RecipientGenerator)
    assert scenario.recipients == [f"u{n}@example.com" for n in range(1, 5)]
    (plan,) = scenario.hosts()
    assert plan.role == "mx"
    assert plan.domains == ["example.com"]
    assert plan.rules == {
        "u2@example.com": "mailbox_full",
        "u3@example.com": "mailbox_full",
        "u4@example.com": ["greylist", "accept"],
    }
    rules = plan.parsed_rules()
    outcome = rules.decide("a@brand.test", "u3@example.com", now=0.0)
    assert (outcome.reply.code, outcome.reply.enhanced) == (452, "4.2.2")
    assert rules.decide("a@brand.test", "u1@example.com", now=0.0).reply.code == 250


def test_relay_takes_the_assignments_and_no_implicit_mx() -> None:
    scenario = parse_scenario(
        """relay:
  tls: starttls
  auth: {username: u, password: p}
  "*@yahoo.test": throttle
campaign:
  from: a@brand.test
  to: {count: 2, pattern: "u{n}@example.com", behaviours: {1: invalid_address}}
"""
    )
    (plan,) = scenario.hosts()
    assert plan.role == "relay"
    assert plan.rules == {"*@yahoo.test": "throttle", "u1@example.com": "invalid_address"}
    assert plan.host.tls == "starttls"


def test_dsn_defaults_fill_accept_then_bounce_rules() -> None:
    scenario = parse_scenario(
        """dsn: {dialect: exim, delay: 3s}
mx:
  example.com:
    a@example.com: {accept_then_bounce: invalid_address}
    b@example.com: {accept_then_bounce: mailbox_full_permanent, dsn: postfix, after: 1s}
campaign: {from: s@brand.test, to: [a@example.com, b@example.com]}
"""
    )
    (plan,) = scenario.hosts()
    assert plan.rules == {
        "a@example.com": {"accept_then_bounce": "invalid_address", "dsn": "exim", "after": 3.0},
        "b@example.com": {
            "accept_then_bounce": "mailbox_full_permanent",
            "dsn": "postfix",
            "after": "1s",
        },
    }


def test_clevertap_settings_become_server_settings() -> None:
    scenario = parse_scenario(
        """clevertap:
  strictness: lenient
  endpoints: {bounce: /b}
  faults:
    - {status: 503, first: 3}
    - {close: true, first: 1, endpoints: [v2]}
    - {delay: 200ms}
campaign: {from: s@brand.test, to: [a@example.com]}
"""
    )
    settings = scenario.clevertap.server_settings()
    assert settings.strict is False
    assert settings.bounce_path == "/b"
    assert [rule.describe() for rule in settings.faults] == [
        "503,first=3",
        "close,first=1,endpoints=v2",
        "delay=0.2",
    ]


def test_fault_problems() -> None:
    text = """clevertap:
  faults:
    - {status: 503, close: true}
    - {first: 2}
    - {status: 200}
campaign: {from: s@brand.test, to: [a@example.com]}
"""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="f.yaml")
    assert info.value.problems == [
        "f.yaml:3:28: clevertap.faults[0].close: one action per fault (expected one of status, "
        "close, reset, seen status and close)",
        "f.yaml:4:7: clevertap.faults[1]: a fault that does nothing (expected status, close, "
        "reset or delay, seen none of them)",
        "f.yaml:5:16: clevertap.faults[2].status: out of range (expected >= 400, seen 200)",
    ]


def test_integration_command_or_addresses() -> None:
    text = """integration:
  command: [python, gw.py]
  addresses: {smtp: "127.0.0.1:2525"}
campaign: {from: s@brand.test, to: [a@example.com]}
"""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="i.yaml")
    assert info.value.problems == [
        "i.yaml:2:3: integration: give command or addresses (expected at most one, seen both)"
    ]


def test_unsubscribe_expected_without_a_click() -> None:
    text = """campaign: {from: s@brand.test, to: [a@example.com]}
expect:
  callbacks: [{event: unsubscribe, e: a@example.com}]
"""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="u.yaml")
    assert info.value.problems == [
        "u.yaml:3:39: expect.callbacks[0].e: an unsubscribe is expected for a@example.com but "
        "nobody clicks for it (expected an unsubscribe: entry for this recipient)"
    ]


def test_rules_on_a_host_that_is_down() -> None:
    text = """mx:
  down.test:
    server_down: refused
    a@down.test: mailbox_full
campaign: {from: s@brand.test, to: [a@down.test]}
"""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="d.yaml")
    assert info.value.problems == [
        'd.yaml:4:5: mx["down.test"]["a@down.test"]: rules on a host that is down (refused) '
        "never apply (expected no rules, or server_down: slow)"
    ]


def test_meta_placeholder_did_you_mean() -> None:
    text = """campaign: {from: s@brand.test, to: [a@example.com], meta: "{email}|{ts}"}\n"""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="m.yaml")
    assert info.value.problems == [
        "m.yaml:1:59: campaign.meta: unknown placeholder {email} (expected one of {e}, {n}, "
        "{campaign}, {ts})"
    ]


def test_literal_did_you_mean() -> None:
    text = """clevertap: {format: legasy}\ncampaign: {from: s@brand.test, to: [a@example.com]}\n"""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="l.yaml")
    assert info.value.problems == [
        "l.yaml:1:21: clevertap.format: unknown value 'legasy'; did you mean 'legacy'?"
    ]


def test_model_used_directly_raises_pydantic_error_with_all_problems() -> None:
    with pytest.raises(ValueError, match="not a legacy event"):
        Scenario.model_validate(
            {
                "name": "x",
                "campaign": {"from": "s@brand.test", "to": ["a@example.com"]},
                "expect": {"callbacks": [{"event": "delivered", "e": "a@example.com"}]},
            }
        )


# -- one address policy: the loader accepts what the callback checks accept, and only that -------

POLICY_SAMPLES = [
    "a@example.com",
    '"a b"@example.com',  # quoted local part
    "用户@example.com",  # SMTPUTF8
    "info@bücher.de",  # IDN domain
    "user+tag@brand.test",
    "a..b@example.com",  # refused by both
    "x@localhost",  # special-use name: refused by both
    "no-at-sign.example.com",
    "a@b",  # no dot in the domain
]


@pytest.mark.parametrize("address", POLICY_SAMPLES)
def test_loader_and_checks_agree_on_addresses(address: str) -> None:
    from harness.addresses import address_problem

    quoted = address.replace('"', '\\"')
    text = f'campaign: {{from: a@brand.test, to: ["{quoted}"]}}\n'
    if address_problem(address) is None:
        parse_scenario(text)
    else:
        with pytest.raises(ScenarioError, match=r"campaign\.to\[0\]: not an email address:"):
            parse_scenario(text)


def test_an_idn_domain_key_and_a_quoted_local_part_load() -> None:
    text = """
mx:
  bücher.de:
    '"a b"@bücher.de': mailbox_full
campaign: {from: news@brand.test, to: ['"a b"@bücher.de']}
expect:
  callbacks: [{event: softbounce, e: '"a b"@bücher.de'}]
"""
    scenario = parse_scenario(text)
    assert list(scenario.mx) == ["bücher.de"]
    assert scenario.expect.callbacks[0].e == '"a b"@bücher.de'


@pytest.mark.parametrize("domain", ["localhost", "exa mple.com", "a@b.com", "-x.com"])
def test_a_domain_key_the_checks_refuse_is_refused(domain: str) -> None:
    with pytest.raises(ScenarioError, match="not a domain name"):
        parse_scenario(f"mx:\n  '{domain}': {{}}\n")

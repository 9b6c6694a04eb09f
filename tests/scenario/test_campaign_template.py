"""The campaign's bytes template writes exactly what build_message() writes.

Generated campaigns (subjects, bodies and extra headers in ASCII and not, meta templates with
spaces, parentheses, encoded-word look-alikes and lengths near the line limit, recipients plain,
odd and non-ASCII) are rendered both ways, byte for byte.
"""

from __future__ import annotations

import random

from harness.scenario.campaign import MessageTemplate, _policy, build_message
from harness.scenario.loader import parse_scenario
from harness.scenario.model import Campaign

SEED = 20261129

_SUBJECTS = ["Hello", "Caf\u00e9 news", "a" * 120, "tab\there", "=?utf-8?q?x?=", "(paren)"]
_TEXTS = ["Hi.\n\nUnsubscribe: *|UNSUBSCRIBE|*\n", "Gr\u00fc\u00dfe\n", ".starts with a dot\n"]
_METAS = [
    "{e}|{campaign}|{ts}|{n}|0|wzrk_default|",
    "{e} {n}",
    "{e}  two spaces",
    " leading {n}",
    "=?utf-8?q?{n}?=",
    "(comment) {e}",
    '"quoted" {e}',
    "x" * 960 + "{n}",
    "x" * 990 + "{n}",
    "caf\u00e9 {n}",
]
_RECIPIENTS = [
    "user{n}@example.com",
    "first.last+tag{n}@sub.example.com",
    "o'brien{n}@example.com",
    "us\u00e9r{n}@example.com",
    "user{n}@b\u00fccher.example",
]
_HEADERS = [
    {},
    {"List-Unsubscribe": "<https://u.test/x>, <mailto:u@sut.test>"},
    {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "X-Tag": "caf\u00e9"},
]


def _campaign(rnd: random.Random) -> Campaign:
    sender = rnd.choice(["news@brand.test", "n\u00e9ws@brand.test"])
    scenario = parse_scenario(
        "campaign: {from: 'x@brand.test', to: [a@example.com]}\n", source="t.yaml"
    )
    return scenario.campaign.model_copy(
        update={
            "sender": sender,
            "subject": rnd.choice(_SUBJECTS),
            "text": rnd.choice(_TEXTS),
            "meta": rnd.choice(_METAS),
            "campaign_id": rnd.choice(["harness", "c-42", "camp_1.b"]),
            "headers": rnd.choice(_HEADERS),
        }
    )


def test_template_bytes_are_build_message_bytes() -> None:
    rnd = random.Random(SEED)
    fast = 0
    for _ in range(300):
        campaign = _campaign(rnd)
        template = MessageTemplate(campaign)
        for _ in range(4):
            n = rnd.randint(1, 100_000)
            recipient = rnd.choice(_RECIPIENTS).format(n=n)
            ts = rnd.randint(0, 2_000_000_000)
            token = f"{rnd.getrandbits(32):08x}{n:x}"
            expected = build_message(campaign, recipient, n, ts, token)
            raw, message_id, meta = template.render(recipient, n, ts, token)
            assert raw == expected.as_bytes(policy=_policy(campaign.sender, recipient))
            assert message_id == str(expected["Message-ID"])
            assert meta == str(expected["X-CleverTap_META"])
            fast += template._parts is not None
    # Most of the cases took the template (not build_message() again).
    assert fast > 400

"""The example's VERP return path: every recipient it can relay to gets a return address a
client library sends and a mail server takes, and a DSN to it leads back to that recipient.

End to end (relay, DSN, callback) it is scenarios/quoted-local-part.yaml and smtputf8.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from aiosmtplib.email import quote_address

# The gateway runs as a script: its modules import each other by bare name.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "integration"))

from core import decode_verp, encode_verp, mailbox_key


@pytest.mark.parametrize(
    ("recipient", "verp"),
    [
        ("user@example.com", "bounces+user=example.com@sut.test"),
        ("a+b=c@example.com", "bounces+a+b=c=example.com@sut.test"),
        ("jürgen@bücher.example", "bounces+jürgen=bücher.example@sut.test"),
        ('"john doe"@example.com', '"bounces+john doe=example.com"@sut.test'),
        ('"a\\"b"@example.com', '"bounces+a\\"b=example.com"@sut.test'),
        ('"x@y"@example.com', '"bounces+x@y=example.com"@sut.test'),
    ],
)
def test_the_return_path_is_an_address_and_leads_back(recipient: str, verp: str) -> None:
    assert encode_verp(recipient, "sut.test") == verp
    # What aiosmtplib would put in MAIL FROM (it raises ValueError for a quote in mid local
    # part, as the example once sent for "john doe"@example.com).
    assert quote_address(verp) == f"<{verp}>"
    assert decode_verp(verp) == recipient


def test_a_dsn_may_name_the_mailbox_in_another_spelling() -> None:
    # Quoting a local part that needs none, and case, do not make another mailbox.
    assert mailbox_key('"jane.doe"@Example.COM') == mailbox_key("jane.doe@example.com")
    assert mailbox_key('"john doe"@example.com') != mailbox_key("johndoe@example.com")
    assert decode_verp('"bounces+jane.doe=example.com"@sut.test') == "jane.doe@example.com"


@pytest.mark.parametrize(
    "address", ["user@example.com", "bounces@sut.test", "bounces+@sut.test", "bounces+x@sut.test"]
)
def test_what_is_not_a_verp_address_decodes_to_none(address: str) -> None:
    assert decode_verp(address) is None

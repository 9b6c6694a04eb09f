"""AUTH credentials never reach the journal: any mechanism, whitespace, initial response or not."""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable

import pytest

from harness.smtp.world import MailWorld
from tests.smtp.journal_reads import session_texts

USER, PASSWORD = "alice", "s3cr3t-Pa55"
WRONG = "wr0ng-Pa55"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _plain(password: str) -> str:
    return _b64(f"\0{USER}\0{password}")


# name -> lines after EHLO (each answered before the next is sent)
DIALOGUES = {
    "plain_space": [f"AUTH PLAIN {_plain(PASSWORD)}"],
    "plain_tab": [f"AUTH PLAIN\t{_plain(PASSWORD)}"],
    "plain_two_spaces": [f"AUTH PLAIN  {_plain(PASSWORD)}"],
    "plain_lower_case": [f"auth plain {_plain(PASSWORD)}"],
    "plain_continuation": ["AUTH PLAIN", _plain(PASSWORD)],
    "login_initial_response": [f"AUTH LOGIN {_b64(USER)}", _b64(PASSWORD)],
    "login_tab": [f"AUTH LOGIN\t{_b64(USER)}", _b64(PASSWORD)],
    "login_continuation": ["AUTH LOGIN", _b64(USER), _b64(PASSWORD)],
    "plain_wrong_password": [f"AUTH PLAIN\t{_plain(WRONG)}"],
    "login_wrong_password": ["AUTH LOGIN", _b64(USER), _b64(WRONG)],
    "plain_cancelled": ["AUTH PLAIN", "*"],
}


def _talk(port: int, lines: list[str]) -> list[str]:
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stream = sock.makefile("rwb")

        def reply() -> str:
            text = []
            while True:
                line = stream.readline().decode()
                text.append(line.rstrip())
                if len(line) < 4 or line[3] != "-":
                    return "\n".join(text)

        reply()
        for line in ["EHLO client.test", *lines, "QUIT"]:
            stream.write(line.encode() + b"\r\n")
            stream.flush()
            replies.append(reply())
    return replies


@pytest.mark.parametrize("name", DIALOGUES)
def test_credentials_never_reach_the_journal(mx: Callable[..., MailWorld], name: str) -> None:
    world = mx(auth={USER: PASSWORD})
    lines = DIALOGUES[name]
    replies = _talk(world.host("mx1").port, lines)
    ok = "wrong" not in name and "cancelled" not in name
    assert replies[len(lines)].startswith("235" if ok else "5"), replies
    world.stop_sync()
    journal = "\n".join(session_texts(world.journal))
    secrets = {PASSWORD, WRONG, _plain(PASSWORD), _plain(WRONG), _b64(PASSWORD), _b64(WRONG)}
    leaked = sorted(s for s in secrets if s in journal)
    assert leaked == [], journal
    assert "AUTH" in journal  # the command itself is recorded, its payload masked

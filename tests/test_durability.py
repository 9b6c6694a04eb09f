"""A file journal under ``kill -9``: nothing answered is lost, no id is ever given twice.

``harness serve SCENARIO --journal FILE`` runs as a real subprocess; a real SMTP client sends
sessions at its fake MX (one recipient refused with 550, one accepted per message) and records
every reply it got. The server is killed with SIGKILL in the middle of the stream, the file is
reopened, and every answered decision must be in it. A second server on the same file then gives
new session ids, queue ids and seq numbers only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.journal import Kind, SQLiteJournal
from harness.records import SmtpMessage, SmtpOpen, SmtpReply

pytestmark = pytest.mark.slow

SCENARIO = """\
name: durability
mx:
  example.com:
    "bad*@example.com": invalid_address
campaign:
  from: news@brand.test
  to: [ok@example.com]
expect:
  within: 1s
"""
MX_LINE = re.compile(r"^\s+127\.0\.0\.1:(\d+)\s+example\.com")


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int
    drain: threading.Thread


def _harness() -> list[str]:
    found = shutil.which("harness", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "harness.cli"]


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "durability.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    return path


def start(scenario: Path, journal: Path) -> Server:
    process = subprocess.Popen(
        [*_harness(), "serve", str(scenario), "--journal", str(journal)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    port = None
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = MX_LINE.match(line)
        if match:
            port = int(match.group(1))
        if line.startswith("Ctrl-C to stop"):
            break
    if port is None:
        process.kill()
        raise AssertionError("harness serve did not start:\n" + "".join(lines))
    # Keep draining its output so that it never blocks on a full pipe.
    drain = threading.Thread(target=process.stdout.read, daemon=True)
    drain.start()
    return Server(process, port, drain)


@dataclass
class Answers:
    refused: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def send(port: int, answers: Answers, offset: int) -> None:
    """Sessions until the server dies: each refuses one recipient and queues one message."""
    n = offset
    while not answers.stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
                client.ehlo("relay.test")
                for _ in range(5):
                    n += 1
                    client.mail("news@brand.test")
                    bad = f"bad{n}@example.com"
                    code, _ = client.rcpt(bad)
                    if code == 550:
                        answers.refused.append(bad)
                    assert client.rcpt(f"ok{n}@example.com")[0] == 250
                    code, text = client.data(b"Subject: hi\r\n\r\nhello\r\n")
                    if code == 250:
                        answers.queued.append(text.decode().rsplit(" ", 1)[-1])
        except (OSError, smtplib.SMTPException):
            return


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
        server.process.wait(10)
        server.drain.join(10)
        if server.process.stdout is not None:
            server.process.stdout.close()


def test_kill_9_loses_no_answered_decision_and_ids_are_never_reused(
    scenario: Path, tmp_path: Path, servers: list[Server]
) -> None:
    journal_path = tmp_path / "journal.sqlite"
    first = start(scenario, journal_path)
    servers.append(first)
    answers = Answers()
    sender = threading.Thread(target=send, args=(first.port, answers, 0))
    sender.start()
    deadline = time.monotonic() + 30
    while len(answers.queued) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(10)
    answers.stop.set()
    sender.join(30)
    assert len(answers.refused) >= 200

    with SQLiteJournal(journal_path) as journal:
        replies = [e.data for e in journal.entries(Kind.SMTP_REPLY)]
        refused = {r.recipient for r in replies if isinstance(r, SmtpReply) and r.code == 550}
        queued = {
            e.data.id for e in journal.entries(Kind.SMTP_MESSAGE) if isinstance(e.data, SmtpMessage)
        }
        sessions = {
            e.data.session for e in journal.entries(Kind.SMTP_OPEN) if isinstance(e.data, SmtpOpen)
        }
        last_seq = journal.last_seq
    # Every rejection the client read and every queue id it was given is in the file.
    assert set(answers.refused) <= refused, sorted(set(answers.refused) - refused)[:5]
    assert set(answers.queued) <= queued, sorted(set(answers.queued) - queued)[:5]

    second = start(scenario, journal_path)
    servers.append(second)
    again = Answers()
    send_thread = threading.Thread(target=send, args=(second.port, again, 100_000))
    send_thread.start()
    deadline = time.monotonic() + 30
    while len(again.queued) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    again.stop.set()
    send_thread.join(30)
    second.process.send_signal(signal.SIGTERM)
    second.process.wait(30)

    with SQLiteJournal(journal_path) as journal:
        new = journal.entries(since=last_seq)
        assert new, "the second server journaled nothing"
        new_queued = [e.data.id for e in new if isinstance(e.data, SmtpMessage)]
        new_sessions = [e.data.session for e in new if isinstance(e.data, SmtpOpen)]
    assert set(again.queued) <= set(new_queued)
    assert not set(new_queued) & queued, "a queue id was given twice"
    assert not set(new_sessions) & sessions, "a session id was given twice"
    assert min(e.seq for e in new) > last_seq


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty (0 bytes)"),
        (b"not a database\n" * 100, "cannot be used as a journal: file is not a database"),
    ],
    ids=["empty", "not-sqlite"],
)
@pytest.mark.parametrize("with_scenario", [False, True], ids=["clevertap", "scenario"])
def test_serve_refuses_a_file_that_cannot_be_a_journal(
    tmp_path: Path, scenario: Path, content: bytes, message: str, with_scenario: bool
) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_bytes(content)
    args = ["serve", *([str(scenario)] if with_scenario else []), "--journal", str(path)]
    run = subprocess.run(
        [*_harness(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert str(path) in run.stderr
    assert "Traceback" not in run.stderr
    assert path.read_bytes() == content  # left as it was

"""docs/mail-world.md's worked example, run as written: ``harness serve SCENARIO
--postfix-transport FILE``, then Postfix pointed at FILE with the printed line, then mail.

The commands are read from the page (the block after ``<!-- realmta: worked example -->`` and
the ``postconf``/``postfix`` lines after it); only the file's path is moved into a temporary
directory and ``-c DIR`` added for the private instance, as the page says.
"""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import smtplib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realmta.postfix import PrivatePostfix, postfix_missing, wait_until

pytestmark = [
    pytest.mark.realmta,
    pytest.mark.skipif(postfix_missing() is not None, reason=str(postfix_missing())),
    pytest.mark.timeout(120),
]

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = "/tmp/harness-transport"


def _example() -> tuple[list[str], list[str], list[list[str]]]:
    """(serve argv, printed lines, Postfix commands) from the page."""
    doc = (ROOT / "docs" / "mail-world.md").read_text()
    rest = doc.partition("<!-- realmta: worked example -->")[2]
    blocks = re.findall(r"```(\w+)\n(.*?)```", rest, re.DOTALL)
    serve = shlex.split(blocks[0][1].strip())
    printed = blocks[1][1].strip().splitlines()
    commands = [shlex.split(line) for line in blocks[2][1].strip().splitlines()]
    return serve, printed, commands


class Serve:
    """``harness serve`` as a subprocess, its output collected line by line."""

    def __init__(self, argv: list[str]) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=20)
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


@pytest.fixture
def postfix() -> Iterator[PrivatePostfix]:
    # Not started yet: the example starts harness serve first. Its directory is readable by the
    # `postfix` user (pytest's tmp_path is not), so the transport map goes there too.
    instance = PrivatePostfix("")
    yield instance
    instance.stop()
    instance.cleanup()


@pytest.fixture
def serve(postfix: PrivatePostfix) -> Iterator[Serve]:
    argv, _, _ = _example()
    assert argv[:2] == ["harness", "serve"]
    assert DOC_PATH in argv
    argv = [sys.executable, "-m", "harness", *argv[1:]]
    argv[argv.index(DOC_PATH)] = str(postfix.root / "harness-transport")
    process = Serve(argv)
    yield process
    if process.process.poll() is None:
        assert process.stop() == 0, process.lines


def test_the_worked_example_routes_a_real_postfix(postfix: PrivatePostfix, serve: Serve) -> None:
    process = serve
    transport = postfix.root / "harness-transport"
    _, printed, commands = _example()
    expected = [line.replace(DOC_PATH, str(transport)) for line in printed]
    wait_until(
        f"harness serve to print {expected}",
        lambda: True if all(line in process.lines for line in expected) else None,
        timeout=30,
    )
    assert "example.com smtp:[127.0.0.1]:" in transport.read_text()

    postfix.start()
    for command in commands:
        command = [part.replace(DOC_PATH, str(transport)) for part in command]
        program = shutil.which(command[0]) or f"/usr/sbin/{command[0]}"
        result = subprocess.run(
            [program, "-c", str(postfix.config), *command[1:]],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, (command, result.stdout, result.stderr)
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
        for rcpt in ("full@example.com", "ok@example.com"):
            client.sendmail("news@brand.test", [rcpt], f"Subject: to {rcpt}\r\n\r\nhi\r\n")

    def logged(rcpt: str, status: str) -> bool | None:
        found = [d for d in postfix.deliveries() if d.recipient == rcpt]
        return True if any(d.status == status for d in found) else None

    wait_until("full@example.com deferred", lambda: logged("full@example.com", "deferred"), 30)
    wait_until("ok@example.com sent", lambda: logged("ok@example.com", "sent"), 30)
    full = next(d for d in postfix.deliveries() if d.recipient == "full@example.com")
    assert full.dsn == "4.2.2"
    assert "said: 452 4.2.2" in full.text
    assert list(postfix.errors()) == []
    assert process.stop() == 0, process.lines

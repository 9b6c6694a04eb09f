"""One scenario's MX hosts split across two ``harness serve`` processes on one PostgreSQL
journal, judged by ``harness judge`` reading the shared journal."""

from __future__ import annotations

import json
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.journal import open_journal

pytestmark = pytest.mark.postgres

SCENARIO = """\
name: split-hosts
mx:
  a.test:
    nobody@a.test: invalid_address
  b.test:
    gone@b.test: invalid_address
campaign:
  from: news@brand.test
  to: [nobody@a.test, gone@b.test]
expect:
  within: 20s
  callbacks:
    - {event: hardbounce, e: nobody@a.test}
    - {event: hardbounce, e: gone@b.test}
  nothing_else: true
"""


@contextmanager
def staging(scenario: Path, url: str, hosts: str) -> Iterator[list[str]]:
    """``harness serve SCENARIO --hosts HOSTS --journal URL``; yields its banner lines."""
    command = [sys.executable, "-m", "harness", "serve", str(scenario)]
    command += ["--hosts", hosts, "--journal", url]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C to stop"):
                break
        try:
            yield lines
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=20)
    assert process.returncode == 0, lines


def exports(lines: list[str]) -> dict[str, str]:
    return dict(
        line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export ")
    )


def rcpt(mx: str, address: str) -> int:
    host, port = mx.rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=10) as client:
        client.ehlo("sut.test")
        client.mail("bounces@sut.test")
        code, _ = client.rcpt(address)
    return code


def bounce(url: str, address: str) -> None:
    body = [{"event": "hardbounce", "data": [{"e": address, "ts": int(time.time())}]}]
    assert httpx.post(url, json=body).status_code == 200


def test_hosts_split_across_processes_are_judged_as_one_world(pg_url: str, tmp_path: Path) -> None:
    scenario = tmp_path / "split.yaml"
    scenario.write_text(SCENARIO)
    with staging(scenario, pg_url, "a.test") as one, staging(scenario, pg_url, "b.test") as two:
        map_one = json.loads(exports(one)["HARNESS_MX_MAP"].strip("'"))
        map_two = json.loads(exports(two)["HARNESS_MX_MAP"].strip("'"))
        assert list(map_one) == ["a.test"]  # each process serves its own hosts only
        assert list(map_two) == ["b.test"]
        # The integration's part, played here: one message to each host, each bounce reported
        # to the fake CleverTap of the other process.
        assert rcpt(map_one["a.test"], "nobody@a.test") == 550
        assert rcpt(map_two["b.test"], "gone@b.test") == 550
        bounce(exports(two)["HARNESS_BOUNCE_URL"], "nobody@a.test")
        bounce(exports(one)["HARNESS_BOUNCE_URL"], "gone@b.test")
        judged = CliRunner().invoke(main, ["judge", str(scenario), "--journal", pg_url])
        assert judged.exit_code == 0, judged.output
        assert "1 passed, 0 failed" in judged.output
        # --since: only what came after; here nothing did, so both bounces are missing.
        with open_journal(pg_url) as journal:
            last = journal.last_seq
        later = CliRunner().invoke(
            main, ["judge", str(scenario), "--journal", pg_url, "--since", str(last)]
        )
        assert later.exit_code == 1, later.output
        assert "0 passed, 1 failed" in later.output
        # A bounce for an address no host of either process ever saw: CT501, and a failure.
        bounce(exports(one)["HARNESS_BOUNCE_URL"], "ghost@a.test")
        judged = CliRunner().invoke(main, ["judge", str(scenario), "--journal", pg_url])
    assert judged.exit_code == 1, judged.output
    assert "CT501" in judged.output


def test_hosts_must_name_hosts_of_the_scenario(pg_url: str, tmp_path: Path) -> None:
    scenario = tmp_path / "split.yaml"
    scenario.write_text(SCENARIO)
    result = CliRunner().invoke(
        main, ["serve", str(scenario), "--hosts", "c.test", "--journal", pg_url]
    )
    assert result.exit_code == 2
    assert "no host named 'c.test' in scenario 'split-hosts'; its hosts are a.test, b.test" in (
        result.output
    )


def test_judge_refuses_a_journal_that_is_not_there(tmp_path: Path) -> None:
    scenario = tmp_path / "split.yaml"
    scenario.write_text(SCENARIO)
    result = CliRunner().invoke(
        main, ["judge", str(scenario), "--journal", str(tmp_path / "none.db")]
    )
    assert result.exit_code == 2
    assert "no journal file at" in result.output

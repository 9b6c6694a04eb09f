"""``harness run`` end to end: real fake servers, the example integration as a subprocess, real
SMTP (AUTH, STARTTLS, implicit TLS) and HTTP in between, judged from the journal."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import smtplib
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.journal import Journal, Kind
from harness.records import (
    Callback,
    Click,
    Dsn,
    Record,
    Sent,
    SmtpClose,
    SmtpMessage,
    SmtpReply,
)
from harness.scenario.loader import load_scenario, parse_scenario
from harness.scenario.runner import RunOptions, ScenarioResult, run_scenario

R = TypeVar("R", bound=Record)

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
GATEWAY = ROOT / "examples" / "integration" / "gateway.py"
FAST = '{EXAMPLE_RETRY_DELAYS: "0.2,0.4", EXAMPLE_SMTP_TIMEOUT: "2"}'


def _run_file(path: Path, **options: object) -> ScenarioResult:
    return asyncio.run(run_scenario(load_scenario(path), RunOptions(**options)))  # type: ignore[arg-type]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _records(journal: Journal, kind: Kind, record_type: type[R]) -> list[R]:
    """The records of *kind*, in journal order, checked to be of *record_type*."""
    records: list[R] = []
    for entry in journal.entries(kind):
        assert isinstance(entry.data, record_type), entry
        records.append(entry.data)
    return records


def _events(journal: Journal) -> list[tuple[str, str]]:
    callbacks = _records(journal, Kind.CALLBACK, Callback)
    return [(ev.event, ev.email) for r in callbacks for ev in r.events]


def test_mailbox_full_is_one_soft_bounce_after_the_retries() -> None:
    result = _run_file(SCENARIOS / "mailbox-full.yaml")
    assert (result.error, result.passed) == (None, True)
    journal = result.journal
    sent = _records(journal, Kind.SENT, Sent)
    assert [(s.to, s.ok) for s in sent] == [
        (("full@example.com",), True),
        (("ok@example.com",), True),
    ]
    # Three attempts at the full mailbox (the example's retry schedule), one delivery of ok@:
    # refusals are smtp_reply entries, the delivery is the smtp_message (no 250 reply record).
    replies = _records(journal, Kind.SMTP_REPLY, SmtpReply)
    refused = [(r.recipient, r.stage, r.code) for r in replies if r.code != 250]
    assert refused == [("full@example.com", "rcpt", 452)] * 3
    assert all(r.bounce_class == "soft" for r in replies if r.code == 452)
    messages = _records(journal, Kind.SMTP_MESSAGE, SmtpMessage)
    assert [[r.address for r in m.recipients] for m in messages] == [["ok@example.com"]]
    # Each decision was journaled as it was given, before its session ended; the session that
    # carried the message lists its queue id.
    closed_at: dict[str, int] = {}
    for entry in journal.entries(Kind.SMTP_SESSION):
        assert isinstance(entry.data, SmtpClose)
        closed_at[entry.data.session] = entry.seq
    for entry in journal.entries(Kind.SMTP_REPLY):
        assert isinstance(entry.data, SmtpReply)
        assert entry.seq < closed_at[entry.data.session]
    closes = {c.session: c for c in _records(journal, Kind.SMTP_SESSION, SmtpClose)}
    assert closes[messages[0].session].messages == (messages[0].id,)
    assert _events(journal) == [("softbounce", "full@example.com")]
    assert result.sut_exit == 0


def test_one_click_unsubscribe_uses_the_delivered_list_unsubscribe() -> None:
    result = _run_file(SCENARIOS / "one-click-unsubscribe.yaml")
    assert result.passed
    journal = result.journal
    (click,) = journal.entries(Kind.CLICK)
    assert isinstance(click.data, Click)
    message = next(e for e in journal.entries(Kind.SMTP_MESSAGE) if e.seq == click.data.message_seq)
    assert isinstance(message.data, SmtpMessage)
    assert message.data.recipients[0].address == "reader@example.com"
    assert message.data.list_unsubscribe_post == "List-Unsubscribe=One-Click"
    url = click.data.url
    assert url is not None
    assert message.data.list_unsubscribe is not None
    assert f"<{url}>" in message.data.list_unsubscribe
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/u/[a-z2-7]{24}", url)
    assert (click.data.via, click.data.status, click.data.ok) == ("one_click", 200, True)
    # after: 500ms counts from the moment the message reached the mail server.
    assert click.at - message.at >= 0.5


def test_v2_callbacks_echo_the_submitted_meta() -> None:
    result = _run_file(SCENARIOS / "v2-meta-echo.yaml")
    assert result.passed
    sent = {s.to[0]: s.meta for s in _records(result.journal, Kind.SENT, Sent)}
    meta = sent["ok@example.com"]
    assert meta is not None
    assert meta.startswith("ok@example.com|1568798080|")
    assert meta.endswith("|20241104|0|wzrk_default|1|")
    callbacks = _records(result.journal, Kind.CALLBACK, Callback)
    echoed = {ev.email: ev.meta for r in callbacks for ev in r.events}
    assert echoed == sent


def test_async_bounce_arrives_as_a_dsn_at_the_integrations_intake() -> None:
    result = _run_file(SCENARIOS / "async-bounce-postfix.yaml")
    assert result.passed
    dsns = _records(result.journal, Kind.DSN, Dsn)
    assert result.sut_addresses is not None
    assert result.sut_addresses.bounce is not None
    intake = "{}:{}".format(*result.sut_addresses.bounce)
    # One DSN per message (CleverTap sends one message per recipient), both to the intake.
    assert [(d.ok, d.intake) for d in dsns] == [(True, intake), (True, intake)]
    # Each names the host that bounced and the queue id of the message it reports on.
    accepted = {(m.host, m.id) for m in _records(result.journal, Kind.SMTP_MESSAGE, SmtpMessage)}
    assert len({d.message for d in dsns}) == 2
    assert all((d.host, d.message) in accepted for d in dsns)
    reported = sorted((r.recipient, r.action, r.status) for d in dsns for r in d.recipients)
    assert [(r[0].removeprefix("rfc822;"), r[1]) for r in reported] == [
        ("late@example.com", "failed"),
        ("later@example.com", "failed"),
    ]


def test_get_and_mailto_clicks(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "clicks",
        f"""
name: clicks
campaign: {{from: news@brand.test, to: [g@example.com, m@example.com, x@example.com]}}
unsubscribe:
  - {{recipient: g@example.com, via: get}}
  - {{recipient: m@example.com, via: mailto}}
integration: {{env: {FAST}}}
expect:
  within: 10s
  callbacks:
    - {{event: unsubscribe, e: g@example.com}}
    - {{event: unsubscribe, e: m@example.com}}
  nothing_else: true
""",
    )
    result = _run_file(path)
    assert (result.error, result.passed) == (None, True)
    clicks = {c.via: c for c in _records(result.journal, Kind.CLICK, Click)}
    # The GET shows a confirm page (a GET never unsubscribes); the person submits its form.
    assert [(s.method, s.status) for s in clicks["get"].steps] == [
        ("GET", 200),
        ("POST", 200),
    ]
    assert re.fullmatch(r"mailto:unsubscribe\+[a-z2-7]{24}@sut\.test", clicks["mailto"].url or "")
    assert (clicks["mailto"].ok, clicks["mailto"].status) == (True, 250)


@pytest.mark.parametrize(
    ("tls", "driver_process"), [("starttls", False), ("implicit", False), ("starttls", True)]
)
def test_submission_with_auth_and_tls(tmp_path: Path, tls: str, driver_process: bool) -> None:
    # driver_process: the campaign submitted from a process of its own (large campaigns do),
    # trusting the integration's certificate and logging in as the runner's own driver does.
    path = _write(
        tmp_path,
        tls,
        f"""
name: submission-{tls}
mx: {{example.com: {{nobody@example.com: invalid_address}}}}
campaign: {{from: news@brand.test, to: [nobody@example.com, ok@example.com], per_connection: 2}}
integration:
  auth: {{username: clevertap, password: s3cret}}
  tls: {tls}
  env: {FAST}
expect:
  within: 10s
  callbacks: [{{event: hardbounce, e: nobody@example.com}}]
  nothing_else: true
""",
    )
    result = _run_file(path, driver_process=driver_process)
    assert (result.error, result.passed) == (None, True)
    assert [s.ok for s in _records(result.journal, Kind.SENT, Sent)] == [True, True]


def test_relay_with_auth_and_starttls(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "relay",
        f"""
name: relay
relay:
  tls: starttls
  auth: {{username: gateway, password: secret}}
  "*@yahoo.test": throttle
campaign: {{from: news@brand.test, to: [a@yahoo.test, b@example.com]}}
integration: {{env: {FAST}}}
expect:
  within: 10s
  callbacks: [{{event: softbounce, e: a@yahoo.test}}]
  nothing_else: true
""",
    )
    result = _run_file(path)
    assert (result.error, result.passed) == (None, True)
    sessions = _records(result.journal, Kind.SMTP_SESSION, SmtpClose)
    assert {s.host for s in sessions} == {"relay"}
    assert all(s.auth == "gateway" and s.tls for s in sessions)


# -- the command line ----------------------------------------------------------------------------


def test_cli_reports_and_exit_code(tmp_path: Path) -> None:
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    result = CliRunner().invoke(
        main,
        [
            "run",
            "-q",
            str(SCENARIOS / "greylisting.yaml"),
            str(SCENARIOS / "invalid-address.yaml"),
            "--json",
            str(report),
            "--junit",
            str(junit),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 passed, 0 failed" in result.output
    data = json.loads(report.read_text(encoding="utf-8"))
    assert (data["passed"], data["summary"]) == (True, {"total": 2, "passed": 2, "failed": 0})
    assert [s["scenario"] for s in data["scenarios"]] == ["greylisting", "invalid-address"]
    cases = ET.parse(junit).getroot().findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == ["greylisting", "invalid-address"]


def test_cli_integration_that_dies_fails_with_its_output(tmp_path: Path) -> None:
    code = "import sys; print('boom: no config', file=sys.stderr); sys.exit(3)"
    sut = f'{sys.executable} -c "{code}"'
    report = tmp_path / "r.json"
    result = CliRunner().invoke(
        main,
        ["run", "-q", str(SCENARIOS / "greylisting.yaml"), "--sut", sut, "--json", str(report)],
    )
    assert result.exit_code == 1, result.output
    assert "the integration exited with code 3 before it was ready" in result.stderr
    assert "boom: no config" in result.stderr
    (scenario,) = json.loads(report.read_text(encoding="utf-8"))["scenarios"]
    (failed,) = [e for e in scenario["expectations"] if not e["met"]]
    assert failed["path"] == "integration"
    assert "boom: no config" in failed["reason"]


def test_cli_ready_timeout_shows_the_output(tmp_path: Path) -> None:
    script = tmp_path / "sleepy.py"
    script.write_text("import time\nprint('warming up', flush=True)\ntime.sleep(30)\n")
    path = _write(
        tmp_path,
        "sleepy",
        "name: sleepy\ncampaign: {from: n@brand.test, to: [a@example.com]}\n"
        "integration: {command: python sleepy.py, ready_timeout: 0.5s}\n",
    )
    result = CliRunner().invoke(main, ["run", "-q", str(path)])
    assert result.exit_code == 1, result.output
    assert "the integration was not ready within 0.5 s (its ready file did not answer)" in (
        result.stderr
    )
    assert "warming up" in result.stderr


def test_cli_bad_scenario_is_a_usage_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "bad", "campaign: {from: n@brand.test, to: [a@example.com]}\nexpekt: 1\n"
    )
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 2
    assert f"{path}:2:1: expekt: unknown key 'expekt'; did you mean 'expect'?" in result.output


def test_cli_missing_program_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        main, ["run", str(SCENARIOS / "greylisting.yaml"), "--sut", "no-such-gateway-x --bug x"]
    )
    assert result.exit_code == 2
    assert "--sut: program 'no-such-gateway-x' not found on PATH" in result.output


def test_scenario_model_accepts_env_only_integration() -> None:
    scenario = parse_scenario(
        "campaign: {from: n@brand.test, to: [a@example.com]}\n"
        "integration: {env: {EXAMPLE_RETRY_DELAYS: '0'}}\n",
        source="e.yaml",
    )
    assert scenario.integration is not None
    assert scenario.integration.command is None
    assert scenario.integration.env == {"EXAMPLE_RETRY_DELAYS": "0"}


@pytest.mark.slow
@pytest.mark.timeout(600)  # 18 scenarios, each with its settling quiet period: minutes when shared
def test_every_shipped_scenario_passes_against_the_example() -> None:
    result = CliRunner().invoke(main, ["run", "-q", "-j", "2", str(SCENARIOS)])
    assert result.exit_code == 0, result.output
    count = len(list(SCENARIOS.glob("*.yaml")))
    assert f"{count} passed, 0 failed" in result.output
    assert GATEWAY.is_file()


# -- harness serve SCENARIO ----------------------------------------------------------------------


def test_serve_scenario_prints_every_address_and_keeps_running(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "harness", "serve", str(SCENARIOS / "mailbox-full.yaml")]
    command += ["--intake", "127.0.0.1:9"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C to stop"):
                break
        try:
            exports = dict(
                line.removeprefix("export ").split("=", 1)
                for line in lines
                if line.startswith("export ")
            )
            mx = json.loads(shlex.split(exports["HARNESS_MX_MAP"])[0])["example.com"]
            host, port = mx.rsplit(":", 1)
            assert f"  {mx}  example.com" in lines
            assert "  DSNs go to 127.0.0.1:9" in lines
            with smtplib.SMTP(host, int(port), timeout=5) as client:
                client.ehlo("sut.test")
                client.mail("bounces@sut.test")
                code, _ = client.rcpt("full@example.com")
            assert code == 452  # the scenario's mailbox_full, Gmail flavour
            control = next(line.split()[1] for line in lines if line.startswith("  control"))
            health = httpx.get(control + "/health")
            assert health.status_code == 200
            assert exports["HARNESS_BOUNCE_URL"].endswith("/callbacks/bounce")
        finally:
            process.send_signal(signal.SIGTERM)
            rest = process.communicate(timeout=20)[0]
    assert process.returncode == 0
    assert "stopping" in rest


def test_serve_scenario_refuses_options_the_scenario_owns() -> None:
    result = CliRunner().invoke(
        main, ["serve", str(SCENARIOS / "mailbox-full.yaml"), "--fault", "503,first=1"]
    )
    assert result.exit_code == 2
    assert (
        "--fault cannot be combined with SCENARIO: the scenario's clevertap.faults decides it"
        in (result.output)
    )

"""``harness check``: exact output lines and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from harness.addresses import address_problem
from harness.cli import main

DATA = Path(__file__).parent / "data"
NOW = "1700000000"


def check(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(main, ["check", *args], input=stdin)


def write(tmp_path: Path, payload: object) -> str:
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(payload))
    return str(path)


@pytest.mark.parametrize(
    ("name", "now", "summary"),
    [
        (
            "generic_smtp_bounce.json",
            "1435322805",
            "OK  legacy payload at the bounce endpoint (guessed): 3 events, no violations",
        ),
        (
            "generic_smtp_unsubscribe.json",
            "1504632929",
            "OK  legacy payload at the unsubscribe endpoint (guessed): 1 event, no violations",
        ),
        (
            "generic_smtp_v2.json",
            NOW,
            "OK  v2 payload at the v2 endpoint (guessed): 2 events, no violations",
        ),
    ],
)
def test_clevertap_doc_examples_pass(name: str, now: str, summary: str) -> None:
    result = check("--now", now, str(DATA / name))
    assert (result.exit_code, result.output) == (0, summary + "\n")


def test_doc_example_passes_today_with_an_age_warning() -> None:
    # Without --now the 2015 timestamps are years old: tolerated (a warning), so exit 0.
    result = check(str(DATA / "generic_smtp_unsubscribe.json"))
    lines = result.output.splitlines()
    assert result.exit_code == 0
    assert lines[0].startswith("CT305  $[0].data[0].ts  ts is ")
    assert lines[1] == (
        "OK  legacy payload at the unsubscribe endpoint (guessed): 1 event, 0 errors, 1 warning"
    )


def test_errors_exit_1_with_one_line_each(tmp_path: Path) -> None:
    payload = [
        {
            "event": "hardbounce",
            "data": [
                {"e": "a@example.com", "ts": 1700000000000},
                {"e": "a@@example.com", "ts": 1700000000, "reason": "550"},
            ],
        }
    ]
    result = check("--now", NOW, write(tmp_path, payload))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "CT303  $[0].data[0].ts  ts looks like milliseconds: 1700000000000 is 1700000000 s "
        "(2023-11-14T22:13:20Z) (expected epoch seconds, seen 1700000000000)",
        "CT206  $[0].data[1].reason  unexpected key 'reason' (expected e and ts, seen 'reason')",
        # the reason is email-validator's own wording, which may change between its versions
        f"CT301  $[0].data[1].e  not a valid email address: {address_problem('a@@example.com')} "
        '(expected an address, seen "a@@example.com")',
        "FAIL  legacy payload at the bounce endpoint (guessed): 2 events, 2 errors, 1 warning",
    ]


def test_endpoint_option_overrides_the_guess(tmp_path: Path) -> None:
    path = write(tmp_path, [{"event": "unsubscribe", "data": [{"e": "a@x.com", "ts": 1700000000}]}])
    result = check("--now", NOW, "--endpoint", "bounce", path)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "CT203  $[0].event  'unsubscribe' event sent to the bounce callback URL "
        "(expected softbounce or hardbounce, seen 'unsubscribe')",
        "FAIL  legacy payload at the bounce endpoint: 1 event, 1 error, 0 warnings",
    ]


def test_mixed_array_is_guessed_bounce(tmp_path: Path) -> None:
    payload = [
        {"event": "unsubscribe", "data": [{"e": "a@x.com", "ts": 1700000000}]},
        {"event": "hardbounce", "data": [{"e": "b@x.com", "ts": 1700000000}]},
    ]
    result = check("--now", NOW, write(tmp_path, payload))
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "FAIL  legacy payload at the bounce endpoint (guessed): 2 events, 1 error, 0 warnings"
    )


def test_reads_stdin() -> None:
    body = b'[{"event": "hardbounce", "data": [{"e": "a@x.com", "ts": 1700000000}]}]'
    result = check("--now", NOW, "-", stdin=body)
    assert (result.exit_code, result.output) == (
        0,
        "OK  legacy payload at the bounce endpoint (guessed): 1 event, no violations\n",
    )


def test_content_type_option(tmp_path: Path) -> None:
    path = str(DATA / "generic_smtp_v2.json")
    result = check("--now", NOW, "--content-type", "application/json; charset=latin-1", path)
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "CT104  $  Content-Type names a charset other than UTF-8 "
        "(expected no charset or charset=utf-8, seen 'latin-1')",
        "OK  v2 payload at the v2 endpoint (guessed): 2 events, 0 errors, 1 warning",
    ]
    result = check("--now", NOW, "--content-type", "", path)
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (
        "CT103  $  no Content-Type header (expected application/json)"
    )


def test_unreadable_json_body(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(b"[{]")
    result = check(str(path))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "CT101  $  body is not JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 3 (char 2) (expected JSON, seen '[{]')",
        "FAIL  unreadable body at the bounce endpoint (guessed): 0 events, 1 error, 0 warnings",
    ]


def test_json_output(tmp_path: Path) -> None:
    payload = [{"event": "hardbounce", "data": [{"e": "a@x.com", "ts": "1700000000"}]}]
    result = check("--now", NOW, "--json", write(tmp_path, payload))
    assert result.exit_code == 1
    assert json.loads(result.output) == {
        "ok": False,
        "endpoint": "bounce",
        "endpoint_guessed": True,
        "format": "legacy",
        "errors": 1,
        "warnings": 0,
        "events": [
            {
                "event": "hardbounce",
                "email": "a@x.com",
                "ts": None,
                "meta": None,
                "path": "$[0].data[0]",
            }
        ],
        "violations": [
            {
                "code": "CT302",
                "severity": "error",
                "path": "$[0].data[0].ts",
                "message": "ts is a string; send the number unquoted",
                "expected": "an integer (epoch seconds)",
                "seen": '"1700000000"',
            }
        ],
    }


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    result = check(str(missing))
    assert result.exit_code == 2
    assert (
        f"Error: Invalid value for 'FILE': '{missing}': No such file or directory" in result.output
    )
    assert "Traceback" not in result.output


def test_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = check(str(tmp_path))
    assert result.exit_code == 2
    assert f"Error: Invalid value for 'FILE': '{tmp_path}': Is a directory" in result.output


def test_bad_options_are_usage_errors() -> None:
    result = check("--endpoint", "v3", str(DATA / "generic_smtp_v2.json"))
    assert result.exit_code == 2
    assert "Invalid value for '--endpoint': 'v3' is not one of 'bounce', 'unsubscribe', 'v2'." in (
        result.output
    )
    result = check("--now", "yesterday", str(DATA / "generic_smtp_v2.json"))
    assert result.exit_code == 2
    assert "'yesterday' is not a valid float." in result.output


def test_real_entry_point_smoke() -> None:
    command = [sys.executable, "-m", "harness", "check", "--now", "1435322805", "-"]
    body = (DATA / "generic_smtp_bounce.json").read_bytes()
    done = subprocess.run(command, input=body, capture_output=True, timeout=30, check=False)
    assert (done.returncode, done.stdout.decode(), done.stderr) == (
        0,
        "OK  legacy payload at the bounce endpoint (guessed): 3 events, no violations\n",
        b"",
    )

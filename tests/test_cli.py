"""The ``harness`` command line as a whole: a fast, import-free --help, plain-text help, init,
run without SCENARIO, --quiet, and the one duration grammar."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import _COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_command_without_importing_any() -> None:
    probe = (
        "import sys; from click.testing import CliRunner; from harness.cli import main; "
        "out = CliRunner().invoke(main, ['--help']).output; "
        "heavy = [m for m in ('fastapi', 'pydantic', 'rich', 'uvicorn', 'aiosmtpd', "
        "'harness.scenario.cli', 'harness.clevertap.cli') if m in sys.modules]; "
        "print(heavy); print(out)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    heavy, _, help_text = result.stdout.partition("\n")
    assert heavy == "[]"
    for name in _COMMANDS:
        assert f"  {name} " in help_text


@pytest.mark.parametrize("name", sorted(_COMMANDS))
def test_the_summary_in_help_is_the_commands_own_first_sentence(name: str) -> None:
    command = main.get_command(None, name)  # type: ignore[arg-type]
    assert command is not None
    assert command.help is not None
    first_paragraph = " ".join(command.help.split("\n\n")[0].split())
    assert first_paragraph.startswith(_COMMANDS[name][2])


@pytest.mark.parametrize("name", sorted(_COMMANDS))
def test_help_is_plain_text(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0
    for markup in ("``", ":func:", ":class:", ":meth:", ".. "):
        assert markup not in result.output


def test_init_writes_the_starter_suite_and_never_overwrites(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["init", str(tmp_path / "suite")])
    assert result.exit_code == 0, result.output
    suite = tmp_path / "suite"
    shipped = sorted(p.name for p in (ROOT / "scenarios").glob("*.yaml"))
    assert sorted(p.name for p in (suite / "scenarios").iterdir()) == shipped
    assert (suite / "conftest.py").read_text() == (
        ROOT / "examples" / "starter" / "conftest.py"
    ).read_text()
    # The next steps, in the order that works from where init ran: run first, then cd.
    steps = result.output.split("next:\n", 1)[1].splitlines()
    assert steps[0].split("#")[0].split() == ["harness", "run", str(suite / "scenarios")]
    assert steps[1].split("#")[0].split() == ["cd", str(suite), "&&", "pytest"]
    again = runner.invoke(main, ["init", str(suite)])
    assert again.exit_code == 1
    assert "not overwriting what is there: " in again.output


def test_the_starter_suite_passes(tmp_path: Path) -> None:
    assert CliRunner().invoke(main, ["init", str(tmp_path / "suite")]).exit_code == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "CTHARNESS_"))}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
        ],
        cwd=tmp_path / "suite",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_run_without_scenario_runs_the_shipped_ones() -> None:
    # A --sut that does not exist stops the run after loading, before anything starts.
    result = CliRunner().invoke(main, ["run", "--sut", "no-such-program-xyz"])
    assert result.exit_code == 2
    assert "no SCENARIO given: running the shipped scenarios in " in result.stderr
    assert result.stderr.count("program 'no-such-program-xyz' not found on PATH") == len(
        list((ROOT / "scenarios").glob("*.yaml"))
    )


@pytest.mark.slow
def test_quiet_prints_failures_and_the_summary_only(tmp_path: Path) -> None:
    scenarios = [str(ROOT / "scenarios" / "invalid-address.yaml")]
    result = CliRunner().invoke(main, ["run", "--quiet", *scenarios])
    assert result.exit_code == 0, result.output
    assert result.stdout == "1 passed, 0 failed\n"
    broken = (
        f"{sys.executable} {ROOT / 'examples' / 'integration' / 'gateway.py'} --bug swapped_classes"
    )
    result = CliRunner().invoke(main, ["run", "--quiet", "--sut", broken, *scenarios])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("FAIL invalid-address (")
    assert lines[-1] == "0 passed, 1 failed"
    assert not any(line.startswith("PASS") for line in lines)


def test_init_names_the_pytest_extra_where_pytest_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pytest" else real(name, *a)
    )
    result = CliRunner().invoke(main, ["init", str(tmp_path / "suite")])
    assert result.exit_code == 0, result.output
    assert "pip install 'clevertap-harness[pytest]' first" in result.output

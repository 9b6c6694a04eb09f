"""The built wheel works on its own: installed in a fresh venv, outside the repo, it runs a
shipped scenario against the bundled example integration, and ``harness init`` starts a suite
that passes. Slow (it builds a wheel and installs its dependencies), but part of the suite."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def run(
    argv: list[str | Path], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    # A clean environment: nothing may reach the repo or the test venv through it.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env = {k: v for k, v in env.items() if not k.startswith(("HARNESS_", "CTHARNESS_"))}
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"{argv}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the repo with the built wheel (and its pytest extra) installed."""
    where = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "build", "--wheel", "--outdir", where / "dist", ROOT], where)
    [wheel] = (where / "dist").glob("clevertap_harness-*.whl")
    venv.create(where / "venv", with_pip=True)
    bin_dir = where / "venv" / "bin"
    run([bin_dir / "python", "-m", "pip", "install", "-q", f"{wheel}[pytest]"], where, 600)
    return bin_dir


def test_the_wheel_carries_the_example_and_the_scenarios(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import harness, harness.bundled as b; "
        "print(harness.__file__); print(b.bundled(b.EXAMPLE)); "
        "print(len(list(b.bundled(b.SCENARIOS).glob('*.yaml'))))"
    )
    package, example, scenarios = run([installed / "python", "-c", probe], tmp_path).stdout.split()
    venv_dir = str(installed.parent)
    assert package.startswith(venv_dir), "the harness imported is not the installed wheel's"
    assert example.startswith(venv_dir)
    assert example.endswith("_bundled/examples/integration/gateway.py")
    assert int(scenarios) == len(list((ROOT / "scenarios").glob("*.yaml")))


def test_init_then_run_a_scenario_and_the_starter_suite(installed: Path, tmp_path: Path) -> None:
    out = run([installed / "harness", "init", "suite"], tmp_path).stdout
    assert f"wrote {len(list((ROOT / 'scenarios').glob('*.yaml')))} scenarios" in out
    suite = tmp_path / "suite"
    assert sorted(p.name for p in suite.iterdir()) == [
        "conftest.py",
        "scenarios",
        "test_callbacks.py",
    ]

    # The scenario runs against the bundled example: nothing of the repo is on hand here.
    result = run([installed / "harness", "run", "--quiet", "scenarios/mailbox-full.yaml"], suite)
    assert result.stdout.strip().splitlines()[-1] == "1 passed, 0 failed"

    result = run([installed / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider"], suite)
    assert "2 passed" in result.stdout

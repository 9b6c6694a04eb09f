"""What installing clevertap-harness costs a test suite that never uses it, and ``harness --help``.

Run: ``python bench/bench_startup.py [--rounds N] [--venvs DIR]``

Method. Two venvs are made (or reused from ``--venvs DIR``) from the interpreter running this:

- ``bare``: pytest only;
- ``httpx``: pytest and httpx, the peer: httpx brings anyio, whose own pytest plugin loads in
  every run (it resolves its event-loop backends at import, about 70 ms), and every user of
  httpx, starlette or FastAPI has it already;
- ``with``: pytest and this package, installed from the checkout as a user installs it
  (``pip install '.[pytest]'``: the base dependencies and the pytest extra, not editable).
  Its ``-p no:ctharness`` run isolates what the harness's own plugin costs.

A project of 20 trivial tests (no conftest, no ini file) is collected with
``python -m pytest --collect-only -q -p no:cacheprovider`` in each venv, as a subprocess, in
interleaved rounds (bare, with, bare, with, ...), so that load on the shared machine hits both
alike. The figure is the median wall time with min..max, and the difference of the medians is
what the package costs a suite that does not use it. The same rounds time ``harness --help`` in
the ``with`` venv against ``python -c pass`` (the interpreter's own start). CPU time of every
child (user + sys, from ``resource``) is printed beside it: it holds steady when the machine is
busy and wall time does not. The load average is printed first.

Budgets (issue 12): under 50 ms of pytest start-up for an unrelated suite; ``harness --help``
under 150 ms. Bytecode is written (``PYTHONDONTWRITEBYTECODE`` is dropped) and each command runs
once untimed first, as on a user's machine after the first run.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
import venv
from pathlib import Path

import _report as report

ROOT = Path(__file__).resolve().parents[1]
TRIVIAL = "".join(f"def test_{i}():\n    assert {i} == {i}\n\n\n" for i in range(20))


def _env() -> dict[str, str]:
    # Nothing of this checkout or of the caller's venv may leak into the children. Bytecode is
    # written as on a user's machine: with PYTHONDONTWRITEBYTECODE every run compiles every
    # module again (and pytest re-rewrites every plugin module), which is not what users pay.
    dropped = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    return {k: v for k, v in env.items() if not k.startswith(("HARNESS_", "CTHARNESS_"))}


def make_venv(path: Path, *requirements: str) -> Path:
    python = path / "bin" / "python"
    if python.exists():
        return python
    venv.create(path, with_pip=True)
    subprocess.run(
        [python, "-m", "pip", "install", "-q", *requirements], check=True, env=_env(), cwd=path
    )
    return python


def timed(argv: list[str | Path], cwd: Path) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one run of *argv*."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=_env(), check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def summary(label: str, samples: list[tuple[float, float]]) -> tuple[str, float, float]:
    """The row of one command, and its median wall and CPU milliseconds."""
    walls = [w * 1000 for w, _ in samples]
    cpus = [c * 1000 for _, c in samples]
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    line = f"{label:<40} {wall:8.0f} ms  ({min(walls):.0f}..{max(walls):.0f})   cpu {cpu:6.0f} ms"
    return line, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--venvs", type=Path, default=None, help="make or reuse the venvs here")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    print(
        f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}  ({os.cpu_count()} cpus)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        base = args.venvs if args.venvs is not None else Path(tmp) / "venvs"
        bare = make_venv(base / "bare", "pytest>=8.4")
        peer = make_venv(base / "httpx", "pytest>=8.4", "httpx>=0.27")
        with_pkg = make_venv(base / "with", f"{ROOT}[pytest]")
        project = Path(tmp) / "project"
        project.mkdir()
        (project / "test_trivial.py").write_text(TRIVIAL)
        collect = ["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        harness = with_pkg.parent / "harness"
        commands: dict[str, list[str | Path]] = {
            "bare": [bare, *collect],
            "httpx": [peer, *collect],
            "with": [with_pkg, *collect],
            "off": [with_pkg, *collect, "-p", "no:ctharness"],
            "py": [with_pkg, "-c", "pass"],
            "help": [harness, "--help"],
        }
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
        for argv in commands.values():  # bytecode and file cache, untimed
            timed(argv, project)
        for _ in range(args.rounds):
            for name, argv in commands.items():
                runs[name].append(timed(argv, project))

    print(f"{args.rounds} interleaved rounds, median (min..max) wall time, median child CPU")
    rows = {
        "bare": "pytest --collect-only, 20 tests: pytest",
        "httpx": "  pytest + httpx (anyio's plugin)",
        "with": "  pytest + clevertap-harness",
        "off": "  same, -p no:ctharness",
        "py": "python -c pass",
        "help": "harness --help",
    }
    wall, cpu = {}, {}
    for name, label in rows.items():
        line, wall[name], cpu[name] = summary(label, runs[name])
        print(line)

    def diff(a: str, b: str) -> str:
        return f"{wall[a] - wall[b]:6.0f} ms wall, {cpu[a] - cpu[b]:6.0f} ms cpu"

    print("what installing the package costs a suite that does not use it (difference of medians;")
    print("cpu holds steady on a busy machine, wall does not):")
    print(f"  against pytest alone            {diff('with', 'bare')}  (budget 50 ms)")
    print(f"  against pytest + httpx          {diff('with', 'httpx')}  (budget 50 ms)")
    print(f"  the ctharness plugin itself     {diff('with', 'off')}")
    print(f"  anyio's plugin (httpx's)        {diff('httpx', 'bare')}")
    print(
        f"harness --help                    {wall['help']:6.0f} ms wall, {cpu['help']:6.0f} ms cpu"
        "  (budget 150 ms)"
    )
    report.write(
        args.json,
        "startup",
        [
            {
                "command": label.strip(),
                "wall ms": report.spread(w * 1000 for w, _ in runs[name]),
                "cpu ms": cpu[name],
            }
            for name, label in rows.items()
        ],
        costs={"with - bare ms": wall["with"] - wall["bare"], "help ms": wall["help"]},
    )


if __name__ == "__main__":
    main()

"""What installing clevertap-harness costs a test suite that never uses it, and ``harness --help``.

Run: ``python bench/bench_startup.py [--rounds N] [--venvs DIR]``

Method. Two venvs are made (or reused from ``--venvs DIR``) from the interpreter running this:

- ``bare``: pytest only;
- ``with``: pytest and this package, installed from the checkout as a user installs it
  (``pip install '.[pytest]'``: the base dependencies and the pytest extra, not editable).

A project of 20 trivial tests (no conftest, no ini file) is collected with
``python -m pytest --collect-only -q -p no:cacheprovider`` in each venv, as a subprocess, in
interleaved rounds (bare, with, bare, with, ...), so that load on the shared machine hits both
alike. The figure is the median wall time with min..max, and the difference of the medians is
what the package costs a suite that does not use it. The same rounds time ``harness --help`` in
the ``with`` venv against ``python -c pass`` (the interpreter's own start). CPU time of every
child (user + sys, from ``resource``) is printed beside it: it holds steady when the machine is
busy and wall time does not. The load average is printed first.

Budgets (issue 12): under 50 ms of pytest start-up for an unrelated suite; ``harness --help``
under 150 ms.
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

ROOT = Path(__file__).resolve().parents[1]
TRIVIAL = "".join(f"def test_{i}():\n    assert {i} == {i}\n\n\n" for i in range(20))


def _env() -> dict[str, str]:
    # Nothing of this checkout or of the caller's venv may leak into the children.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
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


def summary(label: str, samples: list[tuple[float, float]]) -> tuple[str, float]:
    walls = [w * 1000 for w, _ in samples]
    cpus = [c * 1000 for _, c in samples]
    med = statistics.median(walls)
    line = (
        f"{label:<40} {med:8.0f} ms  ({min(walls):.0f}..{max(walls):.0f})"
        f"   cpu {statistics.median(cpus):6.0f} ms"
    )
    return line, med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--venvs", type=Path, default=None, help="make or reuse the venvs here")
    args = parser.parse_args()
    print(
        f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}  ({os.cpu_count()} cpus)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        base = args.venvs if args.venvs is not None else Path(tmp) / "venvs"
        bare = make_venv(base / "bare", "pytest>=8.4")
        with_pkg = make_venv(base / "with", f"{ROOT}[pytest]")
        project = Path(tmp) / "project"
        project.mkdir()
        (project / "test_trivial.py").write_text(TRIVIAL)
        collect = ["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        harness = with_pkg.parent / "harness"
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in ("bare", "with", "py", "help")}
        for python in (bare, with_pkg):  # warm the file cache once, untimed
            timed([python, *collect], project)
        for _ in range(args.rounds):
            runs["bare"].append(timed([bare, *collect], project))
            runs["with"].append(timed([with_pkg, *collect], project))
            runs["py"].append(timed([with_pkg, "-c", "pass"], project))
            runs["help"].append(timed([harness, "--help"], project))

    print(f"{args.rounds} interleaved rounds, median (min..max) wall time, median child CPU")
    line_bare, bare_ms = summary("pytest --collect-only, 20 tests, bare", runs["bare"])
    line_with, with_ms = summary("  same, clevertap-harness installed", runs["with"])
    line_py, py_ms = summary("python -c pass", runs["py"])
    line_help, help_ms = summary("harness --help", runs["help"])
    for line in (line_bare, line_with):
        print(line)
    print(f"{'  cost of the installed package':<40} {with_ms - bare_ms:8.0f} ms  (budget 50 ms)")
    for line in (line_py, line_help):
        print(line)
    print(f"{'  harness --help over the interpreter':<40} {help_ms - py_ms:8.0f} ms")
    print(f"{'  harness --help':<40} {help_ms:8.0f} ms  (budget 150 ms)")


if __name__ == "__main__":
    main()

"""What the plugin's fixtures cost a test suite, next to the usual alternatives.

Run: ``python bench/bench_fixtures.py [N]`` (N tests per variant, default 400).

Method. Each variant is a generated test file of N identical tests that each request one
fixture and do nothing else; it runs in this process with ``pytest.main`` (no cache, no
xdist), and a small plugin records the duration pytest itself reports for every
test's setup, call and teardown phases. Per-test overhead is the median of the tests' summed
phases minus the same median for a file of N bare tests (no fixture). The one-time session
start is the first test's setup minus the median setup of the others (the session fixture is set
up during the first test's setup phase). Everything is imported once before timing, so the
figures are the fixtures' own cost, not Python's import time (printed separately, measured in a
fresh interpreter).

Variants:

- ``ct_world``: this plugin; a session world (accept-all relay + fake CleverTap, uvicorn),
  reset before every test and checked after it (violations, server errors).
- ``aiosmtpd Controller per test``: what smtpdfix does, a fresh ``aiosmtpd.controller.Controller``
  started and stopped in a function-scoped fixture (on a port found free just before, as
  smtpdfix does; the harness itself never does that).
- ``pytest-httpserver``: its ``httpserver`` fixture, a session server cleared after every test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import _report as report
import pytest

CONFTEST = """
import socket

import pytest
from aiosmtpd.controller import Controller


class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtpd():
    controller = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller
    controller.stop()
"""

VARIANTS = {
    "bare test (baseline)": "def test_{i}():\n    pass\n",
    "ct_world (this plugin)": "def test_{i}(ct_world):\n    pass\n",
    "aiosmtpd Controller per test": "def test_{i}(smtpd):\n    pass\n",
    "pytest-httpserver (session)": "def test_{i}(httpserver):\n    pass\n",
}


class _Recorder:
    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.phases.setdefault(report.nodeid, {})[report.when] = report.duration


def _run(directory: Path, name: str, body: str, n: int) -> tuple[float, float]:
    """(median per-test seconds, first setup minus median setup) for one variant."""
    path = directory / f"test_{abs(hash(name))}.py"
    path.write_text("".join(body.format(i=i) + "\n\n" for i in range(n)))
    recorder = _Recorder()
    code = pytest.main(
        [
            str(path),
            "-qq",
            "-p",
            "no:cacheprovider",
            "--no-header",
            # the harness is imported before pytest starts, on purpose (see the docstring)
            "-W",
            "ignore::pytest.PytestAssertRewriteWarning",
        ],
        plugins=[recorder],
    )
    if code != 0:
        raise SystemExit(f"{name}: pytest exited with {code}")
    runs = list(recorder.phases.values())
    totals = [sum(p.values()) for p in runs[1:]]
    setups = [p["setup"] for p in runs[1:]]
    return statistics.median(totals), runs[0]["setup"] - statistics.median(setups)


def _import_time() -> float:
    code = (
        "import time; t = time.perf_counter(); import harness.world; print(time.perf_counter() - t)"
    )
    # Bytecode as on a user's machine (PYTHONDONTWRITEBYTECODE would compile every module).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, env=env)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("n", type=int, nargs="?", default=400, help="tests per variant")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    n = args.n
    # Import what the fixtures import, so no variant pays for imports inside its timings.
    import aiosmtpd.controller  # noqa: F401
    import pytest_httpserver  # noqa: F401

    import harness.expect
    import harness.world  # noqa: F401

    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "conftest.py").write_text(textwrap.dedent(CONFTEST))
        (directory / "pytest.ini").write_text("[pytest]\n")
        for name, body in VARIANTS.items():
            started = time.perf_counter()
            results[name] = _run(directory, name, body, n)
            print(f"  ran {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)

    base = results["bare test (baseline)"][0]
    rows: list[tuple[str, str, str]] = []
    for name, (per_test, first) in results.items():
        if name.startswith("bare"):
            rows.append((name, f"{per_test * 1e3:.3f} ms", "-"))
            continue
        # A per-test fixture has no session start: its whole cost is in every test.
        once = "-" if "per test" in name else f"{first * 1e3:.0f} ms"
        rows.append((name, f"{(per_test - base) * 1e3:.3f} ms", once))
    width = max(len(r[0]) for r in rows)
    print(f"\nload average {os.getloadavg()[0]:.2f} ({os.cpu_count()} cpus)")
    print(f"fixture overhead, {n} tests per variant (median; the baseline's own time, then")
    print("every other variant's time over it)\n")
    print(f"{'variant':<{width}}  {'per test':>10}  {'session start':>13}")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 13}")
    for name, per, start in rows:
        print(f"{name:<{width}}  {per:>10}  {start:>13}")
    imported = _import_time()
    print(f"\nimporting harness.world in a fresh interpreter: {imported * 1e3:.0f} ms")
    report.write(
        args.json,
        "fixtures",
        [{"variant": name, "per test": per, "session start": start} for name, per, start in rows],
        tests=n,
        import_ms=imported * 1e3,
    )
    print("targets: ct_world per test < 1 ms, session start < 300 ms")


if __name__ == "__main__":
    main()

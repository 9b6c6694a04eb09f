"""The SMTP bench runs end to end (servers and load generator in their own processes) and
writes the JSON that bench/run_all.py tabulates: a bench that rots silently is no bench."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_smtp_bench_writes_its_figures(tmp_path: Path, loop: str) -> None:
    out = tmp_path / "smtp.json"
    argv = ["bench/bench_smtp.py", "--messages", "40", "--rounds", "1", "--loop", loop]
    argv += ["--json", str(out)]
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert (data["bench"], data["loop"]) == ("smtp", loop)
    assert data["command"].startswith("python bench/bench_smtp.py --messages 40")
    cells = {(row["connections"], row["mode"]) for row in data["rows"]}
    assert cells == {(1, "reuse"), (1, "new per message"), (20, "reuse"), (20, "new per message")}
    for row in data["rows"]:
        for server in ("bare", "harness"):
            figures = row[server]
            assert 0 < figures["min"] <= figures["median"] <= figures["max"]
            assert figures["cpu_us"] > 0
        assert row["ratio"] == pytest.approx(row["harness"]["median"] / row["bare"]["median"])

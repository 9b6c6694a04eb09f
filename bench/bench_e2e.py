"""End-to-end wall time through the example integration, and where the time goes.

Runs (1) the shipped 100-recipient mixed scenario and (2) a 10,000-recipient campaign (every
recipient accepted, one in a hundred a hard bounce), each through the whole chain: campaign
driver -> example gateway (subprocess) -> fake MX -> callbacks -> fake CleverTap -> judge.

Phases are read from the journal's timestamps:

- submission: first to last SENT entry (the driver submitting to the gateway);
- relay: first SENT to last SMTP_MESSAGE (the gateway delivering to the fake MX);
- callbacks: first to last CALLBACK;
- settle: last journal activity to the moment the runner stopped waiting (quiet period);
- judging: judge() itself.

Each scenario runs ``--runs`` times (alternating); every figure is the median with min..max,
with the CPU seconds of the runner's process and of the integration's, and the load average.

Usage: ``python bench/bench_e2e.py [--count 10000] [--connections 8] [--runs 3] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import _report as report
from rich.console import Console
from rich.table import Table

from harness.journal import Kind
from harness.scenario.loader import load_scenario, parse_scenario
from harness.scenario.runner import RunOptions, ScenarioResult, run_scenario

ROOT = Path(__file__).resolve().parents[1]

BIG = """
name: campaign-{count}
campaign:
  from: news@brand.test
  per_connection: 50
  to:
    count: {count}
    pattern: "user{{n}}@example.com"
    behaviours:
      {bounces}
integration: {{env: {{EXAMPLE_RETRY_DELAYS: "0.2,0.4"}}}}
expect:
  within: 300s
  nothing_else: true
  callbacks:
    {expected}
"""


def _big(count: int) -> str:
    step = 100
    numbers = range(step, count + 1, step)
    bounces = "\n      ".join(f"{n}: invalid_address" for n in numbers)
    expected = "\n    ".join(f"- {{event: hardbounce, e: user{n}@example.com}}" for n in numbers)
    return BIG.format(count=count, bounces=bounces, expected=expected)


def _span(entries: list[float]) -> tuple[float, float] | None:
    return (min(entries), max(entries)) if entries else None


def _phases(result: ScenarioResult) -> dict[str, float]:
    journal = result.journal
    sent = [e.at for e in journal.entries(Kind.SENT)]
    delivered = [e.at for e in journal.entries(Kind.SMTP_MESSAGE)]
    callbacks = [e.at for e in journal.entries(Kind.CALLBACK)]
    start = result.started_at
    out: dict[str, float] = {}
    if sent:
        out["submission"] = max(sent) - start
    if sent and delivered:
        out["relay (to last delivery)"] = max(delivered) - start
    if callbacks:
        out["callbacks (first..last)"] = max(callbacks) - min(callbacks)
        out["last callback"] = max(callbacks) - start
    out["wait incl. settle"] = result.timings.get("wait", 0.0) + result.timings.get("submit", 0.0)
    out["judging"] = result.timings.get("judge", 0.0)
    return out


def _run(scenario_text: str | None, path: Path | None, connections: int) -> ScenarioResult:
    scenario = (
        load_scenario(path) if path is not None else parse_scenario(scenario_text or "", source="x")
    )
    return asyncio.run(run_scenario(scenario, RunOptions(connections=connections)))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(count: int, connections: int, runs: int) -> dict[str, Any]:
    """*runs* runs of each scenario (alternating), their figures as a JSON-ready dict."""
    load_before = os.getloadavg()
    scenarios = [
        ("mixed-campaign-100", None, ROOT / "scenarios" / "mixed-campaign-100.yaml"),
        (f"campaign-{count}", _big(count), None),
    ]
    samples: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in scenarios}
    for _ in range(runs):
        for name, text, path in scenarios:
            cpu, children = time.process_time(), _children_cpu()
            began = time.perf_counter()
            result = _run(text, path, connections)
            wall = time.perf_counter() - began
            if result.error or not result.passed:
                raise SystemExit(f"{name}: {result.error or 'the verdict failed'}")
            phases = _phases(result)
            phases["total"] = wall
            phases["messages"] = len(result.journal.entries(Kind.SENT))
            # The runner's process (fake MX, fake CleverTap, journal; the campaign driver too
            # for small campaigns), the driver's own process for large ones, and the
            # integration's (children are counted once they have been waited for).
            driver = result.driver_cpu or 0.0
            phases["runner cpu s"] = time.process_time() - cpu
            phases["driver cpu s"] = driver
            phases["integration cpu s"] = _children_cpu() - children - driver
            samples[name].append(phases)
    rows = []
    for name, runs_of in samples.items():
        row: dict[str, Any] = {"run": name, "messages": int(runs_of[0]["messages"])}
        for key in runs_of[0]:
            if key != "messages":
                values = [r.get(key, 0.0) for r in runs_of]
                row[key] = report.spread(values)
        rows.append(row)
    return {
        "runs": runs,
        "connections": connections,
        "rows": rows,
        "load": [load_before, os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3, help="runs of each scenario")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    result = measure(args.count, args.connections, args.runs)
    console = Console()
    table = Table(
        title=f"end to end through the example integration: median (min..max) of {args.runs}"
    )
    table.add_column("run")
    table.add_column("figure")
    table.add_column("s", justify="right")
    for row in result["rows"]:
        for key, value in row.items():
            if isinstance(value, dict):
                table.add_row(
                    row["run"],
                    key,
                    f"{value['median']:.2f} ({value['min']:.2f}..{value['max']:.2f})",
                )
    console.print(table)
    before, after = result["load"]
    console.print(
        f"load average {before[0]:.2f} before, {after[0]:.2f} after ({result['cpus']} CPUs)"
    )
    report.write(args.json, "e2e", result["rows"], load=result["load"], runs=args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

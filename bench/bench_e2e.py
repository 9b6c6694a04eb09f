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

Usage: ``python bench/bench_e2e.py [--count 10000] [--connections 8]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    console = Console()
    runs = [
        ("mixed-campaign-100", None, ROOT / "scenarios" / "mixed-campaign-100.yaml"),
        (f"campaign-{args.count}", _big(args.count), None),
    ]
    table = Table(title="end to end through the example integration")
    for column in ("run", "messages", "passed", "total s", "msg/s (submit)", "msg/s (e2e)"):
        table.add_column(column, justify="right")
    phases_table = Table(title="where the time goes (seconds from campaign start)")
    phases_table.add_column("run")
    phases_table.add_column("phase")
    phases_table.add_column("s", justify="right")
    for name, text, path in runs:
        began = time.perf_counter()
        result = _run(text, path, args.connections)
        wall = time.perf_counter() - began
        if result.error:
            console.print(f"[red]{name}: {result.error}[/red]")
            return 1
        messages = len(result.journal.entries(Kind.SENT))
        phases = _phases(result)
        delivered_at = phases.get("relay (to last delivery)", wall)
        table.add_row(
            name,
            str(messages),
            str(result.passed),
            f"{wall:.2f}",
            f"{messages / max(phases.get('submission', wall), 1e-9):.0f}",
            f"{messages / max(delivered_at, 1e-9):.0f}",
        )
        for key in ("world", "sut_start", "stop"):
            phases[f"({key})"] = result.timings.get(key, 0.0)
        for phase, seconds in phases.items():
            phases_table.add_row(name, phase, f"{seconds:.2f}")
    console.print(table)
    console.print(phases_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

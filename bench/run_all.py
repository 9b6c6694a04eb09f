"""Run every bench, one after the other, and write the one table of figures the docs quote.

    python bench/run_all.py                      # every bench, about 15 minutes on 2 cores
    python bench/run_all.py --only smtp,e2e      # some; the others' last figures are kept
    python bench/run_all.py --render             # rewrite docs/benchmarks.md from the JSON

Each bench runs in its own interpreter with ``--json OUT`` (the shape is bench/_report.py's);
their figures are kept together in ``docs/benchmarks.json`` and rendered into
``docs/benchmarks.md``: the command and date of every bench, the load average around it, its
table, and the headline figures with a key each. README and the docs quote a headline figure as
a link to it whose title names the key, ``[1.61x](docs/benchmarks.md#headline-figures
"figure smtp.reuse-20.ratio")``; every run (``--render`` too) rewrites those quotes to the
current figures, and tests/test_benchmarks_doc.py checks them, and this file against the JSON
(one home per figure).

Benches never run at once: the machine is shared, and each measures against its own peer.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOC = ROOT / "docs" / "benchmarks.md"
DATA = ROOT / "docs" / "benchmarks.json"
QUOTE = re.compile(r'\[([^\]]+)\]\(([^)\s]*benchmarks\.md[^)\s]*)\s+"figure ([^"]+)"\)')
"""A quoted figure: ``[1.61x](benchmarks.md#headline-figures "figure smtp.reuse-20.ratio")``."""

Figures = list[tuple[str, str, str]]
"""Headline figures of one bench: (key, what it is, the value as quoted)."""


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    args: tuple[str, ...]
    headline: Callable[[dict[str, Any]], Figures]
    about: str


def _median(value: Any) -> float:
    return float(value["median"] if isinstance(value, dict) else value)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_./]+", "-", text.lower()).strip("-")


def _smtp(data: dict[str, Any]) -> Figures:
    out: Figures = []
    uvloop = data.get("loop") == "uvloop"
    for row in data["rows"]:
        mode = "reuse" if row["mode"] == "reuse" else "new"
        key = f"smtp{'-uvloop' if uvloop else ''}.{mode}-{row['connections']}"
        where = f"{row['connections']} connections, {row['mode']}" + (", uvloop" if uvloop else "")
        out += [
            (
                f"{key}.ratio",
                f"SMTP msg/s, harness MX / bare aiosmtpd, {where}",
                f"{row['ratio']:.2f}x",
            ),
            (
                f"{key}.harness",
                f"SMTP msg/s, harness MX, {where}",
                f"{_median(row['harness']):,.0f}",
            ),
            (
                f"{key}.cpu",
                f"SMTP CPU us/msg, harness MX, {where}",
                f"{row['harness']['cpu_us']:.0f}",
            ),
            (
                f"{key}.bare-cpu",
                f"SMTP CPU us/msg, bare aiosmtpd, {where}",
                f"{row['bare']['cpu_us']:.0f}",
            ),
            # Throughput swings with the machine's load; CPU per message holds steadier.
            (
                f"{key}.cpu-ratio",
                f"SMTP CPU per message, bare aiosmtpd / harness MX, {where}",
                f"{row['bare']['cpu_us'] / row['harness']['cpu_us']:.2f}x",
            ),
        ]
    return out


def _e2e(data: dict[str, Any]) -> Figures:
    out: Figures = []
    for row in data["rows"]:
        key, run = f"e2e.{row['run']}", row["run"]
        out += [
            (f"{key}.total", f"{run} end to end, wall", f"{_median(row['total']):.1f} s"),
            (
                f"{key}.runner-cpu",
                f"{run}, CPU of the runner's process",
                f"{_median(row['runner cpu s']):.1f} s",
            ),
            (
                f"{key}.integration-cpu",
                f"{run}, CPU of the integration's process",
                f"{_median(row['integration cpu s']):.1f} s",
            ),
        ]
        if "driver cpu s" in row:
            out.append(
                (
                    f"{key}.driver-cpu",
                    f"{run}, CPU of the campaign driver's own process (0: it ran in the runner's)",
                    f"{_median(row['driver cpu s']):.1f} s",
                )
            )
    return out


def _callbacks(data: dict[str, Any]) -> Figures:
    out: Figures = [
        (f"callbacks.{_slug(str(k))}", f"callbacks, ratio {k}", f"{float(v):.2f}x")
        for k, v in data.get("ratios", {}).items()
    ]
    for row in data["rows"]:
        name = _slug(str(row.get("name", row.get("server", "?"))))
        if "rps" in row:
            out.append((f"callbacks.{name}.rps", f"callbacks/s, {name}", f"{row['rps']:,.0f}"))
        if "cpu_us" in row:
            out.append(
                (
                    f"callbacks.{name}.cpu",
                    f"callbacks, CPU us per callback, {name}",
                    f"{row['cpu_us']:.0f}",
                )
            )
        if "p99_ms" in row:
            out.append(
                (f"callbacks.{name}.p99", f"callbacks, p99 ms, {name}", f"{row['p99_ms']:.1f}")
            )
    return out


def _fixtures(data: dict[str, Any]) -> Figures:
    out: Figures = []
    for row in data["rows"]:
        key = f"fixtures.{_slug(row['variant'])}"
        out.append((key, f"fixture cost per test, {row['variant']}", str(row["per test"])))
        if row.get("session start", "-") != "-":
            out.append(
                (
                    f"{key}.session",
                    f"session start, {row['variant']}",
                    str(row["session start"]),
                )
            )
    return out


def _startup(data: dict[str, Any]) -> Figures:
    costs = data.get("costs", {})
    cpu = {row["command"]: row["cpu ms"] for row in data["rows"]}
    with_pkg, bare, httpx = (
        cpu.get("pytest + clevertap-harness"),
        cpu.get("pytest --collect-only, 20 tests: pytest"),
        cpu.get("pytest + httpx (anyio's plugin)"),
    )
    out: Figures = [
        (
            "startup.unused-package",
            "pytest start-up cost of the package installed but unused, wall",
            f"+{costs.get('with - bare ms', 0):.0f} ms",
        ),
        ("startup.help", "harness --help, wall", f"{costs.get('help ms', 0):.0f} ms"),
    ]
    if with_pkg is not None and bare is not None:
        # CPU holds steadier than wall time on a busy machine.
        out.append(
            (
                "startup.unused-package-cpu",
                "pytest start-up cost of the package installed but unused, CPU",
                _signed_ms(with_pkg - bare),
            )
        )
    no_plugin = cpu.get("same, -p no:ctharness")
    if with_pkg is not None and no_plugin is not None:
        out.append(
            (
                "startup.plugin-cpu",
                "pytest start-up cost of the ctharness plugin itself (vs -p no:ctharness), CPU",
                _signed_ms(with_pkg - no_plugin),
            )
        )
    if with_pkg is not None and httpx is not None:
        # Against a venv that already has anyio (httpx, starlette): what the package adds.
        out.append(
            (
                "startup.unused-package-vs-httpx-cpu",
                "pytest start-up cost of the package installed but unused, CPU, against "
                "pytest + httpx",
                _signed_ms(with_pkg - httpx),
            )
        )
    return out


def _signed_ms(ms: float) -> str:
    """A difference in ms with its sign; a difference that rounds to 0 is "+0" (not "-0")."""
    return f"{round(ms):+d} ms"


def _journal(data: dict[str, Any]) -> Figures:
    ratio = data.get("sqlite_over_memory")
    out: Figures = (
        []
        if ratio is None
        else [
            ("journal.sqlite-over-memory", "HTTP ingest, SQLite journal / memory", f"{ratio:.2f}x")
        ]
    )
    for row in data.get("rows", []):
        part = str(row.get("part", ""))
        if part.startswith("scale, memory") and "B/entry" in row:
            out.append(
                (
                    "journal.memory-bytes-per-entry",
                    f"memory journal, bytes per entry ({part.removeprefix('scale, memory, ')})",
                    f"{row['B/entry']:.0f} B",
                )
            )
    return out


def _scaleout(data: dict[str, Any]) -> Figures:
    return [
        (
            f"scaleout.{_slug(row['setup'])}",
            f"callbacks/s vs memory, {row['setup']}",
            f"{row['vs memory']:.2f}x",
        )
        for row in data["rows"]
    ]


BENCHES = [
    Bench(
        "smtp",
        "bench_smtp.py",
        ("--messages", "2000", "--rounds", "5"),
        _smtp,
        "Harness MX (20 rules, journal in memory) against bare aiosmtpd, 1 KB messages; both "
        "servers on asyncio's own loop (as in a test session's fixtures).",
    ),
    Bench(
        "smtp-uvloop",
        "bench_smtp.py",
        ("--messages", "2000", "--rounds", "5", "--loop", "uvloop"),
        _smtp,
        "The same with both servers on uvloop, the loop `harness run` and `harness serve` "
        "serve the fake mail world on.",
    ),
    Bench(
        "e2e",
        "bench_e2e.py",
        ("--runs", "3"),
        _e2e,
        "Campaigns end to end through the example integration (the runner's, the campaign "
        "driver's and the integration's processes).",
    ),
    Bench(
        "callbacks",
        "bench_callbacks.py",
        ("--rounds", "5"),
        _callbacks,
        "Callbacks through the fake CleverTap against the bare FastAPI and raw ASGI peers.",
    ),
    Bench(
        "journal",
        "bench_journal.py",
        ("--entries", "200000", "--rounds", "3"),
        _journal,
        "The journal at scale and its ingest over HTTP, memory against SQLite.",
    ),
    Bench(
        "scaleout",
        "bench_scaleout.py",
        ("--rounds", "3"),
        _scaleout,
        "Callbacks/s with the journal on PostgreSQL, 1 and 2 processes, against memory.",
    ),
    Bench(
        "fixtures",
        "bench_fixtures.py",
        ("200",),
        _fixtures,
        "What the pytest plugin's fixtures cost a test, against the usual alternatives.",
    ),
    Bench(
        "startup",
        "bench_startup.py",
        ("--rounds", "9"),
        _startup,
        "What the installed package costs a pytest suite that does not use it.",
    ),
]


def run(names: list[str], data: dict[str, Any]) -> list[str]:
    """Run the benches *names*, updating *data*; returns what could not run, with why."""
    missing: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for bench in BENCHES:
            if bench.name not in names:
                continue
            script = HERE / bench.script
            if not script.exists():
                missing.append(f"{bench.name}: {bench.script} is not in this checkout")
                continue
            out = Path(tmp) / f"{bench.name}.json"
            argv = [sys.executable, str(script), *bench.args, "--json", str(out)]
            print(f"== {bench.name}: {' '.join(argv[1:-2])}", flush=True)
            started = datetime.datetime.now(datetime.UTC)
            done = subprocess.run(argv, cwd=ROOT, check=False)
            if done.returncode != 0 or not out.exists():
                missing.append(f"{bench.name}: exited with status {done.returncode}")
                continue
            result = json.loads(out.read_text())
            result["command"] = " ".join(["python", f"bench/{bench.script}", *bench.args])
            result["date"] = started.strftime("%Y-%m-%d %H:%M UTC")
            data[bench.name] = result
    return missing


def _cell(value: Any) -> str:
    if isinstance(value, dict) and "median" in value:
        cell = f"{_number(value['median'])} ({_number(value['min'])}..{_number(value['max'])})"
        others = [f"{k} {_cell(v)}" for k, v in value.items() if k not in ("median", "min", "max")]
        return "; ".join([cell, *others])
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return _number(value)
    return str(value).replace("|", "\\|")


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _load(load: Any) -> str:
    if load and isinstance(load[0], list):  # [before, after]
        return f"{load[0][0]:.2f} before, {load[1][0]:.2f} after"
    return f"{load[0]:.2f}" if load else "?"


def render(data: dict[str, Any]) -> str:
    """docs/benchmarks.md from the figures in *data* (docs/benchmarks.json)."""
    lines = [
        "<!-- Generated by `python bench/run_all.py` from docs/benchmarks.json: do not edit. -->",
        "",
        "# Benchmarks",
        "",
        "Every figure below comes from one run of `python bench/run_all.py` per bench (the "
        "date and command are given with each), on a machine shared with other work; medians "
        "with min..max over interleaved rounds, and the 1-minute load average around the run. "
        "CPU time per operation holds steadier than throughput when the machine is busy.",
        "",
        "## Headline figures",
        "",
        "README and the other pages quote these by key (a quote is checked by "
        "tests/test_benchmarks_doc.py).",
        "",
        "| key | what | figure |",
        "|---|---|---|",
    ]
    by_name = {b.name: b for b in BENCHES}
    for name, result in data.items():
        bench = by_name.get(name)
        if bench is None:
            continue
        for key, what, value in bench.headline(result):
            lines.append(f"| `{key}` | {what} | {value} |")
    for name, result in data.items():
        bench = by_name.get(name)
        lines += ["", f"## {name}", ""]
        if bench is not None:
            lines += [bench.about, ""]
        cpus = result.get("cpus", "?")
        lines += [
            f"`{result.get('command', '?')}`, {result.get('date', '?')}; load average "
            f"{_load(result.get('load'))} on {cpus} CPUs.",
            "",
        ]
        rows = result.get("rows", [])
        columns: list[str] = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        if columns:
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + "---|" * len(columns))
            for row in rows:
                lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
        spreads = result.get("ratio_spreads") or {}
        if spreads:
            lines += ["", "| ratio, within each round | median | min..max |", "|---|---|---|"]
            for what, spread in spreads.items():
                lines.append(
                    f"| {what} | {spread['median']:.2f}x | "
                    f"{spread['min']:.2f}x..{spread['max']:.2f}x |"
                )
    return "\n".join(lines) + "\n"


def headline(data: dict[str, Any]) -> dict[str, str]:
    """Every headline figure of *data*: key -> the value as quoted."""
    by_name = {b.name: b for b in BENCHES}
    return {
        key: value
        for name, result in data.items()
        if name in by_name
        for key, _, value in by_name[name].headline(result)
    }


def quoting_pages() -> list[Path]:
    """The pages that may quote a headline figure."""
    return [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p != DOC)]


def refresh_quotes(figures: dict[str, str]) -> list[str]:
    """Rewrite every quoted figure in README and the docs to its current value; returns the
    quotes whose key names no figure."""
    unknown: list[str] = []
    for page in quoting_pages():
        text = page.read_text()

        def fresh(match: re.Match[str], page: Path = page) -> str:
            _, link, key = match.groups()
            if key not in figures:
                unknown.append(f"{page.relative_to(ROOT)}: no figure {key}")
                return match.group(0)
            return f'[{figures[key]}]({link} "figure {key}")'

        updated = QUOTE.sub(fresh, text)
        if updated != text:
            page.write_text(updated)
    return unknown


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--only", help="comma-separated benches: " + ", ".join(b.name for b in BENCHES)
    )
    parser.add_argument("--render", action="store_true", help="only rewrite the Markdown")
    args = parser.parse_args()
    data: dict[str, Any] = json.loads(DATA.read_text()) if DATA.exists() else {}
    missing: list[str] = []
    if not args.render:
        names = args.only.split(",") if args.only else [b.name for b in BENCHES]
        unknown = set(names) - {b.name for b in BENCHES}
        if unknown:
            parser.error(f"unknown bench {', '.join(sorted(unknown))}")
        missing = run(names, data)
        order = [b.name for b in BENCHES]
        data = dict(
            sorted(
                data.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)
            )
        )
        DATA.write_text(json.dumps(data, indent=1) + "\n")
    DOC.write_text(render(data))
    print(f"wrote {DOC.relative_to(ROOT)}")
    missing += refresh_quotes(headline(data))
    for line in missing:
        print(f"not run: {line}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())

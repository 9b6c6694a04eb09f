"""One home per figure: docs/benchmarks.md is rendered from the benches' JSON, and every figure
README and the docs quote from it is the figure it names."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "bench" / "run_all.py")
    if spec is None or spec.loader is None:
        raise AssertionError("bench/run_all.py cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("run_all", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _quotes(run_all: ModuleType) -> list[tuple[Path, str, str]]:
    return [
        (page, text, key)
        for page in run_all.quoting_pages()
        for text, _, key in run_all.QUOTE.findall(page.read_text())
    ]


def test_benchmarks_page_is_rendered_from_the_figures() -> None:
    run_all = _run_all()
    data = json.loads((ROOT / "docs" / "benchmarks.json").read_text())
    rendered = run_all.render(data)
    assert (ROOT / "docs" / "benchmarks.md").read_text() == rendered, (
        "docs/benchmarks.md is generated: run `python bench/run_all.py --render`"
    )


def test_quoted_figures_are_the_benchmarks_figures() -> None:
    run_all = _run_all()
    figures = run_all.headline(json.loads((ROOT / "docs" / "benchmarks.json").read_text()))
    quotes = _quotes(run_all)
    assert any(page.name == "README.md" for page, _, _ in quotes), "README quotes no figure"
    wrong = [
        f"{page.relative_to(ROOT)}: {key} quoted as {text!r}, "
        f"docs/benchmarks.md has {figures.get(key, 'no such figure')!r}"
        for page, text, key in quotes
        if figures.get(key) != text
    ]
    assert not wrong, "\n".join(wrong)


def test_the_quote_pattern_finds_a_quote() -> None:
    # The checker is only as good as its pattern: a quote in the documented form is found.
    line = '[1.61x](docs/benchmarks.md#headline-figures "figure smtp.reuse-20.ratio")'
    assert _run_all().QUOTE.findall(line) == [
        ("1.61x", "docs/benchmarks.md#headline-figures", "smtp.reuse-20.ratio")
    ]


def test_a_callbacks_result_renders_with_its_headline_figures() -> None:
    # The shape bench_callbacks.py writes (flat rows, its ratios apart): what run_all gets from
    # it once that bench is in this checkout.
    run_all = _run_all()
    data = {
        "callbacks": {
            "command": "python bench/bench_callbacks.py --rounds 5",
            "date": "2026-11-29 22:00 UTC",
            "rows": [
                {"name": "harness", "rps": 10363.4, "rps_min": 9000.0, "p99_ms": 4.2},
                {"name": "limit", "rps": 13957.0, "rps_min": 12000.0, "p99_ms": 2.1},
            ],
            "ratios": {"harness/limit": 0.7425},
            "load": [1.5, 1.2, 1.0],
            "cpus": 2,
        }
    }
    page = run_all.render(data)
    assert "| `callbacks.harness/limit` | callbacks, ratio harness/limit | 0.74x |" in page
    assert "| harness | 10,363 | 9,000 | 4.20 |" in page
    assert "load average 1.50 on 2 CPUs" in page
    assert run_all.headline(data)["callbacks.harness.rps"] == "10,363"

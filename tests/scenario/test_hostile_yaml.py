"""Hostile scenario files: alias bombs, cycles and deep nesting are refused fast, with file:line."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import ScenarioError
from harness.scenario import loader
from harness.scenario.loader import MAX_DEPTH, load_scenario, parse_scenario

# "Billion laughs": 9 levels of 9 aliases each, 9**9 (387 million) strings once expanded.
BOMB = "".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n',
        *(
            f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


def _problem(text: str, source: str = "hostile.yaml") -> tuple[str, float]:
    started = time.perf_counter()
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source=source)
    elapsed = time.perf_counter() - started
    (problem,) = info.value.problems
    return problem, elapsed


def test_alias_bomb_is_refused_in_under_a_second_at_the_alias() -> None:
    assert len(BOMB.encode()) < 500
    problem, elapsed = _problem(BOMB)
    # The alias that crosses the budget is on line 7 (*f inside g), its first one at column 8.
    assert problem.startswith("hostile.yaml:7:8: YAML: alias *f expands to ")
    assert "past 1,000,000 (an alias bomb?)" in problem
    assert elapsed < 1.0


@pytest.mark.parametrize(
    ("text", "where"),
    [("a: &x [1, *x]\n", "1:11"), ("a: &x {k: *x}\n", "1:11"), ("a: &x\n  - b: *x\n", "2:8")],
)
def test_a_cycle_is_refused_instead_of_recursing_forever(text: str, where: str) -> None:
    problem, _ = _problem(text)
    assert problem == (
        f"hostile.yaml:{where}: YAML: alias *x refers to a mapping or list that contains it "
        "(a cycle); a scenario must be a tree"
    )


@pytest.mark.parametrize("flow", [True, False])
def test_deep_nesting_is_a_scenario_error_not_a_recursion_error(flow: bool) -> None:
    depth = 50_000 if flow else 200
    if flow:
        text = "a: " + "[" * depth + "]" * depth + "\n"
        where = f"1:{4 + MAX_DEPTH - 1}"  # the bracket that opens level MAX_DEPTH + 1
    else:
        keys = "".join(f"{'  ' * i}b{i}:\n" for i in range(1, depth))
        text = "a:\n" + keys + "  " * depth + "1\n"
        # a key is a value too: the first key of the mapping at level MAX_DEPTH is refused
        where = f"{MAX_DEPTH}:{2 * MAX_DEPTH - 1}"
    problem, elapsed = _problem(text)
    assert problem == (
        f"hostile.yaml:{where}: YAML: nested more than {MAX_DEPTH} levels deep; a scenario "
        "needs far fewer (is this file generated or hostile?)"
    )
    # A guard against a hang, not a speed target: ruamel's pure-Python scanner reads the 100,000
    # brackets in about 2 s on an idle machine, and CI machines are shared.
    assert elapsed < 30.0


def test_ordinary_aliases_and_merge_keys_still_load() -> None:
    text = """\
campaign:
  from: news@brand.test
  to: [a@example.com, b@example.com, c@other.test]
mx:
  example.com: &rules
    a@example.com: &full mailbox_full
    b@example.com: *full
  other.test:
    <<: *rules
    c@other.test: accept
"""
    scenario = parse_scenario(text, source="ok.yaml")
    assert scenario.recipients == ["a@example.com", "b@example.com", "c@other.test"]
    assert set(scenario.mx["example.com"].rules) == {"a@example.com", "b@example.com"}
    assert "c@other.test" in scenario.mx["other.test"].rules


def test_a_plain_document_over_the_budget_names_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_VALUES", 10)
    people = ", ".join(f"u{i}@example.com" for i in range(20))
    problem, _ = _problem(f"campaign:\n  to: [{people}]\n")
    # values so far: the top mapping, campaign's key and value, to's key and list, then items
    assert problem.startswith("hostile.yaml:2:")
    assert "more than 10 values in one scenario; list recipients with a generator" in problem


def test_load_scenario_refuses_the_bomb_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.problems[0].startswith(f"{path}:7:8: YAML: alias *f expands")


@pytest.mark.parametrize("command", ["run", "serve"])
@pytest.mark.parametrize("kind", ["bomb", "deep"])
def test_the_cli_exits_2_with_the_reason_and_no_traceback(
    tmp_path: Path, command: str, kind: str
) -> None:
    path = tmp_path / f"{kind}.yaml"
    path.write_text(BOMB if kind == "bomb" else "a: " + "[" * 50_000 + "]" * 50_000 + "\n")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "harness", command, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    expected = "alias *f expands to" if kind == "bomb" else f"nested more than {MAX_DEPTH} levels"
    assert f"{path}:" in done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    # Was 35.6 s and 1.86 GB for the bomb; interpreter start-up dominates now. Generous for a
    # shared CI machine, far below what expansion would take.
    assert elapsed < 15.0

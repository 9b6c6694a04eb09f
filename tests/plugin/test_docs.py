"""docs/pytest.md shows real test files: every included copy must match the file it names."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = re.compile(r"<!-- file: (?P<path>\S+) -->\n```\w+\n(?P<body>.*?)```", re.DOTALL)


def test_docs_examples_are_the_files_the_suite_runs() -> None:
    doc = (ROOT / "docs" / "pytest.md").read_text()
    included = {m["path"]: m["body"] for m in INCLUDE.finditer(doc)}
    examples = ROOT / "tests" / "docs_examples"
    expected = {
        str(p.relative_to(ROOT))
        for p in [*examples.glob("test_*.py"), *examples.glob("scenarios/*.yaml")]
    }
    assert set(included) == expected
    for path, body in included.items():
        assert body == (ROOT / path).read_text(), f"docs/pytest.md has a stale copy of {path}"


def test_every_option_is_documented() -> None:
    doc = (ROOT / "docs" / "pytest.md").read_text()
    from harness.pytest_plugin import _OPTIONS

    for option in _OPTIONS:
        assert f"`{option.flag} {option.metavar}`" in doc
        assert f"`{option.ini}`" in doc
        assert f"`{option.env}`" in doc


def test_the_readme_copies_are_the_files_the_suite_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    included = {m["path"]: m["body"] for m in INCLUDE.finditer(readme)}
    assert included, "the README shows no example file"
    for path, body in included.items():
        assert body == (ROOT / path).read_text(), f"README.md has a stale copy of {path}"

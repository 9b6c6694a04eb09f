"""Root conftest: fixtures every test directory shares."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent
# The third-party bounce corpus lives beside the project, never inside it (see its README).
CORPUS = ROOT.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """``../shared/corpus``; tests that use it are skipped when it is absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"bounce corpus not found at {CORPUS}")
    return CORPUS

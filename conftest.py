"""Root conftest: fixtures every test directory shares."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis profiles: "ci" (the default) keeps the property tests to a few seconds; "thorough"
# digs deeper before a release: HARNESS_HYPOTHESIS_PROFILE=thorough pytest tests/test_strategies.py
# deadline=None: run times vary too much on shared CI runners (and under xdist) for a deadline.
settings.register_profile("ci", max_examples=50, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HARNESS_HYPOTHESIS_PROFILE", "ci"))

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

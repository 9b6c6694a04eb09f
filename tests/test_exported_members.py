"""The public API: ``harness.__all__`` is sorted, complete, and every name resolves."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

import harness


def test_all_is_sorted_and_unique() -> None:
    assert harness.__all__ == sorted(set(harness.__all__))


def test_every_exported_name_resolves_to_the_object_of_its_module() -> None:
    for name in harness.__all__:
        value = getattr(harness, name)
        module = importlib.import_module(value.__module__)
        # Compare objects, not names: harness re-exports names where they are defined (Kind from
        # harness.records, through harness.journal).
        assert getattr(module, name, value) is value, name


@pytest.mark.parametrize("module", ["harness.journal", "harness.records", "harness.vocab"])
def test_the_journal_modules_export_names_that_resolve(module: str) -> None:
    # Readers import records and vocabulary from these modules by name (docs/journal.md).
    exported = importlib.import_module(module).__all__
    assert len(exported) == len(set(exported))
    for name in exported:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"


def test_no_public_name_is_left_out() -> None:
    public = {
        name
        for name, value in vars(harness).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in {"annotations", "importlib", "TYPE_CHECKING", "Any"}
    }
    assert public <= set(harness.__all__)


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        harness.no_such_thing  # type: ignore[attr-defined]  # noqa: B018


def test_importing_harness_does_not_import_the_servers() -> None:
    code = (
        "import sys, harness; "
        "heavy = [m for m in ('fastapi', 'uvicorn', 'aiosmtpd') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

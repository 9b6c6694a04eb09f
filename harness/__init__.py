"""clevertap-harness: fake the world around a CleverTap SMTP integration, script it, check it.

The public API, importable from here. Only the exceptions are imported at once; every other name
is imported on first use (PEP 562). pytest imports this package in every run of every project
that has it installed (the plugin is ``harness.pytest_plugin``), so importing it must cost next
to nothing: the journal alone pulls in asyncio and sqlite3 (``python bench/bench_startup.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from harness.errors import (
    ConfigError,
    ExpectationError,
    HarnessError,
    PayloadError,
    ScenarioError,
    ServerError,
    StartTimeout,
    UnknownNameError,
)

if TYPE_CHECKING:
    from harness.checks import Check, Severity, Violation
    from harness.clevertap.server import CleverTapServer
    from harness.clevertap.settings import ServerSettings
    from harness.expect import (
        expect_callback,
        expect_callback_async,
        expect_no_callbacks,
        expect_no_callbacks_async,
        expect_no_violations,
    )
    from harness.journal import (
        Entry,
        Journal,
        Kind,
        MemoryJournal,
        SQLiteJournal,
        open_journal,
    )
    from harness.respx_mock import CleverTapMock
    from harness.scenario.loader import load_scenario
    from harness.scenario.runner import run_scenario
    from harness.smtp.world import MailWorld
    from harness.world import World

__all__ = [
    "Check",
    "CleverTapMock",
    "CleverTapServer",
    "ConfigError",
    "Entry",
    "ExpectationError",
    "HarnessError",
    "Journal",
    "Kind",
    "MailWorld",
    "MemoryJournal",
    "PayloadError",
    "SQLiteJournal",
    "ScenarioError",
    "ServerError",
    "ServerSettings",
    "Severity",
    "StartTimeout",
    "UnknownNameError",
    "Violation",
    "World",
    "expect_callback",
    "expect_callback_async",
    "expect_no_callbacks",
    "expect_no_callbacks_async",
    "expect_no_violations",
    "load_scenario",
    "open_journal",
    "run_scenario",
]

_LAZY = {
    "Check": "harness.checks",
    "Entry": "harness.journal",
    "Journal": "harness.journal",
    "Kind": "harness.journal",
    "MemoryJournal": "harness.journal",
    "SQLiteJournal": "harness.journal",
    "Severity": "harness.checks",
    "Violation": "harness.checks",
    "open_journal": "harness.journal",
    "CleverTapMock": "harness.respx_mock",
    "CleverTapServer": "harness.clevertap.server",
    "MailWorld": "harness.smtp.world",
    "ServerSettings": "harness.clevertap.settings",
    "World": "harness.world",
    "expect_callback": "harness.expect",
    "expect_callback_async": "harness.expect",
    "expect_no_callbacks": "harness.expect",
    "expect_no_callbacks_async": "harness.expect",
    "expect_no_violations": "harness.expect",
    "load_scenario": "harness.scenario.loader",
    "run_scenario": "harness.scenario.runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

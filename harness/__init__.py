"""clevertap-harness: fake the world around a CleverTap SMTP integration, script it, check it."""

from harness.checks import Check, Severity, Violation
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
from harness.journal import Entry, Journal, Kind, MemoryJournal, SQLiteJournal, open_journal

__all__ = [
    "Check",
    "ConfigError",
    "Entry",
    "ExpectationError",
    "HarnessError",
    "Journal",
    "Kind",
    "MemoryJournal",
    "PayloadError",
    "SQLiteJournal",
    "ScenarioError",
    "ServerError",
    "Severity",
    "StartTimeout",
    "UnknownNameError",
    "Violation",
    "open_journal",
]

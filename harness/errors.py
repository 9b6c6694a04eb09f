"""Exceptions raised by the harness.

The tree::

    HarnessError                      base of everything the harness raises on purpose
    ├── ConfigError (ValueError)      misuse: a bad argument or setting, named with its value
    │   ├── ScenarioError             a scenario file that does not load (file, line, field)
    │   └── UnknownNameError          a name not in a registry (catalog mode, check code), with
    │                                 "did you mean"
    ├── PayloadError (ValueError)     a payload that cannot even be inspected (used by the CLI)
    ├── ServerError (RuntimeError)    a server that would not start, stop, or that crashed;
    │   │                             carries the underlying exception as __cause__
    │   ├── StartTimeout              not ready before the deadline
    │   └── JournalWriteError         the journal could not record an entry (disk full, I/O
    │                                 error): the servers answer "try again later"
    └── ExpectationError (AssertionError)
                                      what a test expected did not happen (pytest shows it as a
                                      failed assertion, with expected vs seen)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "ExpectationError",
    "HarnessError",
    "JournalWriteError",
    "PayloadError",
    "ScenarioError",
    "ServerError",
    "StartTimeout",
    "UnknownNameError",
    "did_you_mean",
]


class HarnessError(Exception):
    """Base class of every exception the harness raises on purpose."""


class ConfigError(HarnessError, ValueError):
    """A bad argument or setting. The message names the argument and its bad value."""


class ScenarioError(ConfigError):
    """A scenario file that does not load.

    ``problems`` holds one line per problem, each already formatted as
    ``file:line:column: field.path: message (expected ..., seen ...)``.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class UnknownNameError(ConfigError):
    """A name that is not in a registry; the message suggests the closest known names."""

    def __init__(self, what: str, name: str, known: Iterable[str]) -> None:
        self.what = what
        self.name = name
        self.known = sorted(known)
        hint = did_you_mean(name, self.known)
        message = f"unknown {what} {name!r}"
        message += f"; did you mean {hint}?" if hint else f"; known: {', '.join(self.known)}"
        super().__init__(message)


class PayloadError(HarnessError, ValueError):
    """A payload the harness cannot inspect at all (for example a file that cannot be read)."""


class ServerError(HarnessError, RuntimeError):
    """A server failed to start or stop, or crashed while running."""


class StartTimeout(ServerError):
    """A server was not ready before its deadline."""


class JournalWriteError(ServerError):
    """The journal could not record an entry; nothing was answered as if it had been."""


class ExpectationError(HarnessError, AssertionError):
    """An expectation was not met. The message shows what was expected next to what was seen."""


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """Return ``'x'`` or ``'x' or 'y'`` for the known names closest to *name*, or None."""
    close = difflib.get_close_matches(name, list(known), n=2, cutoff=0.6)
    if not close:
        return None
    return " or ".join(repr(c) for c in close)

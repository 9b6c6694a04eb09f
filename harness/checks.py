"""The check registry: every check the harness runs, with a stable code, like a linter's rules.

A check has a code (``CT301``), a one-line title, a severity and a failing example for the docs
page (``docs/checks.md`` lists every registered code; a test keeps the two in step). What a check
finds is a :class:`Violation`: the code, where (a JSON path such as ``$[0].data[1].ts``), a
message, what was expected, what was seen, and the journal entries that prove it.

Code families (stable once released; never reuse a retired code):

- ``CT1xx`` transport: the HTTP request itself (body, encoding, Content-Type, size).
- ``CT2xx`` shape: top-level structure, events, keys, endpoints.
- ``CT3xx`` values: addresses and timestamps.
- ``CT4xx`` batches: duplicates, batch limits, v2 ``meta``.
- ``CT5xx`` cross-checks: callbacks compared with what really happened in the mail world.
- ``CT6xx`` integration: the integration's own doors probed directly (its submission port).

Checks register themselves with :func:`register`; this module knows no check by name, so later
modules (the scenario cross-checks) plug in the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec

from harness.errors import ConfigError, UnknownNameError

__all__ = [
    "Check",
    "Severity",
    "Violation",
    "all_checks",
    "get_check",
    "register",
]


class Severity(StrEnum):
    """How bad a violation is. ``error`` fails a payload (400 in strict mode) and a test."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Check:
    """A registered check: its stable code, title, severity and a documented failing example."""

    code: str
    title: str
    severity: Severity
    family: str
    """What the check looks at: ``transport``, ``shape``, ``values``, ``batch``, ``cross`` or
    ``integration``."""
    example: str
    """A failing input, as it would be shown in the docs (a payload, a header, a scenario)."""
    explanation: str = ""
    """Why this is a problem and what to do, a few sentences for the docs page."""


class Violation(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One problem found by a check (a journal record's part: see ``harness.records``)."""

    code: str
    severity: Severity
    path: str
    """A JSON path into the payload (``$`` for the whole request), or a place in the mail world."""
    message: str
    expected: str | None = None
    seen: str | None = None
    evidence: tuple[int, ...] = ()
    """Sequence numbers of the journal entries that prove the violation."""
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    """Values a machine reader wants (``{"seconds": 1435322805}`` for a ms timestamp)."""

    def format(self) -> str:
        """``CODE  json-path  message (expected …, seen …)``: the one-line form the CLI prints."""
        detail = []
        if self.expected is not None:
            detail.append(f"expected {self.expected}")
        if self.seen is not None:
            detail.append(f"seen {self.seen}")
        suffix = f" ({', '.join(detail)})" if detail else ""
        return f"{self.code}  {self.path}  {self.message}{suffix}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "severity": str(self.severity),
            "path": self.path,
            "message": self.message,
        }
        if self.expected is not None:
            out["expected"] = self.expected
        if self.seen is not None:
            out["seen"] = self.seen
        if self.evidence:
            out["evidence"] = list(self.evidence)
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Violation:
        return msgspec.convert(data, cls)


_REGISTRY: dict[str, Check] = {}


def register(check: Check) -> Check:
    """Add *check* to the registry. Codes are unique: registering one twice is a bug."""
    existing = _REGISTRY.get(check.code)
    if existing is not None and existing != check:
        raise ConfigError(f"check code {check.code!r} is already registered as {existing.title!r}")
    _REGISTRY[check.code] = check
    return check


_LOADED = False


def _load_builtin_checks() -> None:
    # The registry knows no check module by name: modules that define checks are plug-ins,
    # listed under the ``harness.checks`` entry point group (pyproject.toml), as pytest finds its
    # plug-ins. Importing one registers its checks. Deferred so that importing this module stays
    # cheap and the import graph points down.
    global _LOADED
    if _LOADED:
        return
    from importlib.metadata import entry_points

    for plugin in entry_points(group="harness.checks"):
        plugin.load()
    _LOADED = True


def all_checks() -> list[Check]:
    """Every registered check, sorted by code."""
    _load_builtin_checks()
    return [_REGISTRY[code] for code in sorted(_REGISTRY)]


def get_check(code: str) -> Check:
    """The check registered under *code*; :class:`UnknownNameError` with a suggestion if none."""
    _load_builtin_checks()
    try:
        return _REGISTRY[code]
    except KeyError:
        raise UnknownNameError("check code", code, _REGISTRY) from None


def errors(violations: Iterable[Violation]) -> list[Violation]:
    """The violations of error severity."""
    return [v for v in violations if v.severity is Severity.ERROR]

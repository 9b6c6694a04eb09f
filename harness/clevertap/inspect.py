"""Inspect one callback request: parse it and run every registered payload check.

This is the function both the fake CleverTap server and the respx mock call for every request,
so it is the hot path of callback ingestion: one JSON parse, one walk over the payload.

INTERFACE STUB: the signatures below are the contract between the checks and the server. The
checks are being filled in; until then inspect() only parses.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from harness.checks import Severity, Violation

__all__ = ["CheckConfig", "DuplicateIndex", "Endpoint", "EventRecord", "Inspection", "inspect"]


class Endpoint(StrEnum):
    """Which callback URL a request arrived at."""

    BOUNCE = "bounce"
    UNSUBSCRIBE = "unsubscribe"
    V2 = "v2"


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """Settings of the payload checks (all times in seconds)."""

    max_future_skew: float = 300.0
    """A ``ts`` further than this in the future (receive time + skew) is a violation."""
    max_age: float = 30 * 86400.0
    """A ``ts`` older than this before receive time is implausible."""
    duplicate_window: float = 3600.0
    """The same (event, address) again within this window across payloads is a duplicate."""
    max_v2_events: int = 1000
    """CleverTap's documented limit of events per v2 call."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event found in a payload, normalised across formats, valid or not.

    ``event`` is the legacy event name or the v2 ``type``; ``ts`` is None where the payload gave
    none (v2) or gave something that is not an integer; ``path`` is the JSON path of the item.
    """

    event: str
    email: str
    ts: int | None
    meta: str | None
    path: str


@dataclass(slots=True)
class Inspection:
    """What :func:`inspect` found in one request."""

    format: Literal["legacy", "v2"] | None
    payload: Any
    """The parsed JSON, or None when the body is not JSON."""
    events: list[EventRecord] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no violation is of error severity."""
        return not any(v.severity is Severity.ERROR for v in self.violations)


class DuplicateIndex:
    """Remembers (event, address) pairs across payloads, to flag resends within a window.

    Thread-safe; the server keeps one per app and clears it on reset.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[float, int | None]] = {}

    def seen(
        self, key: tuple[str, str], now: float, window: float, seq: int | None = None
    ) -> tuple[float, int | None] | None:
        """Record *key* at *now*; return the earlier (time, journal seq) if within *window*."""
        with self._lock:
            previous = self._seen.get(key)
            self._seen[key] = (now, seq)
        if previous is not None and now - previous[0] <= window:
            return previous
        return None

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


def inspect(
    body: bytes,
    *,
    endpoint: Endpoint,
    content_type: str | None = "application/json",
    config: CheckConfig | None = None,
    history: DuplicateIndex | None = None,
    now: float | None = None,
) -> Inspection:
    """Parse *body* as a callback that arrived at *endpoint* and run every payload check.

    *now* is the receive time (defaults to ``time.time()``); *history*, when given, is consulted
    and updated for duplicates across payloads. Never raises on bad input: every problem is a
    violation.
    """
    _ = (endpoint, content_type, config, history, now if now is not None else time.time())
    try:
        payload = json.loads(body)
    except ValueError as exc:
        return Inspection(
            format=None,
            payload=None,
            violations=[
                Violation("CT101", Severity.ERROR, "$", "body is not JSON", "JSON", str(exc))
            ],
        )
    fmt: Literal["legacy", "v2"] = "v2" if isinstance(payload, dict) else "legacy"
    return Inspection(format=fmt, payload=payload)

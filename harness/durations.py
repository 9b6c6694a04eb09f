"""The one duration grammar, for the CLI, scenario YAML, the control API and plugin settings.

A duration is a number of seconds (``2``, ``0.5``) or a number with a unit: ``ms``, ``s``,
``m``, ``h`` or ``d`` (``200ms``, ``2s``, ``1.5m``, ``1h``). Never negative; spaces around the
number and the unit are allowed. It sits at the bottom of the package (it imports nothing from
it but the errors), so every layer that reads a duration uses this one parser.
"""

from __future__ import annotations

import math
import re

from harness.errors import ConfigError

__all__ = ["DURATION_EXPECTED", "DURATION_PATTERN", "DurationError", "parse_duration"]

DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"
"""The string form, as a regular expression (JSON Schema ``pattern``)."""
DURATION_EXPECTED = 'a number of seconds or a string like "200ms", "2s", "1.5m", "1h"'
"""What an error message says was expected."""

# DURATION_PATTERN with named groups (a JSON Schema pattern has no use for them).
_DURATION = re.compile(r"\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class DurationError(ConfigError):
    """A value that is not a duration; ``seen`` is the value."""

    def __init__(self, seen: object) -> None:
        super().__init__(f"not a duration: expected {DURATION_EXPECTED}, seen {seen!r}")
        self.seen = seen


def parse_duration(value: object) -> float:
    """Seconds from ``2``, ``1.5``, ``"200ms"``, ``"2s"``, ``"1.5m"``, ``"1h"`` or ``"1d"``.

    >>> parse_duration("200ms"), parse_duration("1.5m"), parse_duration(2)
    (0.2, 90.0, 2.0)
    """
    if isinstance(value, bool):
        raise DurationError(value)  # True is an int to Python, never a duration to a user
    if isinstance(value, int | float):
        if value >= 0 and math.isfinite(value):
            return float(value)
    elif isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if m:
            return float(m["number"]) * _UNITS[m["unit"]]
    raise DurationError(value)

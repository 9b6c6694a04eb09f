"""Files the package ships besides its code: the example integration, the shipped scenarios and
the starter suite that ``harness init`` writes.

The repository keeps one copy of each, at the top (``examples/``, ``scenarios/``); the wheel
carries them under ``harness/_bundled/`` (hatch ``force-include`` in pyproject.toml). So a file is
looked for inside the installed package first, then in the source checkout the package was
imported from (an editable install). hatch also copies the force-included files of an editable
install to ``site-packages/harness/_bundled/``, but ``harness`` itself is imported from the
checkout there, so :data:`_PACKAGE` is the checkout's and its files are the ones used.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import ConfigError

__all__ = ["EXAMPLE", "SCENARIOS", "STARTER", "bundled", "find_bundled"]

_PACKAGE = Path(__file__).resolve().parent
_PLACES = (_PACKAGE / "_bundled", _PACKAGE.parent)
"""The wheel's copy, then the checkout's (``harness/..``)."""

EXAMPLE = Path("examples") / "integration" / "gateway.py"
"""The example integration's entry point, relative to a bundle root."""
SCENARIOS = Path("scenarios")
"""The shipped scenarios, relative to a bundle root."""
STARTER = Path("examples") / "starter"
"""The starter suite ``harness init`` copies (a conftest and a test)."""


def find_bundled(relative: Path) -> Path | None:
    """The shipped file or directory at *relative*, or None when this install has none."""
    for root in _PLACES:
        place = root / relative
        if place.exists():
            return place
    return None


def bundled(relative: Path) -> Path:
    """:func:`find_bundled`, or :class:`ConfigError` naming where it looked."""
    place = find_bundled(relative)
    if place is None:
        looked = ", ".join(str(root / relative) for root in _PLACES)
        raise ConfigError(
            f"this install of clevertap-harness has no {relative} (looked at {looked}); "
            "reinstall the package from a wheel or a source checkout"
        )
    return place

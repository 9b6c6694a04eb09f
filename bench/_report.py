"""What every bench writes with ``--json OUT``, for ``bench/run_all.py`` to tabulate.

One shape: ``{"bench": name, "command": the command line, "rows": [{column: value}], "load":
[1, 5, 15 min load averages] (or [before, after]), "cpus": n, ...}``, where a value is a number,
a string, or ``{"median": m, "min": lo, "max": hi}`` for a figure measured several times.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["spread", "write"]


def spread(values: Iterable[float]) -> dict[str, float]:
    """Median with min..max of *values*."""
    data = list(values)
    return {"median": statistics.median(data), "min": min(data), "max": max(data)}


def write(path: Path | None, bench: str, rows: list[dict[str, Any]], **extra: Any) -> None:
    """Write the figures of *bench* to *path* (nothing when None)."""
    if path is None:
        return
    script = Path(sys.argv[0]).name
    result = {
        "bench": bench,
        "command": " ".join(["python", f"bench/{script}", *sys.argv[1:]]),
        "rows": rows,
        "load": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        **extra,
    }
    path.write_text(json.dumps(result, indent=1) + "\n")

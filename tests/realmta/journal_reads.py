"""The few journal facts the real-MTA suite reads, each through one small function.

PORT ME: these read the SMTP_SESSION entries' data as the journal stores it today (dicts). When
the journal's records are typed (``harness/records.py``), only this module changes.
"""

from __future__ import annotations

from typing import Any

from harness.journal import Journal, Kind

__all__ = ["decisions_by_recipient", "sessions_of_host"]


def decisions_by_recipient(journal: Journal) -> dict[str, list[dict[str, Any]]]:
    """Recipient -> the decisions the fake MX hosts gave it (stage, code, enhanced, mode, class),
    in journal order."""
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in journal.entries(Kind.SMTP_SESSION):
        for decision in entry.data.get("decisions", []):
            found.setdefault(str(decision["recipient"]).lower(), []).append(
                {
                    "stage": decision["stage"],
                    "code": decision["code"],
                    "enhanced": decision["enhanced"],
                    "mode": decision["mode"],
                    "class": decision["class"],
                }
            )
    return found


def sessions_of_host(journal: Journal, host: str) -> list[dict[str, Any]]:
    """The sessions of *host*: commands, replies (text only), end, dropped message."""
    return [
        {
            "commands": list(entry.data["commands"]),
            "replies": [r["reply"] for r in entry.data["replies"]],
            "end": entry.data["end"],
            "dropped": entry.data["dropped_message"],
        }
        for entry in journal.entries(Kind.SMTP_SESSION)
        if entry.data["host"] == host
    ]

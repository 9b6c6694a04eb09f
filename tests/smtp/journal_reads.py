"""Journal facts the SMTP fuzz and hostile-client tests read, each through one small function.

PORT ME: these read SMTP_SESSION entries' data as the journal stores it today (dicts). When the
journal's records are typed (``harness/records.py``), only this module changes.
"""

from __future__ import annotations

from harness.journal import Journal, Kind

__all__ = ["session_ends", "session_peers", "session_replies", "session_texts"]


def session_peers(journal: Journal) -> list[str]:
    """The ``host:port`` of the client of every journaled session."""
    return [str(e.data["peer"]) for e in journal.entries(Kind.SMTP_SESSION)]


def session_replies(journal: Journal) -> list[str]:
    """Every reply text journaled in any session."""
    return [r["reply"] for e in journal.entries(Kind.SMTP_SESSION) for r in e.data["replies"]]


def session_ends(journal: Journal) -> dict[str, str | None]:
    """Client ``host:port`` -> how its session ended (``quit``, ``timeout``, ...)."""
    return {str(e.data["peer"]): e.data["end"] for e in journal.entries(Kind.SMTP_SESSION)}


def session_texts(journal: Journal) -> list[str]:
    """Every journal entry as text (to search it for things that must never be there)."""
    return [repr(e.data) for e in journal.entries()]

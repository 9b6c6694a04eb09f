"""Journal facts the SMTP tests read (fuzz, secrecy, hostile clients, DSNs), through small
functions."""

from __future__ import annotations

from harness.journal import Journal
from harness.records import Dsn, Kind, SmtpClose

__all__ = [
    "dsns",
    "opened",
    "session_durations",
    "session_ends",
    "session_peers",
    "session_replies",
    "session_texts",
]


def _closes(journal: Journal) -> list[SmtpClose]:
    return [e.data for e in journal.entries(Kind.SMTP_SESSION) if isinstance(e.data, SmtpClose)]


def opened(journal: Journal) -> int:
    """How many connections the hosts have accepted so far."""
    return journal.count(Kind.SMTP_OPEN)


def session_peers(journal: Journal) -> list[str]:
    """The ``host:port`` of the client of every ended session."""
    return [c.peer for c in _closes(journal)]


def session_replies(journal: Journal) -> list[str]:
    """Every reply text kept in any session's transcript."""
    return [r.reply for c in _closes(journal) for r in c.replies]


def session_ends(journal: Journal) -> dict[tuple[str, str], str]:
    """(MX host, client ``host:port``) -> how its session ended (``quit``, ``timeout``, ...)."""
    return {(c.host, c.peer): c.end for c in _closes(journal)}


def session_durations(journal: Journal) -> dict[tuple[str, str], float]:
    """(MX host, client ``host:port``) -> how long the session lasted, as the server measured
    it. (One client port may serve connections to two hosts at once.)"""
    return {(c.host, c.peer): c.duration for c in _closes(journal)}


def session_texts(journal: Journal) -> list[str]:
    """Every journal entry as JSON text (to search it for what must never be there)."""
    return [repr(e.to_json()) for e in journal.entries()]


def dsns(journal: Journal) -> list[Dsn]:
    """Every DSN, auto-reply and complaint the world has sent (or tried to), in order."""
    return [e.data for e in journal.entries(Kind.DSN) if isinstance(e.data, Dsn)]

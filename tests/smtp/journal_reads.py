"""Journal facts the SMTP tests read (fuzz, secrecy, hostile clients, DSNs), through small
functions."""

from __future__ import annotations

from harness.journal import Journal
from harness.records import Dsn, Kind, SmtpClose

__all__ = [
    "dsns",
    "opened",
    "session_peers",
    "session_replies",
    "session_texts",
    "sessions_without_quit",
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


def sessions_without_quit(journal: Journal) -> dict[tuple[str, str], SmtpClose]:
    """(MX host, client ``host:port``) -> the session from that port that did not end with the
    client's QUIT (a timeout, a drop). A hostile client never sends QUIT, and a well-behaved one
    always does: once a hostile connection is closed, the kernel may give its port to a
    well-behaved client's next connection, whose session must not stand in for it. (One client
    port may also serve connections to two hosts at once.)"""
    return {(c.host, c.peer): c for c in _closes(journal) if c.end != "quit"}


def session_texts(journal: Journal) -> list[str]:
    """Every journal entry as JSON text (to search it for what must never be there)."""
    return [repr(e.to_json()) for e in journal.entries()]


def dsns(journal: Journal) -> list[Dsn]:
    """Every DSN, auto-reply and complaint the world has sent (or tried to), in order."""
    return [e.data for e in journal.entries(Kind.DSN) if isinstance(e.data, Dsn)]

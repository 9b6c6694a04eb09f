"""The few journal facts the real-MTA suite reads, each through one small function."""

from __future__ import annotations

from typing import Any

from harness.journal import Journal
from harness.records import Kind, SmtpClose, SmtpMessage, SmtpReply
from harness.vocab import address_key

__all__ = ["decisions_by_recipient", "sessions_of_host"]


def decisions_by_recipient(journal: Journal) -> dict[str, list[dict[str, Any]]]:
    """Recipient -> what the fake MX hosts decided for it, in journal order: every reply that
    decided it (stage, code, enhanced, mode, class) and every acceptance (``accepted``, 250)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in journal.entries():
        record = entry.data
        if isinstance(record, SmtpReply):
            found.setdefault(address_key(record.recipient), []).append(
                {
                    "stage": record.stage,
                    "code": record.code,
                    "enhanced": record.enhanced,
                    "mode": record.mode,
                    "class": record.bounce_class,
                }
            )
        elif isinstance(record, SmtpMessage):
            for rcpt in record.recipients:
                found.setdefault(address_key(rcpt.address), []).append(
                    {"stage": "accepted", "code": 250, "enhanced": "2.0.0", "mode": None}
                )
    return found


def sessions_of_host(journal: Journal, host: str) -> list[dict[str, Any]]:
    """The sessions of *host*: commands, replies (text only), end, dropped message."""
    sessions = []
    for entry in journal.entries(Kind.SMTP_SESSION):
        record = entry.data
        if isinstance(record, SmtpClose) and record.host == host:
            dropped = record.dropped_message
            sessions.append(
                {
                    "commands": list(record.commands),
                    "replies": [r.reply for r in record.replies],
                    "end": record.end,
                    "dropped": None
                    if dropped is None
                    else {"recipients": list(dropped.recipients), "after_dot": dropped.after_dot},
                }
            )
    return sessions

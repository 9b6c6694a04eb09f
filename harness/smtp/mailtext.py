"""What the mail a fake MX host sends back is made of, whatever kind it is: the ``Date`` it
carries, the stable fingerprint its ids come from, and the original message's header block,
returned as it was accepted.

One home for the DSN builder (:mod:`harness.smtp.dsn`) and the auto-replies and complaints
(:mod:`harness.smtp.reports`), so a returned header block or a date reads the same in all of them.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from email.utils import format_datetime

__all__ = ["as_datetime", "fingerprint", "header_block", "mail_date", "raw_text"]


def as_datetime(now: float | datetime | None) -> datetime:
    """*now* as an aware datetime: the current second when None, UTC when it has no zone."""
    if now is None:
        return datetime.now(UTC).replace(microsecond=0)
    if isinstance(now, datetime):
        return now if now.tzinfo else now.replace(tzinfo=UTC)
    return datetime.fromtimestamp(now, UTC)


def mail_date(when: datetime) -> str:
    """An RFC 5322 date (``Date:``, ``Arrival-Date:``), to the second."""
    return format_datetime(when.replace(microsecond=0))


def fingerprint(*parts: object) -> str:
    """A SHA-256 hex digest of *parts*: the same inputs give the same queue ids and boundaries,
    so a report built twice with the same *now* is byte-identical."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    return digest.hexdigest()


def header_block(content: bytes) -> bytes:
    """The header block of the message *content*, LF line ends, ending in one LF (the whole
    content when it has no body)."""
    normal = content.replace(b"\r\n", b"\n")
    head, sep, _ = normal.partition(b"\n\n")
    return head + b"\n" if sep else normal


def raw_text(data: bytes) -> str:
    """*data* as a payload the email package writes back byte for byte, LF line ends."""
    # The email package carries 8-bit payloads as surrogate-escaped str and writes them back
    # byte for byte, which keeps the returned message exactly as it was accepted.
    return data.replace(b"\r\n", b"\n").decode("ascii", "surrogateescape")

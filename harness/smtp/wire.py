"""What the fake MX reads off the wire, in bulk: the DATA section and the header block.

aiosmtpd stays the protocol engine; these two replace the parts of it (and of the stdlib) that
cost the most per message (issue 15):

- :func:`read_data` reads a DATA section with a few ``readuntil`` calls instead of one per line
  (aiosmtpd's ``smtp_DATA`` makes about 30 for a 1 KB message, each with a ``logging.debug``),
  with aiosmtpd's verdicts to the byte: the same size and line-length limits, found in the same
  order, the same dot-unstuffing; ``tests/smtp/test_wire.py`` sends the same bodies, cut into
  random segments, to both and compares;
- :func:`parse_headers` splits a well-formed header block itself (a few microseconds) and hands
  anything unusual to the stdlib's ``HeaderParser`` (about 20 us), whose results it matches
  (compared on generated header blocks by the same test module).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from email.parser import HeaderParser

__all__ = ["DataRead", "parse_headers", "read_data"]

TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
"""aiosmtpd's words for a DATA line over the limit (push() words them as Postfix does)."""
TOO_MUCH = "552 Error: Too much mail data"
"""aiosmtpd's words for a DATA section over the size limit."""

# ".\r\n" ends the section only at the start of a line; searching for it (not for "\r\n.\r\n")
# also finds the dot when it is the section's very first line.
_DOT = b".\r\n"


@dataclass(slots=True)
class DataRead:
    """A DATA section as read: its unstuffed content, or the reply that refuses it."""

    content: bytes | None
    refusal: str | None = None


class _Section:
    """The raw section so far and its checks, line by line only when a limit is near."""

    __slots__ = ("buf", "checked", "line_limit", "refusal", "size_limit")

    def __init__(self, size_limit: int | None, line_limit: int) -> None:
        self.buf = bytearray()
        self.checked = 0
        """Offset (at a line start) up to which every line has been checked."""
        self.size_limit = size_limit
        self.line_limit = line_limit
        self.refusal: str | None = None

    def add(self, piece: bytes) -> None:
        if self.refusal is not None:
            return  # refused already: nothing more is kept (aiosmtpd discards it too)
        buf = self.buf
        buf += piece
        end = buf.rfind(b"\r\n", self.checked)
        if end < 0:
            # No complete line yet. A line longer than the limit is refused as soon as that is
            # certain (its content alone is over it), and not kept, as aiosmtpd does.
            if len(buf) - self.checked - 1 > self.line_limit:
                self._refuse(TOO_LONG)
            return
        end += 2
        limit = self.size_limit
        if end - self.checked > self.line_limit or (limit and end > limit):
            self._check_lines(end)
        else:
            self.checked = end
        if self.refusal is None and len(buf) - self.checked - 1 > self.line_limit:
            self._refuse(TOO_LONG)

    def _check_lines(self, end: int) -> None:
        """aiosmtpd's order of verdicts, line by line (its ``smtp_DATA``): a line whose content
        alone is over the line limit overruns the reader first; otherwise the running size is
        checked before the line's length with its CRLF."""
        buf, start, limit = self.buf, self.checked, self.size_limit
        while start < end:
            stop = buf.find(b"\r\n", start) + 2
            length = stop - start
            if length - 2 > self.line_limit:
                self._refuse(TOO_LONG)
                return
            if limit and stop > limit:
                self._refuse(TOO_MUCH)
                return
            if length > self.line_limit:
                self._refuse(TOO_LONG)
                return
            start = stop
        self.checked = end

    def _refuse(self, reply: str) -> None:
        self.refusal = reply
        self.buf = bytearray()


async def read_data(
    reader: asyncio.StreamReader, *, size_limit: int | None, line_limit: int
) -> DataRead | None:
    """Read one DATA section (after the 354) up to and including its final dot.

    *line_limit* must be the reader's own limit (aiosmtpd sizes its reader by its
    ``line_length_limit``): a line whose content is longer overruns the reader, as in aiosmtpd.
    Returns None when the client went away before the final dot.
    """
    section = _Section(size_limit, line_limit)
    tail = b"\r\n"  # the last two bytes read: the 354 reply ended a line
    while True:
        try:
            chunk = await reader.readuntil(_DOT)
        except asyncio.LimitOverrunError as exc:
            # No dot within the reader's limit: take what was scanned. That leaves the last two
            # bytes in the reader, so a dot right after them is still found (and judged).
            chunk = await reader.read(exc.consumed)
            if not chunk:
                return None
            section.add(chunk)
            tail = _tail(tail, chunk)
            continue
        except asyncio.IncompleteReadError:
            return None
        before = chunk[:-3]
        if _tail(tail, before) == b"\r\n":
            section.add(before)
            break
        section.add(chunk)
        tail = b"\r\n"
    if section.refusal is not None:
        return DataRead(None, section.refusal)
    data = bytes(section.buf)
    # Dot-unstuffing (RFC 5321 4.5.2): one leading dot off every line. Lines are CRLF-ended, as
    # aiosmtpd splits them; a bare LF does not start a line.
    if data[:1] == b".":
        data = data[1:]
    return DataRead(data.replace(b"\r\n.", b"\r\n"))


def _tail(tail: bytes, piece: bytes) -> bytes:
    """The last two bytes of the stream that ended with *tail*, once *piece* is added."""
    return piece[-2:] if len(piece) >= 2 else (tail + piece)[-2:]


# -- headers ---------------------------------------------------------------------------------

# A header line as the stdlib's FeedParser takes it (its headerRE, minus "From " and the
# continuation, which are handled apart): a name of printable ASCII without ':', then ':'.
_FIELD = re.compile(r"[\041-\071\073-\176]+:")
# What str.splitlines() (which the FeedParser splits with) also takes for a line break.
_OTHER_BREAKS = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def parse_headers(head: bytes) -> list[tuple[str, str]]:
    """The header fields of *head* (the header block, up to the empty line), as the stdlib's
    ``HeaderParser().parsestr(head.decode("utf-8", "replace"), headersonly=True).items()``
    gives them (compat32: values unfolded but for their CRLFs, leading blanks off)."""
    text = head.decode("utf-8", "replace")
    lines = text.split("\r\n")
    if lines and lines[-1] == "":
        lines.pop()
    # The common shape: CRLF line ends only, every line a field or a continuation of one.
    # Anything else (bare CR or LF, a Unix From line, a line that is neither) goes to the
    # stdlib, whose recovery rules are not worth copying.
    if _OTHER_BREAKS.search(text.replace("\r\n", "")):
        return _stdlib_headers(text)
    fields: list[tuple[str, list[str]]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not fields:
                return _stdlib_headers(text)
            fields[-1][1].append(line)
            continue
        match = _FIELD.match(line)
        if match is None or line.startswith("From "):
            return _stdlib_headers(text)
        name = line[: match.end() - 1]
        fields.append((name, [line[match.end() :].lstrip(" \t")]))
    return [(name, "\r\n".join(parts).rstrip("\r\n")) for name, parts in fields]


def _stdlib_headers(text: str) -> list[tuple[str, str]]:
    parsed = HeaderParser().parsestr(text, headersonly=True)
    return [(k, str(v)) for k, v in parsed.items()]

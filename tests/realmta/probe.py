"""A raw SMTP client that says exactly what it is told, for comparing servers reply by reply.

A probe is a list of steps; each step is bytes to send (one command line, or a BDAT chunk) or
:data:`TLS` (wrap the socket in TLS, as after ``220 Ready to start TLS``). Every step that sends
bytes reads one reply. Replies are reduced to what must agree between Postfix and the fake MX:
the code and the enhanced status code (texts are each server's own).
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass

__all__ = ["TLS", "Reply", "converse"]

TLS = b"<tls handshake>"
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?= |$)")


@dataclass(frozen=True, slots=True)
class Reply:
    code: int | None
    """None when the server closed the connection instead of replying."""
    enhanced: str | None
    lines: tuple[str, ...]

    @property
    def key(self) -> tuple[int | None, str | None]:
        return (self.code, self.enhanced)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _read_reply(reader: _Lines) -> Reply:
    lines: list[str] = []
    while True:
        raw = reader.readline()
        if not raw:
            return Reply(None, None, tuple(lines))
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            break
    last = lines[-1]
    code = int(last[:3]) if last[:3].isdigit() else None
    match = _ENHANCED.match(last[4:])
    return Reply(code, match.group(0) if match else None, tuple(lines))


class _Lines:
    """Lines from a socket that may be switched to TLS between replies."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock = sock
        self.buffer = b""

    def readline(self) -> bytes:
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionError, ssl.SSLError, TimeoutError):
                chunk = b""
            if not chunk:
                line, self.buffer = self.buffer, b""
                return line
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"


def converse(port: int, steps: list[bytes], *, timeout: float = 10.0) -> list[Reply]:
    """Connect to 127.0.0.1:*port*, read the greeting, run *steps*; the greeting is reply 0."""
    sock: socket.socket | ssl.SSLSocket = socket.create_connection(
        ("127.0.0.1", port), timeout=timeout
    )
    reader = _Lines(sock)
    replies = [_read_reply(reader)]
    try:
        for step in steps:
            if step == TLS:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                sock = context.wrap_socket(sock, server_hostname="localhost")
                reader = _Lines(sock)
                continue
            try:
                sock.sendall(step)
            except OSError:
                replies.append(Reply(None, None, ()))
                break
            reply = _read_reply(reader)
            replies.append(reply)
            if reply.code is None:
                break
    finally:
        sock.close()
    return replies

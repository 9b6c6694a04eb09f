"""Settings of the fake CleverTap server: where it listens, its paths, strictness, cap, faults.

CleverTap's real callback URLs are not public (the dashboard fills in a read-only "Callback URL"),
so every path here is a harness default, not a claim about CleverTap; change them freely.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from harness.clevertap.faults import FaultRule
from harness.clevertap.inspect import CheckConfig, Endpoint
from harness.errors import ConfigError

__all__ = ["DEFAULT_PATHS", "ServerSettings"]

DEFAULT_PATHS: dict[Endpoint, str] = {
    Endpoint.BOUNCE: "/callbacks/bounce",
    Endpoint.UNSUBSCRIBE: "/callbacks/unsubscribe",
    Endpoint.V2: "/callbacks/v2",
}
"""Harness defaults for the three callback URLs (CleverTap's own URL shape is not public)."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Everything the fake CleverTap needs to know before it starts. Immutable; use :meth:`with_`.

    Faults can also be changed while running (control API, :attr:`CleverTapServer.faults`).
    """

    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port when the socket is bound; the server reports the real one."""
    bounce_path: str = DEFAULT_PATHS[Endpoint.BOUNCE]
    unsubscribe_path: str = DEFAULT_PATHS[Endpoint.UNSUBSCRIBE]
    v2_path: str = DEFAULT_PATHS[Endpoint.V2]
    control_prefix: str = "/_harness"
    strict: bool = True
    """Strict: a payload with error-level violations gets 400 with the violations in the body.
    Lenient: it gets 200 as a real endpoint would; the violations are journaled either way."""
    max_body: int = 1024 * 1024
    """Bodies longer than this many bytes get 413 and are journaled truncated to it."""
    checks: CheckConfig = field(default_factory=CheckConfig)
    faults: tuple[FaultRule, ...] = ()
    """Faults active from the start, in order (see :mod:`harness.clevertap.faults`)."""
    token: str | None = None
    """When set, the control API (except health) requires ``Authorization: Bearer <token>``.
    Required when *host* is not a loopback address."""
    journal_path: Path | None = None
    """An SQLite journal file; None keeps the journal in memory."""
    ready_timeout: float = 5.0
    """Seconds to wait for the server to accept connections before giving up."""
    stop_timeout: float = 5.0
    """Seconds in-flight requests get to finish when the server stops."""
    header_timeout: float = 10.0
    """Seconds a client gets to send a request's line and headers once its first byte arrived;
    then 408 and the connection closes (slowloris)."""
    body_timeout: float = 30.0
    """Seconds a client gets to send a whole request body once the headers arrived; then 408
    and the connection closes (the callback is journaled with ``disconnected``)."""
    keep_alive_timeout: float = 5.0
    """Seconds a connection may sit idle before its first request or between requests."""
    send_timeout: float = 30.0
    """Seconds a client may leave an answer unread (the send buffer full) before the
    connection is dropped."""
    max_connections: int = 1000
    """Open connections at most; one more is answered 503 and closed at once. Keep it below
    the process's file-descriptor limit (``ulimit -n``)."""
    max_header_size: int = 16 * 1024
    """Bytes of an incomplete request head (line and headers) buffered at most; a client whose
    head grows past it gets 400."""
    http_parser: Literal["auto", "httptools", "h11"] = "auto"
    """The HTTP protocol: ``httptools`` answers callbacks in the protocol, without ASGI (about
    four times the throughput); ``h11`` serves everything through ASGI; ``auto`` is httptools
    when it is installed (it comes with uvicorn[standard]), else h11. Both keep every limit."""

    def __post_init__(self) -> None:
        paths = self.paths
        for endpoint, path in paths.items():
            if not path.startswith("/"):
                raise ConfigError(f"{endpoint.value}_path must start with '/', got {path!r}")
        if len(set(paths.values())) != len(paths):
            raise ConfigError(f"callback paths must differ, got {sorted(paths.values())}")
        prefix = self.control_prefix
        if not prefix.startswith("/") or prefix.endswith("/") or len(prefix) < 2:
            raise ConfigError(
                f"control_prefix must start with '/' and not end with one, got {prefix!r}"
            )
        for path in paths.values():
            if path == prefix or path.startswith(prefix + "/"):
                raise ConfigError(f"callback path {path!r} lies under control_prefix {prefix!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port!r}")
        if self.max_body < 1:
            raise ConfigError(f"max_body must be at least 1 byte, got {self.max_body!r}")
        if self.ready_timeout <= 0 or self.stop_timeout <= 0:
            raise ConfigError(
                f"ready_timeout and stop_timeout must be positive, got "
                f"{self.ready_timeout!r} and {self.stop_timeout!r}"
            )
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout", "send_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < float("inf")):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.max_connections < 1:
            raise ConfigError(f"max_connections must be at least 1, got {self.max_connections!r}")
        if self.max_header_size < 1024:
            raise ConfigError(
                f"max_header_size must be at least 1024 bytes, got {self.max_header_size!r}"
            )
        if self.http_parser not in ("auto", "httptools", "h11"):
            raise ConfigError(
                f"http_parser must be 'auto', 'httptools' or 'h11', got {self.http_parser!r}"
            )
        if self.token is not None and not self.token:
            raise ConfigError("token must not be empty; pass None for no token")
        if not _is_loopback(self.host) and self.token is None:
            raise ConfigError(
                f"host {self.host!r} is not a loopback address: set a token so that only you "
                "can read and reset the journal through the control API"
            )

    @property
    def paths(self) -> dict[Endpoint, str]:
        """The callback path of each endpoint."""
        return {
            Endpoint.BOUNCE: self.bounce_path,
            Endpoint.UNSUBSCRIBE: self.unsubscribe_path,
            Endpoint.V2: self.v2_path,
        }

    def with_(self, **changes: Any) -> ServerSettings:
        """A copy with *changes* applied (validated again)."""
        return replace(self, **changes)

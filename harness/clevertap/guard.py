"""An ASGI wrapper that keeps web pages away from the fake CleverTap's control API.

A server on 127.0.0.1 is out of other machines' reach, but not of the browser running on the
same machine: any page can POST to ``http://127.0.0.1:PORT/_harness/reset`` (a "simple"
cross-site request needs no permission when its Content-Type is ``text/plain``), and a page
whose domain is re-pointed at 127.0.0.1 (DNS rebinding) can even read the answers. The guard
refuses, with 403 and a JSON body that says why:

- a ``Host`` header that names neither the bound address, a loopback address nor ``localhost``
  (the signature of DNS rebinding); only when bound to loopback, since the names a server bound
  elsewhere is reached by cannot be known (a token is required there);
- an ``Origin`` header other than the server's own (a browser request from another site);
- a state-changing control request (POST, PUT, PATCH, DELETE under the control prefix) without
  a JSON Content-Type: browsers cannot send one cross-site without a CORS preflight, which this
  server never grants.

Callback endpoints (and paths nothing serves, where a mistyped callback URL lands) are left
open to every client: the integration posts them from server-side code (no ``Origin``, a
``Host`` from whatever URL it was given), and each request there, hostile ones included, must
reach the journal; a browser's cross-site callback is journaled and flagged
by the payload checks like any other. docs/server.md tells the story for users.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from harness.clevertap.app import CleverTapApp, Receive, Scope, Send

__all__ = ["ControlGuard"]

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _is_loopback_name(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``name[:port]`` or ``[v6][:port]`` -> (lowercased name without brackets, port), or None
    when it does not parse."""
    try:
        parts = urlsplit("//" + value)
        port = parts.port
    except ValueError:
        return None
    if parts.hostname is None or parts.username is not None or parts.path:
        return None
    return parts.hostname.lower(), port


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class ControlGuard:
    """Wrap *app* (the fake CleverTap) served at *host*:*port*; see the module docstring.

    *callback_paths* are exempt; *control_prefix* marks the control API.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str,
        port: int,
        control_prefix: str,
        callback_paths: Iterable[str],
    ) -> None:
        self.app = app
        # Wrong callback paths are as open as the right ones (journaled, answered 404): the
        # app knows which paths nothing serves.
        self.stray: Callable[[Scope], bool] | None = (
            app.is_stray if isinstance(app, CleverTapApp) else None
        )
        self.port = port
        self.control_prefix = control_prefix
        self.callback_paths = frozenset(callback_paths)
        bound = host.strip("[]").lower()
        self.check_host = _is_loopback_name(bound)
        self.bound = bound
        shown = f"[{bound}]" if ":" in bound else bound
        self.own_origin = f"http://{shown}:{port}"

    def _own_name(self, name: str) -> bool:
        return name == self.bound or _is_loopback_name(name)

    def refusal(self, scope: Scope) -> str | None:
        """Why the request of *scope* is refused, or None to let it through."""
        path: str = scope["path"]
        if path in self.callback_paths or (self.stray is not None and self.stray(scope)):
            return None
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            # A repeated Host or Origin is itself suspicious: keep the first, judge it, and
            # refuse below if a second one disagrees.
            if name in headers and name in (b"host", b"origin") and headers[name] != value:
                return f"conflicting {name.decode()} headers"
            headers.setdefault(name, value)
        host = headers.get(b"host")
        if self.check_host and host is not None:
            text = host.decode("latin-1")
            parsed = _split_host(text)
            if (
                parsed is None
                or not self._own_name(parsed[0])
                or parsed[1] not in (None, self.port)
            ):
                return (
                    f"Host {text!r} is not this server (expected {self.bound}:{self.port} or "
                    f"localhost:{self.port}); requests for other names are refused (DNS rebinding)"
                )
        origin = headers.get(b"origin")
        if origin is not None:
            text = origin.decode("latin-1")
            try:
                parts = urlsplit(text)
                port = parts.port
            except ValueError:
                parts, port = None, None
            own = (
                parts is not None
                and parts.scheme == "http"
                and parts.hostname is not None
                and self._own_name(parts.hostname.lower())
                and port == self.port
            )
            if not own:
                return (
                    f"Origin {text!r} is not this server's ({self.own_origin}); requests from "
                    "web pages of other sites are refused"
                )
        method: str = scope["method"]
        under_control = path == self.control_prefix or path.startswith(self.control_prefix + "/")
        if under_control and method in _STATE_CHANGING:
            content_type = headers.get(b"content-type")
            seen = content_type.decode("latin-1") if content_type is not None else None
            if not _is_json(seen):
                return (
                    f"{method} {path} needs Content-Type: application/json (seen "
                    f"{repr(seen) if seen else 'none'}); state-changing control requests must be "
                    "JSON, which browsers cannot send from another site"
                )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reason = self.refusal(scope)
        if reason is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"status": "error", "message": reason}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

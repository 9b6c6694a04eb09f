"""The fake CleverTap in-process, for integrations that call CleverTap with httpx: no sockets.

::

    from harness.respx_mock import CleverTapMock

    with CleverTapMock() as ct:                       # or: async with, or @CleverTapMock()
        my_integration.report_bounce(url=ct.urls.bounce, ...)   # posts with httpx
        ct.expect_callback("hardbounce", "gone@example.com")
        ct.expect_no_violations()

respx routes every httpx request to the mock's base URL to
:func:`harness.clevertap.app.process_callback`, the same function the real server's ASGI handler
calls: the same checks, the same status codes and bodies, the same journal entries (with
``peer`` null, as there is no socket), the same fault rules. Faults that drop the connection
raise what httpx raises against the real server: :class:`httpx.RemoteProtocolError` for
``close``, :class:`httpx.ReadError` for ``reset``.

A request to the base URL whose path is not a callback URL is answered 404 and journaled, as
the server does (a :class:`~harness.records.Callback` with ``endpoint`` None; the body names
the nearest callback path), and also fails the block: leaving it raises
:class:`~harness.errors.ExpectationError` naming the request (unless the block is already
failing with another exception). So do error-level check violations journaled while the block
ran, as ``ct_world`` does after a test, unless *allow* lists their codes or *allow_violations*
is True. Requests to
other hosts are respx's business: with the mock's own router they fail as not mocked; pass
``router=`` to add the callback routes to a router of your own (e.g. respx's ``respx_mock``
fixture) and keep its rules for other hosts.
"""

from __future__ import annotations

import asyncio
import functools
import inspect as pyinspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

import httpx

try:
    import respx
except ModuleNotFoundError as exc:  # respx is an extra: say which one
    raise ModuleNotFoundError(
        f"harness.respx_mock needs {exc.name}: pip install 'clevertap-harness[respx]'",
        name=exc.name,
    ) from None

from harness.clevertap.app import CallbackResult, process_callback, process_stray
from harness.clevertap.faults import FaultPlan, FaultRule
from harness.clevertap.inspect import Endpoint, JournalHistory
from harness.clevertap.settings import ServerSettings
from harness.errors import ConfigError, ExpectationError, did_you_mean
from harness.expect import JournalAssertions
from harness.journal import Journal, MemoryJournal
from harness.records import FaultsChanged

__all__ = ["CleverTapMock", "MockUrls"]

P = ParamSpec("P")
R = TypeVar("R")

_NOT_FOUND = b'{"detail":"Not Found"}'
"""What the real server (FastAPI) answers for a path under the control prefix it does not serve."""


@dataclass(frozen=True, slots=True)
class MockUrls:
    """The callback URLs the mock answers."""

    base: str
    bounce: str
    unsubscribe: str
    v2: str

    def for_endpoint(self, endpoint: Endpoint) -> str:
        """The callback URL of *endpoint*."""
        return {Endpoint.BOUNCE: self.bounce, Endpoint.UNSUBSCRIBE: self.unsubscribe}.get(
            endpoint, self.v2
        )


class _Late(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that arrives after a fault's delay, or a connection dropped after it.

    respx resolves a request the same way for sync and async clients, so the side effect
    cannot sleep itself: the client reads this stream, with time.sleep() in a sync client and
    asyncio.sleep() in an async one, so that a delayed answer never blocks an event loop.
    """

    def __init__(self, body: bytes, delay: float, error: Exception | None) -> None:
        self.body = body
        self.delay = delay
        self.error = error

    def __iter__(self) -> Iterator[bytes]:
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        yield self.body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        yield self.body


def _base(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"base_url {url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"base_url must be an http:// or https:// URL with a host, got {url!r}")
    if parsed.query or parsed.fragment:
        raise ConfigError(f"base_url must have no query or fragment, got {url!r}")
    return parsed


class CleverTapMock(JournalAssertions):
    """The fake CleverTap as a respx mock. See the module docstring.

    *settings* are the server's (paths, strictness, size cap, check config, faults; host and
    port are unused); *strict*, when given, overrides ``settings.strict``. *journal* defaults to
    a new in-memory one. Nothing is cleared when a block starts: call :meth:`reset`.
    """

    def __init__(
        self,
        base_url: str = "https://callbacks.clevertap.test",
        *,
        strict: bool | None = None,
        settings: ServerSettings | None = None,
        journal: Journal | None = None,
        router: respx.MockRouter | None = None,
        allow: Iterable[str] = (),
        allow_violations: bool = False,
    ) -> None:
        base = _base(base_url)
        if isinstance(allow, str):
            allow = [allow]
        self.allow = frozenset(allow)
        """Violation codes the exit check lets through."""
        self.allow_violations = bool(allow_violations)
        """True: the exit check ignores violations (unmatched requests still fail it)."""
        if strict is not None and not isinstance(strict, bool):
            raise ConfigError(f"strict must be True, False or None, got {strict!r}")
        if settings is not None and not isinstance(settings, ServerSettings):
            raise ConfigError(f"settings must be a ServerSettings, got {settings!r}")
        settings = settings if settings is not None else ServerSettings()
        if strict is not None and strict != settings.strict:
            settings = settings.with_(strict=strict)
        self.settings = settings
        self.journal: Journal = journal if journal is not None else MemoryJournal()
        self.faults = FaultPlan(settings.faults)
        self.duplicates = JournalHistory(self.journal)
        self.unmatched: list[httpx.Request] = []
        """Requests to the base URL that matched no callback URL (answered 404)."""
        self.since = self.journal.last_seq
        """The journal seq when the mock last started: the exit check reads what came after."""

        self._scheme, self._host, self._port = base.scheme, base.host, base.port
        prefix = base.path.rstrip("/")
        root = str(base.copy_with(path="/")).rstrip("/")
        self._paths = {prefix + path: endpoint for endpoint, path in settings.paths.items()}
        self._stray_paths = {e.value: prefix + path for e, path in settings.paths.items()}
        self._control = prefix + settings.control_prefix
        self.urls = MockUrls(
            base=root + prefix,
            bounce=root + prefix + settings.bounce_path,
            unsubscribe=root + prefix + settings.unsubscribe_path,
            v2=root + prefix + settings.v2_path,
        )
        self._owns_router = router is None
        self.router: respx.MockRouter = (
            router
            if router is not None
            else respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
        )
        self.route = self.router.route(name=f"clevertap-mock {self.urls.base}").mock(
            side_effect=self._handle
        )

    # -- the transport-free server ---------------------------------------------------------

    def _ours(self, url: httpx.URL) -> bool:
        return url.scheme == self._scheme and url.host == self._host and url.port == self._port

    def _handle(self, request: httpx.Request) -> httpx.Response | None:
        if not self._ours(request.url):
            return None  # not this mock's host: respx tries its other routes
        path = request.url.path
        endpoint = self._paths.get(path)
        received = time.time()
        if endpoint is None:
            self.unmatched.append(request)
            if path == self._control or path.startswith(self._control + "/"):
                # As on the server: the control API's unknown paths are plain 404s.
                return httpx.Response(
                    404, headers={"content-type": "application/json"}, content=_NOT_FOUND
                )
        body = request.read()
        # The first Content-Type header as sent, like the ASGI handler reads it.
        content_type = next(
            (v.decode("latin-1") for k, v in request.headers.raw if k.lower() == b"content-type"),
            None,
        )
        if endpoint is None:
            stray = process_stray(
                self,
                path,
                body,
                paths=self._stray_paths,
                size=len(body),
                method=request.method,
                content_type=content_type,
                peer=None,
                received=received,
            )
            return self._response(request, stray)
        result = process_callback(
            self,
            endpoint,
            path,
            body,
            size=len(body),
            method=request.method,
            content_type=content_type,
            peer=None,
            received=received,
        )
        return self._response(request, result)

    @staticmethod
    def _response(request: httpx.Request, result: CallbackResult) -> httpx.Response:
        error: Exception | None = None
        if result.action == "close":
            error = httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        elif result.action == "reset":
            error = httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        if error is not None and not result.delay:
            raise error
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(result.body))),
            *((k.decode("latin-1"), v.decode("latin-1")) for k, v in result.headers),
        ]
        status = result.status if result.status is not None else 200
        if result.delay:
            return httpx.Response(
                status, headers=headers, stream=_Late(result.body, result.delay, error)
            )
        return httpx.Response(status, headers=headers, content=result.body)

    # -- control, as on the server ---------------------------------------------------------

    def set_faults(self, *rules: FaultRule) -> None:
        """Replace the fault rules; with no rules, remove them all (journaled as a NOTE)."""
        self.faults.set(rules)
        self.journal.append(FaultsChanged(rules=tuple(r.describe() for r in rules)))

    def reset(self) -> None:
        """Clear the journal, the duplicate index, the fault counters and unmatched requests."""
        self.journal.reset()
        self.duplicates.clear()
        self.faults.reset()
        self.unmatched.clear()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start routing httpx requests (done by ``with``/``async with``/the decorator)."""
        self.since = self.journal.last_seq
        if self._owns_router:
            self.router.start()

    def stop(self, *, check: bool = True) -> None:
        """Stop routing; with *check*, raise if a request matched no callback URL."""
        if self._owns_router:
            self.router.stop(quiet=True)
        if check:
            self.check()

    def check(self) -> None:
        """Raise :class:`ExpectationError` for requests to the base URL that matched no path,
        then for error-level violations journaled since :meth:`start` (see *allow*)."""
        self._check_unmatched()
        if not self.allow_violations:
            try:
                self.expect_no_violations(since=self.since, allow=self.allow)
            except ExpectationError as exc:
                raise ExpectationError(
                    f"error-level check violations were recorded while the mock ran:\n{exc}\n"
                    "(opt out with CleverTapMock(allow=[...]) or allow_violations=True)"
                ) from None

    def _check_unmatched(self) -> None:
        if not self.unmatched:
            return
        unmatched, self.unmatched = self.unmatched, []
        known = [self.urls.bounce, self.urls.unsubscribe, self.urls.v2]
        lines = [
            f"{len(unmatched)} request{'s' if len(unmatched) != 1 else ''} to {self.urls.base} "
            "matched no callback URL (answered 404):"
        ]
        for request in unmatched:
            hint = did_you_mean(request.url.path, list(self._paths))
            lines.append(
                f"  {request.method} {request.url}" + (f"; did you mean {hint}?" if hint else "")
            )
        lines.append("the callback URLs: " + ", ".join(known))
        raise ExpectationError("\n".join(lines))

    def __enter__(self) -> CleverTapMock:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # When the block already fails, its own error is the one to see.
        self.stop(check=exc_type is None)

    async def __aenter__(self) -> CleverTapMock:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    @overload
    def __call__(self, func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def __call__(self, func: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, func: Callable[P, Any]) -> Callable[P, Any]:
        """Use as a decorator: the mock is active while *func* (sync or async) runs."""
        if pyinspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with self:
                    return await func(*args, **kwargs)

            return run_async

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> Any:
            with self:
                return func(*args, **kwargs)

        return run

"""The fake CleverTap as a running server: uvicorn on a real socket, async or in a thread.

::

    async with CleverTapServer() as ct:          # inside a running event loop
        httpx.post(ct.urls.bounce, json=[...])

    with CleverTapServer() as ct:                # from sync code: a loop in a background thread
        ...

The server binds its own socket (127.0.0.1, port 0 unless told otherwise) before uvicorn sees
it, so the real port is known at once and there is no window in which another process could take
it. uvicorn runs without signal handlers: Ctrl-C stays with the caller.

Hostile clients are bounded by the HTTP protocol uvicorn is given (docs/limits.md): the
httptools one of :mod:`harness.clevertap.fastpath`, which also answers callbacks without going
through ASGI, or where httptools is absent (or ``http_parser="h11"``) the h11 one of
:mod:`harness.clevertap.deadlines`. Both keep the same limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Generator
from dataclasses import dataclass

import uvicorn

from harness._loop import Lifecycle, LoopThread
from harness.clevertap.app import CleverTapApp, create_app
from harness.clevertap.deadlines import h11_protocol_for
from harness.clevertap.faults import FaultPlan, FaultRule
from harness.clevertap.guard import ControlGuard
from harness.clevertap.inspect import Endpoint
from harness.clevertap.settings import ServerSettings
from harness.errors import ServerError, StartTimeout
from harness.journal import Journal, open_journal

__all__ = ["CleverTapServer", "ServerUrls"]


@dataclass(frozen=True, slots=True)
class ServerUrls:
    """Where a running server listens."""

    base: str
    bounce: str
    unsubscribe: str
    v2: str
    control: str

    def for_endpoint(self, endpoint: Endpoint) -> str:
        """The callback URL of *endpoint*."""
        return {Endpoint.BOUNCE: self.bounce, Endpoint.UNSUBSCRIBE: self.unsubscribe}.get(
            endpoint, self.v2
        )


class _Uvicorn(uvicorn.Server):
    """uvicorn that leaves signals alone: the harness runs inside someone else's program."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _protocol_for(settings: ServerSettings, app: CleverTapApp) -> type[asyncio.Protocol]:
    """The HTTP protocol of *settings*' ``http_parser``: httptools with callbacks answered in
    the protocol ("auto" where httptools is installed), else h11."""
    if settings.http_parser != "h11":
        try:
            from harness.clevertap.fastpath import protocol_for
        except ImportError as exc:  # httptools is an optional part of uvicorn[standard]
            if settings.http_parser == "httptools":
                raise ServerError(
                    f"http_parser='httptools' but httptools cannot be imported ({exc}); "
                    "install uvicorn[standard] or use http_parser='auto'"
                ) from exc
        else:
            return protocol_for(settings, app)
    return h11_protocol_for(settings)


class CleverTapServer(Lifecycle):
    """The fake CleverTap, served by uvicorn.

    *journal* defaults to an SQLite journal when ``settings.journal_path`` is set (the server
    then owns it and closes it on stop), else to a new in-memory one.
    """

    def __init__(
        self, settings: ServerSettings | None = None, *, journal: Journal | None = None
    ) -> None:
        self.settings = settings if settings is not None else ServerSettings()
        self._owns_journal = journal is None
        self._journal = journal if journal is not None else open_journal(self.settings.journal_path)
        self._journal_closed = False
        self.app: CleverTapApp = create_app(self.settings, self._journal)
        self._uvicorn: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self._port: int | None = None
        self._thread: LoopThread | None = None
        self._thread_name = "clevertap-server"

    # -- what users read -----------------------------------------------------------------------

    @property
    def journal(self) -> Journal:
        """The journal every callback is appended to."""
        return self._journal

    @property
    def faults(self) -> FaultPlan:
        """The live fault rules (see :mod:`harness.clevertap.faults`)."""
        return self.app.faults

    def set_faults(self, *rules: FaultRule) -> None:
        """Replace the fault rules; with no rules, remove them all."""
        self.app.set_faults(rules)

    def reset(self, *, journal: bool = True) -> None:
        """Clear the journal (unless *journal* is False), the duplicate index and the fault
        counters (the rules stay)."""
        self.app.reset(journal=journal)

    @property
    def running(self) -> bool:
        return self._uvicorn is not None and self._uvicorn.started

    @property
    def port(self) -> int:
        """The real port; only while running."""
        if self._port is None:
            raise ServerError("the fake CleverTap is not running: start it first")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port``, without a trailing slash."""
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def urls(self) -> ServerUrls:
        """The callback URLs and the control API prefix."""
        base, s = self.url, self.settings
        return ServerUrls(
            base=base,
            bounce=base + s.bounce_path,
            unsubscribe=base + s.unsubscribe_path,
            v2=base + s.v2_path,
            control=base + s.control_prefix,
        )

    # -- async lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen and serve in the running event loop; return once connections are accepted.

        Raises :class:`ServerError` (with the cause) if it cannot start, :class:`StartTimeout` if
        it is not ready within ``settings.ready_timeout`` seconds.
        """
        if self._task is not None:
            raise ServerError("the fake CleverTap is already running")
        if self._journal_closed:
            self._journal = open_journal(self.settings.journal_path)
            self.app.journal = self._journal
            self._journal_closed = False
        protocol = _protocol_for(self.settings, self.app)
        sock = self._listen()
        # The guard wraps the app here, where it is served (a real port is known), not in the
        # app: create_app() stays the bare app for whoever serves it otherwise.
        guarded = ControlGuard(
            self.app,
            host=self.settings.host,
            port=sock.getsockname()[1],
            control_prefix=self.settings.control_prefix,
            callback_paths=self.settings.paths.values(),
        )
        config = uvicorn.Config(
            guarded,
            # Never uvicorn's own protocols: both of ours keep the limits of docs/limits.md,
            # which must not depend on which optional packages happen to be there.
            http=protocol,
            h11_max_incomplete_event_size=self.settings.max_header_size,
            # No WebSocket routes: an upgrade would hand the socket to a protocol without the
            # deadlines (whose timers would still be armed on this one).
            ws="none",
            lifespan="off",
            # No X-Forwarded-For/-Proto rewriting: uvicorn trusts them from 127.0.0.1 by
            # default, which would let any local client forge the peer the journal records.
            proxy_headers=False,
            # log_config=None: uvicorn must not reconfigure the process's logging.
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=math.ceil(self.settings.stop_timeout),
        )
        server = _Uvicorn(config)
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._serve(server, sock), name="clevertap-uvicorn")
        self._uvicorn, self._task = server, task
        deadline = loop.time() + self.settings.ready_timeout
        while not server.started:
            if task.done():
                self._uvicorn = self._task = None
                sock.close()
                cause = task.exception()
                raise ServerError(f"the fake CleverTap failed to start: {cause}") from cause
            if loop.time() >= deadline:
                await self._halt()
                sock.close()
                raise StartTimeout(
                    f"the fake CleverTap was not ready within {self.settings.ready_timeout} s; "
                    "the machine may be overloaded: try a larger ready_timeout"
                )
            await asyncio.sleep(0.005)
        self._port = sock.getsockname()[1]

    def _listen(self) -> socket.socket:
        host, port = self.settings.host, self.settings.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP, not the default 0: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and without it Nagle holds the response body back until the client's
        # delayed ACK (40 ms a request on Linux, since uvicorn writes head and body separately).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            # SO_REUSEADDR: a fixed port can be bound again while old connections sit in
            # TIME_WAIT (a restart of `harness serve --port N`).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(2048)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ServerError(f"the fake CleverTap cannot listen on {host}:{port}: {exc}") from exc
        return sock

    @staticmethod
    async def _serve(server: _Uvicorn, sock: socket.socket) -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:
            # uvicorn calls sys.exit() on some startup failures; in a task that would stop the
            # whole event loop, so it becomes an ordinary error carried back to start().
            raise ServerError(f"uvicorn exited with status {exc.code}") from exc

    async def stop(self) -> None:
        """Stop serving: end long polls, let requests in flight finish, close the socket."""
        try:
            await self._halt()
        finally:
            self._port = None
            # Only a journal file is closed (and reopened by the next start): an owned memory
            # journal stays readable and keeps its entries across restarts.
            if self._owns_journal and self.settings.journal_path and not self._journal_closed:
                self._journal.close()
                self._journal_closed = True

    async def _halt(self) -> None:
        server, task = self._uvicorn, self._task
        if server is None or task is None:
            return
        self.app.begin_stop()
        server.should_exit = True
        # uvicorn checks should_exit every 0.1 s and then waits up to stop_timeout for requests
        # in flight; give it that plus a margin before giving up.
        done, _ = await asyncio.wait({task}, timeout=self.settings.stop_timeout + 2.0)
        self._uvicorn = self._task = None
        self.app.end_stop()
        if not done:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise ServerError(
                f"the fake CleverTap did not stop within {self.settings.stop_timeout + 2.0} s"
            )
        if not task.cancelled() and task.exception() is not None:
            raise ServerError("the fake CleverTap crashed") from task.exception()

    # -- sync lifecycle: harness._loop.Lifecycle ------------------------------------------------

    def _start_deadline(self) -> float:
        return self.settings.ready_timeout + 5.0

    def _stop_deadline(self) -> float:
        return self.settings.stop_timeout + 5.0

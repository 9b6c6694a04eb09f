"""An asyncio event loop in a background thread, for running the async servers from sync code.

Every server in the harness is written once, as async code with ``async start()`` and
``async stop()`` that runs inside whatever loop calls it. Sync callers (plain pytest tests, the
CLI) get the same servers through :class:`LoopThread`, which owns one loop in one daemon thread
and runs coroutines there with a deadline. Exceptions raised in the loop thread are carried back
to the caller, never left to die in a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

from harness.errors import ServerError, StartTimeout

__all__ = ["Lifecycle", "LoopThread", "gc_paused", "loop_factory", "run_main"]

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop factory when uvloop is installed (it comes with the base install, on every
    platform uvloop has wheels for), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run_main(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the fastest loop available: the CLI's servers and its runner
    (``harness serve``, ``harness run``, ``harness serve-scenario``)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


class LoopThread:
    """One event loop running in one background thread.

    >>> with LoopThread(name="demo") as lt:
    ...     lt.run(asyncio.sleep(0, result=42))
    42
    """

    def __init__(self, *, name: str = "harness-loop") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._crash: BaseException | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise ServerError(f"{self.name}: the loop thread is not started; call start() first")
        return self._loop

    @property
    def ident(self) -> int | None:
        """The thread's identifier while it runs (log records carry it as ``record.thread``)."""
        return self._thread.ident if self._thread is not None else None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 5.0) -> None:
        """Start the thread and wait until its loop runs (at most *timeout* seconds)."""
        if self.running:
            return
        self._ready.clear()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise StartTimeout(
                f"{self.name}: the event loop thread did not start within {timeout} s; "
                "the machine may be overloaded: try a larger timeout"
            )
        if self._crash is not None:
            message = f"{self.name}: the event loop thread failed to start"
            raise ServerError(message) from self._crash

    def _main(self) -> None:
        try:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
        except BaseException as exc:  # pragma: no cover - only on a broken interpreter
            self._crash = exc
            self._ready.set()
            return
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            # Cancel what is left so that no task is destroyed while pending (a warning, and an
            # error under filterwarnings=error).
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run *coro* on the loop and return its result; its exception is raised here.

        With a *timeout*, the coroutine is cancelled and :class:`StartTimeout` raised when it has
        not finished in time.
        """
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise StartTimeout(
                f"{self.name}: {getattr(coro, '__qualname__', coro)!s} did not finish within "
                f"{timeout} s"
            ) from None

    def call_soon(self, callback: Any, *args: Any) -> None:
        """Schedule a plain callback on the loop from any thread."""
        self.loop.call_soon_threadsafe(callback, *args)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and join the thread (at most *timeout* seconds)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if thread.is_alive():
                raise ServerError(f"{self.name}: the loop thread did not stop within {timeout} s")
        self._thread = None
        self._loop = None

    def __enter__(self) -> LoopThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Lifecycle:
    """The lifecycle every server object shares: written once as async, offered to sync code.

    A subclass defines ``async start()`` and ``async stop()`` (they run in whatever event loop
    calls them, and ``start()`` raises :class:`ServerError` when already started). This mixin adds
    ``async with``, and for sync code :meth:`start_sync` / :meth:`stop_sync` / ``with``, which run
    the same coroutines in a :class:`LoopThread` of the object's own.
    """

    _thread: LoopThread | None = None
    _thread_name = "harness-loop"

    async def start(self) -> object:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    async def stop(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _start_deadline(self) -> float:
        """Seconds start() may take from sync code before :class:`StartTimeout`."""
        return 10.0

    def _stop_deadline(self) -> float:
        """Seconds stop() may take from sync code before :class:`StartTimeout`."""
        return 10.0

    @property
    def thread(self) -> LoopThread | None:
        """The background loop thread while started with :meth:`start_sync`, else None."""
        return self._thread

    def start_sync(self) -> Self:
        """Like ``start()``, for sync code: run in an event loop in a background thread."""
        if self._thread is not None:
            raise ServerError(f"{self._thread_name}: already running in a background thread")
        thread = LoopThread(name=self._thread_name)
        thread.start()
        try:
            thread.run(self.start(), timeout=self._start_deadline())
        except BaseException:
            thread.stop()
            raise
        self._thread = thread
        return self

    def stop_sync(self) -> None:
        """Like ``stop()``, for an object started with :meth:`start_sync`; joins the thread."""
        thread = self._thread
        if thread is None:
            return
        self._thread = None
        try:
            thread.run(self.stop(), timeout=self._stop_deadline())
        finally:
            thread.stop()

    def __enter__(self) -> Self:
        return self.start_sync()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_sync()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block (as it was after it).

    For a burst of allocation that makes no cycles, such as judging a 10,000-recipient run
    (hundreds of thousands of small objects, all freed by reference counting): each full
    collection it would trigger walks every object alive, the journal's and the server's too,
    and those collections were a quarter of the judge's time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def freeze_startup_objects() -> None:
    """Collect once, then move every object alive to the garbage collector's permanent generation.

    A standalone server (``harness serve``) calls it once it runs: the modules, FastAPI's
    routes and the caches built at startup are then never walked again by a full collection,
    which would otherwise stall every request for tens of milliseconds each time. (Journal
    entries are not Python objects at all; see ``harness.journal``.) Not for servers started
    inside a test session, where it would pin the garbage of earlier tests.
    """
    gc.collect()
    gc.freeze()

"""The fake CleverTap's HTTP protocol on httptools: callbacks answered in the protocol itself.

A callback is the hot path: an integration may send thousands a second. Through ASGI each one
costs a task, an event, two ``send`` messages and two socket writes, more than the checks and
the journal together (issue 15's profile). :class:`FastProtocol` is uvicorn's httptools
protocol with the callback endpoints answered in the protocol: the body is collected as it
arrives (up to the cap); at the end of the loop turn that completed it,
:func:`~harness.clevertap.app.process_callback` checks and journals it, back to back with the
other callbacks of that turn, without a task when nothing has to be awaited (a memory journal,
no delay fault) (:class:`_Turn`); then the whole answer goes out in one write, back to back with
the other connections' answers (:class:`_Answers`). Every other request (control API,
dashboard, docs, wrong paths) goes to the ASGI app as uvicorn sends it.

It keeps every limit of docs/limits.md, as the h11 protocol in :mod:`.server` does: deadlines for
the head, the body and idle connections (totals, not reset by bytes arriving), the unread-answer
deadline, the connection cap (503), the head size cap (400). The phase of a connection is known
from the parser's callbacks (message begin, headers complete, message complete) and the answer
in flight. A deadline timer is created when a phase starts and re-armed lazily
when it fires early (the phase started again later), so a busy keep-alive connection costs no
timer per request.

Relies on uvicorn's HttpToolsProtocol keeping ``cycle``, ``pipeline``, ``flow``, ``tasks``,
``connections``, ``server_state``, ``url``, ``headers``, ``expect_100_continue`` and the
``RequestResponseCycle`` attributes ``response_started``, ``response_complete`` and
``keep_alive``: no public hook exists for answering in the protocol. Pinned by
tests/clevertap/test_fastpath.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import httptools
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from harness._turn import HeldWrites, Turn
from harness.clevertap.app import (
    CallbackResult,
    abort_transport,
    process_callback,
    when_due,
)
from harness.clevertap.deadlines import Limits, Phase, raw_response
from harness.clevertap.inspect import Endpoint
from harness.clevertap.settings import ServerSettings

if TYPE_CHECKING:
    from harness.clevertap.app import CleverTapApp

__all__ = ["FastProtocol", "protocol_for"]


log = logging.getLogger("harness.clevertap")

_ANSWERS_CACHED = 32
_ANSWER_CACHED_SIZE = 256
"""Distinct answers (status and body, bodies of at most 256 bytes) kept built per second of the
Date header."""
_FAILED = b'{"status":"error","message":"the harness failed to process this callback"}'


class _NoEvent:
    """uvicorn's connection_lost sets ``cycle.message_event``; a callback cycle waits on none."""

    __slots__ = ()

    def set(self) -> None:
        return None


_NO_EVENT = _NoEvent()


class _Turn(Turn):
    """What a turn of the event loop leaves to its end: the callbacks whose requests came in
    whole, to process, then the connections with answers to send (:class:`~harness._turn.Turn`).

    Why process at the end: a turn under load reads a request on each of many connections.
    Processed as each is parsed, the checks and the journal run between the parser and the
    socket reads, and each part keeps evicting the others' code and data from the processor's
    caches; processed back to back once the reads are done, they run warm (about 12% less CPU
    per callback at 20 clients, measured with bench_callbacks).
    """

    __slots__ = ("cycles",)

    def __init__(self) -> None:
        super().__init__()
        self.cycles: list[_CallbackCycle] = []

    def process(self, cycle: _CallbackCycle, loop: asyncio.AbstractEventLoop) -> None:
        """Process *cycle* at the end of this turn."""
        self.schedule(loop)
        self.cycles.append(cycle)

    def process_now(self, protocol: FastProtocol) -> None:
        """Process the waiting callbacks of *protocol* now (before anything else is done with
        its connection)."""
        for cycle in self.cycles:
            if cycle.protocol is protocol:
                cycle.run()  # marks it processed: end() passes it by

    def end(self) -> None:
        # By index, the list kept in place until all are done: one added meanwhile is processed
        # too, and process_now() sees those still waiting.
        cycles = self.cycles
        i = 0
        while i < len(cycles):
            cycle = cycles[i]
            i += 1
            try:
                cycle.run()
            except Exception:  # a bug: one callback's must not hold back the others
                log.exception("answering a callback to %s failed", cycle.path)
        self.cycles = []
        super().end()


class _Answers(HeldWrites):
    """A connection's transport that holds its callback answers until the end of the loop turn
    (:class:`~harness._turn.HeldWrites`). Every other use of the transport (any write, the end
    of the connection) first answers the connection's callbacks waiting for the end of the turn
    and sends what is held, so the bytes on a connection keep their order whoever writes them:
    the protocol, uvicorn, the ASGI app.
    """

    __slots__ = ("_protocol",)
    _turn: _Turn

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: FastProtocol,
        turn: _Turn,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(transport, turn, loop)
        self._protocol = protocol

    def settle(self) -> None:
        if self._turn.cycles:
            self._turn.process_now(self._protocol)
        self.flush()


class _CallbackCycle:
    """One callback request on a :class:`FastProtocol` connection: its body as it arrives, then
    the answer. Stands in for uvicorn's RequestResponseCycle in ``protocol.cycle`` and in the
    pipeline, with the attributes uvicorn's own methods read there."""

    __slots__ = (
        "chunks",
        "complete",
        "content_type",
        "current",
        "disconnected",
        "endpoint",
        "expect_continue",
        "keep_alive",
        "kept",
        "method",
        "path",
        "processed",
        "protocol",
        "received",
        "response_complete",
        "response_started",
        "size",
    )

    message_event = _NO_EVENT

    def __init__(
        self,
        protocol: FastProtocol,
        endpoint: Endpoint,
        path: str,
        method: str,
        content_type: str | None,
        keep_alive: bool,
    ) -> None:
        self.protocol = protocol
        self.endpoint = endpoint
        self.path = path
        self.method = method
        self.content_type = content_type
        self.keep_alive = keep_alive
        self.received = time.time()
        self.chunks: list[bytes] = []
        self.kept = 0
        self.size = 0
        self.complete = False
        """The whole body is in."""
        self.current = False
        """No earlier request on the connection waits for its answer (pipelining)."""
        self.processed = False
        self.expect_continue = False
        self.response_started = False
        self.response_complete = False
        self.disconnected = False

    def body(self, data: bytes) -> None:
        # Past the cap keep counting (the journal gets the real size) but not keeping.
        self.size += len(data)
        room = self.protocol.settings.max_body - self.kept
        if room > 0:
            piece = data if len(data) <= room else data[:room]
            self.chunks.append(piece)
            self.kept += len(piece)

    def begin(self) -> None:
        """Its turn on the connection: answer now if the body is in, else once it is."""
        self.current = True
        if self.complete:
            self.run()

    def process(self) -> None:
        """Check and journal the request, then answer, at the end of this loop turn."""
        self.protocol._turn.process(self, self.protocol.loop)

    def run(self, *, disconnected: bool = False) -> None:
        """Check and journal the request now, then answer (at once, or from a task when
        something must be awaited first)."""
        if self.processed:
            return
        self.processed = True
        protocol = self.protocol
        chunks = self.chunks
        self.chunks = []
        try:
            result = process_callback(
                protocol.clevertap,
                self.endpoint,
                self.path,
                chunks[0] if len(chunks) == 1 else b"".join(chunks),
                size=self.size,
                method=self.method,
                content_type=self.content_type,
                peer=protocol.peer,
                received=self.received,
                disconnected=disconnected,
            )
        except Exception:
            # A bug, not bad input (process_callback answers that). Raised from here it would
            # reach httptools as a parser error and be answered 400 without a trace.
            log.exception("processing a callback to %s failed", self.path)
            result = CallbackResult("answer", 500, _FAILED, (), 0.0, None)
        if disconnected:
            self.disconnected = True
            return
        entry = result.entry
        if result.delay or (entry is not None and protocol.clevertap.journal.durable):
            task = protocol.loop.create_task(self._finish(result))
            protocol.tasks.add(task)
            task.add_done_callback(protocol.tasks.discard)
        else:
            self.act(result)

    async def _finish(self, result: CallbackResult) -> None:
        self.act(await when_due(self.protocol.clevertap.journal, result))

    def act(self, result: CallbackResult) -> None:
        protocol = self.protocol
        transport = protocol.transport
        self.response_started = True
        self.response_complete = True
        if self.disconnected or transport.is_closing():
            return
        if result.action == "answer":
            transport.hold(
                protocol.response(
                    result.status or 500,
                    result.body,
                    result.headers,
                    keep_alive=self.keep_alive,
                    head_only=self.method == "HEAD",
                )
            )
            if not self.keep_alive:
                transport.close()
            protocol.on_response_complete()
        elif result.action != "none":
            abort_transport(transport, reset=result.action == "reset")


class FastProtocol(Limits, HttpToolsProtocol):
    """uvicorn's httptools protocol answering the callback endpoints itself, with the limits of
    docs/limits.md. Built per server by :func:`protocol_for`."""

    # Widened: a callback's cycle stands where uvicorn keeps its request cycles.
    cycle: RequestResponseCycle | _CallbackCycle  # type: ignore[assignment]
    pipeline: deque[tuple[RequestResponseCycle | _CallbackCycle, Any]]  # type: ignore[assignment]
    settings: ClassVar[ServerSettings]
    clevertap: ClassVar[CleverTapApp]
    routes: ClassVar[dict[bytes, tuple[Endpoint, str]]]
    transport: _Answers  # narrowed: connection_made wraps the transport
    _turn: ClassVar[_Turn]
    _timeouts: ClassVar[dict[Phase, float]]
    _default_headers: ClassVar[tuple[object, bytes, dict[tuple[int, bytes, bool, bool], bytes]]] = (
        None,
        b"",
        {},
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Data after a "Connection: close" request is ignored, not a parser error answered 400
        # after the answer (recent uvicorn sets this itself; 0.29, the lowest supported, does not).
        with contextlib.suppress(AttributeError):  # httptools < 0.6.3
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self._reading: Literal["head", "body"] | None = None
        self._head_bytes = 0
        self._phase: Phase | None = None
        self._since = 0.0
        self._deadline: asyncio.TimerHandle | None = None
        self._send_deadline: asyncio.TimerHandle | None = None
        self._refused = False
        self._linger: asyncio.TimerHandle | None = None
        self.peer: str | None = None

    # -- connection ------------------------------------------------------------------------------

    # uvicorn narrows the argument to Transport the same way.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self._over_cap(transport):
            return
        super().connection_made(_Answers(transport, self, self._turn, self.loop))
        client = self.client
        self.peer = f"{client[0]}:{client[1]}" if client else None
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._deadline, self._send_deadline, self._linger):
            if timer is not None:
                timer.cancel()
        self._deadline = self._send_deadline = None
        if self._refused:
            return
        # A callback that came in whole and waits for the end of the turn is processed as it
        # would have been (its answer goes nowhere). One whose head was read is journaled even
        # when its body never came whole (a client gone, a body deadline, a broken chunk):
        # nothing received is lost.
        self._turn.process_now(self)
        waiting = [c for c, _ in self.pipeline if isinstance(c, _CallbackCycle)]
        if isinstance(self.cycle, _CallbackCycle) and self.cycle not in waiting:
            waiting.append(self.cycle)
        for cycle in sorted(waiting, key=lambda c: c.received):
            cycle.run(disconnected=True)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self._linger is not None:
            return
        if self._reading != "body":
            # An upper bound of the head's bytes (the chunk may hold the end of the previous
            # request too): what the parser may buffer of a head stays below the cap plus one
            # read.
            self._head_bytes += len(data)
        super().data_received(data)
        if self._reading == "head" and self._head_bytes > self.settings.max_header_size:
            if not self.transport.is_closing():
                self.transport.write(
                    raw_response(
                        400,
                        "Bad Request",
                        f"request line and headers larger than {self.settings.max_header_size} "
                        "bytes",
                    )
                )
                self.transport.close()
            return
        cycle = self.cycle
        if type(cycle) is _CallbackCycle and cycle.expect_continue:
            cycle.expect_continue = False
            # Not for a request queued behind another's answer: it would land inside that one.
            if cycle.current and not cycle.complete and not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._follow()

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        # What uvicorn's on_message_begin resets, without the ASGI scope it builds there (a dict
        # and a copy of the app state per request): a callback needs none, so the scope is built
        # in on_headers_complete, for the requests that go to the ASGI app.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._reading = "head"

    def _to_app(self) -> None:
        """Hand the request whose head is in to uvicorn (and so to the ASGI app)."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()  # the scope; it also resets what the head has set since
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers
        super().on_headers_complete()

    def on_headers_complete(self) -> None:
        self._reading = "body"
        self._head_bytes = 0
        parser = self.parser
        if parser.get_http_version() == "0.9":
            # A request line without a version: llhttp reads HTTP/0.9, whose answer would have
            # no status line. Refused (400) as h11 refuses it: uvicorn answers a parser error so.
            raise httptools.HttpParserError("request line without an HTTP version")
        route = self.routes.get(self.url)
        if route is None and (b"?" in self.url or b"%" in self.url):
            route = self._route_of(self.url)
        if route is None:
            self._to_app()
            return
        content_type = None
        for name, value in self.headers:
            if name == b"content-type":
                content_type = value.decode("latin-1")
                break
        version = parser.get_http_version()
        cycle = _CallbackCycle(
            self,
            route[0],
            route[1],
            parser.get_method().decode("ascii"),
            content_type,
            version != "1.0" and parser.should_keep_alive(),
        )
        cycle.expect_continue = self.expect_100_continue
        previous = self.cycle
        self.cycle = cycle
        if previous is None or previous.response_complete:
            cycle.current = True
        else:
            # Pipelined behind a request still being answered: its turn comes in order.
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, None))

    def _route_of(self, url: bytes) -> tuple[Endpoint, str] | None:
        """The callback route of a target with a query or %-escapes, decoded as uvicorn decodes
        the path it gives the app."""
        try:
            raw = httptools.parse_url(url).path
        except httptools.HttpParserInvalidURLError:
            return None  # uvicorn refuses it the same way
        path = raw.decode("ascii", "replace")
        if "%" in path:
            path = urllib.parse.unquote(path)
        return self.routes.get(path.encode("utf-8", "surrogateescape"))

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is _CallbackCycle:
            cycle.body(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading = None
        cycle = self.cycle
        if type(cycle) is _CallbackCycle:
            cycle.complete = True
            if cycle.current:
                cycle.process()
        else:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        # uvicorn's own, but starting a pipelined callback in place and with the idle deadline
        # of this protocol instead of uvicorn's keep-alive timer (which every byte resets).
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        self._phase = None  # a new phase starts, also when it is "idle" again
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            if isinstance(cycle, _CallbackCycle):
                # Next turn, not from here: answering it may complete the next one in the
                # pipeline, and so on, as deep as a client's pipelined requests go.
                self.loop.call_soon(cycle.begin)
            else:
                task = self.loop.create_task(cycle.run_asgi(app))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
        self._follow()

    # -- answers ---------------------------------------------------------------------------------

    def response(
        self,
        status: int,
        body: bytes,
        extra: tuple[tuple[bytes, bytes], ...],
        *,
        keep_alive: bool,
        head_only: bool,
    ) -> bytes:
        """The bytes of a callback answer: status line, headers, blank line, body (none for a
        HEAD request)."""
        source = self.server_state.default_headers
        cached = FastProtocol._default_headers
        if cached[0] is not source:
            # uvicorn replaces the list (a new Date) once a second.
            cached = (
                source,
                b"".join(name + b": " + value + b"\r\n" for name, value in source),
                {},
            )
            FastProtocol._default_headers = cached
        # Nearly every answer is the same bytes as the one before within that second (a 200
        # and its small JSON body): those are built once.
        key = (status, body, keep_alive, head_only)
        small = not extra and len(body) <= _ANSWER_CACHED_SIZE
        if small:
            found = cached[2].get(key)
            if found is not None:
                return found
        head = (
            STATUS_LINE[status]
            + cached[1]
            + b"content-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n"
        )
        for name, value in extra:
            head += name + b": " + value + b"\r\n"
        answer = (
            head
            + (b"" if keep_alive else b"connection: close\r\n")
            + b"\r\n"
            + (b"" if head_only else body)
        )
        if small and len(cached[2]) < _ANSWERS_CACHED:
            cached[2][key] = answer
        return answer

    # -- deadlines -------------------------------------------------------------------------------

    def phase(self) -> Phase:
        """Where the connection is: reading a request's body, waiting for its answer, reading a
        head, or idle."""
        if self._reading == "body":
            return "body"
        cycle = self.cycle
        if self.pipeline or (cycle is not None and not cycle.response_complete):
            return "busy"
        return "idle" if self._reading is None else "head"

    def _follow(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        phase = self.phase()
        if phase == self._phase:
            return  # a deadline bounds the whole phase: bytes arriving do not extend it
        self._phase = phase
        timeout = self._timeouts.get(phase)
        if timeout is None:
            return  # busy: the armed timer (if any) finds that out and lets go
        now = self.loop.time()
        self._since = now
        timer = self._deadline
        if timer is None or timer.when() > now + timeout:
            if timer is not None:
                timer.cancel()
            self._deadline = self.loop.call_later(timeout, self._check)

    def _check(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        phase = self._phase
        timeout = self._timeouts.get(phase) if phase is not None else None
        if timeout is None:
            return
        left = self._since + timeout - self.loop.time()
        if left > 0:
            # The phase started again after the timer was set (another request came and went).
            self._deadline = self.loop.call_later(left, self._check)
            return
        self._expire(phase, timeout)  # type: ignore[arg-type]


def protocol_for(settings: ServerSettings, app: CleverTapApp) -> type[FastProtocol]:
    """A :class:`FastProtocol` class for one server: its settings, app and callback routes."""

    class Protocol(FastProtocol):
        pass

    Protocol.settings = settings
    Protocol.clevertap = app
    Protocol._turn = _Turn()
    Protocol.routes = {
        path.encode("utf-8", "surrogateescape"): (endpoint, path)
        for endpoint, path in settings.paths.items()
    }
    Protocol._timeouts = {
        "idle": settings.keep_alive_timeout,
        "head": settings.header_timeout,
        "body": settings.body_timeout,
    }
    return Protocol

"""The HTTP limits of the fake CleverTap (docs/limits.md), and the h11 protocol that keeps them.

uvicorn has no deadline for receiving a request: its keep-alive timer only runs between requests
and every byte received cancels it, so a client trickling a header byte every few seconds holds
its connection (and a file descriptor) forever, and ``limit_concurrency`` answers 503 to requests
but never closes an idle connection. :class:`DeadlineProtocol` adds those deadlines to uvicorn's
h11 protocol by watching h11's public connection state after every event. It is the fallback
where httptools is absent; :mod:`harness.clevertap.fastpath` keeps the same limits on httptools.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar, Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from harness.clevertap.settings import ServerSettings

__all__ = [
    "LINGER",
    "DeadlineProtocol",
    "Limits",
    "Phase",
    "close_after_answer",
    "h11_protocol_for",
    "raw_response",
]


Phase = Literal["idle", "head", "body", "busy"]
"""Where a connection is: idle between requests, reading a head, reading a body, or busy (the
request is in and being answered; no read deadline then)."""


def raw_response(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, written outside any request cycle:
    these answer where there is no request to answer (no head yet) or the connection is about
    to be dropped."""
    body = json.dumps({"status": "error", "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


LINGER = 2.0
"""Seconds a connection answered 408 stays open for reading (discarded) after the answer."""


def close_after_answer(
    transport: asyncio.Transport, loop: asyncio.AbstractEventLoop
) -> asyncio.TimerHandle | None:
    """End a connection just answered with an error, so that the client reads the answer.

    Closing a socket that still has unread bytes from the client makes the kernel send a reset,
    and a reset can destroy the answer before the client reads it: a slowloris that sends its
    next header line just then would see "connection reset", not the 408. So the write side
    is shut (FIN after the answer), the client's further bytes are discarded, and the
    connection closes when the client closes it or after :data:`LINGER` seconds (the timer
    returned; the caller cancels it when the connection is lost)."""
    if not transport.can_write_eof():
        transport.close()
        return None
    transport.write_eof()
    return loop.call_later(LINGER, transport.close)


class Limits:
    """What both HTTP protocols (:class:`DeadlineProtocol` on h11 and
    :class:`~harness.clevertap.fastpath.FastProtocol` on httptools) do alike: refuse connections
    over the cap, abort a client that stops reading its answer, and answer an expired read
    deadline. Mixed in before the uvicorn protocol, whose ``transport``, ``loop``,
    ``connections``, ``cycle``, ``pause_writing`` and ``resume_writing`` it relies on."""

    settings: ClassVar[ServerSettings]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    connections: set[Any]
    cycle: Any
    _send_deadline: asyncio.TimerHandle | None
    _refused: bool
    _linger: asyncio.TimerHandle | None

    def _over_cap(self, transport: asyncio.Transport) -> bool:
        """Refuse *transport* with 503 when the server is at its connection cap."""
        limit = self.settings.max_connections
        if len(self.connections) < limit:
            return False
        # Refused before uvicorn sees it: the descriptor is released at once, so open
        # descriptors stay bounded by the cap whatever the number of clients.
        self._refused = True
        transport.write(
            raw_response(503, "Service Unavailable", f"too many connections (limit {limit})")
        )
        transport.close()
        return True

    # A client that stops reading its answer fills the send buffer: the transport pauses us and
    # uvicorn waits for it to drain, without end. Past send_timeout the connection is aborted
    # (close() would wait for the unread bytes to leave).
    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        if self._send_deadline is None:
            self._send_deadline = self.loop.call_later(
                self.settings.send_timeout, self.transport.abort
            )

    def resume_writing(self) -> None:
        super().resume_writing()  # type: ignore[misc]
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def _expire(self, phase: Phase, timeout: float) -> None:
        """The read deadline of *phase* passed: 408 (unless the answer is already under way),
        or a plain close of an idle connection."""
        cycle = self.cycle
        answered = cycle is not None and cycle.response_started and phase == "body"
        if phase != "idle" and not answered:
            what = "request line and headers" if phase == "head" else "request body"
            self.transport.write(
                raw_response(408, "Request Timeout", f"{what} not received within {timeout:g} s")
            )
            # In the body phase the callback is then journaled as disconnected (the ASGI app
            # sees a disconnect in receive(), the fast path's connection_lost processes it),
            # once the client has closed or the linger time is over: the request is not lost.
            self._linger = close_after_answer(self.transport, self.loop)
            return
        self.transport.close()


class DeadlineProtocol(Limits, H11Protocol):
    """uvicorn's h11 protocol with read deadlines and a connection cap.

    The phase of a connection is read from h11's state for the client (``their_state``) after
    each event: IDLE with nothing buffered is *idle* (``keep_alive_timeout``), IDLE with part
    of a head buffered is *head* (``header_timeout``), SEND_BODY is *body* (``body_timeout``),
    anything else is *busy*: the request is in and the app has it, with no read deadline (long
    polls are legitimate). A deadline is total, not per byte, and runs from the start of its
    phase; it is re-armed only when the phase changes. uvicorn's own keep-alive timer stays as
    it is (it covers the idle time after a response; this one also covers a new connection).

    Relies on uvicorn's H11Protocol keeping ``conn`` (the h11 connection), ``cycle``,
    ``transport``, ``connections`` and ``on_response_complete``; pinned by
    tests/clevertap/test_http_limits.py.
    """

    settings: ClassVar[ServerSettings]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's Config wants an int; the timer takes any float.
        self.timeout_keep_alive = self.settings.keep_alive_timeout  # type: ignore[assignment]
        self._phase: Phase | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._send_deadline: asyncio.TimerHandle | None = None
        self._refused = False
        self._linger: asyncio.TimerHandle | None = None

    # uvicorn narrows the argument to Transport the same way.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self._over_cap(transport):
            return
        super().connection_made(transport)
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._linger is not None:
            self._linger.cancel()
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self._linger is not None:
            return
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    # -- deadlines -------------------------------------------------------------------------------

    def _phase_now(self) -> Phase:
        state = self.conn.their_state
        if state is h11.IDLE:
            return "head" if self.conn.trailing_data[0] else "idle"
        if state is h11.SEND_BODY:
            return "body"
        return "busy"

    def _follow(self) -> None:
        if self.transport is None or self.transport.is_closing():
            self._disarm()
            return
        phase = self._phase_now()
        if phase == self._phase:
            return  # a deadline bounds the whole phase: bytes arriving do not extend it
        self._disarm()
        self._phase = phase
        timeout = {
            "idle": self.settings.keep_alive_timeout,
            "head": self.settings.header_timeout,
            "body": self.settings.body_timeout,
        }.get(phase)
        if timeout is not None:
            self._deadline = self.loop.call_later(timeout, self._expire, phase, timeout)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, phase: Phase, timeout: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        super()._expire(phase, timeout)


def h11_protocol_for(settings: ServerSettings) -> type[DeadlineProtocol]:
    """A :class:`DeadlineProtocol` class for one server's settings."""

    class Protocol(DeadlineProtocol):
        pass

    Protocol.settings = settings
    return Protocol

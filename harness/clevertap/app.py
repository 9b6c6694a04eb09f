"""The fake CleverTap as an ASGI app: three callback endpoints and the control API.

:func:`create_app` returns a :class:`CleverTapApp` (a FastAPI app). Any ASGI server can run it;
:class:`harness.clevertap.server.CleverTapServer` runs it under uvicorn on a real socket.

The callback endpoints are the hot path (every callback an integration sends) and are served
before FastAPI's routing and middleware: the app looks the path up in a dict, reads the body
once (stopping at the size cap), calls :func:`~harness.clevertap.inspect.inspect`, appends ONE
journal entry and sends a pre-encoded answer. The control API (``/_harness`` by default) is an
ordinary FastAPI router with pydantic models, listed in the OpenAPI docs at ``/docs``.

The journal entry of a callback (``Kind.CALLBACK``) is documented in ``docs/server.md``. It is
appended *before* the answer is sent, so a client that has its answer can read its entry.
"""

# No `from __future__ import annotations` here: FastAPI reads the annotations of the control
# API's handlers at runtime, and they use names local to _control_router.
import asyncio
import base64
import difflib
import json
import secrets
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from functools import lru_cache
from sys import intern
from typing import Annotated, Any, Literal, Protocol, cast

import msgspec
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.routing import Match

from harness.checks import Severity, Violation
from harness.clevertap.faults import FaultDecision, FaultPlan, FaultRule
from harness.clevertap.inspect import (
    CheckConfig,
    Endpoint,
    History,
    Inspection,
    JournalHistory,
    inspect,
    quick_inspect,
)
from harness.clevertap.mailapi import MailControl, mail_router
from harness.clevertap.openapi import callback_paths, mount_docs
from harness.clevertap.settings import ServerSettings
from harness.errors import JournalWriteError
from harness.journal import Entry, Journal, Kind, MemoryJournal
from harness.records import Callback, CallbackEvent, FaultHit, FaultsChanged, record_json, scrub

__all__ = [
    "CallbackResult",
    "CallbackState",
    "CleverTapApp",
    "abort_transport",
    "create_app",
    "journal_failed_result",
    "nearest_path",
    "process_callback",
    "process_stray",
    "read_body",
    "when_due",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# -- pre-encoded answers ---------------------------------------------------------------------------

_JSON = b"application/json"
V2_SUCCESS = b'{"status":"success","message":"Callback processed successfully"}'
"""The v2 success body (one of the two bodies CleverTap's docs show; see docs/server.md)."""

V2_MISSING = "Mandatory parameter missing"
V2_TOO_MANY = "More than allowed events were sent"
V2_INVALID = "invalid payload"


def _headers(body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", _JSON), (b"content-length", str(len(body)).encode()), *extra]


@lru_cache(maxsize=1024)
def _legacy_success(accepted: int) -> bytes:
    # Cached: the same few bodies again and again, each one object (the answers built from
    # it are cached by it, fastpath.FastProtocol.response).
    return b'{"status":"success","accepted":' + str(accepted).encode() + b"}"


def _error_body(message: str, **extra: Any) -> bytes:
    # ensure_ascii (the default) escapes lone surrogates instead of failing on them.
    return json.dumps({"status": "error", "message": message, **extra}).encode()


def _v2_message(inspection: Inspection, max_events: int) -> str:
    """Which of CleverTap's documented 400 messages fits a rejected v2 payload."""
    payload = inspection.payload
    if not isinstance(payload, dict):
        return V2_INVALID
    if len(inspection.events) > max_events:
        return V2_TOO_MANY
    events = payload.get("events")
    if "version" not in payload or not isinstance(events, dict):
        return V2_MISSING
    for items in events.values():
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and not {"type", "email", "meta"} <= item.keys():
                    return V2_MISSING
    return V2_INVALID


class CallbackState(Protocol):
    """What :func:`process_callback` needs of a fake CleverTap (the app, or the respx mock)."""

    settings: ServerSettings
    journal: Journal
    faults: FaultPlan

    @property
    def duplicates(self) -> History: ...


def _body_text(body: bytes) -> tuple[str, bool]:
    try:
        return body.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), True


class CallbackResult(msgspec.Struct, gc=False):
    """What to do with one callback request, decided by :func:`process_callback`.

    (A struct rather than a dataclass: one is made per callback, and msgspec makes it in a
    third of the time.)"""

    action: Literal["answer", "close", "reset", "none"]
    """``answer``: send ``status`` and ``body``; ``close``/``reset``: drop the connection (a
    fault); ``none``: send nothing (the client is gone)."""
    status: int | None
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    """Headers beyond Content-Type and Content-Length (``Allow``, ``Retry-After``)."""
    delay: float
    """Seconds to wait (a fault's delay) before acting; the entry is already journaled."""
    entry: Entry | None
    """The journal entry; None when the journal could not record it (then the answer is 503)."""


_NO_HEADERS: tuple[tuple[bytes, bytes], ...] = ()
_ENDPOINT_NAMES = {endpoint: endpoint.value for endpoint in Endpoint}
"""Endpoint.value without the enum's property lookup, once per callback."""
_RETRY_LATER = 5
"""Retry-After (seconds) of the 503 answered when the journal cannot record a request."""


def journal_failed_result() -> CallbackResult:
    """503 with Retry-After and a JSON body: the request was not recorded, send it again."""
    body = _error_body(
        "the harness could not record this request (its journal failed to write); "
        "nothing was processed, send it again later",
        retry_after=_RETRY_LATER,
    )
    headers = ((b"retry-after", str(_RETRY_LATER).encode()),)
    return CallbackResult("answer", 503, body, headers, 0.0, None)


def _request_record(
    endpoint: str | None,
    path: str,
    peer: str | None,
    content_type: str | None,
    size: int,
    text: str,
    is_base64: bool,
    cap: int,
    method: str,
    disconnected: bool,
    status: int | None,
    *,
    format: str | None = None,
    events: tuple[CallbackEvent, ...] = (),
    violations: tuple[Violation, ...] = (),
    fault: FaultHit | None = None,
    error: str | None = None,
) -> Callback:
    """The journal record of one request to the callback server, a callback or a stray one
    (*text* is its body as :func:`_body_text` gave it, at most *cap* bytes of *size*)."""
    # By position, in the order of Callback's fields (tests/clevertap/test_request_record.py holds
    # the two together): msgspec builds a struct of 16 fields by keyword in about 640 ns, by
    # position in about 100, once per callback.
    return Callback(
        endpoint,
        path,
        peer,
        content_type,
        size,
        text,
        is_base64,
        size > cap,
        method,
        disconnected,
        format,
        events,
        violations,
        status,
        fault,
        error,
    )


def _checked(
    body: bytes,
    endpoint: Endpoint,
    content_type: str | None,
    config: CheckConfig,
    history: History | None,
    now: float,
    *,
    utf8: bool,
) -> tuple[str | None, tuple[CallbackEvent, ...], tuple[Violation, ...], Inspection | None]:
    """The format, events and violations of a callback body, and the full inspection when one
    was made. A clean callback (nearly every one) is decoded by type and only its values are
    checked; anything else gets the full inspection, which finds and explains every violation."""
    if utf8:
        clean = quick_inspect(
            body,
            endpoint=endpoint,
            content_type=content_type,
            config=config,
            history=history,
            now=now,
        )
        if clean is not None:
            return clean[0], clean[1], (), None
    inspection = inspect(
        body, endpoint=endpoint, content_type=content_type, config=config, history=history, now=now
    )
    events = tuple(
        [CallbackEvent(intern(e.event), e.email, e.ts, e.meta) for e in inspection.events]
    )
    return inspection.format, events, tuple(inspection.violations), inspection


def process_callback(
    app: "CallbackState",
    endpoint: Endpoint,
    path: str,
    body: bytes,
    *,
    size: int,
    method: str = "POST",
    content_type: str | None,
    peer: str | None,
    received: float,
    disconnected: bool = False,
) -> CallbackResult:
    """Check one callback request, journal it and decide the answer, whatever the transport.

    The ASGI handler (real HTTP under uvicorn) and the respx mock (in-process httpx) both call
    this, so that the same request gets the same status, body and journal entry from both.
    *body* is the request body (only its first ``max_body`` bytes are kept), *size* its real
    length; the caller sends the answer, after ``delay``, and (for a durable journal) only once
    ``journal.committed(result.entry)`` returned.
    """
    settings = app.settings
    cap = settings.max_body
    if size > cap and len(body) > cap:
        body = body[:cap]
    text, is_base64 = _body_text(body)
    fmt: str | None = None
    events: tuple[CallbackEvent, ...] = ()
    violations: tuple[Violation, ...] = ()
    hit: FaultHit | None = None
    error: str | None = None
    # Every branch decides the answer; the one exit below journals the request with it.
    if disconnected:
        result = CallbackResult("none", None, b"", _NO_HEADERS, 0.0, None)
    elif method != "POST":
        answer = _error_body(f"method {method} not allowed; callbacks are POSTed")
        result = CallbackResult("answer", 405, answer, ((b"allow", b"POST"),), 0.0, None)
    elif size > cap:
        answer = _error_body("payload too large", limit=cap, size=size)
        result = CallbackResult("answer", 413, answer, _NO_HEADERS, 0.0, None)
    else:
        fault = app.faults.decide(endpoint)
        # A faulted request was never processed, as far as the integration can tell: it must
        # resend, and the resend is not a duplicate. So it is not looked up in the history
        # either (its entry says it does not count: Callback.remembered).
        history = app.duplicates if fault is None or fault.rule.action == "delay" else None
        try:
            fmt, events, violations, inspection = _checked(
                body, endpoint, content_type, settings.checks, history, received, utf8=not is_base64
            )
        except Exception as exc:  # a bug in a check must not lose the request
            answer = _error_body("the harness failed to check this payload")
            result = CallbackResult("answer", 500, answer, _NO_HEADERS, 0.0, None)
            error = f"inspect() raised {type(exc).__name__}: {exc}"
        else:
            result = _checked_answer(endpoint, settings, fault, violations, inspection, len(events))
            if fault is not None:
                rule = fault.rule
                hit = FaultHit(
                    rule=fault.index,
                    action=rule.action,
                    spec=rule.describe(),
                    retry_after=rule.retry_after,
                )
    record = _request_record(
        _ENDPOINT_NAMES[endpoint],
        path,
        peer,
        content_type,
        size,
        text,
        is_base64,
        cap,
        method,
        disconnected,
        result.status,
        format=fmt,
        events=events,
        violations=violations,
        fault=hit,
        error=error,
    )
    try:
        result.entry = app.journal.append(record, at=received)
    except JournalWriteError:
        return journal_failed_result()
    return result


def _checked_answer(
    endpoint: Endpoint,
    settings: ServerSettings,
    fault: FaultDecision | None,
    violations: tuple[Violation, ...],
    inspection: Inspection | None,
    accepted: int,
) -> CallbackResult:
    """The answer to a callback that was checked: a fault's, 400 for a payload with errors
    (strict), else 200 with the count of events *accepted*."""
    if fault is not None and fault.rule.action != "delay":
        rule = fault.rule
        if rule.action == "status":
            status = rule.status if rule.status is not None else 500
            extra = _NO_HEADERS
            if rule.retry_after is not None:
                extra = ((b"retry-after", str(rule.retry_after).encode()),)
            answer = _error_body(f"fault injected by the harness: {rule.describe()}")
            return CallbackResult("answer", status, answer, extra, rule.delay, None)
        drop: Literal["close", "reset"] = "reset" if rule.action == "reset" else "close"
        return CallbackResult(drop, None, b"", _NO_HEADERS, rule.delay, None)
    if violations and settings.strict and inspection is not None and not inspection.ok:
        if endpoint is Endpoint.V2:
            message_text = _v2_message(inspection, settings.checks.max_v2_events)
        else:
            message_text = V2_INVALID
        answer = _error_body(
            message_text, violations=[scrub(v.to_json()) for v in inspection.violations]
        )
        status = 400
    else:
        status = 200
        answer = V2_SUCCESS if endpoint is Endpoint.V2 else _legacy_success(accepted)
    delay = fault.rule.delay if fault is not None else 0.0
    return CallbackResult("answer", status, answer, _NO_HEADERS, delay, None)


STRAY_STATUS = 404
"""The answer to a request for a path that is no callback endpoint (and not the control API's)."""


def nearest_path(path: str, paths: Iterable[str]) -> str | None:
    """The callback path *path* most likely meant (a typo, a trailing slash, another case)."""
    known = list(paths)
    folded = {p.lower(): p for p in known}
    direct = folded.get(path.rstrip("/").lower())
    if direct is not None:
        return direct
    close = difflib.get_close_matches(path.lower(), list(folded), n=1, cutoff=0.6)
    return folded[close[0]] if close else None


def stray_body(path: str, paths: Mapping[str, str]) -> bytes:
    """The 404 body naming *path*, the nearest callback path and all of them (endpoint: path)."""
    hint = nearest_path(path, paths.values())
    message = f"no callback endpoint at {path!r}"
    if hint:
        message += f"; did you mean {hint}?"
    else:
        message += f"; the callback paths are {', '.join(paths.values())}"
    return _error_body(message, path=path, did_you_mean=hint, callback_paths=dict(paths))


def process_stray(
    app: "CallbackState",
    path: str,
    body: bytes,
    *,
    paths: Mapping[str, str],
    size: int,
    method: str = "POST",
    content_type: str | None,
    peer: str | None,
    received: float,
    disconnected: bool = False,
) -> CallbackResult:
    """Journal a request for a path that is no callback endpoint and answer it 404.

    A callback posted to ``/callbacks/bounc`` or ``/callbacks/bounce/`` is an integration bug
    that staging must show: it is journaled as a :class:`~harness.records.Callback` with
    ``endpoint`` None (not checked: no endpoint says what it should be; never accepted) and
    answered 404 with the path it most likely meant. *paths* are the callback paths as the
    client must send them (endpoint name: path). The server's ASGI fallback and the respx mock
    both call this, so both give the same answer and the same entry.
    """
    cap = app.settings.max_body
    if len(body) > cap:
        body = body[:cap]
    text, is_base64 = _body_text(body)
    status = None if disconnected else STRAY_STATUS
    entry = _request_record(
        None, path, peer, content_type, size, text, is_base64, cap, method, disconnected, status
    )
    try:
        recorded = app.journal.append(entry, at=received)
    except JournalWriteError:
        return journal_failed_result()
    if disconnected:
        return CallbackResult("none", None, b"", _NO_HEADERS, 0.0, recorded)
    return CallbackResult(
        "answer", STRAY_STATUS, stray_body(path, paths), _NO_HEADERS, 0.0, recorded
    )


async def read_body(receive: Receive, cap: int) -> tuple[bytes, int, bool]:
    """An ASGI request body: (its first *cap* bytes, its real size, whether the client left).

    Past the cap it keeps draining (and counting), so that the real size is journaled and the
    connection stays usable.
    """
    message = await receive()
    body: bytes = message.get("body", b"")
    more: bool = message.get("more_body", False)
    disconnected = message["type"] == "http.disconnect"
    size = len(body)
    if more:
        chunks = [body[:cap]]
        kept = len(chunks[0])
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
                break
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            if kept < cap:
                chunks.append(chunk[: cap - kept])
                kept += len(chunks[-1])
        body = b"".join(chunks)
    return body, size, disconnected


class _Callback:
    """The raw ASGI handler of one callback endpoint (see the module docstring for why raw)."""

    __slots__ = ("app", "endpoint", "path")

    def __init__(self, app: "CleverTapApp", endpoint: Endpoint, path: str) -> None:
        self.app = app
        self.endpoint = endpoint
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = await _read_request(scope, receive, self.app.settings.max_body)
        result = process_callback(self.app, self.endpoint, self.path, **request)
        await _answer(send, self.app.journal, result)


async def _read_request(scope: Scope, receive: Receive, cap: int) -> dict[str, Any]:
    """What :func:`process_callback` and :func:`process_stray` take of an ASGI request, as
    keyword arguments: its body (at most *cap* bytes kept) and its head."""
    received = time.time()
    content_type: str | None = None
    for key, value in scope["headers"]:
        if key == b"content-type":
            content_type = value.decode("latin-1")
            break
    body, size, disconnected = await read_body(receive, cap)
    client = scope.get("client")
    return {
        "body": body,
        "size": size,
        "method": scope["method"],
        "content_type": content_type,
        "peer": f"{client[0]}:{client[1]}" if client else None,
        "received": received,
        "disconnected": disconnected,
    }


async def when_due(journal: Journal, result: CallbackResult) -> CallbackResult:
    """*result* once it may be acted on: its entry in the file (a durable journal; the failed
    write's answer instead when it could not be), its delay fault waited."""
    if result.entry is not None and journal.durable:
        try:
            await journal.committed(result.entry)
        except JournalWriteError:
            result = journal_failed_result()
    if result.delay:
        await asyncio.sleep(result.delay)
    return result


async def _answer(send: Send, journal: Journal, result: CallbackResult) -> None:
    """Send *result* once it is due (:func:`when_due`)."""
    result = await when_due(journal, result)
    if result.action == "answer":
        await _send(send, result.status or 500, result.body, result.headers)
    elif result.action != "none":
        await _drop_connection(send, reset=result.action == "reset")


async def _send(
    send: Send, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _headers(body, extra)})
    await send({"type": "http.response.body", "body": body})


def abort_transport(transport: asyncio.BaseTransport, *, reset: bool) -> None:
    """Close the connection (FIN) or, with *reset*, abort it with a reset (RST)."""
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER on with a zero timeout makes close() send RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # By what it does, not its class: uvloop's transports (the loop of `harness serve`
        # and `harness run`) are no asyncio.Transport subclasses.
        abort = getattr(transport, "abort", None)
        if abort is not None:
            abort()
            return
    transport.close()


async def _drop_connection(send: Send, *, reset: bool) -> None:
    """Close (FIN) or reset (RST) the client's TCP connection without answering a byte.

    ASGI has no message for this, and raising from the app only makes uvicorn answer 500. Under
    uvicorn the ``send`` callable is a method of the request cycle, which holds the connection's
    asyncio transport, so the transport is closed directly. Under other servers the app raises
    ConnectionAbortedError, which most servers turn into a dropped connection or a 500.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None or not hasattr(transport, "close"):
        raise ConnectionAbortedError("fault: drop the connection (no transport to close)")
    # Any transport that closes: uvloop's are no asyncio.BaseTransport subclasses.
    abort_transport(cast(asyncio.BaseTransport, transport), reset=reset)
    # Let connection_lost() run so that uvicorn marks the cycle disconnected and neither answers
    # 500 nor logs "returned without starting response".
    for _ in range(5):
        if getattr(cycle, "disconnected", True):
            break
        await asyncio.sleep(0)


# -- the control API -------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    callbacks: int = Field(description="Callbacks in the journal.")
    last_seq: int = Field(description="Sequence number of the newest journal entry ever.")
    strict: bool
    paths: dict[str, str] = Field(description="Callback path of each endpoint.")
    journal_write_failures: int = Field(
        0, description="Entries the journal failed to record (each answered 503)."
    )


class CallbackEntry(BaseModel):
    seq: int
    at: float = Field(description="Receive time, Unix seconds.")
    data: dict[str, Any] = Field(description="The journaled request; see docs/journal.md.")


class CallbackPage(BaseModel):
    last_seq: int = Field(description="Pass as `since` to get only newer callbacks next time.")
    callbacks: list[CallbackEntry]


class ViolationRecord(BaseModel):
    seq: int = Field(description="The callback entry the violation was found in.")
    at: float
    endpoint: str | None
    violation: dict[str, Any] = Field(description="Violation.to_json()")


class ViolationPage(BaseModel):
    last_seq: int
    violations: list[ViolationRecord]


class WaitTimeout(BaseModel):
    detail: str
    last_seq: int


class Faults(BaseModel):
    rules: list[dict[str, Any]] = Field(
        description="The rules in order, each with its counters `seen` and `applied`."
    )


class FaultsIn(BaseModel):
    rules: list[FaultRule]


class ResetDone(BaseModel):
    status: Literal["reset"] = "reset"
    last_seq: int


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, with every string made encodable: a body holding a JSON escape of a lone
    surrogate (``"\\ud800"``) is echoed in the error's ``input``, which FastAPI's own handler
    cannot encode (it answered 500)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": scrub(jsonable_encoder(errors))}, status_code=422)


def _to_model(entry: Entry) -> CallbackEntry:
    return CallbackEntry(seq=entry.seq, at=entry.at, data=record_json(entry.data))


StatusFilter = Literal["accepted", "rejected", "any"]


def _accepted(status: StatusFilter) -> bool | None:
    return None if status == "any" else status == "accepted"


def _callback_filter(
    event: str | None, address: str | None, endpoint: str | None, accepted: bool | None
) -> Callable[[Entry], bool]:
    """The predicate of :meth:`Journal.callbacks` for new entries (the one matcher)."""

    def matches(entry: Entry) -> bool:
        record = entry.data
        if not isinstance(record, Callback):
            return False
        if endpoint is not None and record.endpoint != endpoint:
            return False
        if accepted is not None and record.accepted != accepted:
            return False
        if event is None and address is None:
            return True
        return any(record.matching(event, address))

    return matches


def _control_router(app: "CleverTapApp") -> APIRouter:
    settings = app.settings
    bearer = HTTPBearer(auto_error=False, description="The token given to `harness serve`.")

    async def authorize(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if settings.token is None:
            return
        if credentials is None or not secrets.compare_digest(
            credentials.credentials.encode(), settings.token.encode()
        ):
            raise HTTPException(
                401,
                "the control API needs 'Authorization: Bearer <token>' (the --token of serve)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    open_router = APIRouter(prefix=settings.control_prefix, tags=["control"])
    router = APIRouter(
        prefix=settings.control_prefix, tags=["control"], dependencies=[Depends(authorize)]
    )

    @open_router.get("/health", response_model=Health, summary="Is the server up?")
    async def health() -> Health:
        # Counters, not a scan: cheap at any journal size.
        return Health(
            callbacks=app.journal.count(Kind.CALLBACK),
            last_seq=app.journal.last_seq,
            strict=settings.strict,
            paths={e.value: p for e, p in settings.paths.items()},
            journal_write_failures=app.journal.write_failures,
        )

    Since = Annotated[int, Query(ge=0, description="Only entries with a larger seq.")]
    Status = Annotated[
        StatusFilter,
        Query(description="`accepted` (answered 2xx), `rejected` (anything else) or `any`."),
    ]

    # Plain `def` handlers: FastAPI runs them in its thread pool, so a long read never stalls
    # the event loop that serves callbacks; the journal lets writers in between chunks.
    @router.get("/callbacks", response_model=CallbackPage, summary="List journaled callbacks")
    def callbacks(
        event: Annotated[str | None, Query(description="An event name or v2 type.")] = None,
        address: Annotated[str | None, Query(description="A recipient (any case).")] = None,
        code: Annotated[str | None, Query(description="A violation code, e.g. CT101.")] = None,
        endpoint: Annotated[Endpoint | None, Query()] = None,
        status: Status = "any",
        since: Since = 0,
        limit: Annotated[int | None, Query(ge=1, description="At most this many.")] = None,
    ) -> CallbackPage:
        last = app.journal.last_seq
        found = app.journal.callbacks(
            event=event,
            address=address,
            code=code,
            endpoint=endpoint.value if endpoint else None,
            accepted=_accepted(status),
            since=since,
            limit=limit,
        )
        return CallbackPage(last_seq=last, callbacks=[_to_model(e) for e in found])

    @router.get("/violations", response_model=ViolationPage, summary="List violations found")
    def violations(
        code: Annotated[str | None, Query(description="A check code, e.g. CT301.")] = None,
        severity: Annotated[Severity | None, Query()] = None,
        endpoint: Annotated[Endpoint | None, Query()] = None,
        status: Status = "any",
        since: Since = 0,
        limit: Annotated[int | None, Query(ge=1, description="At most this many.")] = None,
    ) -> ViolationPage:
        last = app.journal.last_seq
        out: list[ViolationRecord] = []
        wanted = endpoint.value if endpoint else None
        # Through the index of flagged callbacks: only requests with a violation are read.
        entries = app.journal.callbacks(
            code=code, endpoint=wanted, accepted=_accepted(status), flagged=True, since=since
        )
        for entry in entries:
            record = entry.data
            if not isinstance(record, Callback):
                continue
            for v in record.violations:
                if code is not None and v.code != code:
                    continue
                if severity is not None and v.severity != severity:
                    continue
                out.append(
                    ViolationRecord(
                        seq=entry.seq, at=entry.at, endpoint=record.endpoint, violation=v.to_json()
                    )
                )
            if limit is not None and len(out) >= limit:
                out = out[:limit]
                break
        return ViolationPage(last_seq=last, violations=out)

    @router.get(
        "/wait",
        response_model=CallbackEntry,
        summary="Wait for a callback (long poll)",
        responses={
            408: {"model": WaitTimeout, "description": "Nothing matched within the timeout."},
            503: {"model": WaitTimeout, "description": "The server is stopping."},
        },
    )
    async def wait(
        event: Annotated[str | None, Query(description="An event name or v2 type.")] = None,
        address: Annotated[str | None, Query(description="A recipient (any case).")] = None,
        endpoint: Annotated[Endpoint | None, Query()] = None,
        status: Annotated[
            StatusFilter,
            Query(
                description="Which answers count; by default only accepted (2xx) callbacks, "
                "as `expect_callback` counts them."
            ),
        ] = "accepted",
        since: Since = 0,
        timeout: Annotated[float, Query(gt=0, le=300, description="Seconds to wait.")] = 10.0,
    ) -> CallbackEntry | JSONResponse:
        """The first callback after `since` with an event matching `event` and `address`.

        Callbacks already journaled count, so there is no race between sending and waiting.
        """
        wanted = endpoint.value if endpoint else None
        accepted = _accepted(status)
        matches = _callback_filter(event, address, wanted, accepted)

        def first(after: int) -> Entry | None:
            found = app.journal.callbacks(
                event=event,
                address=address,
                endpoint=wanted,
                accepted=accepted,
                since=after,
                limit=1,
            )
            return found[0] if found else None

        waiter = asyncio.ensure_future(
            app.journal.wait_for_async(matches, timeout, since=since, first=first)
        )
        stopping = asyncio.ensure_future(app.stopping.wait())
        try:
            await asyncio.wait({waiter, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stopping):
                task.cancel()
            await asyncio.gather(waiter, stopping, return_exceptions=True)
        if waiter.cancelled() or waiter.exception() is not None:
            body = WaitTimeout(detail="the server is stopping", last_seq=app.journal.last_seq)
            return JSONResponse(body.model_dump(), status_code=503)
        found = waiter.result()
        if found is None:
            wanted_text = ", ".join(
                f"{k}={v!r}"
                for k, v in (
                    ("event", event),
                    ("address", address),
                    ("endpoint", endpoint),
                    ("status", status),
                )
                if v is not None
            )
            body = WaitTimeout(
                detail=f"no callback matching {wanted_text} after seq {since} within {timeout:g} s",
                last_seq=app.journal.last_seq,
            )
            return JSONResponse(body.model_dump(), status_code=408)
        return _to_model(found)

    # async: with a mail world, hosts are put back in the event loop that serves them.
    @router.post("/reset", response_model=ResetDone, summary="Forget everything")
    async def reset() -> ResetDone:
        """Clear the journal, the duplicate index and the fault counters (rules stay); with a
        mail world, also its rules' attempt counters, and hosts taken down or brought up at
        run time are put back as configured."""
        app.reset()
        if app.mail is not None:
            app.mail.reset()
            app.mail.restore()
        return ResetDone(last_seq=app.journal.last_seq)

    @router.get("/faults", response_model=Faults, summary="The fault rules and their counters")
    async def get_faults() -> Faults:
        return Faults(rules=app.faults.snapshot())

    @router.put("/faults", response_model=Faults, summary="Replace the fault rules")
    async def put_faults(rules: FaultsIn) -> Faults:
        app.set_faults(rules.rules)
        return Faults(rules=app.faults.snapshot())

    @router.delete("/faults", response_model=Faults, summary="Remove every fault rule")
    async def delete_faults() -> Faults:
        app.set_faults([])
        return Faults(rules=app.faults.snapshot())

    router.include_router(mail_router(app))
    combined = APIRouter()
    combined.include_router(open_router)
    combined.include_router(router)
    return combined


class CleverTapApp(FastAPI):
    """The fake CleverTap. Build it with :func:`create_app`."""

    def __init__(self, settings: ServerSettings, journal: Journal) -> None:
        super().__init__(
            title="clevertap-harness: fake CleverTap",
            summary="Receives CleverTap SMTP callbacks, checks them and journals them.",
            version="1",
            # Served from local assets by mount_docs() below: FastAPI's pages use CDNs.
            docs_url=None,
            redoc_url=None,
        )
        self.settings = settings
        self._journal = journal
        self.faults = FaultPlan(settings.faults)
        self.duplicates = JournalHistory(journal)
        self._stopping: asyncio.Event | None = None
        self.mail: MailControl | None = None
        """The mail world whose hosts the control API takes down and up (set by World)."""
        self.scenario: object | None = None
        """The scenario the world was built from (a ``harness.scenario.model.Scenario``, set
        by ``World.from_scenario``): the dashboard's report page judges it."""
        self._callbacks = {
            path: _Callback(self, endpoint, path) for endpoint, path in settings.paths.items()
        }
        self.include_router(_control_router(self))
        self.add_exception_handler(RequestValidationError, _invalid_request)
        mount_docs(self)
        # Requests no route takes end in the router's `default` app (Starlette's public Router
        # argument; pinned by tests/clevertap/test_server.py): wrong callback paths are
        # journaled there instead of getting a bare 404.
        self._not_found = self.router.default
        self.router.default = self._stray

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document of the control API, plus the callback endpoints (not routes:
        see :mod:`harness.clevertap.openapi`)."""
        if self.openapi_schema is None:
            schema = super().openapi()
            items, schemas = callback_paths(self.settings.paths, self.settings.control_prefix)
            schema["paths"] = {**items, **schema.get("paths", {})}
            schema.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
        return self.openapi_schema or {}

    @property
    def stray_paths(self) -> dict[str, str]:
        """The callback paths a stray request is pointed to (endpoint name: path)."""
        return {e.value: p for e, p in self.settings.paths.items()}

    def _under_control(self, path: str) -> bool:
        prefix = self.settings.control_prefix
        return path == prefix or path.startswith(prefix + "/")

    def is_stray(self, scope: Scope) -> bool:
        """Whether the request of *scope* is for a path nothing serves (a wrong callback path):
        no callback endpoint, nothing under the control prefix, no route (also with its
        trailing slash toggled: the router redirects those). The guard lets these through, as
        it does callbacks, so that each is journaled."""
        path: str = scope["path"]
        if scope["type"] != "http" or path in self._callbacks or self._under_control(path):
            return False
        toggled = path.rstrip("/") if path.endswith("/") else path + "/"
        for candidate in (path, toggled):
            probe = {**scope, "path": candidate}
            if any(route.matches(probe)[0] is not Match.NONE for route in self.router.routes):
                return False
        return True

    async def _stray(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._under_control(scope["path"]):
            # The control API's own unknown paths stay plain 404s: nobody posts callbacks there.
            await self._not_found(scope, receive, send)
            return
        request = await _read_request(scope, receive, self.settings.max_body)
        result = process_stray(self, scope["path"], paths=self.stray_paths, **request)
        await _answer(send, self.journal, result)

    @property
    def journal(self) -> Journal:
        return self._journal

    @journal.setter
    def journal(self, journal: Journal) -> None:
        """Journal into *journal* from now on; the duplicate history (an index of the journal)
        follows it."""
        self._journal = journal
        self.duplicates = JournalHistory(journal)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Callbacks skip FastAPI's middleware and routing: a dict lookup instead of a dozen
        # layers, and the handler gets the server's own `send` (see _drop_connection).
        if scope["type"] == "http":
            handler = self._callbacks.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    @property
    def stopping(self) -> asyncio.Event:
        """Set when the server stops, so that long polls end at once instead of holding it up."""
        if self._stopping is None:
            self._stopping = asyncio.Event()
        return self._stopping

    def begin_stop(self) -> None:
        """End pending long polls (503); call in the serving loop before stopping the server."""
        self.stopping.set()

    def end_stop(self) -> None:
        """Forget the stop, so the app can be served again (possibly in another event loop)."""
        self._stopping = None

    def reset(self, *, journal: bool = True) -> None:
        """Clear the journal (unless *journal* is False), the duplicate index and the fault
        counters (the rules stay)."""
        if journal:
            self.journal.reset()
        self.duplicates.clear()
        self.faults.reset()

    def set_faults(self, rules: list[FaultRule] | tuple[FaultRule, ...]) -> None:
        """Replace the fault rules, and note the change in the journal (it orders the story)."""
        self.faults.set(rules)
        self.journal.append(FaultsChanged(rules=tuple(r.describe() for r in rules)))


def create_app(
    settings: ServerSettings | None = None, journal: Journal | None = None
) -> CleverTapApp:
    """The fake CleverTap app for *settings*, journaling into *journal* (in memory if None)."""
    app = CleverTapApp(
        settings if settings is not None else ServerSettings(),
        journal if journal is not None else MemoryJournal(),
    )
    # Imported here: the dashboard sits above the app (it reads the journal and the checks).
    from harness.dashboard import mount_dashboard

    mount_dashboard(app)
    return app

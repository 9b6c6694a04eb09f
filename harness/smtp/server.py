"""Fake mail servers on aiosmtpd: MX hosts and relays that fail on cue and record everything.

An :class:`MXHost` listens on 127.0.0.1 (port 0 by default; the real port is read back) and
answers each recipient as its :class:`~harness.smtp.rules.Rules` say. It never delivers mail
anywhere: accepted messages are journaled, and accept-then-bounce recipients get a DSN sent to the
configured bounce intake after their delay (through :func:`harness.smtp.dsn.deliver_dsn`).

A host can be taken down and brought back while it runs (:meth:`MXHost.down`,
:meth:`MXHost.up`), always on the same port, since the integration under test holds the port in
its transport map. The listening socket is created here, not by asyncio, so that while the host
plays ``refused`` the port stays bound (but not listening, which makes the kernel answer a
connect with RST, i.e. ECONNREFUSED) and nobody else can take it.

Journal records (:mod:`harness.records`), each written when it happens:

- :class:`~harness.records.SmtpOpen` when a connection is accepted;
- :class:`~harness.records.SmtpReply` for every reply that decides a recipient (RCPT, DATA, end
  of DATA: the rules' replies and the host's own, such as size and line-length rejections),
  committed to the journal *before* the client can read the reply, so that a verdict taken while
  a client keeps its connection open (Postfix's connection cache) sees it, and a ``kill -9`` of
  a standalone server loses no answered decision;
- :class:`~harness.records.SmtpMessage` for each message accepted with 250 after DATA (the same
  rule: committed before the 250 is sent);
- :class:`~harness.records.SmtpClose` when the connection ends: the transcript (at most
  ``max_transcript`` commands and as many replies, the first and last halves; the counts of what
  was left out) and how it ended;
- :class:`~harness.records.HostChange` for ``down``/``up``, and
  :class:`~harness.records.DsnSkipped` for DSNs that could not be sent (no intake, null sender,
  NOTIFY=NEVER, stopped before the delay ran out).

When the journal cannot record a decision (a file journal on a full disk), the client gets
``451 4.3.0`` instead of the decision: a temporary failure, so a real MTA retries later.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MethodType
from typing import Any, ClassVar, cast

import idna
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException

from harness._turn import HeldWrites, Turn
from harness.errors import ConfigError, JournalWriteError, ServerError, UnknownNameError
from harness.journal import Entry, Journal, MemoryJournal
from harness.records import (
    DroppedMessage,
    DsnSkipped,
    HostChange,
    Recipient,
    ScheduledBounce,
    SmtpClose,
    SmtpMessage,
    SmtpOpen,
    SmtpReply,
    TranscriptLine,
)
from harness.smtp.catalog import (
    CATALOG,
    FLAVOURS,
    SERVER_DOWN,
    SLOW_DELAY,
    BounceClass,
    Reply,
    Stage,
)
from harness.smtp.rules import Outcome, Rules
from harness.smtp.tls import Certificate, make_certificate
from harness.smtp.wire import TOO_LONG, parse_headers, read_data
from harness.vocab import MailReport

__all__ = ["SERVER_DOWN", "MXHost"]


_IDENT = "ESMTP"
_BODY_CAP = 64 * 1024
_BACKLOG = 4096
_XTEXT_HEX = "0123456789ABCDEF"
# A fatal TLS alert (handshake_failure), sent instead of a ServerHello by ``tls_broken``.
_TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x28"
_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_NOT_RECORDED = "451 4.3.0 Temporary failure: the server could not record this, try again later"
"""Answered instead of a decision the journal could not record (the sender retries)."""
log = logging.getLogger("harness.smtp")
_AIOSMTPD_LOG = logging.getLogger("mail.log")

Intake = tuple[str, int] | Path


def _xtext_decode(value: str) -> str | None:
    """Decode RFC 3461 xtext (``+HH`` escapes); None when malformed."""
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "+":
            hexpart = value[i + 1 : i + 3].upper()
            if len(hexpart) != 2 or any(c not in _XTEXT_HEX for c in hexpart):
                return None
            out.append(chr(int(hexpart, 16)))
            i += 3
            continue
        if not "!" <= ch <= "~" or ch == "=":
            return None
        out.append(ch)
        i += 1
    return "".join(out)


def _parse_path(arg: str | None, keyword: str) -> tuple[str, list[str]] | None:
    """``FROM:<a@b> K=V ...`` -> (address, params); None on bad syntax.

    Brackets are optional (Postfix accepts both); a source route (``<@a,@b:u@x>``) is dropped.
    """
    if arg is None or arg[: len(keyword)].upper() != keyword:
        return None
    rest = arg[len(keyword) :].lstrip()
    if rest.startswith("<"):
        # A quoted local part may hold spaces and ">" (RFC 5321 4.1.2 Quoted-string).
        quoted = _QUOTED_LOCAL.match(rest, 1)
        end = rest.find(">", quoted.end() if quoted else 1)
        if end < 0:
            return None
        address, params = rest[1:end], rest[end + 1 :]
        if params and not params[0].isspace():
            return None
    else:
        address, _, params = rest.partition(" ")
    if ":" in address and address.startswith("@"):
        address = address.partition(":")[2]
    quoted = _QUOTED_LOCAL.match(address)
    if _NOT_IN_ADDRESS.search(address, quoted.end() if quoted else 0):
        return None
    return address, params.split()


_NOT_IN_ADDRESS = re.compile(r"[\s<>]")
"""White space (str.isspace()'s, as ``\\s`` is for str patterns) and angle brackets."""
_QUOTED_LOCAL = re.compile(r'"(?:[^"\\\r\n]|\\[^\r\n])*"(?=@)')
"""A Quoted-string local part (``"john doe"@``): what Postfix takes in MAIL and RCPT."""


@dataclass(slots=True)
class _Params:
    values: dict[str, str | bool]
    error: str | None = None


def _split_params(params: list[str], allowed: tuple[str, ...]) -> _Params:
    values: dict[str, str | bool] = {}
    for param in params:
        key, eq, value = param.partition("=")
        key = key.upper()
        if not key.isalnum() or (eq and not value):
            return _Params(values, f"501 5.5.4 Bad parameter syntax: {param}")
        if key not in allowed:
            return _Params(values, f"555 5.5.4 Unsupported option: {key}")
        if key in values:
            return _Params(values, f"501 5.5.4 Duplicate parameter: {key}")
        values[key] = value if eq else True
    return _Params(values)


class _Envelope(Envelope):
    """aiosmtpd's envelope plus the per-transaction state of the rules.

    Keeping it on the envelope means aiosmtpd's own resets (RSET, HELO/EHLO, after DATA) clear
    it with everything else.
    """

    def __init__(self) -> None:
        super().__init__()
        self.params: dict[str, str | bool] = {}
        self.recipients: list[Recipient] = []
        self.later: list[tuple[str, Outcome]] = []
        """Accepted recipients whose behaviour acts at DATA, end of DATA or by DSN."""
        self.transaction: int | None = None
        """Its number in the session, given when MAIL is accepted."""


class _Transcript:
    """Commands or replies of one session, bounded: the first and the last ``limit // 2``."""

    __slots__ = ("dropped", "head", "limit", "tail")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head: list[Any] = []
        self.tail: collections.deque[Any] = collections.deque(maxlen=max(limit - limit // 2, 0))
        self.dropped = 0

    def append(self, item: Any) -> None:
        if len(self.head) < self.limit // 2:
            self.head.append(item)
            return
        if self.tail.maxlen and len(self.tail) == self.tail.maxlen:
            self.dropped += 1
        elif not self.tail.maxlen:
            self.dropped += 1
            return
        self.tail.append(item)

    def __len__(self) -> int:
        return len(self.head) + len(self.tail)

    def items(self) -> tuple[Any, ...]:
        return (*self.head, *self.tail)


class _Record:
    """What one session did, kept as cheap appends; its decisions are journaled as they are
    given, its transcript when it ends."""

    __slots__ = (
        "auth",
        "commands",
        "dropped",
        "ehlo",
        "end",
        "id",
        "messages",
        "peer",
        "replies",
        "started",
        "tls",
        "transactions",
        "variant",
    )

    def __init__(self, session_id: str, peer: str, variant: str | None, limit: int) -> None:
        self.id = session_id
        self.peer = peer
        self.variant = variant
        self.started = time.time()
        self.ehlo: str | None = None
        self.tls: str | None = None
        self.auth: str | None = None
        self.commands = _Transcript(limit)
        self.replies = _Transcript(limit)
        self.messages: list[str] = []
        self.dropped: DroppedMessage | None = None
        self.end: str | None = None
        self.transactions = 0
        """MAIL commands accepted so far: a reused connection carries many transactions."""


def _write(transport: asyncio.BaseTransport | None, data: bytes) -> None:
    """Write *data* on a connection's transport, whichever loop made it: uvloop's transports
    (the loop of ``harness run``) write like asyncio's but are no ``asyncio.WriteTransport``
    subclasses, so no isinstance() check here."""
    if transport is not None:
        cast(asyncio.WriteTransport, transport).write(data)


class _HeldReplies(HeldWrites):
    """A session's transport: everything written on it (replies, TLS records) goes out at the
    end of the loop turn, back to back with the other sessions' (:mod:`harness._turn` says why
    and what it saves). Closing it, aborting it or handing it to another protocol (STARTTLS)
    sends what it holds first.

    The client sees no difference: it waits for each reply before its next command (or, with
    PIPELINING, for the group's replies, which then go out in one write)."""

    __slots__ = ()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.hold(bytes(data))


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class _Handler:
    """The aiosmtpd handler: hooks only, each handing over to the session that called it."""

    async def handle_EHLO(
        self,
        server: _Session,
        session: Session,
        envelope: Envelope,
        hostname: str,
        lines: list[str],
    ) -> list[str]:
        return server.on_ehlo(hostname, lines)

    async def handle_DATA(self, server: _Session, session: Session, envelope: Envelope) -> str:
        return await server.on_end_of_data()

    async def handle_exception(self, error: Exception) -> str:
        """What aiosmtpd answers when a command raised: never the exception's text.

        A client whose TLS handshake fails (``TLSSetupException``) is no server error: aiosmtpd
        closes the connection and sends nothing. Anything else is a harness bug, logged with
        its traceback; the client gets a temporary failure, as from a real server in trouble.
        """
        if not isinstance(error, TLSSetupException):
            # On aiosmtpd's logger, with its words: the pytest plugin raises what is logged
            # there in the test that caused it.
            _AIOSMTPD_LOG.error("fake MX host: SMTP session exception", exc_info=error)
        return _INTERNAL

    def __dir__(self) -> list[str]:
        # Nothing for aiosmtpd's per-connection introspection (dir() for ``handle_*`` hooks,
        # inspect.getmembers() for ``auth_*`` ones, inspect.signature() of the EHLO hook) to
        # find: each session is handed the finished table, _HOOKS (see _Session.__init__).
        return []


_HANDLER = _Handler()
_HOOKS: dict[str, Callable[..., Any]] = {
    "DATA": _HANDLER.handle_DATA,
    "EHLO": _HANDLER.handle_EHLO,
    "exception": _HANDLER.handle_exception,
}
"""aiosmtpd's hook table for the handler: what its dir() would find (tests/smtp/test_wire.py
pins it). handle_EHLO is the 5-argument ("new") form."""

# Stage recorded for the reply to each command.
_STAGES = {
    "HELO": "ehlo",
    "EHLO": "ehlo",
    "MAIL": "mail",
    "RCPT": "rcpt",
    "DATA": "data",
    "AUTH": "auth",
    "STARTTLS": "starttls",
}

# aiosmtpd's own replies, as Postfix gives them (tests/realmta compares the two reply by reply).
_REWRITE = {
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: send HELO first": "503 5.5.1 Error: send HELO/EHLO first",
    "500 Command line too long": "500 5.5.2 Error: command line too long",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Error: line too long in message",
    "500 Error: bad syntax": "500 5.5.2 Error: bad syntax",
    "250 OK": "250 2.0.0 Ok",
    "221 Bye": "221 2.0.0 Bye",
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
    "454 TLS not available": "454 4.7.0 TLS not available due to local problem",
    "503 Already authenticated": "503 5.5.1 Error: already authenticated",
    "501 Not enough value": "501 5.5.4 Syntax: AUTH mechanism",
    "501 Too many values": "501 5.5.4 Syntax: AUTH mechanism",
    "500 Error: command 'AUTH' not recognized": "503 5.5.1 Error: send EHLO first",
    "554 Command refused due to lack of security": "554 5.7.0 Error: TLS handshake not complete",
}


# Postfix's replies that have no enhanced code: before EHLO the client has not been told of
# ENHANCEDSTATUSCODES.
def _a_labels(name: str) -> str:
    """*name* in ASCII: the host name and queue ids travel in greetings, replies, Message-IDs
    and MIME boundaries, so an IDN domain goes in its A-label form (``xn--bcher-kva.example``)."""
    return name if name.isascii() else idna.encode(name, uts46=True).decode("ascii")


_AS_IS = frozenset({"501 Syntax: EHLO hostname", "501 Syntax: HELO hostname"})
_NOT_RECOGNISED = "500 5.5.2 Error: command not recognized"
_NO_SMTPUTF8 = "555 5.5.4 Unsupported option: SMTPUTF8"
_NEED_RCPT = "503 5.5.1 Error: need RCPT command"
_NO_RECIPIENTS = "554 5.5.1 Error: no valid recipients"
"""DATA after MAIL whose every RCPT was refused (or none sent); before MAIL it is _NEED_RCPT."""
_BAD_UTF8 = "500 5.5.2 Error: bad UTF-8 syntax"
_INTERNAL = "451 4.3.0 Error: internal server error, try again later"
"""What a client gets when the host itself fails: never the exception's text."""
# Enhanced codes for replies that still have none (ENHANCEDSTATUSCODES is advertised, so every
# reply carries one, as Postfix's do); by reply code, Postfix's choices.
_ENHANCED_FOR = {
    250: "2.0.0",
    221: "2.0.0",
    252: "2.0.0",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.2",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    554: "5.5.1",
}


def _postfix_reply(line: str) -> str:
    """*line* as Postfix words it: known aiosmtpd texts replaced, an enhanced code added."""
    line = _REWRITE.get(line, line)
    if line in _AS_IS:
        return line
    if line.startswith('500 Error: command "'):
        return _NOT_RECOGNISED
    code, text = line[:3], line[4:]
    if line[3:4] != " " or not code.isdigit() or text[:1].isdigit():
        return line
    enhanced = _ENHANCED_FOR.get(int(code))
    return f"{code} {enhanced} {text}" if enhanced else line


def _printable(text: str) -> str:
    """*text* without lone surrogates (aiosmtpd keeps undecodable bytes as surrogates)."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _Session(SMTP):
    """One SMTP connection: aiosmtpd's state machine plus rules, DSN parameters and recording."""

    def __init__(self, host: MXHost, variant: str | None) -> None:
        # aiosmtpd sizes its line reader (commands and message lines alike) by this attribute;
        # without a configured limit, any message line fits, as with Postfix.
        self.line_length_limit = host.line_length_limit or max(host.size_limit, 1 << 20) + 2
        tables = _TABLES.get(type(self))
        self._tables_known = tables is not None
        """While aiosmtpd's __init__ runs: its tables come from _TABLES (see __dir__)."""
        super().__init__(
            _HANDLER,
            hostname=host.hostname,
            ident=_IDENT,
            data_size_limit=host.size_limit,
            # Always on for aiosmtpd: its "strict ASCII" mode answers non-ASCII with a bare 500
            # before any command sees it. A host without SMTPUTF8 refuses it itself, as Postfix
            # does (555 5.5.4 for the parameter, 553 5.6.7 for an address).
            enable_SMTPUTF8=True,
            tls_context=host._starttls_context,
            require_starttls=host.require_tls,
            timeout=host.timeout,
            # AUTH-required is enforced here (at MAIL) rather than by aiosmtpd, which warns when
            # AUTH is required without TLS: a fine default for real servers, not for a fake one.
            auth_required=False,
            auth_require_tls=host.auth_require_tls,
            authenticator=host._authenticate,
            loop=host.loop,
        )
        if tables is None:
            _TABLES[type(self)] = _Tables.of(self)
        else:
            tables.bind(self)
        self._tables_known = False
        self._handle_hooks = _HOOKS
        self._ehlo_hook_ver = "new"
        self.host = host
        self.variant = variant
        self._idle_deadline = 0.0
        self._timer_at = float("inf")
        """When the armed timer fires (inf: none armed), kept here rather than asked of the
        handle: two method calls per command on asyncio's loop."""
        self.record: _Record | None = None
        self._stage = "greeting"
        self._answered = False
        self._decided = False
        """The reply after the final dot is journaled already (push() sends it only)."""
        self._silent = False
        self._delay = host._slow_delay if variant == "slow" else 0.0
        self._done: asyncio.Future[None] = host.loop.create_future()
        self._released = False
        self._session_end = host.loop.time() + host.session_timeout
        """The session's own deadline, whatever the client does; the idle timer's handle
        serves both (see _reset_timeout)."""
        self._chunks: list[bytes] | None = None
        """BDAT chunks of the transaction so far; None when no BDAT transfer is under way."""
        self._chunk_bytes = 0

    def __dir__(self) -> list[str]:
        """The session's ``smtp_*`` and ``auth_*`` methods only, listed once per class; none
        while aiosmtpd's ``__init__`` runs once the class's tables are known.

        aiosmtpd's ``__init__`` finds its command and AUTH methods with ``dir(self)`` and
        ``inspect.getmembers(self)`` on every new connection; over the full ``dir()``, which
        also reads every other attribute, that cost 122-158 us per connection (issue 15), and
        about 12 us over the hook names alone. Those names are all it looks for, and what it
        finds depends on the class only: the first session of a class lets it look, the
        others get the same tables bound to themselves (:class:`_Tables`; pinned by
        tests/smtp/test_wire.py).
        """
        if self.__dict__.get("_tables_known"):
            return []
        return list(_hook_names(type(self)))

    # Methods, not properties: aiosmtpd's __init__ runs inspect.getmembers() on the session,
    # which would evaluate properties before there is any state.
    def env(self) -> _Envelope:
        env = self.envelope
        if not isinstance(env, _Envelope):  # pragma: no cover - set by _create_envelope
            raise ServerError("the SMTP session has no envelope")
        return env

    def sess(self) -> Session:
        session = self.session
        if session is None:  # pragma: no cover - set in connection_made
            raise ServerError("the SMTP session has no state")
        return session

    # -- connection --------------------------------------------------------------------------

    def _create_envelope(self) -> _Envelope:
        # aiosmtpd's documented-by-code factory for envelopes; ours carries the rules' state.
        return _Envelope()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.record is None
        if first:
            transport = _HeldReplies(transport, self.host._turn, self.loop)
        super().connection_made(transport)
        if first:
            tls = "implicit" if transport.get_extra_info("ssl_object") is not None else None
            self.record = self.host._open_record(self, _peer(transport), self.variant, tls)
        elif self.record is not None and self.sess().ssl is not None:
            # aiosmtpd calls connection_made again once the STARTTLS handshake is done.
            self.record.tls = "starttls"

    def connection_lost(self, error: Exception | None) -> None:
        if self._released:
            return
        super().connection_lost(error)
        record = self.record
        if record is not None and record.end is None:
            record.end = "client_dropped"
        self.host._close_record(self, record)
        if not self._done.done():
            self._done.set_result(None)
        # aiosmtpd cancels its per-connection task here; the host waits for it at stop so that
        # no task is left pending when the loop closes.
        task = self._handler_coroutine
        if isinstance(task, asyncio.Task) and not task.done():
            self.host._unwinding.add(task)
            task.add_done_callback(self.host._unwinding.discard)
            task.add_done_callback(self._release)
        else:
            self._release()

    def _release(self, _: object = None) -> None:
        """Drop the session's references to itself, once nothing runs on it any more.

        aiosmtpd's tables hold bound methods of the session, its stream writer points back at
        it, and a cancelled command loop keeps its frames (``self`` included) in the task's
        exception: every connection ends as a reference cycle. Only the cyclic garbage
        collector frees those, after promoting them to the older generations whose
        collections walk the whole heap: about 100 us a connection under bench_smtp's
        new-connection load (issue 15). Cut here, a finished session is freed by reference
        counting as soon as the host forgets it (tests/smtp/test_wire.py checks it).
        """
        self._released = True
        self._smtp_methods = {}
        self._auth_methods = {}
        self._client_connected_cb = None
        self._writer = None  # type: ignore[assignment]
        self._handler_coroutine = None
        self._tls_protocol = None
        self._original_transport = None

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timer, re-armed lazily, and the session's deadline on the same one.

        aiosmtpd (a private method: there is no public hook for its idle timer) cancels its
        timer and schedules a new one on every command: a handle made and a cancelled one left
        in the loop's heap, four or more times a message. Here a command only moves the
        deadline; the one timer, when it fires early, sleeps again for what is left. The same
        timeout, to the same instant (tests/smtp/test_hostile.py times it). The whole
        session's timeout (``session_timeout``) caps that deadline rather than keeping a
        second timer per connection: both say 421 and hang up.
        """
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._idle_deadline = deadline = min(deadline, self._session_end)
        if deadline < self._timer_at:
            if self._timeout_handle is not None:
                self._timeout_handle.cancel()
            self._timeout_handle = self.loop.call_at(deadline, self._idle_check)
            self._timer_at = deadline

    def _idle_check(self) -> None:
        if self.loop.time() < self._idle_deadline:
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_check)
            self._timer_at = self._idle_deadline
            return
        self._timeout_cb()

    def _timeout_cb(self) -> None:
        # aiosmtpd's idle-timeout callback (no command for ``timeout`` seconds).
        self._expire()

    def _expire(self) -> None:
        """Idle or total-session timeout: say so as Postfix does, then hang up."""
        if self.transport is None:
            return
        line = f"421 4.4.2 {self.host.hostname} Error: timeout exceeded"
        if self.record is not None:
            self.record.replies.append(TranscriptLine(stage="timeout", reply=line))
        if not self._silent:
            _write(self.transport, line.encode() + b"\r\n")
        self.drop("timeout")

    def drop(self, reason: str) -> None:
        """Close the connection from the server side, without a reply, and stop reading.

        Bytes the client sent after this point (Postfix pipelines QUIT after the final dot) are
        never executed: aiosmtpd's command loop runs while ``transport`` is set, so it ends as
        soon as the current command returns.
        """
        if self.record is not None and self.record.end is None:
            self.record.end = reason
        self._silent = True
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.close()
        # After STARTTLS the transport is TLS's; the socket's own must be closed too, or a
        # handshake that never finishes keeps the connection open.
        if self._original_transport is not None:
            self._original_transport.close()

    # -- replies -----------------------------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        if self._silent:
            return
        line = status if isinstance(status, str) else status.decode("utf-8", "replace")
        line = _postfix_reply(_printable(line))
        if line == "552 Error: Too much mail data":
            line = str(self.host._too_large)
        if (
            self._stage == "end_of_data"
            and not self._answered
            and not self._decided
            and line[:1] in "45"
        ):
            # aiosmtpd's own verdict after the final dot (size, line length): a decision like
            # any other, journaled before the client reads it.
            line = await self._host_decision(line)
        record = self.record
        line_recorded = False
        if record is not None:
            code = line[:3]
            if "\n" in line:
                parts = line.split("\r\n")
                for part in parts:
                    record.replies.append(TranscriptLine(stage=self._stage, reply=part))
                line_recorded = True
                self._answered = parts[-1][3:4] != "-"
            elif code == "354":
                record.replies.append(TranscriptLine(stage="data", reply=line))
                # The reply after the final dot answers no new command line.
                self._stage = "end_of_data"
                self._answered = False
                self._decided = False
                line_recorded = True
            elif code == "334" or line[3:4] == "-":
                pass  # AUTH challenge or a continued multi-line reply: the command goes on
            elif self._answered:
                self._stage = "unrecognised"
            else:
                self._answered = True
            if not line_recorded:
                record.replies.append(TranscriptLine(stage=self._stage, reply=line))
        if self._delay:
            try:
                await asyncio.sleep(self._delay)
            except asyncio.CancelledError:
                # The client hung up while we dawdled. aiosmtpd closes the writer on
                # cancellation only inside its command loop, not around the greeting.
                if self.transport is not None:
                    self.transport.close()
                raise
        # aiosmtpd's push() without its logging.debug: written and drained the same way.
        self._writer.write(line.encode() + b"\r\n")
        await self._writer.drain()
        if line.startswith("421"):
            # 421 closes the transmission channel (RFC 5321 3.8).
            self.drop("server_dropped")

    def _command(self, verb: str, arg: str | None, shown: str | None = None) -> None:
        self._stage = _STAGES.get(verb, verb.lower())
        self._answered = False
        if self.record is not None:
            text = shown if shown is not None else (f"{verb} {arg}" if arg else verb)
            self.record.commands.append(_printable(text))

    async def _start(self, verb: str, arg: str | None, shown: str | None = None) -> bool:
        """Record the command; False (and ``500 5.5.2`` sent) when its argument is not UTF-8.

        aiosmtpd keeps undecodable bytes as lone surrogates; Postfix refuses such a command
        outright, so nothing built from it (a reply that echoes it, a journal entry) exists.
        """
        self._command(verb, arg, shown)
        if arg is not None and not arg.isascii() and _printable(arg) != arg:
            await self.push(_BAD_UTF8)
            return False
        return True

    async def _reply_outcome(
        self, outcome: Outcome, recipients: list[str], cause: str | None, stage: Stage | None = None
    ) -> None:
        """Journal a rules-decided reply for each recipient it covers, then push it."""
        await self.push(await self._decide(outcome, recipients, cause, stage))

    async def _decide(
        self,
        outcome: Outcome,
        recipients: list[str],
        cause: str | None,
        stage: Stage | None = None,
        *,
        protocol: bool = False,
    ) -> str:
        """Journal *outcome* for *recipients* and wait until it is recorded; return the reply
        to send: the outcome's, or 451 4.3.0 when the journal could not record it."""
        reply = str(outcome.reply)
        record = self.record
        if record is None:  # pragma: no cover - set in connection_made
            return reply
        journal = self.host.journal
        sender = self._sender()
        transaction = self.env().transaction
        try:
            entry = None
            for rcpt in recipients:
                entry = journal.append(
                    _decision(
                        self.host.name,
                        record.id,
                        outcome,
                        rcpt,
                        sender,
                        cause,
                        stage,
                        protocol,
                        transaction,
                    )
                )
            if entry is not None and journal.durable:
                await journal.committed(entry)
        except JournalWriteError:
            log.error("MX host %s answered 451: the journal failed", self.host.name)
            return _NOT_RECORDED
        return reply

    async def _host_decision(self, line: str) -> str:
        """Journal a reply the host itself gives to every recipient of the transaction at the
        end of DATA (size, line length); returns the line to send."""
        env = self.env()
        reply = _parse_reply(line)
        mode = "too_large" if reply.code == 552 else None
        klass = BounceClass.SOFT
        outcome = Outcome(Stage.END_OF_DATA, reply, klass, mode)
        self._decided = True
        return await self._decide(outcome, list(env.rcpt_tos), None)

    async def _protocol_reply(self, line: str, recipient: str | None) -> None:
        """Push a protocol reply to RCPT (503, 530, 553, 555 ...) and journal it as an attempt
        at *recipient*: it decides nothing about the address (no class), but it is an attempt."""
        if recipient is not None:
            reply = _parse_reply(line)
            outcome = Outcome(Stage.RCPT, reply, BounceClass.NONE, None)
            line = await self._decide(outcome, [recipient], None, protocol=True)
        await self.push(line)

    def _sender(self) -> str:
        env = self.env()
        return "" if env is None or env.mail_from in (None, "<>") else str(env.mail_from)

    # -- commands ----------------------------------------------------------------------------

    async def smtp_HELO(self, arg: str) -> None:
        if not await self._start("HELO", arg):
            return
        if arg and self.record is not None:
            self.record.ehlo = arg
        await super().smtp_HELO(arg)

    async def smtp_EHLO(self, arg: str) -> None:
        if not await self._start("EHLO", arg):
            return
        if arg and self.record is not None:
            self.record.ehlo = arg
        self._chunks = None
        await super().smtp_EHLO(arg)

    def on_ehlo(self, hostname: str, lines: list[str]) -> list[str]:
        self.sess().host_name = hostname
        host = self.host
        keywords = [line[4:] for line in lines[1:-1]]
        if not host.auth_users:
            keywords = [k for k in keywords if not k.startswith("AUTH")]
        if not host.smtputf8:
            keywords = [k for k in keywords if k != "SMTPUTF8"]
        if self.variant == "tls_broken" and "STARTTLS" not in keywords:
            keywords.append("STARTTLS")
        # Postfix's: no HELP (it has no such command), CHUNKING (RFC 3030 BDAT) last.
        keywords += ["PIPELINING", "DSN", "ENHANCEDSTATUSCODES", "VRFY", "CHUNKING"]
        # One push for the whole reply: one write instead of one per line (push() splits it
        # again for the journal).
        return [
            "\r\n".join([lines[0], *(f"250-{k}" for k in keywords[:-1]), f"250 {keywords[-1]}"])
        ]

    async def smtp_NOOP(self, arg: str) -> None:
        if await self._start("NOOP", arg):
            await super().smtp_NOOP(arg)

    async def smtp_RSET(self, arg: str) -> None:
        if await self._start("RSET", arg):
            self._chunks = None
            await super().smtp_RSET(arg)

    async def smtp_VRFY(self, arg: str) -> None:
        """As Postfix: the rules' permanent refusal for an address that has one (550 5.1.1
        for ``invalid_address``), else ``252 2.0.0``; no attempt is counted."""
        if not await self._start("VRFY", arg):
            return
        parsed = _parse_path(f"TO:{arg}", "TO:") if arg else None
        if parsed is None or not parsed[0]:
            await self.push("501 5.5.4 Syntax: VRFY address")
            return
        address = parsed[0]
        values = {"rcpt": address, "peer": self._peer_ip(), "host": self.host.hostname}
        refusal = self.host.rules.verify(address, values=values)
        await self.push(str(refusal) if refusal is not None else f"252 2.0.0 {address}")

    async def smtp_HELP(self, arg: str) -> None:
        # Postfix has no HELP command.
        if await self._start("HELP", arg):
            await self.push(_NOT_RECOGNISED)

    async def smtp_EXPN(self, arg: str) -> None:
        # Postfix has no EXPN command.
        if await self._start("EXPN", arg):
            await self.push(_NOT_RECOGNISED)

    async def smtp_QUIT(self, arg: str) -> None:
        if not await self._start("QUIT", arg):
            return
        if arg:
            await super().smtp_QUIT(arg)  # 501
            return
        if self.record is not None:
            self.record.end = "quit"
        await self.push("221 Bye")
        # aiosmtpd's QUIT cancels its own command loop, which then unwinds through a
        # CancelledError (logged, its frames kept in the task); with the transport gone, the
        # loop ends by itself after this command, as it does after drop().
        self.drop("quit")

    async def smtp_STARTTLS(self, arg: str) -> None:
        if not await self._start("STARTTLS", arg):
            return
        if self._tls_protocol is not None or self.sess().ssl is not None:
            await self.push("554 5.5.1 Error: TLS already active")
            return
        if self.variant == "tls_broken" and not arg:
            await self.push("220 2.0.0 Ready to start TLS")
            # Read the client's hello, then answer it with a fatal alert: its handshake fails
            # for certain. (Closing with the hello unread would send a reset instead.)
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(self._reader.read(65536), self.host.timeout)
            _write(self.transport, _TLS_ALERT)
            self.drop("server_dropped")
            return
        try:
            await super().smtp_STARTTLS(arg)
        except TLSSetupException:
            # The client's handshake failed: nothing to answer, the connection is over. Ended
            # here: aiosmtpd's own handling closes a transport the client may have closed
            # already (AttributeError on None). The TLS layer never hands connection_lost on
            # for a connection whose handshake failed, so it is called here, once.
            self.drop("client_dropped")
            if not self._done.done():
                self.connection_lost(None)

    async def smtp_AUTH(self, arg: str) -> None:
        # Split on any whitespace, as aiosmtpd does: a tab before the initial response must hide
        # it as well as a space. Continuation lines are read by aiosmtpd and never recorded.
        words = (arg or "").split(None, 1)
        mechanism = words[0].upper() if words else ""
        shown = f"AUTH {mechanism} ***" if len(words) > 1 else None
        if not await self._start("AUTH", arg, shown=shown if shown else f"AUTH {mechanism}"):
            return
        if not self.host.auth_users:
            await self.push("503 5.5.1 Error: authentication not enabled")
            return
        # Mechanism names are case-insensitive (RFC 4954); aiosmtpd looks them up as given.
        await super().smtp_AUTH(" ".join([mechanism, *words[1:]]) if words else arg)
        if self.sess().authenticated and self.record is not None:
            self.record.auth = str(self.sess().auth_data)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if not await self._start("MAIL", arg):
            return
        if await self.check_helo_needed():
            return
        host = self.host
        if host.auth_required and not self.sess().authenticated:
            await self.push("530 5.7.0 Authentication required")
            return
        env = self.env()
        if env.mail_from is not None:
            await self.push("503 5.5.1 Error: nested MAIL command")
            return
        parsed = _parse_path(arg, "FROM:")
        if parsed is None:
            await self.push("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        sender, raw = parsed
        if raw and not self.sess().extended_smtp:
            await self.push("555 5.5.4 MAIL parameters need EHLO")
            return
        params = _split_params(raw, ("SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH"))
        if params.error:
            await self.push(params.error)
            return
        values = params.values
        error = _check_mail_params(values, smtputf8=host.smtputf8)
        if error:
            await self.push(error)
            return
        size = values.get("SIZE")
        if isinstance(size, str) and host.size_limit and int(size) > host.size_limit:
            await self.push(str(host._too_large))
            return
        if not sender.isascii() and "SMTPUTF8" not in values:
            await self.push("553 5.6.7 Must declare SMTPUTF8 to send unicode address")
            return
        # aiosmtpd uses mail_from as "a transaction is open"; the null sender is kept as "<>".
        env.mail_from = sender or "<>"
        if self.record is not None:
            self.record.transactions += 1
            env.transaction = self.record.transactions
        env.mail_options.extend(raw)
        env.smtp_utf8 = bool(values.get("SMTPUTF8"))
        env.params = values
        await self.push("250 2.1.0 Ok")

    async def smtp_RCPT(self, arg: str | None) -> None:
        if not await self._start("RCPT", arg):
            return
        if await self.check_helo_needed():
            return
        host = self.host
        env = self.env()
        parsed = _parse_path(arg, "TO:")
        named = parsed[0] if parsed is not None and parsed[0] else None
        if host.auth_required and not self.sess().authenticated:
            await self._protocol_reply("530 5.7.0 Authentication required", named)
            return
        if env.mail_from is None:
            await self._protocol_reply("503 5.5.1 Error: need MAIL command", named)
            return
        if parsed is None or not parsed[0]:
            await self.push("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        recipient, raw = parsed
        if raw and not self.sess().extended_smtp:
            await self._protocol_reply("555 5.5.4 RCPT parameters need EHLO", recipient)
            return
        params = _split_params(raw, ("NOTIFY", "ORCPT"))
        if params.error:
            await self._protocol_reply(params.error, recipient)
            return
        notify, orcpt, error = _check_rcpt_params(params.values)
        if error:
            await self._protocol_reply(error, recipient)
            return
        if not recipient.isascii() and not env.smtp_utf8:
            await self._protocol_reply(
                "553 5.6.7 Must declare SMTPUTF8 to send unicode address", recipient
            )
            return
        if self.variant == "tls_broken" and self.sess().ssl is None:
            # The client fell back to plaintext after the handshake this host broke: refused
            # as a host that requires TLS refuses it (RFC 3207), so the failure stands.
            await self._reply_outcome(host._plaintext_refused, [recipient], None)
            return
        if len(env.rcpt_tos) >= host.max_recipients:
            outcome = host._limit_outcome(recipient, self._peer_ip())
            await self._reply_outcome(outcome, [recipient], recipient)
            return
        outcome = host._decide(self._sender(), recipient, self._peer_ip())
        if outcome.stage is Stage.RCPT:
            line = await self._decide(outcome, [recipient], None)
            await self.push(line)
            if not outcome.accepted or line is _NOT_RECORDED:
                return
        else:
            # Accepted at RCPT; the rules act later (DATA, end of DATA, or a DSN), and that
            # later reply is journaled again when it fires. DATA and end-of-DATA outcomes are
            # journaled once, when they fire.
            if outcome.stage is Stage.LATER:
                line = await self._decide(outcome, [recipient], None)
                if line is _NOT_RECORDED:
                    await self.push(line)
                    return
            await self.push("250 2.1.5 Ok")
            env.later.append((recipient, outcome))
        env.rcpt_tos.append(recipient)
        env.rcpt_options.extend(raw)
        env.recipients.append(
            Recipient(address=recipient, notify=tuple(notify) if notify else None, orcpt=orcpt)
        )

    def _peer_ip(self) -> str:
        peer = self.sess().peer
        return str(peer[0]) if isinstance(peer, tuple) else str(peer)

    async def smtp_DATA(self, arg: str) -> None:
        if not await self._start("DATA", arg):
            return
        if self._chunks is not None:
            await self.push("503 5.5.1 Error: DATA after BDAT")
            return
        env = self.env()
        if env.mail_from is not None and not env.rcpt_tos and not arg:
            await self.push(_NO_RECIPIENTS)
            return
        ready = self.sess().host_name and env.rcpt_tos and not arg
        if ready and not (self.host.auth_required and not self.sess().authenticated):
            for recipient, outcome in env.later:
                if outcome.stage is Stage.DATA:
                    await self._reply_outcome(outcome, list(env.rcpt_tos), recipient, Stage.DATA)
                    self._set_rset_state()  # type: ignore[no-untyped-call]
                    return
            if self.variant == "drop_mid_data":
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                # Wait for the message to start, then hang up before the final dot.
                with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    await self._reader.readuntil(b"\n")
                self._note_dropped(None)
                self.drop("server_dropped")
                return
        if self.host.auth_required and not self.sess().authenticated:
            await self.push("530 5.7.0 Authentication required")
            return
        await self._data(arg)

    async def _data(self, arg: str) -> None:
        """aiosmtpd's ``smtp_DATA`` with the section read in bulk (:func:`read_data`): the
        same checks, replies and state changes, a few ``readuntil`` calls instead of one (and a
        ``logging.debug``) per line."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.env().rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            section = await read_data(
                self._reader, size_limit=self.data_size_limit, line_limit=self.line_length_limit
            )
        except asyncio.CancelledError:
            # The connection went away during DATA (as aiosmtpd's own DATA loop does).
            self._writer.close()
            raise
        if section is None or self.transport is None:
            return  # the client went away before the final dot
        if section.content is None:
            await self.push(section.refusal or TOO_LONG)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        env = self.env()
        env.content = env.original_content = section.content
        status = await self.on_end_of_data()
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    async def smtp_BDAT(self, arg: str | None) -> None:
        """RFC 3030 CHUNKING: ``BDAT <size> [LAST]`` followed by exactly *size* octets.

        The chunk is read whatever the answer (the client sends it without waiting), then
        answered: ``250 2.0.0 Ok: N bytes`` per chunk, and after the ``LAST`` one the same
        verdict the final dot of DATA gets (rules, size limit, acceptance).
        """
        if not await self._start("BDAT", arg):
            return
        words = (arg or "").split()
        last = len(words) == 2 and words[1].upper() == "LAST"
        if not words or not (words[0].isascii() and words[0].isdigit()) or len(words) > 1 + last:
            await self.push("501 5.5.4 Syntax: BDAT count [LAST]")
            return
        host = self.host
        env = self.env()
        size = int(words[0])
        total = self._chunk_bytes + size if self._chunks is not None else size
        keep = not host.size_limit or total <= host.size_limit
        chunk = await self._read_chunk(size, keep)
        if chunk is None:
            return  # the client went away mid-chunk
        if not self.sess().host_name:
            await self.push("503 5.5.1 Error: send HELO/EHLO first")
            return
        if host.auth_required and not self.sess().authenticated:
            await self.push("530 5.7.0 Authentication required")
            return
        if not env.rcpt_tos:
            self._chunks = None
            await self.push(_NO_RECIPIENTS if env.mail_from is not None else _NEED_RCPT)
            return
        if self._chunks is None:
            # The first chunk stands where DATA would: DATA-stage rules and drops act here.
            for recipient, outcome in env.later:
                if outcome.stage is Stage.DATA:
                    await self._reply_outcome(outcome, list(env.rcpt_tos), recipient, Stage.DATA)
                    self._set_rset_state()  # type: ignore[no-untyped-call]
                    return
            if self.variant == "drop_mid_data":
                self._note_dropped(None)
                self.drop("server_dropped")
                return
            self._chunks, self._chunk_bytes = [], 0
        self._chunk_bytes = total
        if keep:
            self._chunks.append(chunk)
        else:
            self._chunks.clear()  # over the limit: nothing more is kept
        if not last:
            await self.push(f"250 2.0.0 Ok: {size} bytes")
            return
        content = b"".join(self._chunks)
        self._chunks = None
        self._stage, self._answered = "end_of_data", False
        if not keep:
            status = await self._host_decision(str(host._too_large))
        else:
            env.content = env.original_content = content
            status = await self.on_end_of_data()
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    async def _read_chunk(self, size: int, keep: bool) -> bytes | None:
        """Read a BDAT chunk of *size* octets (kept only when *keep*); None at end of input."""
        parts: list[bytes] = []
        left = size
        try:
            while left:
                part = await self._reader.readexactly(min(left, 1 << 16))
                left -= len(part)
                if keep:
                    parts.append(part)
        except asyncio.IncompleteReadError:
            return None
        return b"".join(parts)

    def _note_dropped(self, content: bytes | None) -> None:
        env = self.env()
        if self.record is not None:
            self.record.dropped = DroppedMessage(
                sender=self._sender(),
                recipients=tuple(env.rcpt_tos),
                after_dot=content is not None,
                size=len(content) if content is not None else None,
                transaction=env.transaction,
            )

    async def on_end_of_data(self) -> str:
        env = self.env()
        content: bytes = env.original_content or b""
        if self.variant == "drop_after_dot":
            self._note_dropped(content)
            self.drop("server_dropped")
            return "451 4.3.0 never sent"
        # The reply after the dot is decided (and journaled) here: push() must not do it again.
        self._decided = True
        for recipient, outcome in env.later:
            if outcome.stage is Stage.END_OF_DATA:
                return await self._decide(outcome, list(env.rcpt_tos), recipient, Stage.END_OF_DATA)
        try:
            entry = self.host._accept(self, env, content)
            if self.host.journal.durable:
                await self.host.journal.committed(entry)
        except JournalWriteError:
            log.error("MX host %s answered 451: the journal failed", self.host.name)
            return _NOT_RECORDED
        message = entry.data
        if not isinstance(message, SmtpMessage):  # pragma: no cover - _accept appends one
            raise ServerError("the accepted message was journaled as something else")
        if self.record is not None:
            self.record.messages.append(message.id)
        self.host._schedule_bounces(message, content, env.later)
        return f"250 2.0.0 Ok: queued as {message.id}"


_HOOK_NAMES: dict[type[SMTP], tuple[str, ...]] = {}


@dataclass(frozen=True, slots=True)
class _Tables:
    """aiosmtpd's command and AUTH tables of one session class, as plain functions.

    aiosmtpd's ``__init__`` builds them by introspection for every connection (``smtp_*``
    methods by command name, ``auth_*`` ones by mechanism name with its own record type); they
    depend only on the class, so they are taken from its first session and bound to each
    later one.
    """

    commands: tuple[tuple[str, Callable[..., Any]], ...]
    mechanisms: tuple[tuple[str, Any, Callable[..., Any]], ...]
    """(mechanism, aiosmtpd's record of it, its function)."""

    @classmethod
    def of(cls, session: SMTP) -> _Tables:
        return cls(
            tuple(
                (name, cast(MethodType, method).__func__)
                for name, method in session._smtp_methods.items()
            ),
            tuple(
                (name, attr, cast(MethodType, attr.method).__func__)
                for name, attr in session._auth_methods.items()
            ),
        )

    def bind(self, session: SMTP) -> None:
        session._smtp_methods = {name: MethodType(f, session) for name, f in self.commands}
        session._auth_methods = {
            name: attr._replace(method=MethodType(f, session)) for name, attr, f in self.mechanisms
        }


_TABLES: dict[type[SMTP], _Tables] = {}


def _hook_names(cls: type[SMTP]) -> tuple[str, ...]:
    """The ``smtp_*`` and ``auth_*`` attributes of *cls* (aiosmtpd's command and AUTH hooks)."""
    names = _HOOK_NAMES.get(cls)
    if names is None:
        names = _HOOK_NAMES[cls] = tuple(n for n in dir(cls) if n.startswith(("smtp_", "auth_")))
    return names


def _check_mail_params(values: Mapping[str, str | bool], *, smtputf8: bool) -> str | None:
    size = values.get("SIZE")
    # isascii: str.isdigit() also takes "²" and other digits int() refuses.
    if size is not None and (not isinstance(size, str) or not (size.isascii() and size.isdigit())):
        return "501 5.5.4 Bad message size syntax"
    body = values.get("BODY")
    if body is not None and (not isinstance(body, str) or body.upper() not in ("7BIT", "8BITMIME")):
        return "501 5.5.4 BODY must be 7BIT or 8BITMIME"
    utf8 = values.get("SMTPUTF8")
    if utf8 is not None and (utf8 is not True or not smtputf8):
        return "501 5.5.4 SMTPUTF8 takes no value" if smtputf8 else _NO_SMTPUTF8
    ret = values.get("RET")
    if ret is not None and (not isinstance(ret, str) or ret.upper() not in ("FULL", "HDRS")):
        return "501 5.5.4 RET must be FULL or HDRS"
    envid = values.get("ENVID")
    if envid is not None and (
        not isinstance(envid, str) or _xtext_decode(envid) is None or len(envid) > 100
    ):
        return "501 5.5.4 ENVID must be xtext of at most 100 characters"
    return None


def _check_rcpt_params(
    values: Mapping[str, str | bool],
) -> tuple[list[str] | None, str | None, str | None]:
    notify: list[str] | None = None
    raw_notify = values.get("NOTIFY")
    if raw_notify is not None:
        words = raw_notify.upper().split(",") if isinstance(raw_notify, str) else []
        ok = bool(words) and (words == ["NEVER"] or set(words) <= _NOTIFY)
        if not ok or len(set(words)) != len(words):
            return None, None, "501 5.5.4 NOTIFY must be NEVER or SUCCESS, FAILURE, DELAY"
        notify = words
    orcpt = values.get("ORCPT")
    if orcpt is not None:
        if not isinstance(orcpt, str):
            return None, None, "501 5.5.4 ORCPT must be addr-type;xtext (rfc822;a@x.test)"
        kind, semi, address = orcpt.partition(";")
        if not semi or not kind or not address or _xtext_decode(address) is None:
            return None, None, "501 5.5.4 ORCPT must be addr-type;xtext (rfc822;a@x.test)"
        return notify, orcpt, None
    return notify, None, None


def _decision(
    host: str,
    session: str,
    outcome: Outcome,
    recipient: str,
    sender: str,
    cause: str | None,
    stage: Stage | None = None,
    protocol: bool = False,
    transaction: int | None = None,
) -> SmtpReply:
    reply = outcome.reply
    bounce = outcome.bounce
    return SmtpReply(
        host=host,
        session=session,
        recipient=recipient,
        sender=sender,
        stage=str(stage or outcome.stage),
        code=reply.code,
        enhanced=reply.enhanced,
        reply=str(reply),
        mode=outcome.mode,
        rule=outcome.rule,
        bounce_class=None if protocol else str(outcome.bounce_class),
        attempt=None if protocol else outcome.attempt,
        cause=cause if cause is not None and cause != recipient else None,
        bounce=None
        if bounce is None
        else ScheduledBounce(
            after=bounce.after,
            status=bounce.status,
            diagnostic=bounce.diagnostic,
            dialect=bounce.dialect,
            action=bounce.action,
            report=bounce.report,
            final_recipient=bounce.final_recipient,
            style=bounce.style,
        ),
        transaction=transaction,
    )


def _parse_reply(line: str) -> Reply:
    """``552 5.3.4 text`` -> Reply (the last line of a multi-line reply)."""
    last = line.rsplit("\r\n", 1)[-1]
    code = int(last[:3]) if last[:3].isdigit() else 451
    rest = last[4:]
    first, _, text = rest.partition(" ")
    parts = first.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return Reply(code, first, text)
    return Reply(code, None, rest)


class _Silent(asyncio.Protocol):
    """``tarpit`` (never a word) and ``greeting_421`` (one line, then hang up)."""

    def __init__(self, host: MXHost, variant: str) -> None:
        self.host = host
        self.variant = variant
        self.transport: asyncio.BaseTransport | None = None
        self.record: _Record | None = None
        self._done: asyncio.Future[None] = host.loop.create_future()
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.record = self.host._open_record(self, _peer(transport), self.variant, None)
        if self.variant == "tarpit":
            # Held long enough for any client's greeting timeout to fire first (Postfix waits
            # 300 s), then closed: hostile or forgotten connections do not pile up.
            self._timer = self.host.loop.call_later(self.host.tarpit_timeout, self.drop, "timeout")
        if self.variant == "greeting_421":
            reply = self.host._greeting_421
            self.record.replies.append(TranscriptLine(stage="greeting", reply=str(reply)))
            _write(transport, f"{reply}\r\n".encode())
            self.drop("server_dropped")

    def data_received(self, data: bytes) -> None:
        if self.record is not None:
            # Nobody answers, but what the client tried is worth keeping.
            for line in data.decode("utf-8", "replace").splitlines():
                if line:
                    self.record.commands.append(line[:512])

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        record = self.record
        if record is not None and record.end is None:
            record.end = "client_dropped"
        self.host._close_record(self, record)
        if not self._done.done():
            self._done.set_result(None)

    def drop(self, reason: str) -> None:
        if self.record is not None and self.record.end is None:
            self.record.end = reason
        if self.transport is not None:
            self.transport.close()


_Conn = _Session | _Silent


class MXHost:
    """A fake MX host (or, with ``relay=True``, a smarthost that takes every domain).

    *domains* are the domains it serves; a recipient elsewhere gets ``relay_denied`` (an MX with
    no domains serves every domain). *rules* decide each recipient (default: accept all).
    *flavour* picks the provider texts of its replies. TLS: ``tls="starttls"`` offers STARTTLS,
    ``tls="implicit"`` speaks TLS from the first byte (a certificate is generated at start
    unless one is given); ``require_tls`` refuses mail before STARTTLS. ``auth`` maps user names
    to passwords (AUTH PLAIN and LOGIN); ``auth_required`` refuses MAIL without it.
    *bounce_intake* is where accept-then-bounce DSNs go: ``(host, port)`` or a Maildir path.
    *clock* (seconds, monotonic) times the rules' windows; tests pass a fake one.

    Use it in a running loop (``await host.start()`` / ``await host.stop()`` or ``async
    with``); sync code goes through :class:`harness.smtp.world.MailWorld`.
    """

    _ids: ClassVar[itertools.count[int]] = itertools.count(1)

    def __init__(
        self,
        name: str,
        *,
        domains: tuple[str, ...] | list[str] = (),
        relay: bool = False,
        rules: Rules | Mapping[str, Any] | None = None,
        journal: Journal | None = None,
        flavour: str = "postfix",
        hostname: str | None = None,
        bind: str = "127.0.0.1",
        port: int = 0,
        size_limit: int = 10 * 1024 * 1024,
        max_recipients: int = 1000,
        smtputf8: bool = True,
        tls: str | None = None,
        require_tls: bool = False,
        certificate: Certificate | None = None,
        auth: Mapping[str, str] | None = None,
        auth_required: bool = False,
        bounce_intake: Intake | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 300.0,
        body_cap: int = _BODY_CAP,
        server_down: str | None = None,
        slow_delay: float = SLOW_DELAY,
        max_transcript: int = 1000,
        session_timeout: float = 600.0,
        tarpit_timeout: float = 300.0,
        line_length_limit: int | None = None,
    ) -> None:
        if flavour not in FLAVOURS:
            raise ConfigError(
                f"MXHost flavour must be one of {', '.join(FLAVOURS)}, not {flavour!r}"
            )
        if tls not in (None, "starttls", "implicit"):
            raise ConfigError(f"MXHost tls must be None, 'starttls' or 'implicit', not {tls!r}")
        if require_tls and tls != "starttls":
            raise ConfigError("MXHost require_tls=True needs tls='starttls'")
        if size_limit < 0 or max_recipients < 1:
            raise ConfigError(
                f"MXHost size_limit must be >= 0 and max_recipients >= 1, not "
                f"{size_limit!r} and {max_recipients!r}"
            )
        self.name = name
        self.domains = tuple(d.lower() for d in domains)
        self.relay = relay
        self.rules = rules if isinstance(rules, Rules) else Rules.parse(rules, flavour=flavour)
        self.journal = journal if journal is not None else MemoryJournal()
        self.flavour = flavour
        self.hostname = _a_labels(
            hostname or (f"{name}.{self.domains[0]}" if self.domains else name)
        )
        self.bind = bind
        self.size_limit = size_limit
        self.max_recipients = max_recipients
        self.smtputf8 = smtputf8
        self.tls = tls
        self.require_tls = require_tls
        self.certificate = certificate
        self.auth_users = dict(auth or {})
        self.auth_required = auth_required
        # Over implicit TLS everything is encrypted already; over plain text a fake server may
        # as well allow AUTH (the integration's own submission side is what is being tested).
        self.auth_require_tls = tls == "starttls"
        self.bounce_intake = bounce_intake
        self.clock = clock
        for what, value in (
            ("timeout", timeout),
            ("session_timeout", session_timeout),
            ("tarpit_timeout", tarpit_timeout),
        ):
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"MXHost {what} must be a number of seconds > 0, not {value!r}")
        if slow_delay < 0:
            raise ConfigError(f"MXHost slow_delay must be >= 0 seconds, not {slow_delay!r}")
        if line_length_limit is not None and line_length_limit < 80:
            raise ConfigError(
                f"MXHost line_length_limit must be None (no limit) or >= 80, not "
                f"{line_length_limit!r}"
            )
        self.timeout = timeout
        """Idle timeout: seconds without a command before the host says 421 and hangs up."""
        self.session_timeout = session_timeout
        """Seconds a whole session may last, whatever the client does (slow commands too)."""
        self.tarpit_timeout = tarpit_timeout
        """Seconds a ``tarpit`` connection is held before the host closes it."""
        self.line_length_limit = line_length_limit
        """Longest message line (octets, CRLF included) taken in DATA; longer ones get
        ``500 5.5.2`` after the final dot. None, the default, takes any length, as Postfix does
        (RFC 5321's 1000 is what a strict server enforces)."""
        self.body_cap = body_cap
        self._slow_delay = slow_delay
        if max_transcript < 0:
            raise ConfigError(f"MXHost max_transcript must be >= 0, not {max_transcript!r}")
        self.max_transcript = max_transcript
        """Commands (and replies) a session record keeps at most: the first and last halves."""
        self._port = port
        self._bound_port: int | None = None
        self._variant: str | None = None
        self._initial_variant = _check_variant(server_down, {}) if server_down else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._serving: asyncio.Task[asyncio.Server] | None = None
        self._old_servers: list[asyncio.Server] = []
        self._live: set[_Conn] = set()
        self._unwinding: set[asyncio.Task[Any]] = set()
        self._turn = Turn()
        """The sessions' replies held until the end of the loop turn (:class:`_HeldReplies`)."""
        self._pending_dsns: dict[asyncio.TimerHandle, _DsnJob] = {}
        self._dsn_tasks: set[asyncio.Task[Any]] = set()
        self._starttls_context: ssl.SSLContext | None = None
        self._implicit_context: ssl.SSLContext | None = None
        self._too_large = _mode_reply("too_large", flavour)
        self._greeting_421 = _mode_reply("greeting_421", flavour, host=self.hostname)
        self._relay_denied = CATALOG["relay_denied"]
        self._too_many = CATALOG["too_many_recipients"]
        tls_broken = CATALOG["tls_broken"]
        self._plaintext_refused = Outcome(
            Stage.RCPT,
            Reply(530, "5.7.0", "Must issue a STARTTLS command first"),
            tls_broken.bounce_class,
            tls_broken.name,
        )

    # -- properties --------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise ServerError(f"MX host {self.name!r} is not started")
        return self._loop

    @property
    def port(self) -> int:
        """The real port (known once started; kept while the host is down)."""
        if self._bound_port is None:
            raise ServerError(f"MX host {self.name!r} has no port yet: start it first")
        return self._bound_port

    @property
    def address(self) -> tuple[str, int]:
        return (self.bind, self.port)

    @property
    def state(self) -> str:
        """``"up"`` or the server-down variant it plays."""
        return self._variant or "up"

    @property
    def running(self) -> bool:
        return self._sock is not None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> MXHost:
        """Bind (port 0 gives a free port, read back in :attr:`port`) and start serving."""
        if self._sock is not None:
            return self
        self._loop = asyncio.get_running_loop()
        # A new one per start: a loop closed before the end of its last turn leaves its own
        # mid-turn, and this start may be on another loop.
        self._turn = Turn()
        if self.tls is not None:
            cert = self.certificate or make_certificate((self.hostname, "localhost"))
            self.certificate = cert
            context = cert.server_context()
            if self.tls == "starttls":
                self._starttls_context = context
            else:
                self._implicit_context = context
        sock = _tcp_socket()
        try:
            sock.bind((self.bind, self._port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ServerError(
                f"MX host {self.name!r} cannot bind {self.bind}:{self._port}: {exc}; "
                "use port=0 to get a free port"
            ) from exc
        self._sock = sock
        self._bound_port = int(sock.getsockname()[1])
        self._variant = self._initial_variant
        if self._variant != "refused":
            self._listen()
        await self.settled()
        return self

    def _listen(self) -> None:
        sock = self._sock
        if sock is None:  # pragma: no cover - only called while started
            raise ServerError(f"MX host {self.name!r} is not started")
        # listen() now, so connections queue in the backlog even before asyncio starts
        # accepting: the host is reachable the moment this returns. A deep backlog: with
        # hundreds of connections arriving at once, a full one drops SYNs, and the client
        # that meets it waits a whole second for its retransmission (the kernel caps the
        # number at net.core.somaxconn).
        sock.listen(_BACKLOG)
        self._serving = self.loop.create_task(
            # asyncio listens again with its own backlog (100 by default): give it ours.
            self.loop.create_server(
                self._factory, sock=sock, ssl=self._implicit_context, backlog=_BACKLOG
            )
        )

    async def settled(self) -> None:
        """Wait until the listener started by :meth:`start` or :meth:`up` accepts."""
        task = self._serving
        if task is not None:
            try:
                self._server = await task
            except Exception as exc:
                raise ServerError(f"MX host {self.name!r} could not listen: {exc}") from exc
            finally:
                if self._serving is task:
                    self._serving = None

    def _factory(self) -> asyncio.Protocol:
        variant = self._variant
        if variant in ("tarpit", "greeting_421"):
            return _Silent(self, variant)
        return _Session(self, variant)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, end every open session (journaled as ``server_stopped``), give up
        pending DSNs (journaled), and release the port."""
        if self._sock is None:
            return
        await self.settled()
        self._stop_listening()
        for conn in list(self._live):
            conn.drop("server_stopped")
        for handle, job in list(self._pending_dsns.items()):
            handle.cancel()
            self._skip_dsn(job, "host stopped first")
        self._pending_dsns.clear()
        waiting: list[asyncio.Future[Any]] = [c._done for c in self._live]
        waiting += self._dsn_tasks
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        if self._unwinding:
            await asyncio.wait(list(self._unwinding), timeout=timeout)
        for server in self._old_servers:
            await server.wait_closed()
        self._old_servers.clear()
        self._sock.close()
        self._sock = None
        if self._live:
            left = len(self._live)
            self._live.clear()
            raise ServerError(
                f"MX host {self.name!r}: {left} sessions did not end within {timeout} s"
            )

    def _stop_listening(self) -> None:
        if self._server is not None:
            # Closing the asyncio server closes our listening socket; bind a new one to the same
            # port, without listen(), so the port stays ours while nothing answers on it.
            self._server.close()
            self._old_servers.append(self._server)
            self._server = None
            if self._sock is not None:
                port = self.port
                sock = _tcp_socket()
                try:
                    sock.bind((self.bind, port))
                except OSError as exc:
                    sock.close()
                    raise ServerError(
                        f"MX host {self.name!r} could not keep port {port}: {exc}"
                    ) from exc
                sock.setblocking(False)
                self._sock = sock

    async def __aenter__(self) -> MXHost:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- server down -------------------------------------------------------------------------

    def down(self, variant: str, *, delay: float | None = None) -> None:
        """Play the server-down *variant* from now on (same port). Call it in the host's loop.

        ``refused`` also ends the open sessions (a host that goes away); the other variants
        apply to new connections. *delay* sets the ``slow`` variant's delay per reply.
        """
        self._check_loop()
        options: dict[str, Any] = {} if delay is None else {"delay": delay}
        _check_variant(variant, options)
        if delay is not None:
            self._slow_delay = delay
        if variant == "tls_broken" and self.tls == "implicit":
            raise ConfigError(
                f"MX host {self.name!r}: tls_broken plays a failing STARTTLS and needs a plain "
                "listener; this host speaks implicit TLS"
            )
        previous = self._variant
        self._variant = variant
        if variant == "refused":
            if self._server is not None or self._serving is not None:
                self._serving_then(self._stop_listening)
            for conn in list(self._live):
                conn.drop("server_dropped")
        elif previous == "refused":
            self._listen()
        delay = options.get("delay")
        self.journal.append(
            HostChange(
                host=self.name,
                state="down",
                port=self.port,
                variant=variant,
                delay=float(delay) if isinstance(delay, int | float) else None,
            )
        )

    def up(self) -> None:
        """Serve normally again, on the same port. Call it in the host's loop."""
        self._check_loop()
        previous = self._variant
        self._variant = None
        if previous == "refused":
            self._listen()
        self.journal.append(
            HostChange(host=self.name, state="up", port=self.port, variant=previous)
        )

    def _serving_then(self, action: Callable[[], None]) -> None:
        task = self._serving
        if task is None:
            action()
            return

        def after(done: asyncio.Task[asyncio.Server]) -> None:
            if not done.cancelled() and done.exception() is None:
                self._server = done.result()
            if self._serving is done:
                self._serving = None
            action()

        task.add_done_callback(after)

    def _check_loop(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self.loop:
            raise ServerError(
                f"MX host {self.name!r}: down()/up() must run in the host's event loop; from "
                "another thread use MailWorld.down()/up()"
            )

    # -- sessions ----------------------------------------------------------------------------

    def _open_record(self, conn: _Conn, peer: str, variant: str | None, tls: str | None) -> _Record:
        self._live.add(conn)
        # The journal's next seq: never given twice, so session ids never repeat, also across
        # restarts and resets of a file journal.
        record = _Record(f"{self.name}-{self.journal.next_seq}", peer, variant, self.max_transcript)
        record.tls = tls
        try:
            self.journal.append(
                SmtpOpen(
                    host=self.name,
                    session=record.id,
                    peer=peer,
                    port=self._bound_port,
                    variant=variant,
                    tls=tls,
                )
            )
        except JournalWriteError:
            log.error("MX host %s could not journal a new connection", self.name)
        return record

    def _close_record(self, conn: _Conn, record: _Record | None) -> None:
        self._live.discard(conn)
        if record is None:
            return
        try:
            self.journal.append(
                SmtpClose(
                    host=self.name,
                    session=record.id,
                    peer=record.peer,
                    port=self.port if self._sock is not None else None,
                    variant=record.variant,
                    ehlo=record.ehlo,
                    tls=record.tls,
                    auth=record.auth,
                    commands=record.commands.items(),
                    replies=record.replies.items(),
                    commands_dropped=record.commands.dropped,
                    replies_dropped=record.replies.dropped,
                    messages=tuple(record.messages),
                    dropped_message=record.dropped,
                    end=record.end or "client_dropped",
                    started=record.started,
                    duration=time.time() - record.started,
                )
            )
        except JournalWriteError:
            log.error("MX host %s could not journal the end of session %s", self.name, record.id)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            user = data.login.decode("utf-8", "replace")
            password = data.password.decode("utf-8", "replace")
            if user in self.auth_users and self.auth_users[user] == password:
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    def _decide(self, sender: str, recipient: str, peer: str) -> Outcome:
        domain = recipient.rpartition("@")[2].lower()
        values = {"rcpt": recipient, "peer": peer, "host": self.hostname}
        if not self.relay and self.domains and domain not in self.domains:
            reply = self._relay_denied.reply(self.flavour, **values)
            if reply is None:  # pragma: no cover - the catalog row has a reply
                raise AssertionError("relay_denied has no reply")
            return Outcome(Stage.RCPT, reply, BounceClass.SOFT, "relay_denied")
        return self.rules.decide(sender, recipient, now=self.clock(), values=values)

    def _limit_outcome(self, recipient: str, peer: str) -> Outcome:
        reply = self._too_many.reply(self.flavour, rcpt=recipient, peer=peer, host=self.hostname)
        if reply is None:  # pragma: no cover - the catalog row has a reply
            raise AssertionError("too_many_recipients has no reply")
        return Outcome(Stage.RCPT, reply, BounceClass.SOFT, "too_many_recipients")

    # -- accepted messages -------------------------------------------------------------------

    def _accept(self, session: _Session, env: _Envelope, content: bytes) -> Entry:
        """Journal the message accepted in *session*; returns its (uncommitted) entry."""
        # The journal's next seq: never given twice, so queue ids never repeat, also across
        # restarts and resets of a file journal.
        queue_id = f"{_a_labels(self.name).upper()}{self.journal.next_seq:06d}"
        record = session.record
        head, body = _split_message(content)
        headers = parse_headers(head)
        first: dict[str, str] = {}
        for name, value in headers:
            # Message.get's answer: the first field of that name, case-insensitively.
            first.setdefault(name.lower(), value)
        params = env.params
        ret = params.get("RET")
        envid = params.get("ENVID")
        size = params.get("SIZE")
        return self.journal.append(
            SmtpMessage(
                host=self.name,
                session=record.id if record else "",
                id=queue_id,
                peer=record.peer if record else None,
                sender=session._sender(),
                recipients=tuple(env.recipients),
                ret=ret.upper() if isinstance(ret, str) else None,
                envid=_xtext_decode(envid) if isinstance(envid, str) else None,
                body_type=str(params.get("BODY", "7BIT")).upper(),
                smtputf8=bool(env.smtp_utf8),
                size=len(content),
                declared_size=int(size) if isinstance(size, str) else None,
                headers=tuple(headers),
                subject=first.get("subject"),
                message_id=first.get("message-id"),
                x_clevertap_meta=first.get("x-clevertap_meta"),
                list_unsubscribe=first.get("list-unsubscribe"),
                list_unsubscribe_post=first.get("list-unsubscribe-post"),
                body=body[: self.body_cap].decode("utf-8", "replace"),
                body_truncated=len(body) > self.body_cap,
                tls=record.tls if record else None,
                auth=record.auth if record else None,
                transaction=env.transaction,
            )
        )

    def _schedule_bounces(
        self, message: SmtpMessage, content: bytes, later: list[tuple[str, Outcome]]
    ) -> None:
        """Schedule the DSNs of the accept-then-bounce recipients of *message*."""
        groups: dict[tuple[float, str, MailReport, str], list[tuple[str, Outcome]]] = {}
        for rcpt, outcome in later:
            bounce = outcome.bounce
            if bounce is not None:
                # One DSN per delay and dialect; an auto-reply or complaint per recipient.
                alone = rcpt if bounce.report is not MailReport.DSN else ""
                key = (bounce.after, bounce.dialect, bounce.report, alone)
                groups.setdefault(key, []).append((rcpt, outcome))
        for (after, dialect, report, _), members in groups.items():
            job = _DsnJob(message, content, members, dialect, report)
            if not message.sender:
                self._skip_dsn(job, "the message came from the null sender")
                continue
            if self.bounce_intake is None:
                self._skip_dsn(job, "no bounce intake is configured")
                continue
            handle = self.loop.call_later(after, self._fire_bounce, job)
            self._pending_dsns[handle] = job

    def _skip_dsn(self, job: _DsnJob, reason: str) -> None:
        with contextlib.suppress(JournalWriteError):
            self.journal.append(
                DsnSkipped(
                    host=self.name,
                    message=job.message.id,
                    recipients=tuple(r for r, _ in job.members),
                    sender=job.message.sender,
                    reason=reason,
                )
            )

    def _fire_bounce(self, job: _DsnJob) -> None:
        for handle, pending in list(self._pending_dsns.items()):
            if pending is job:
                del self._pending_dsns[handle]
        task = self.loop.create_task(self._send_bounce_guarded(job))
        self._dsn_tasks.add(task)
        task.add_done_callback(self._dsn_tasks.discard)

    async def _send_bounce_guarded(self, job: _DsnJob) -> None:
        # A bug while building or sending a report must not vanish as "Task exception was
        # never retrieved": it is logged with its trace, and the journal says the report was
        # not sent (the judge then sees no report, rather than nothing at all).
        try:
            await self._send_bounce(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: the report on %s failed", self.name, job.message.id)
            self._skip_dsn(
                job, f"internal error while building or sending it ({type(exc).__name__})"
            )

    async def _send_bounce(self, job: _DsnJob) -> None:
        # Imported here: the DSN module is only needed once a bounce is due.
        from harness.smtp.dsn import OriginalMessage, RecipientReport, build_dsn, deliver_dsn

        message = job.message
        by_address = {r.address: r for r in message.recipients}
        if job.report is not MailReport.DSN:
            await self._send_mail_report(job)
            return
        try:
            original = OriginalMessage(
                envelope_sender=message.sender,
                content=job.content,
                envid=message.envid,
                ret=message.ret,
                smtputf8=message.smtputf8,
            )
            reports = []
            for rcpt, outcome in job.members:
                bounce = outcome.bounce
                if bounce is None:  # pragma: no cover - filtered when scheduled
                    continue
                status = bounce.status
                if bounce.action == "delayed" and status.startswith("5"):
                    status = "4" + status[1:]  # a delay is temporary by definition
                params = by_address.get(rcpt)
                notify = params.notify if params is not None else None
                if notify is None and bounce.status.startswith("2"):
                    # accept_then_report plays a host that reports success although the RCPT
                    # asked nothing (RFC 3461 then means FAILURE,DELAY); an explicit NOTIFY
                    # without SUCCESS is honoured.
                    notify = ("SUCCESS",)
                orcpt = params.orcpt if params is not None else None
                if bounce.final_recipient is not None and orcpt is None:
                    # Aliasing: the DSN names where the mail ended up; RFC 3464 keeps the
                    # address it was sent to in Original-Recipient.
                    orcpt = f"rfc822;{rcpt}"
                reports.append(
                    RecipientReport(
                        recipient=bounce.final_recipient or rcpt,
                        action=bounce.action,
                        status=status,
                        diagnostic=bounce.diagnostic,
                        orcpt=orcpt,
                        notify=frozenset(notify) if notify else None,
                        in_reply_to=_IN_REPLY_TO.get(CATALOG[outcome.mode].stage)
                        if outcome.mode in CATALOG
                        else "RCPT TO",
                    )
                )
            dsn = build_dsn(original, reports, dialect=job.dialect, reporting_mta=self.hostname)
        except ConfigError as exc:
            self._skip_dsn(job, f"cannot build it: {exc}")
            return
        if dsn is None:
            self._skip_dsn(job, "NOTIFY asks for no report")
            return
        intake = self.bounce_intake
        if intake is None:  # pragma: no cover - checked when scheduled
            return
        await deliver_dsn(
            dsn,
            envelope_to=message.sender,
            intake=intake,
            journal=self.journal,
            host=self.name,
            queue_id=message.id,
        )

    async def _send_mail_report(self, job: _DsnJob) -> None:
        """Send the auto-reply or complaint of *job* (one recipient) to the bounce intake."""
        from harness.smtp.dsn import deliver_dsn
        from harness.smtp.reports import build_mail_report

        (rcpt, outcome), *_ = job.members
        style = outcome.bounce.style if outcome.bounce is not None else None
        try:
            mail = build_mail_report(job.report, job.message, job.content, rcpt, style=style)
        except ConfigError as exc:
            self._skip_dsn(job, f"cannot build it: {exc}")
            return
        intake = self.bounce_intake
        if intake is None:  # pragma: no cover - checked when scheduled
            return
        await deliver_dsn(
            mail,
            envelope_to=job.message.sender,
            intake=intake,
            journal=self.journal,
            host=self.name,
            queue_id=job.message.id,
            report=job.report,
            about=rcpt,
            style=style,
        )

    def reset(self) -> None:
        """Forget the rules' attempt counters and windows (between tests)."""
        self.rules.reset()

    @property
    def drifted(self) -> bool:
        """True when :meth:`down` / :meth:`up` left the host other than it was configured."""
        return self._variant != self._initial_variant

    def restore(self) -> None:
        """Play the configured server-down variant again, or serve normally (between tests).

        Call it in the host's loop, like :meth:`down` and :meth:`up`; nothing happens (and
        nothing is journaled) when the host is already as configured.
        """
        if not self.drifted:
            return
        if self._initial_variant is None:
            self.up()
        else:
            self.down(self._initial_variant, delay=self._slow_delay)


@dataclass(slots=True)
class _DsnJob:
    """A DSN due for some recipients of an accepted message."""

    message: SmtpMessage
    content: bytes
    members: list[tuple[str, Outcome]]
    dialect: str
    report: MailReport = MailReport.DSN


_IN_REPLY_TO = {Stage.RCPT: "RCPT TO", Stage.DATA: "DATA", Stage.END_OF_DATA: "end of DATA"}


def _mode_reply(name: str, flavour: str, **values: str) -> Reply:
    reply = CATALOG[name].reply(flavour, **values)
    if reply is None:  # pragma: no cover - these catalog rows all have replies
        raise AssertionError(f"catalog mode {name} has no reply")
    return reply


def _check_variant(variant: str, options: Mapping[str, Any]) -> str:
    if variant not in SERVER_DOWN:
        raise UnknownNameError("server-down variant", variant, SERVER_DOWN)
    if options and variant != "slow":
        raise ConfigError(
            f"server-down variant {variant!r} takes no options, got {dict(options)!r}"
        )
    delay = options.get("delay")
    if delay is not None and (not isinstance(delay, int | float) or delay < 0):
        raise ConfigError(f"slow delay must be a number of seconds >= 0, not {delay!r}")
    return variant


def _tcp_socket() -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto
    # is IPPROTO_TCP, and accepted sockets inherit the listener's proto 0 otherwise. With Nagle
    # on, every multi-line reply (EHLO) waits out the client's delayed ACK: 40 ms a session.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # SO_REUSEADDR: rebinding the same port after ``refused``/``up`` must not trip on the
    # TIME_WAIT connections of the sessions just closed.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def _split_message(content: bytes) -> tuple[bytes, bytes]:
    """Header block and body (split at the first empty line; either line ending)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = content.find(sep)
        if i >= 0:
            return content[: i + len(sep) // 2], content[i + len(sep) :]
    return content, b""

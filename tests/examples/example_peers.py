"""Minimal real peers for testing the example integration: MX hosts that answer from a script,
broken servers (tarpit, 421 greeting, drop mid-DATA, refused), a callback receiver, the SUT
process itself, and builders for submitted messages, DSNs and certificates.

Everything binds 127.0.0.1 port 0 and runs in the test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib.util
import json
import os
import signal
import socket
import ssl
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from pathlib import Path
from types import ModuleType
from typing import Any

import uvicorn
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

GATEWAY = Path(__file__).resolve().parents[2] / "examples" / "integration" / "gateway.py"
HOST = "127.0.0.1"


async def eventually(
    condition: Callable[[], bool], describe: Callable[[], str], timeout: float = 10.0
) -> None:
    """Wait until *condition* holds; fail with *describe()* (what was seen) after *timeout*."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout} s:\n{describe()}")
        await asyncio.sleep(0.02)


# -- MX hosts ---------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt: str
    content: bytes


class ScriptedMX:
    """An aiosmtpd MX host answering per recipient and per attempt.

    *script* maps a recipient to its replies, one per attempt (the last one repeats):
    ``"rcpt:452 4.2.2 Mailbox full"`` answers RCPT, ``"data:554 5.7.1 Spam"`` answers the end
    of DATA, ``"accept"`` takes the message. Recipients not in the script are accepted.
    ``smtputf8=False`` plays a server without RFC 6531 (no SMTPUTF8 in its EHLO).

    ``connections`` counts the connections it accepted; :meth:`hang_up` closes the open ones and
    ``idle_421 = True`` answers MAIL on a connection that already carried a transaction with
    Postfix's 421 for an idle connection it closes: what a client that reuses its connections
    meets.
    """

    def __init__(
        self,
        script: Mapping[str, Sequence[str]] | None = None,
        *,
        tls: tuple[Path, Path] | None = None,
        credentials: tuple[str, str] | None = None,
        smtputf8: bool = True,
    ) -> None:
        self.script = {k.lower(): list(v) for k, v in (script or {}).items()}
        self.attempts: Counter[str] = Counter()
        self.received: list[Received] = []
        self.logins: list[tuple[str, bool]] = []
        """(user, over TLS) of each successful AUTH."""
        self.connections = 0
        self.idle_421 = False
        self._transactions: dict[Session, int] = {}
        self._live: set[SMTP] = set()
        self._tls = tls
        self._credentials = credentials
        self._smtputf8 = smtputf8
        self._server: asyncio.Server | None = None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self._credentials is not None
            and (data.login.decode(), data.password.decode()) == self._credentials
        )
        if ok:
            self.logins.append((data.login.decode(), session.ssl is not None))
        return AuthResult(success=ok, handled=False)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        done = self._transactions.get(session, 0)
        if self.idle_421 and done:
            return "421 4.4.2 mx.example.com Error: timeout exceeded"
        self._transactions[session] = done + 1
        # What aiosmtpd does without this hook.
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    @property
    def open_connections(self) -> int:
        return len(self._live)

    def hang_up(self) -> None:
        """Close every open connection, as a server restarting or timing out idle ones does."""
        for protocol in list(self._live):
            if protocol.transport is not None:
                protocol.transport.close()

    def _reply(self, rcpt: str) -> str:
        replies = self.script.get(rcpt.lower(), ["accept"])
        return replies[min(self.attempts[rcpt.lower()], len(replies)) - 1]

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.attempts[address.lower()] += 1
        reply = self._reply(address)
        if reply.startswith("rcpt:"):
            return reply.removeprefix("rcpt:")
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rcpt = envelope.rcpt_tos[0]
        reply = self._reply(rcpt)
        if reply.startswith("data:"):
            return reply.removeprefix("data:")
        self.received.append(
            Received(envelope.mail_from or "", rcpt, envelope.original_content or b"")
        )
        return "250 2.0.0 Ok: queued"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        context = None
        if self._tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self._tls)

        owner = self

        class Counted(SMTP):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                if self not in owner._live:  # STARTTLS calls it again, for the TLS transport
                    owner.connections += 1
                    owner._live.add(self)
                super().connection_made(transport)

            def connection_lost(self, error: Exception | None) -> None:
                owner._live.discard(self)
                super().connection_lost(error)

        def factory() -> SMTP:
            return Counted(
                self,
                loop=loop,
                hostname="mx.example.com",
                tls_context=context,
                require_starttls=context is not None,
                authenticator=self._authenticate if self._credentials else None,
                auth_required=self._credentials is not None,
                enable_SMTPUTF8=self._smtputf8,
            )

        self._server = await loop.create_server(factory, HOST, 0)

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("start() the MX host first")
        return f"{HOST}:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class RawServer:
    """A TCP server running *talk* for each connection; counts connections.

    Used for the broken MX hosts: a tarpit that never greets, a 421 greeting, a drop mid-DATA.
    """

    def __init__(
        self, talk: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> None:
        self._talk = talk
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError):
            await self._talk(reader, writer)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, HOST, 0)

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("start() the server first")
        return f"{HOST}:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def tarpit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, then say nothing until the client gives up."""
    await reader.read()


async def greeting_421(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"421 4.3.2 Service not available, closing transmission channel\r\n")
    await writer.drain()
    writer.close()


async def drop_mid_data(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Speak SMTP up to DATA, take a few bytes of the message, then hang up."""
    writer.write(b"220 mx.example.com ESMTP\r\n")
    while line := await reader.readline():
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            writer.write(b"250 mx.example.com\r\n")
        elif verb == b"DATA":
            writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            await writer.drain()
            await reader.readline()
            writer.close()
            return
        else:
            writer.write(b"250 2.0.0 Ok\r\n")
        await writer.drain()


@contextlib.contextmanager
def refused_port() -> Iterator[str]:
    """``host:port`` where connections are refused: bound (so nobody else gets the port) but
    not listening, for as long as the context lasts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, 0))
        yield f"{HOST}:{sock.getsockname()[1]}"
    finally:
        sock.close()


# -- the callback receiver (plays CleverTap) -------------------------------------------------


@dataclass
class Callback:
    path: str
    content_type: str
    body: bytes
    status: int
    """What the receiver answered."""

    def json(self) -> Any:
        return json.loads(self.body)


class _QuietServer(uvicorn.Server):
    """uvicorn without signal handlers: the test process keeps its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class CallbackReceiver:
    """Records every POST; answers from *responses* (status, headers) in order, then 200."""

    def __init__(self, responses: Sequence[tuple[int, dict[str, str]]] = ()) -> None:
        self.responses = list(responses)
        self.calls: list[Callback] = []
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._base = ""

    async def _record(self, request: Request) -> Response:
        body = await request.body()
        index = len(self.calls)
        status, headers = self.responses[index] if index < len(self.responses) else (200, {})
        self.calls.append(
            Callback(request.url.path, request.headers.get("content-type", ""), body, status)
        )
        return Response(b"{}", status_code=status, headers=headers, media_type="application/json")

    def url(self, path: str) -> str:
        return f"{self._base}{path}"

    def accepted(self, path: str | None = None) -> list[Any]:
        """JSON bodies of the calls answered 2xx (optionally for one path), in order."""
        return [c.json() for c in self.calls if c.status < 300 and (path is None or c.path == path)]

    def describe(self) -> str:
        return "\n".join(f"{c.status} {c.path} {c.body.decode()}" for c in self.calls) or "(none)"

    async def start(self) -> None:
        app = Starlette(routes=[Route("/{path:path}", self._record, methods=["POST"])])
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", ws="none"
        )
        self._server = _QuietServer(config)
        sock = socket.create_server((HOST, 0))
        self._base = f"http://{HOST}:{sock.getsockname()[1]}"
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        await eventually(
            lambda: self._server is not None and self._server.started,
            lambda: "the callback receiver did not start",
            timeout=5,
        )

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


# -- the integration under test --------------------------------------------------------------

FAST = {
    "EXAMPLE_RETRY_DELAYS": "0.1,0.1",
    "EXAMPLE_CALLBACK_RETRY": "0.05,0.05,0.05",
    "EXAMPLE_RETRY_AFTER_CAP": "0.2",
    "EXAMPLE_BATCH_WINDOW": "0.2",
    "EXAMPLE_SMTP_TIMEOUT": "2",
}


@dataclass
class SUT:
    process: asyncio.subprocess.Process
    log_path: Path
    ready: dict[str, str] = field(default_factory=dict)

    @property
    def smtp(self) -> tuple[str, int]:
        host, port = self.ready["smtp"].rsplit(":", 1)
        return host, int(port)

    @property
    def intake(self) -> tuple[str, int]:
        host, port = self.ready["bounce_intake"].rsplit(":", 1)
        return host, int(port)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def stop(self, timeout: float = 8.0) -> int:
        """SIGTERM, then wait; kill and fail if it does not stop within *timeout*."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(
                f"the SUT ignored SIGTERM for {timeout} s:\n{self.log()}"
            ) from None


def sut_environment(tmp_path: Path, env: Mapping[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "EXAMPLE_"))}
    return {
        **base,
        "HARNESS_HOST": HOST,
        "HARNESS_READY_FILE": str(tmp_path / "ready.json"),
        **FAST,
        **env,
    }


async def start_sut(
    tmp_path: Path, env: Mapping[str, str], args: Sequence[str] = (), timeout: float = 10.0
) -> SUT:
    """Start the gateway as a subprocess and wait for its ready file."""
    log_path = tmp_path / f"sut-{time.monotonic_ns()}.log"
    ready_file = tmp_path / "ready.json"
    with contextlib.suppress(FileNotFoundError):
        ready_file.unlink()
    with log_path.open("wb") as log:
        # stderr goes to a file, not a pipe: nobody reads a pipe while the test runs, and a full
        # pipe would block the SUT.
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(GATEWAY),
            *args,
            env=sut_environment(tmp_path, env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
    sut = SUT(process, log_path)
    deadline = time.monotonic() + timeout
    while not ready_file.exists():
        if process.returncode is not None or time.monotonic() > deadline:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise AssertionError(
                f"the SUT did not become ready within {timeout} s "
                f"(exit code {process.returncode}); its stderr:\n{sut.log()}"
            )
        await asyncio.sleep(0.02)
    sut.ready = json.loads(ready_file.read_text(encoding="utf-8"))
    return sut


# -- messages, DSNs, certificates ------------------------------------------------------------


def example_settings() -> ModuleType:
    """The example's ``settings`` module (BUGS, fit_schedule, ...), loaded by path.

    The example is a script with top-level sibling imports, not a package; its settings module
    imports none of its siblings, so it loads on its own.
    """
    name = "example_settings"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GATEWAY.parent / "settings.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {GATEWAY.parent / 'settings.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def campaign_message(meta: str, subject: str = "Spring sale") -> bytes:
    """A message as CleverTap submits it, with its X-CleverTap_META header."""
    return (
        "From: Brand <news@brand.test>\r\n"
        "To: customer@example.com\r\n"
        f"Subject: {subject}\r\n"
        f"X-CleverTap_META: {meta}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Hello, our spring sale starts today.\r\n"
    ).encode()


def dsn(
    to: str,
    blocks: Sequence[Mapping[str, str]],
    *,
    returned_headers: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> bytes:
    """An RFC 3464 report built with the email package: one block per mapping in *blocks*."""
    report = MIMEMultipart("report", report_type="delivery-status", policy=compat32)
    report["From"] = "Mail Delivery System <MAILER-DAEMON@mx.example.com>"
    report["To"] = to
    report["Subject"] = "Undelivered Mail Returned to Sender"
    for name, value in (extra_headers or {}).items():
        report[name] = value
    report.attach(MIMEText("This is the mail system at host mx.example.com.\n", "plain"))
    status = Message()
    status["Content-Type"] = "message/delivery-status"
    per_message = Message()
    per_message["Reporting-MTA"] = "dns; mx.example.com"
    parts: list[Message | str] = [per_message]
    for fields in blocks:
        block = Message()
        for name, value in fields.items():
            block[name] = value
        parts.append(block)
    status.set_payload(parts)
    report.attach(status)
    if returned_headers is not None:
        report.attach(MIMEText(returned_headers, "rfc822-headers"))
    return report.as_bytes(policy=compat32.clone(linesep="\r\n"))


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sut.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path

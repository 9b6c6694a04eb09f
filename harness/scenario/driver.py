"""The campaign driver in a process of its own, for large campaigns.

A 10,000-recipient campaign costs the driver (message bytes, aiosmtplib, a ``Sent`` record per
message) about a quarter of a millisecond of CPU per message: in the runner's process that is a
quarter of everything the process does, on the core that also plays the fake mail servers and
the fake CleverTap. :class:`DriverProcess` runs :func:`~harness.scenario.campaign.submit_campaign`
in ``python -m harness.scenario.driver`` instead (on uvloop when installed), so that CleverTap's
side of the run has a core of its own, as it does in the real world.

The protocol, parent to child: one JSON line, the job (the campaign as the scenario gave it, the
submission address, TLS and AUTH, the connections). Child to parent: frames of a 4-byte
big-endian length then msgpack: one ``message`` frame per message (``at``, the ``Sent``
record), written the moment its outcome is known, then one ``done`` frame with the child's CPU
seconds; then it exits 0. The parent
journals each ``Sent`` with the child's ``at``. A child that exits early is a harness error that
names its exit status and the last lines it wrote to stderr.

The process is started before the integration is (:meth:`DriverProcess.start`): its imports
(about 0.4 s) overlap the integration's start-up, and the job is sent once the integration is
ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import ssl
import struct
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from harness.errors import HarnessError
from harness.records import Sent

if TYPE_CHECKING:
    from harness.scenario.campaign import Submission
    from harness.scenario.model import Campaign

__all__ = ["PROCESS_THRESHOLD", "DriverError", "DriverProcess"]

PROCESS_THRESHOLD = 1000
"""Campaigns with at least this many recipients are driven from a process of their own (fewer
would pay the process's start-up for little: most scenarios send one to a hundred messages)."""

_HEADER = struct.Struct(">I")
_STDERR_TAIL = 20


class _Message(msgspec.Struct, frozen=True, tag="message"):
    at: float
    record: Sent


class _Done(msgspec.Struct, frozen=True, tag="done"):
    cpu: float
    """The child's CPU seconds (user + system), for the benches."""


_FRAME = msgspec.msgpack.Decoder(_Message | _Done)


class DriverError(HarnessError):
    """The driver's process failed: it could not start, or exited before its last message."""


class _Job(msgspec.Struct, frozen=True):
    campaign: dict[str, Any]
    host: str
    port: int
    tls: str
    username: str | None
    password: str | None
    cadata: str | None
    timeout: float
    connections: int


class DriverProcess:
    """A campaign driver process: :meth:`start` it early, then :meth:`submit` a campaign."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: list[str] = []
        self._stderr_task: asyncio.Task[None] | None = None
        self.cpu: float | None = None
        """The process's CPU seconds, once it submitted its campaign."""

    async def start(self) -> None:
        """Start the process (it imports, then waits for its job on stdin)."""
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "harness.scenario.driver",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._proc.stderr is not None
        self._stderr_task = asyncio.create_task(self._read_stderr(self._proc.stderr))

    async def submit(
        self,
        campaign: Campaign,
        submission: Submission,
        journal_append: Callable[..., object],
        *,
        connections: int,
        on_sent: Callable[[int], None] | None = None,
    ) -> int:
        """Submit *campaign* (a :class:`~harness.scenario.model.Campaign`) through *submission*
        (a :class:`~harness.scenario.campaign.Submission`) from the process; each message's
        ``Sent`` record goes to *journal_append* (``record, at=``) as it arrives. Returns how
        many messages the integration accepted, as ``submit_campaign`` does."""
        proc = self._proc
        if proc is None:
            await self.start()
            proc = self._proc
        assert proc is not None
        assert proc.stdin is not None
        assert proc.stdout is not None
        auth = submission.auth
        job = _Job(
            campaign=campaign.model_dump(mode="json", by_alias=True),
            host=submission.host,
            port=submission.port,
            tls=submission.tls,
            username=auth.username if auth else None,
            password=auth.password if auth else None,
            cadata=_cadata(submission.tls_context),
            timeout=submission.timeout,
            connections=connections,
        )
        try:
            proc.stdin.write(msgspec.json.encode(job) + b"\n")
            await proc.stdin.drain()
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it died already: its exit status and stderr say why, below
        total = len(campaign.recipients)
        done = accepted = 0
        stdout = proc.stdout
        while True:
            try:
                size = _HEADER.unpack(await stdout.readexactly(_HEADER.size))[0]
                frame = _FRAME.decode(await stdout.readexactly(size))
            except asyncio.IncompleteReadError:
                break
            if isinstance(frame, _Done):
                self.cpu = frame.cpu
                break
            journal_append(frame.record, at=frame.at)
            done += 1
            accepted += frame.record.ok
            if on_sent is not None:
                on_sent(done)
        status = await proc.wait()
        if self._stderr_task is not None:
            await self._stderr_task
        if done < total or status != 0:
            tail = "\n".join(self._stderr[-_STDERR_TAIL:]) or "(nothing on stderr)"
            raise DriverError(
                f"the campaign driver's process exited with status {status} after {done} of "
                f"{total} messages; its stderr:\n{tail}"
            )
        return accepted

    async def close(self) -> None:
        """Stop the process if it still runs (a cancelled run, a failed start of the SUT)."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._stderr_task is not None:
            await self._stderr_task

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self._stderr.append(line.decode(errors="replace").rstrip())
            del self._stderr[: -_STDERR_TAIL * 2]


def _cadata(context: ssl.SSLContext | None) -> str | None:
    """The CA certificates *context* trusts, as PEM, for the same context in the child."""
    if context is None:
        return None
    return "".join(ssl.DER_cert_to_PEM_cert(der) for der in context.get_ca_certs(binary_form=True))


# -- the child ---------------------------------------------------------------------------------


async def _child(job: _Job) -> None:
    # Imported here: the parent never needs them for the protocol.
    from harness.scenario.campaign import Submission, submit_campaign
    from harness.scenario.model import Campaign, Credentials

    campaign = Campaign.model_validate(job.campaign)
    auth = (
        Credentials(username=job.username, password=job.password)
        if job.username is not None and job.password is not None
        else None
    )
    submission = Submission(
        host=job.host,
        port=job.port,
        tls=job.tls,
        auth=auth,
        tls_context=ssl.create_default_context(cadata=job.cadata) if job.cadata else None,
        timeout=job.timeout,
    )
    out = sys.stdout.buffer
    encode = msgspec.msgpack.Encoder().encode

    def send(frame: _Message | _Done) -> None:
        data = encode(frame)
        out.write(_HEADER.pack(len(data)) + data)
        out.flush()  # at once: the runner settles the run by these

    def emit(record: Sent) -> None:
        send(_Message(time.time(), record))

    await submit_campaign(campaign, submission, emit, connections=job.connections)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    send(_Done(usage.ru_utime + usage.ru_stime))


def main() -> int:
    line = sys.stdin.buffer.readline()
    if not line:
        return 0  # the runner went away before sending a job (its run failed to start)
    job = msgspec.json.decode(line, type=_Job)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with the base install
        asyncio.run(_child(job))
    else:
        uvloop.run(_child(job))
    return 0


if __name__ == "__main__":
    sys.exit(main())

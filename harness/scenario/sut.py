"""The integration under test (SUT) as the runner sees it: which command, which environment,
started as a subprocess, ready when its ready file appears, stopped with SIGTERM.

The contract (environment variables in, ready file out) is docs/integration-contract.md.

How the command is chosen, in order:

1. ``--sut CMD`` (:func:`resolve_command`'s *override*): split like a shell, run from the current
   directory, for every scenario;
2. the scenario's ``integration.command``, run from the scenario file's directory (or
   ``integration.cwd``, relative to that directory);
3. the bundled example, ``examples/integration/gateway.py``, looked for next to the scenario's
   directory (``scenarios/../examples``), in it, in the installed package (the wheel's copy, or
   the source checkout of an editable install: :mod:`harness.bundled`), then under the current
   directory.

A program named ``python`` or ``python3`` is the interpreter running the harness
(``sys.executable``): a venv need not be activated for scenarios to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from harness.bundled import EXAMPLE, find_bundled
from harness.errors import ConfigError, ServerError
from harness.scenario.model import Integration, ReadyProbe, Scenario

__all__ = [
    "EXAMPLE",
    "SutAddresses",
    "SutError",
    "SutProcess",
    "find_example",
    "integration_of",
    "resolve_command",
    "sut_base_env",
    "wait_for_probe",
]

_PYTHON_NAMES = ("python", "python3")
_LOG_TAIL = 4000


class SutError(ServerError):
    """The integration under test did not start, died, or never became ready."""


@dataclass(frozen=True, slots=True)
class SutAddresses:
    """Where the integration listens: SMTP submission, bounce intake, HTTP base URL."""

    smtp: tuple[str, int]
    bounce: tuple[str, int] | None = None
    http: str | None = None

    @classmethod
    def from_ready_file(cls, data: Mapping[str, object], source: str) -> SutAddresses:
        """Read the ready file's JSON object (``smtp``, ``bounce_intake``, ``http``)."""
        smtp = data.get("smtp")
        if not isinstance(smtp, str):
            raise SutError(
                f'{source}: the ready file has no "smtp" address (expected "host:port", seen '
                f"{json.dumps(data)})"
            )
        bounce = data.get("bounce_intake", data.get("bounce"))
        http = data.get("http")
        return cls(
            _host_port(smtp, f"{source}: smtp"),
            _host_port(bounce, f"{source}: bounce_intake") if isinstance(bounce, str) else None,
            http if isinstance(http, str) else None,
        )

    def to_json(self) -> dict[str, str | None]:
        return {
            "smtp": f"{self.smtp[0]}:{self.smtp[1]}",
            "bounce_intake": f"{self.bounce[0]}:{self.bounce[1]}" if self.bounce else None,
            "http": self.http,
        }


def _host_port(value: str, where: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SutError(f'{where}: expected "host:port", seen {value!r}')
    return host.strip("[]"), int(port)


def find_example(scenario: Scenario | None = None) -> Path:
    """The bundled example's ``gateway.py`` (see the module docstring for where it is looked
    for); :class:`ConfigError` naming every place looked at when it is nowhere."""
    places: list[Path] = []
    if scenario is not None:
        places += [scenario.base_dir.parent / EXAMPLE, scenario.base_dir / EXAMPLE]
    shipped = find_bundled(EXAMPLE)
    if shipped is not None:
        places.append(shipped)
    places.append(Path.cwd() / EXAMPLE)
    for place in places:
        if place.is_file():
            return place.resolve()
    looked = ", ".join(dict.fromkeys(str(p) for p in places))
    raise ConfigError(
        f"cannot find the bundled example integration (looked at {looked}); give the scenario "
        "an integration.command, or pass --sut CMD"
    )


def resolve_command(
    scenario: Scenario, override: Sequence[str] | None = None
) -> tuple[list[str], Path]:
    """The argv and working directory that start the integration for *scenario*.

    Raises :class:`ConfigError` when the program (or a Python script it runs) does not exist.
    """
    integration = scenario.integration
    if override is not None:
        argv, cwd, origin = list(override), Path.cwd(), "--sut"
    else:
        cwd = scenario.base_dir
        if integration is not None and integration.cwd is not None:
            cwd = (scenario.base_dir / integration.cwd).resolve()
        if integration is not None and integration.command is not None:
            argv, origin = list(integration.command), "integration.command"
        else:
            argv, origin = [sys.executable, str(find_example(scenario))], "the bundled example"
    if not argv:
        raise ConfigError(f"{origin}: empty command")
    if not cwd.is_dir():
        raise ConfigError(f"{origin}: working directory {cwd} does not exist")
    if argv[0] in _PYTHON_NAMES:
        argv[0] = sys.executable
    program = argv[0]
    if os.sep in program:
        if not (cwd / program).is_file():
            raise ConfigError(f"{origin}: program {program!r} not found (relative to {cwd})")
    elif shutil.which(program) is None:
        raise ConfigError(f"{origin}: program {program!r} not found on PATH")
    if program == sys.executable and len(argv) > 1 and argv[1].endswith(".py"):
        script = cwd / argv[1]
        if not script.is_file():
            raise ConfigError(f"{origin}: script {argv[1]!r} not found (relative to {cwd})")
    return argv, cwd


def sut_base_env() -> dict[str, str]:
    """This process's environment without ``HARNESS_*`` and ``EXAMPLE_*`` variables: the caller's
    own settings must not leak into the integration and change what a scenario means."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "EXAMPLE_"))}


class SutProcess:
    """One integration process: started, waited for, stopped; its output kept in a log file."""

    def __init__(
        self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path
    ) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env)
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.exit_code: int | None = None
        self.killed = False

    async def start(self) -> None:
        log: IO[bytes]
        with self.log_path.open("wb") as log:
            # Output goes to a file, not a pipe: nobody reads a pipe while the scenario runs, and
            # a full pipe would block the integration mid-run.
            try:
                self.process = await asyncio.create_subprocess_exec(
                    *self.argv,
                    cwd=self.cwd,
                    env=self.env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise SutError(f"cannot start {self.describe()}: {exc}") from exc

    def describe(self) -> str:
        return " ".join(self.argv)

    def log_tail(self, limit: int = _LOG_TAIL) -> str:
        """The last *limit* characters the integration wrote (stdout and stderr)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text if len(text) <= limit else "…" + text[-limit:]

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    async def wait_ready(
        self, ready_file: Path | None, probe: ReadyProbe | None, timeout: float
    ) -> SutAddresses | None:
        """Wait for the ready file (or *probe*); the addresses from the file, if one is used."""
        process = self.process
        if process is None:
            raise SutError("start the integration first")
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                if process.returncode is not None:
                    self.exit_code = process.returncode
                    raise SutError(
                        f"the integration exited with code {process.returncode} before it was "
                        f"ready: {self.describe()}"
                    )
                if probe is None and ready_file is not None:
                    addresses = _read_ready_file(ready_file)
                    if addresses is not None:
                        return addresses
                if probe is not None and await _probe(probe, client):
                    return None
                if time.monotonic() >= deadline:
                    what = "its ready file" if probe is None else "its readiness probe"
                    raise SutError(
                        f"the integration was not ready within {timeout:g} s ({what} did not "
                        f"answer); try a larger integration.ready_timeout: {self.describe()}"
                    )
                await asyncio.sleep(0.02)

    @property
    def exited(self) -> bool:
        """The process has ended (on its own, if :meth:`stop` was not called yet)."""
        return self.process is not None and self.process.returncode is not None

    async def stop(self, grace: float) -> int | None:
        """SIGTERM to its process group, wait up to *grace* seconds for the group to end, then
        SIGKILL to the group (``killed`` is then True); returns the exit code of the process.

        The whole group (the process was started in its own session): a shell wrapper's
        children get the SIGTERM too, and none of them may outlive the run.
        """
        process = self.process
        if process is None:
            return None
        pgid = process.pid
        ending = time.monotonic() + grace
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        if process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                self.killed = True
        # The leader gone, what it left behind in its group gets the rest of the time.
        while not self.killed and _group_alive(pgid):
            if time.monotonic() >= ending:
                self.killed = True
                break
            await asyncio.sleep(0.05)
        if self.killed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            await process.wait()
        self.exit_code = process.returncode
        return self.exit_code


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a member we may not signal is still alive
        return True
    return True


def _read_ready_file(path: Path) -> SutAddresses | None:
    # A stat and a small read of a local file: cheap enough to do in the loop. The integration
    # writes the file by rename, so it is either absent or complete.
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SutError(f"{path}: cannot read the ready file: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SutError(f"{path}: not a JSON ready file: {exc}") from exc
    if not isinstance(data, dict):
        raise SutError(f"{path}: expected a JSON object, seen {text!r}")
    return SutAddresses.from_ready_file(data, str(path))


async def wait_for_probe(probe: ReadyProbe, timeout: float) -> None:
    """Wait until *probe* answers (an integration the harness did not start)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1.0) as client:
        while not await _probe(probe, client):
            if time.monotonic() >= deadline:
                raise SutError(
                    f"the integration did not answer its readiness probe "
                    f"({probe.tcp or probe.http}) within {timeout:g} s; is it running?"
                )
            await asyncio.sleep(0.05)


async def _probe(probe: ReadyProbe, client: httpx.AsyncClient) -> bool:
    if probe.tcp is not None:
        host, port = _host_port(probe.tcp, "integration.ready.tcp")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    if probe.http is not None:
        try:
            response = await client.get(probe.http)
        except httpx.HTTPError:
            return False
        return response.is_success
    return False  # pragma: no cover - the model requires one probe


def integration_of(scenario: Scenario) -> Integration:
    """The scenario's integration block, or the defaults of the bundled example."""
    return scenario.integration or Integration.model_validate({})

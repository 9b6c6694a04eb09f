"""Example CleverTap SMTP integration: a small relay, bounce processor and unsubscribe page.

Run it as ``python examples/integration/gateway.py [--bug NAME]``, configured by environment
variables (docs/integration-contract.md); ``--help`` lists them. It depends on aiosmtpd,
aiosmtplib, httpx, starlette and uvicorn only, never on the harness: it is the kind of program
the harness tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn

from callbacks import Reporter
from core import Gateway
from listeners import start_intake, start_submission
from settings import BUGS, ConfigError, Settings, load_settings
from web import make_app

log = logging.getLogger("gateway")

SHUTDOWN_GRACE = 2.5
"""Seconds SIGTERM leaves for flushing the callbacks still queued."""
CALLBACK_TIMEOUT = 5.0
"""Seconds for one callback POST (connect, send, answer)."""


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: SIGTERM belongs to the gateway, which must flush
    its callbacks before exiting."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _write_ready_file(path: Path, addresses: dict[str, str]) -> None:
    # Write-then-rename: a reader polling for the file never sees it half written.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(addresses, handle)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _bound(server: asyncio.Server) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"{host}:{port}"


async def run(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # BUG(ignore_sigterm): tried with Ctrl-C only; SIGTERM "must not interrupt a delivery".
    if settings.bug == "ignore_sigterm":
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    async with httpx.AsyncClient(timeout=CALLBACK_TIMEOUT) as client:
        reporter = Reporter(settings, client)
        gateway = Gateway(settings, reporter)

        # The HTTP socket is bound here (port 0 unless told otherwise) so that its real port is
        # known before uvicorn starts, and before the first List-Unsubscribe URL is written.
        http_socket = socket.create_server((settings.host, settings.http_port))
        http_host, http_port = http_socket.getsockname()[:2]
        gateway.http_base = f"http://{http_host}:{http_port}"
        config = uvicorn.Config(
            make_app(gateway), log_level="warning", access_log=False, lifespan="off"
        )
        http = _QuietServer(config)
        http_task = asyncio.create_task(http.serve(sockets=[http_socket]), name="http")
        submission = await start_submission(settings, gateway)
        intake = await start_intake(settings, gateway)
        reporter.start()
        while not http.started:
            if http_task.done():
                await http_task  # raises what stopped it
                raise RuntimeError("the HTTP listener stopped during startup")
            await asyncio.sleep(0.01)

        addresses = {
            "smtp": _bound(submission),
            "bounce_intake": _bound(intake),
            "http": gateway.http_base,
        }
        log.info(
            "ready: smtp %s, bounce intake %s, http %s, callbacks %s, retries after %s s%s%s",
            addresses["smtp"],
            addresses["bounce_intake"],
            addresses["http"],
            settings.callback_format,
            ",".join(f"{d:.3g}" for d in settings.retry_delays) or "(none)",
            f" (fit to a budget of {settings.retry_budget:g} s)"
            if settings.retry_budget is not None
            else "",
            f", BUG {settings.bug}" if settings.bug else "",
        )
        if settings.ready_file is not None:
            _write_ready_file(settings.ready_file, addresses)

        await stop.wait()

        log.info("stopping: no new mail, flushing callbacks")
        submission.close()
        intake.close()
        http.should_exit = True
        await gateway.abandon_deliveries()
        await reporter.close(SHUTDOWN_GRACE)
        await http_task
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="Configuration: HARNESS_* and EXAMPLE_* environment variables; "
        "see docs/integration-contract.md and examples/README.md.",
    )
    parser.add_argument(
        "--bug",
        choices=sorted(BUGS),
        metavar="NAME",
        help="run a deliberately broken variant (default: $EXAMPLE_BUG, else none): "
        + ", ".join(BUGS),
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(os.environ, args.bug)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level.upper(),
        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    # The libraries' own chatter (per-connection lines, per-request lines) would drown ours.
    for name in ("mail.log", "httpx", "httpcore", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # AUTH without TLS is what HARNESS_SUBMISSION_TLS=none asks for (loopback tests); aiosmtpd
    # warns about it once per connection.
    warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)
    try:
        asyncio.run(run(settings))
    except OSError as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

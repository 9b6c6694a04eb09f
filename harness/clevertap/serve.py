"""``harness serve``: run the fake CleverTap until Ctrl-C or SIGTERM.

The servers run on uvloop and uvicorn's httptools parser when they are installed (they come
with the base install, ``uvicorn[standard]``, on every platform uvloop has wheels for).
uvicorn's own ``run()`` would pick uvloop, but the harness calls ``Server.serve()`` inside a
loop it made itself, so :func:`harness._loop.run_main` makes that loop with uvloop; without
uvloop (e.g. on Windows) it is a plain asyncio loop. The HTTP protocol is the harness's own on
httptools (callbacks answered in the protocol, :mod:`harness.clevertap.fastpath`) when
importable, else its h11 one (``ServerSettings.http_parser``). The banner says which were used.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import click

from harness._loop import freeze_startup_objects, run_main
from harness.clevertap.faults import FaultRule, parse_fault
from harness.clevertap.inspect import Endpoint
from harness.clevertap.server import CleverTapServer
from harness.clevertap.settings import DEFAULT_PATHS, ServerSettings
from harness.errors import ConfigError, ServerError
from harness.journal import Journal, is_journal_url, open_journal

__all__ = [
    "describe_journal",
    "endpoint_lines",
    "serve",
    "stack",
    "stop_signals",
]

T = TypeVar("T")


def stack(http_parser: str = "auto") -> str:
    """What serves requests in the running loop with *http_parser* (``ServerSettings``):
    ``uvloop + httptools``, ``asyncio + h11``..."""
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    try:
        import httptools  # noqa: F401
    except ImportError:
        http = "h11"
    else:
        http = "h11" if http_parser == "h11" else "httptools"
    return f"{'uvloop' if loop == 'uvloop' else 'asyncio'} + {http}"


_DEFAULTS = ServerSettings()


def describe_journal(journal: Journal) -> str:
    """How the banner names *journal*: its file, its database (without password) or memory."""
    url = getattr(journal, "url", None)
    if isinstance(url, str):
        from harness.journal_pg import redact

        return f"journal {redact(url)}"
    return f"journal {journal.path}" if journal.path else "journal in memory"


def _faults(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[FaultRule]:
    try:
        return [parse_fault(text) for text in value]
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@click.command()
@click.argument(
    "scenario", required=False, type=click.Path(dir_okay=False, path_type=Path), default=None
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port to bind; 0 picks a free one (printed at start).",
)
@click.option(
    "--token",
    envvar="HARNESS_TOKEN",
    default=None,
    help="Bearer token the control API requires (env HARNESS_TOKEN); required when --host is "
    "not a loopback address.",
)
@click.option(
    "--journal",
    "journal",
    metavar="FILE|URL",
    default=None,
    help="SQLite journal file: a restart on the same file keeps every callback; or a "
    "postgresql://USER@HOST/DB URL: one journal shared by several harness processes "
    "(docs/scale-out.md). Default: in memory.",
)
@click.option(
    "--strict/--lenient",
    default=True,
    show_default=True,
    help="Strict answers 400 to payloads with errors; lenient answers 200 and only records them.",
)
@click.option("--bounce-path", default=DEFAULT_PATHS[Endpoint.BOUNCE], show_default=True)
@click.option("--unsubscribe-path", default=DEFAULT_PATHS[Endpoint.UNSUBSCRIBE], show_default=True)
@click.option("--v2-path", default=DEFAULT_PATHS[Endpoint.V2], show_default=True)
@click.option("--control-prefix", default="/_harness", show_default=True)
@click.option(
    "--max-body",
    type=click.IntRange(min=1),
    default=1024 * 1024,
    show_default=True,
    help="Bodies over this many bytes get 413 (journaled truncated).",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=_DEFAULTS.header_timeout,
    show_default=True,
    help="Seconds to send a request's line and headers once started (then 408, closed).",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=_DEFAULTS.body_timeout,
    show_default=True,
    help="Seconds to send a whole request body once the headers arrived (then 408, closed).",
)
@click.option(
    "--keep-alive-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=_DEFAULTS.keep_alive_timeout,
    show_default=True,
    help="Seconds a connection may sit idle before or between requests.",
)
@click.option(
    "--send-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=_DEFAULTS.send_timeout,
    show_default=True,
    help="Seconds a client may leave an answer unread before the connection is dropped.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=_DEFAULTS.max_connections,
    show_default=True,
    help="Open connections at most; more are answered 503 and closed.",
)
@click.option(
    "--max-header-size",
    type=click.IntRange(min=1024),
    default=_DEFAULTS.max_header_size,
    show_default=True,
    help="Bytes of an incomplete request head buffered at most; past it, 400.",
)
@click.option(
    "--http-parser",
    type=click.Choice(["auto", "httptools", "h11"]),
    default=_DEFAULTS.http_parser,
    show_default=True,
    help="httptools answers callbacks in the protocol (fast, refuses malformed heads as nginx "
    "does); h11 serves everything through ASGI and reads some heads llhttp refuses.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    callback=_faults,
    metavar="SPEC",
    help="A callback fault, repeatable, in order: '503,first=3', "
    "'429,retry_after=10,p=0.2,seed=1', 'close,first=1', 'reset', 'delay=200ms', "
    "'...,endpoints=v2'.",
)
@click.option(
    "--intake",
    metavar="HOST:PORT",
    default=None,
    help="With SCENARIO: the integration's bounce intake, where accept-then-bounce DSNs go.",
)
@click.option(
    "--postfix-transport",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="With SCENARIO: write the fake MX hosts' Postfix transport map to FILE once they listen, "
    "and print the main.cf line that uses it (texthash:, no postmap needed).",
)
@click.option(
    "--hosts",
    metavar="NAME[,NAME]",
    default=None,
    help="With SCENARIO: serve only these of its MX hosts (named after their first domain, as "
    "the banner shows), e.g. to split one scenario's hosts across processes that share a "
    "--journal postgresql:// URL (docs/scale-out.md).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    scenario: Path | None,
    host: str,
    port: int,
    token: str | None,
    journal: str | None,
    strict: bool,
    bounce_path: str,
    unsubscribe_path: str,
    v2_path: str,
    control_prefix: str,
    max_body: int,
    header_timeout: float,
    body_timeout: float,
    keep_alive_timeout: float,
    send_timeout: float,
    max_connections: int,
    max_header_size: int,
    http_parser: str,
    faults: list[FaultRule],
    intake: str | None,
    postfix_transport: Path | None,
    hosts: str | None,
) -> None:
    """Run the fake CleverTap: callback endpoints and the control API (OpenAPI docs at /docs).

    With SCENARIO, run that scenario's whole world instead (fake MX hosts or relay too, callback
    paths, strictness and faults from the scenario), print every address and the environment an
    integration needs, and keep running: a staging environment without a runner.

    Binds 127.0.0.1 by default. Prints its URLs, then serves until Ctrl-C or SIGTERM.
    """
    if scenario is not None:
        # Imported here: the scenario machinery is only needed in this mode.
        from harness.scenario.staging import serve_command

        serve_command(ctx, scenario, intake)
        return
    if intake is not None:
        raise click.UsageError("--intake only applies with a SCENARIO")
    if postfix_transport is not None:
        raise click.UsageError("--postfix-transport only applies with a SCENARIO")
    if hosts is not None:
        raise click.UsageError("--hosts only applies with a SCENARIO")
    shared: Journal | None = None
    try:
        if is_journal_url(journal):
            # Opened here: ServerSettings.journal_path names files only.
            shared = open_journal(journal)
        settings = ServerSettings(
            host=host,
            port=port,
            token=token,
            journal_path=None if journal is None or shared is not None else Path(journal),
            strict=strict,
            bounce_path=bounce_path,
            unsubscribe_path=unsubscribe_path,
            v2_path=v2_path,
            control_prefix=control_prefix,
            max_body=max_body,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            keep_alive_timeout=keep_alive_timeout,
            send_timeout=send_timeout,
            max_connections=max_connections,
            max_header_size=max_header_size,
            http_parser=http_parser,  # type: ignore[arg-type]  # click checked the choice
            faults=tuple(faults),
        )
        server = CleverTapServer(settings, journal=shared)
    except ConfigError as exc:
        if shared is not None:
            shared.close()
        raise click.UsageError(str(exc)) from None
    try:
        run_main(_run(server))
    except ServerError as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise click.ClickException(f"{exc}{cause}") from None
    finally:
        if shared is not None:
            shared.close()


@contextlib.contextmanager
def stop_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (the running loop's handlers,
    removed on the way out): how a standalone server learns it must stop."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        yield done
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(server: CleverTapServer) -> None:
    with stop_signals() as done:
        await server.start()
        freeze_startup_objects()
        try:
            _print_banner(server)
            await done.wait()
            click.echo("stopping")
        finally:
            await server.stop()


def _print_banner(server: CleverTapServer) -> None:
    mode = "strict" if server.settings.strict else "lenient"
    for line in endpoint_lines(server, f"{mode}, {describe_journal(server.journal)}"):
        click.echo(line)
    click.echo("Ctrl-C to stop")


def endpoint_lines(server: CleverTapServer, details: str) -> list[str]:
    """Where the running *server* serves, one line each (callbacks, control API, dashboard) and
    its fault rules, as ``harness serve`` prints them; *details* is said after its URL."""
    s, urls = server.settings, server.urls
    auth = ", token required" if s.token else ""
    return [
        f"fake CleverTap on {urls.base} ({details}, {stack(s.http_parser)})",
        f"  bounce       {urls.bounce}",
        f"  unsubscribe  {urls.unsubscribe}",
        f"  v2           {urls.v2}",
        f"  control      {urls.control}  (docs {urls.base}/docs{auth})",
        f"  dashboard    {urls.base}/",
        *(f"  fault        {rule.describe()}" for rule in s.faults),
    ]

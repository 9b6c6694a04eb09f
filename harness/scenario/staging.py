"""``harness serve SCENARIO``: a scenario's whole world for a staging environment, no runner.

The fake MX hosts or relay and the fake CleverTap of the scenario start and keep running until
Ctrl-C or SIGTERM; every address is printed, with the environment an integration needs as
``export`` lines. Nothing is submitted and nothing is judged: the staging integration sends real
mail into the fake world, its callbacks are checked and journaled, and the control API serves
the journal (``/_harness``, OpenAPI docs at ``/docs``).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from harness._loop import freeze_startup_objects, run_main
from harness.clevertap.serve import endpoint_lines, stop_signals
from harness.errors import ConfigError, ScenarioError, ServerError
from harness.journal import open_journal
from harness.scenario.loader import load_scenario
from harness.scenario.model import Scenario
from harness.world import World

__all__ = [
    "banner",
    "build_world",
    "serve_command",
    "serve_scenario",
    "write_postfix_transport",
]


def build_world(
    scenario: Scenario,
    overrides: dict[str, Any],
    journal_path: str | Path | None = None,
    *,
    hosts: Sequence[str] | None = None,
) -> World:
    """The scenario's world, with the server settings *overrides* (host, port, token, ...).

    *journal_path* is a file, a ``postgresql://`` URL or None (memory). *hosts*, when given,
    are the mail hosts this process serves (by name); the others are served elsewhere, e.g. by
    other processes writing the same PostgreSQL journal.
    """
    journal = open_journal(journal_path)
    try:
        world = World.from_scenario(scenario, journal=journal, settings=overrides)
        if hosts is not None:
            _keep_hosts(world, scenario, hosts)
    except BaseException:
        journal.close()
        raise
    return world


def _keep_hosts(world: World, scenario: Scenario, names: Sequence[str]) -> None:
    known = world.mail.hosts
    if scenario.relay is not None:
        raise ConfigError(
            "--hosts splits a scenario's MX hosts across processes; this scenario sends "
            "everything through one relay, so there is nothing to split"
        )
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ConfigError(
            f"--hosts: no host named {', '.join(map(repr, unknown)) or 'at all'} in scenario "
            f"{scenario.name!r}; its hosts are {', '.join(known)}"
        )
    for name in list(known):
        if name not in names:
            del known[name]


def banner(world: World, scenario: Scenario, *, postfix_transport: Path | None = None) -> list[str]:
    """What ``harness serve SCENARIO`` prints once the world runs."""
    lines = [f"scenario {scenario.name}" + (f" ({scenario.source})" if scenario.source else "")]
    lines.append("mail world:")
    for host in world.mail.hosts.values():
        what = "relay (every domain)" if host.relay else ", ".join(host.domains)
        extra = []
        if host.state != "up":
            extra.append(host.state)
        if host.tls:
            extra.append(f"tls {host.tls}")
        if host.auth_users:
            extra.append("auth")
        suffix = f"  [{', '.join(extra)}]" if extra else ""
        lines.append(f"  {host.bind}:{host.port}  {what}{suffix}")
    intake = world.bounce_intake
    lines.append(
        f"  DSNs go to {intake[0]}:{intake[1]}"
        if isinstance(intake, tuple)
        else f"  DSNs go to {intake}"
        if intake is not None
        else "  DSNs: no bounce intake (give --intake HOST:PORT); accept-then-bounce DSNs are "
        "journaled as not sent"
    )
    if postfix_transport is not None:
        lines.append(f"postfix transport map written to {postfix_transport}; in main.cf:")
        lines.append(f"  transport_maps = texthash:{postfix_transport}")
    lines += endpoint_lines(world.clevertap, scenario.clevertap.format)
    lines.append("environment for the integration (docs/integration-contract.md):")
    for name, value in world.sut_env().items():
        lines.append(f"export {name}={shlex.quote(value)}")
    lines.append("Ctrl-C to stop")
    return lines


def serve_scenario(
    world: World,
    scenario: Scenario,
    echo: Callable[[str], None],
    *,
    postfix_transport: Path | None = None,
) -> None:
    """Run *world* until SIGINT/SIGTERM, printing :func:`banner` with *echo*.

    With *postfix_transport*, the mail world's Postfix transport map is written there once the
    hosts have their ports, so that a real Postfix can be put in front of the fake MX hosts.
    """
    # The same loop as plain `harness serve`: uvloop when installed.
    run_main(_serve(world, scenario, echo, postfix_transport))


def write_postfix_transport(world: World, path: Path) -> Path:
    """Write the mail world's transport map to *path* for ``transport_maps = texthash:PATH``.

    ``texthash:`` tables are read as text when a Postfix process opens them: no ``postmap``.
    The file is replaced in one rename, so a Postfix process never reads half of it. Returns
    the absolute path (Postfix wants one).
    """
    target = path.resolve()
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        partial.write_text(world.mail.postfix_transport_map())
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"--postfix-transport: cannot write {path}: {exc}") from None
    return target


async def _serve(
    world: World,
    scenario: Scenario,
    echo: Callable[[str], None],
    postfix_transport: Path | None = None,
) -> None:
    try:
        with stop_signals() as done:
            async with world:
                freeze_startup_objects()
                if postfix_transport is not None:
                    postfix_transport = write_postfix_transport(world, postfix_transport)
                for line in banner(world, scenario, postfix_transport=postfix_transport):
                    echo(line)
                await done.wait()
                echo("stopping")
    finally:
        world.journal.close()


_SCENARIO_OWNED = {
    "strict": "clevertap.strictness",
    "bounce_path": "clevertap.endpoints",
    "unsubscribe_path": "clevertap.endpoints",
    "v2_path": "clevertap.endpoints",
    "faults": "clevertap.faults",
}


_HTTP_LIMITS = (
    "header_timeout",
    "body_timeout",
    "keep_alive_timeout",
    "send_timeout",
    "max_connections",
    "max_header_size",
    "http_parser",
)
"""``harness serve`` options that apply in the SCENARIO mode too (docs/limits.md)."""


def serve_command(ctx: click.Context, path: Path, intake: str | None) -> None:
    """The SCENARIO branch of ``harness serve`` (options in ``ctx.params``)."""
    for name, key in _SCENARIO_OWNED.items():
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
            option = "--fault" if name == "faults" else "--" + name.replace("_", "-")
            raise click.UsageError(
                f"{option} cannot be combined with SCENARIO: the scenario's {key} decides it"
            )
    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        raise SystemExit(2) from None
    params = ctx.params
    overrides = {
        "host": params["host"],
        "port": params["port"],
        "token": params["token"],
        "control_prefix": params["control_prefix"],
        "max_body": params["max_body"],
        **{name: params[name] for name in _HTTP_LIMITS},
    }
    try:
        hosts = params.get("hosts")
        world = build_world(
            scenario,
            overrides,
            params["journal"],
            hosts=None if hosts is None else [h.strip() for h in hosts.split(",") if h.strip()],
        )
        if intake is not None:
            host, sep, port = intake.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise click.BadParameter(
                    f"expected HOST:PORT like 127.0.0.1:2526, got {intake!r}", param_hint="--intake"
                )
            world.bounce_intake = (host, int(port))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        serve_scenario(world, scenario, click.echo, postfix_transport=params["postfix_transport"])
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except ServerError as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise click.ClickException(f"{exc}{cause}") from None

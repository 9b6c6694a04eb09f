"""``harness run``: run scenarios end to end against an integration and judge them."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.errors import ConfigError, ScenarioError
from harness.scenario.loader import load_scenarios
from harness.scenario.model import Scenario
from harness.scenario.runner import (
    Progress as RunProgress,
)
from harness.scenario.runner import (
    RunOptions,
    ScenarioResult,
    run_scenarios_sync,
    verdict_of,
)
from harness.scenario.sut import integration_of, resolve_command

__all__ = ["run"]


@click.command()
@click.argument(
    "paths", nargs=-1, required=False, metavar="[SCENARIO]...", type=click.Path(path_type=Path)
)
@click.option(
    "--sut",
    metavar="CMD",
    default=None,
    help="Start this integration for every scenario instead of the scenario's own (split like a "
    "shell command line, run from the current directory), e.g. "
    "'python examples/integration/gateway.py --bug no_retry'.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the report as JSON to this file.",
)
@click.option(
    "--junit",
    "junit_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the report as JUnit XML to this file (one testcase per scenario).",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Scenarios run at once (each with its own servers and integration).",
)
@click.option(
    "--connections",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="SMTP connections the campaign driver opens at once.",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Print only the failed scenarios' reports and the summary line; no progress display.",
)
def run(
    paths: tuple[Path, ...],
    sut: str | None,
    json_path: Path | None,
    junit_path: Path | None,
    jobs: int,
    connections: int,
    quiet: bool,
) -> None:
    """Run SCENARIO files (or directories of them) against the integration under test.

    For each scenario: start the fake mail servers and the fake CleverTap, start the
    integration (the scenario's, --sut, or the bundled example), submit the campaign, perform
    the clicks, wait for the expectations or the deadline, judge. Without SCENARIO, run every
    scenario the package ships (against the bundled example unless --sut is given). Exit code 0
    when every scenario passed, 1 when one failed, 2 on usage errors.
    """
    err = Console(stderr=True, highlight=False)
    if not paths:
        from harness.bundled import SCENARIOS, bundled

        try:
            paths = (bundled(SCENARIOS),)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        click.echo(f"no SCENARIO given: running the shipped scenarios in {paths[0]}", err=True)
    try:
        scenarios = load_scenarios(paths)
    except ScenarioError as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        raise SystemExit(2) from None
    argv: list[str] | None = None
    if sut is not None:
        try:
            argv = shlex.split(sut)
        except ValueError as exc:
            raise click.BadParameter(f"cannot split {sut!r}: {exc}", param_hint="--sut") from None
        if not argv:
            raise click.BadParameter("empty command", param_hint="--sut")
    _check_commands(scenarios, argv)
    # The fake servers run in this process; aiosmtpd logs every misbehaving client (which is
    # what the scenarios are made of) as warnings. The journal has all of it.
    logging.getLogger("mail.log").setLevel(logging.ERROR)

    with _progress(err, enabled=not quiet and err.is_terminal) as on_progress:
        options = RunOptions(sut=argv, jobs=jobs, connections=connections, on_progress=on_progress)
        results = run_scenarios_sync(scenarios, options)

    # Imported here: rich tables and the judge are only needed once there is something to show.
    from harness.scenario.report import exit_code, print_report, write_json, write_junit

    verdicts = [verdict_of(r) for r in results]
    print_report(verdicts, console=Console(highlight=False), failed_only=quiet)
    for result in results:
        _print_output(result)
    if json_path is not None:
        write_json(verdicts, json_path)
    if junit_path is not None:
        write_junit(verdicts, junit_path)
    raise SystemExit(exit_code(verdicts))


def _check_commands(scenarios: list[Scenario], argv: list[str] | None) -> None:
    """A missing program is a usage error (2), found before anything starts."""
    problems = []
    for scenario in scenarios:
        if argv is None and integration_of(scenario).addresses is not None:
            continue
        try:
            resolve_command(scenario, argv)
        except ConfigError as exc:
            where = scenario.source or scenario.name
            problems.append(f"{where}: {exc}")
    if problems:
        for line in dict.fromkeys(problems):
            click.echo(line, err=True)
        raise SystemExit(2)


def _print_output(result: ScenarioResult) -> None:
    """Why a run failed before it was judged, and the integration's output for every failed
    scenario (often the quickest clue), unwrapped on stderr."""
    if result.passed:
        return
    if result.error is not None:
        click.echo(f"--- {result.name}: the run failed ---\n{result.error}", err=True)
        return
    if not result.sut_log.strip():
        return
    exit_text = "killed" if result.sut_killed else f"exit code {result.sut_exit}"
    click.echo(f"--- {result.name}: output of the integration ({exit_text}) ---", err=True)
    click.echo(result.sut_log.rstrip(), err=True)


@contextmanager
def _progress(console: Console, *, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[phase]} · {task.fields[callbacks]} callbacks"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def on_progress(p: RunProgress) -> None:
        # Called from the runner's event loop; rich's Progress is thread safe.
        task = tasks.get(p.scenario)
        if task is None:
            task = bar.add_task(
                f"[{p.index}/{p.total}] {p.scenario}",
                total=p.messages or 1,
                phase=p.phase,
                callbacks=0,
            )
            tasks[p.scenario] = task
        if p.phase == "done":
            bar.remove_task(task)
            return
        bar.update(task, completed=p.submitted, phase=p.phase, callbacks=p.callbacks)

    with bar:
        yield on_progress

"""``harness judge``: judge a scenario on a journal that other processes wrote.

For staging at scale (``docs/scale-out.md``): several ``harness serve`` processes write one
journal (``--journal postgresql://...``), the integration runs against them, and one judge
reads the shared journal and prints the report ``harness run`` prints, with the same exit code.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console

from harness.errors import ConfigError, ScenarioError
from harness.journal import Journal, is_journal_url, open_journal
from harness.scenario.loader import load_scenario

__all__ = ["judge_command", "window"]


def window(journal: Journal, since: int) -> float:
    """The wall-clock start of the run that begins after entry *since*: the time of the first
    entry after it (now, when there is none yet)."""
    first = next(iter(journal.iter_entries(since=since)), None)
    return time.time() if first is None else first.at


@click.command("judge")
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--journal",
    "journal_path",
    required=True,
    metavar="FILE|URL",
    help="The journal the servers wrote: an SQLite file or a postgresql://USER@HOST/DB URL.",
)
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Judge the entries after this seq (the last_seq printed or served before the run).",
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
    help="Also write the report as JUnit XML to this file.",
)
def judge_command(
    scenario: Path,
    journal_path: str,
    since: int,
    json_path: Path | None,
    junit_path: Path | None,
) -> None:
    """Judge SCENARIO's expectations on the entries a journal holds after --since.

    Prints the report `harness run` prints; exit code 0 when the scenario passed, 1 when it
    failed, 2 on usage errors. Cross-check violations found are appended to the journal, once.
    """
    try:
        loaded = load_scenario(scenario)
    except ScenarioError as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        raise SystemExit(2) from None
    if not is_journal_url(journal_path) and not Path(journal_path).is_file():
        raise click.BadParameter(
            f"no journal file at {journal_path!r} (a file or a postgresql:// URL)",
            param_hint="--journal",
        )
    try:
        journal = open_journal(journal_path)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    # Imported here: the judge and rich tables are only needed once the journal opened.
    from harness.scenario.judge import judge
    from harness.scenario.report import exit_code, print_report, write_json, write_junit

    try:
        verdict = judge(loaded, journal, started=window(journal, since))
    finally:
        journal.close()
    print_report([verdict], console=Console(highlight=False))
    if json_path is not None:
        write_json([verdict], json_path)
    if junit_path is not None:
        write_junit([verdict], junit_path)
    raise SystemExit(exit_code([verdict]))

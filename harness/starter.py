"""``harness init DIR``: start a user's test suite from what the package ships.

Copies the shipped scenarios to ``DIR/scenarios/`` and the starter suite (``conftest.py`` and
``test_callbacks.py``, from ``examples/starter/``) to ``DIR``; refuses to overwrite a file that
is already there, so running it twice, or in a suite that has a conftest, changes nothing.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import click

from harness.bundled import SCENARIOS, STARTER, bundled
from harness.errors import ConfigError

__all__ = ["init", "plan"]


def plan(directory: Path) -> list[tuple[Path, Path]]:
    """(source, destination) of every file ``harness init`` writes into *directory*."""
    scenarios, starter = bundled(SCENARIOS), bundled(STARTER)
    copies = [(p, directory / "scenarios" / p.name) for p in sorted(scenarios.glob("*.yaml"))]
    copies += [(p, directory / p.name) for p in sorted(starter.glob("*.py"))]
    return copies


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Start a test suite in DIR: the shipped scenarios, a conftest.py and a test.

    Writes DIR/scenarios/*.yaml (every shipped scenario), DIR/conftest.py and
    DIR/test_callbacks.py, then says how to run them. Existing files are never overwritten:
    if one is in the way, nothing is written.
    """
    try:
        copies = plan(directory)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    taken = [str(dest) for _, dest in copies if dest.exists()]
    if taken:
        raise click.ClickException(
            "not overwriting what is there: " + ", ".join(taken) + " (pick another DIR)"
        )
    for source, dest in copies:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    scenarios = sum(1 for _, dest in copies if dest.parent.name == "scenarios")
    click.echo(f"wrote {scenarios} scenarios to {directory / 'scenarios'}")
    for _, dest in copies:
        if dest.parent != directory / "scenarios":
            click.echo(f"wrote {dest}")
    click.echo("next:")
    click.echo(
        f"  harness run {directory / 'scenarios'}    # every scenario, against the bundled example"
    )
    click.echo(f"  cd {directory} && pytest          # the starter tests (the pytest plugin)")
    # The plugin is an extra: without it the starter tests would fail at their first import.
    if importlib.util.find_spec("pytest") is None:
        click.echo(
            "  (pytest is not installed here: pip install 'clevertap-harness[pytest]' first)"
        )

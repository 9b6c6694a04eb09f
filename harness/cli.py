"""The ``harness`` command line.

Subcommands live next to the code they drive and are imported only when invoked, so that
``harness --help`` and ``harness check`` start fast:

=========  ====================================
schema     harness.clevertap.cli:schema
check      harness.clevertap.cli:check
serve      harness.clevertap.serve:serve
catalog    harness.smtp.cli:catalog
dsn        harness.smtp.dsn_cli:dsn
judge      harness.scenario.judge_cli:judge_command
run        harness.scenario.cli:run
=========  ====================================

Exit codes: 0 success, 1 the thing checked failed (violations, unmet expectations), 2 usage
errors (click's own convention).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

__all__ = ["main"]

_COMMANDS: dict[str, tuple[str, str]] = {
    "catalog": ("harness.smtp.cli", "catalog"),
    "check": ("harness.clevertap.cli", "check"),
    "dsn": ("harness.smtp.dsn_cli", "dsn"),
    "judge": ("harness.scenario.judge_cli", "judge_command"),
    "run": ("harness.scenario.cli", "run"),
    "schema": ("harness.clevertap.cli", "schema"),
    "serve": ("harness.clevertap.serve", "serve"),
}


class _LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (click's documented lazy pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return None  # not built yet
        command = getattr(module, attr, None)
        return command if isinstance(command, click.Command) else None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clevertap-harness", prog_name="harness")
def main(**_: Any) -> None:
    """Test CleverTap SMTP integrations: fake mail servers that fail on cue and a fake CleverTap
    that checks bounce and unsubscribe callbacks."""

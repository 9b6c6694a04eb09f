"""The ``harness`` command line.

Subcommands live next to the code they drive and are imported only when invoked, so that
``harness --help`` and ``harness check`` start fast. ``harness --help`` imports none of them:
the one-line summaries it prints are kept here, and a test checks that they are the first line
of each command's own help.

Help texts are plain text (click prints docstrings as they are; no reST markup in them).

Exit codes: 0 success, 1 the thing checked failed (violations, unmet expectations), 2 usage
errors (click's own convention).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

__all__ = ["main"]

_COMMANDS: dict[str, tuple[str, str, str]] = {
    "catalog": (
        "harness.smtp.cli",
        "catalog",
        "List the failure modes a fake MX can play: stage, reply code, enhanced status, "
        "default class and reply text.",
    ),
    "check": (
        "harness.clevertap.cli",
        "check",
        "Check a callback payload FILE ('-' for stdin) as the fake CleverTap would.",
    ),
    "dsn": (
        "harness.smtp.dsn_cli",
        "dsn",
        "Print the DSN a failure MODE produces (or an auto-reply, or a complaint) as RFC 5322 "
        "bytes.",
    ),
    "init": (
        "harness.starter",
        "init",
        "Start a test suite in DIR: the shipped scenarios, a conftest.py and a test.",
    ),
    "judge": (
        "harness.scenario.judge_cli",
        "judge_command",
        "Judge SCENARIO's expectations on the entries a journal holds after --since.",
    ),
    "run": (
        "harness.scenario.cli",
        "run",
        "Run SCENARIO files (or directories of them) against the integration under test.",
    ),
    "schema": (
        "harness.clevertap.cli",
        "schema",
        "Print the JSON Schema (draft 2020-12) of a CleverTap callback format, or of scenarios.",
    ),
    "serve": (
        "harness.clevertap.serve",
        "serve",
        "Run the fake CleverTap: callback endpoints and the control API (OpenAPI docs at /docs).",
    ),
}
"""name: (module, attribute, the short help ``harness --help`` shows)."""


class _LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (click's documented lazy pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr, _ = target
        module = importlib.import_module(module_name)
        command = getattr(module, attr, None)
        return command if isinstance(command, click.Command) else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own version imports every subcommand to ask for its short help; that pulled
        # FastAPI, pydantic and rich into `harness --help` (0.66 s).
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clevertap-harness", prog_name="harness")
def main(**_: Any) -> None:
    """Test CleverTap SMTP integrations: fake mail servers that fail on cue and a fake CleverTap
    that checks bounce and unsubscribe callbacks."""

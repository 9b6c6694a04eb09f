"""``harness catalog``: print the failure catalog, as a table or as JSON."""

from __future__ import annotations

import json
from typing import Any

import click

from harness.smtp.catalog import CATALOG, FLAVOURS, FailureMode

__all__ = ["catalog"]


def _row(mode: FailureMode, flavour: str) -> dict[str, Any]:
    reply = mode.reply(flavour)
    return {
        "mode": mode.name,
        "stage": str(mode.stage),
        "code": reply.code if reply else None,
        "enhanced": reply.enhanced if reply else mode.enhanced,
        "class": str(mode.bounce_class),
        "server_down": mode.server_down,
        "text": mode.text(flavour),
        "description": mode.description,
    }


@click.command()
@click.option(
    "--flavour",
    type=click.Choice(FLAVOURS),
    default="postfix",
    show_default=True,
    help="Whose reply texts (and codes, where a provider differs) to show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def catalog(flavour: str, as_json: bool) -> None:
    """List the failure modes a fake MX can play: stage, reply code, enhanced status, default
    class and reply text. Use the mode names in scenarios ('full@x.test: mailbox_full')."""
    rows = [_row(mode, flavour) for mode in CATALOG.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    # rich is imported here so that ``harness catalog --json`` stays light.
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Failure catalog ({flavour} flavour)")
    for column in ("mode", "stage", "code", "enhanced", "class", "text"):
        table.add_column(column, overflow="fold", no_wrap=column != "text")
    for row in rows:
        code = "-" if row["code"] is None else str(row["code"])
        table.add_row(
            row["mode"], row["stage"], code, row["enhanced"] or "-", row["class"], row["text"]
        )
    Console().print(table)

"""``harness dsn``: print the DSN a catalog mode produces, to feed a bounce parser's tests."""

from __future__ import annotations

from datetime import datetime

import click

from harness.errors import ConfigError
from harness.smtp.catalog import FLAVOURS
from harness.smtp.dsn import ACTIONS, Dialect, dsn_bytes, dsn_for_mode, get_dialect

__all__ = ["dsn"]


def _check_dialect(ctx: click.Context, param: click.Parameter, value: str) -> Dialect:
    try:
        return get_dialect(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _parse_date(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"expected an ISO 8601 date like 2024-05-01T12:00:00+00:00, seen {value!r}",
            ctx=ctx,
            param=param,
        ) from None


@click.command("dsn")
@click.option("--mode", "mode_name", required=True, help="Catalog mode, e.g. invalid_address.")
@click.option(
    "--dialect",
    default="generic",
    show_default=True,
    callback=_check_dialect,
    help="generic (RFC 3464), postfix or exim.",
)
@click.option("--recipient", required=True, help="The recipient that failed.")
@click.option(
    "--sender",
    default="bounces@sender.test",
    show_default=True,
    help="Envelope sender of the original message (the DSN goes there; VERP kept as is).",
)
@click.option(
    "--action", type=click.Choice(ACTIONS), default="failed", show_default=True, help="Action."
)
@click.option(
    "--ret",
    type=click.Choice(["full", "hdrs"], case_sensitive=False),
    default=None,
    help="RFC 3461 RET: return the full message (default) or its headers only.",
)
@click.option("--envid", default=None, help="RFC 3461 ENVID, echoed as Original-Envelope-Id.")
@click.option("--orcpt", default=None, help="RFC 3461 ORCPT, echoed as Original-Recipient.")
@click.option(
    "--flavour",
    type=click.Choice(FLAVOURS),
    default="postfix",
    show_default=True,
    help="Provider flavour of the reply text.",
)
@click.option(
    "--date",
    "when",
    default=None,
    callback=_parse_date,
    help="ISO 8601 date of the DSN (default: now); fixes the output byte for byte.",
)
@click.option("--crlf/--lf", default=False, help="Line ends: CRLF as on the wire, or LF (default).")
def dsn(
    mode_name: str,
    dialect: Dialect,
    recipient: str,
    sender: str,
    action: str,
    ret: str | None,
    envid: str | None,
    orcpt: str | None,
    flavour: str,
    when: datetime | None,
    crlf: bool,
) -> None:
    """Print the DSN a failure MODE produces, as RFC 5322 bytes.

    \b
    Example:
      harness dsn --mode invalid_address --dialect postfix --recipient a@example.com > bounce.eml
    """
    try:
        message = dsn_for_mode(
            mode_name,
            recipient,
            dialect=dialect,
            action=action,
            sender=sender,
            flavour=flavour,
            ret=ret,
            envid=envid,
            orcpt=orcpt,
            now=when,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(dsn_bytes(message, crlf=crlf), nl=False)

"""``harness dsn``: print a DSN, an auto-reply or a complaint, to feed a bounce parser's tests."""

from __future__ import annotations

from datetime import datetime

import click

from harness.errors import ConfigError
from harness.smtp.catalog import FLAVOURS
from harness.smtp.dialects import ACTIONS, AUTO_REPLY_STYLES, DIALECTS, FEEDBACK_TYPES
from harness.smtp.dsn import (
    Dialect,
    OriginalMessage,
    dsn_bytes,
    dsn_for_mode,
    get_dialect,
    sample_message,
)
from harness.smtp.reports import build_auto_reply, build_complaint

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


KINDS = ("bounce", "auto_reply", "complaint")
# The options that shape one kind only: given with another kind they would be ignored, which
# reads as if they had worked, so they are refused instead.
_ONLY_FOR = {
    "mode_name": ("--mode", ("bounce",)),
    "dialect": ("--dialect", ("bounce",)),
    "action": ("--action", ("bounce",)),
    "envid": ("--envid", ("bounce",)),
    "orcpt": ("--orcpt", ("bounce",)),
    "flavour": ("--flavour", ("bounce",)),
    "ret": ("--ret", ("bounce", "complaint")),
    "style": ("--style", ("auto_reply",)),
    "feedback_type": ("--feedback-type", ("complaint",)),
}


def _refuse_foreign_options(ctx: click.Context, kind: str) -> None:
    for name, (flag, kinds) in _ONLY_FOR.items():
        source = ctx.get_parameter_source(name)
        if kind not in kinds and source is click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError(
                f"{flag} means nothing for --kind {kind}; it shapes "
                f"{' and '.join(f'--kind {k}' for k in kinds)} only",
                ctx=ctx,
            )


@click.command("dsn")
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default="bounce",
    show_default=True,
    help="A bounce (DSN), an RFC 3834 auto-reply or an RFC 5965 complaint (ARF).",
)
@click.option("--mode", "mode_name", default=None, help="Catalog mode, e.g. invalid_address.")
@click.option(
    "--dialect",
    default="generic",
    show_default=True,
    callback=_check_dialect,
    help=f"The mail system the bounce imitates: {', '.join(DIALECTS)}.",
)
@click.option(
    "--recipient",
    "recipients",
    required=True,
    multiple=True,
    help="The recipient that failed; repeat it for one DSN about several recipients.",
)
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
    default=None,
    help="Provider flavour of the reply text (default: the dialect's provider, else postfix).",
)
@click.option(
    "--style",
    type=click.Choice(AUTO_REPLY_STYLES),
    default=AUTO_REPLY_STYLES[0],
    show_default=True,
    help="Style of an auto-reply: a vacation(1)/Sieve reply, or Outlook's automatic reply.",
)
@click.option(
    "--feedback-type",
    type=click.Choice(FEEDBACK_TYPES),
    default="abuse",
    show_default=True,
    help="Feedback-Type of a complaint.",
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
    kind: str,
    mode_name: str | None,
    dialect: Dialect,
    recipients: tuple[str, ...],
    sender: str,
    action: str,
    ret: str | None,
    envid: str | None,
    orcpt: str | None,
    flavour: str | None,
    style: str,
    feedback_type: str,
    when: datetime | None,
    crlf: bool,
) -> None:
    """Print the DSN a failure MODE produces (or an auto-reply, or a complaint) as RFC 5322 bytes.

    \b
    Examples:
      harness dsn --mode invalid_address --dialect postfix --recipient a@example.com > bounce.eml
      harness dsn --mode spam_content --dialect postfix --recipient a@x.test --recipient b@x.test
      harness dsn --kind complaint --recipient a@example.com --sender bounces@sut.test
      harness dsn --kind auto_reply --style exchange --recipient a@example.com
    """
    _refuse_foreign_options(click.get_current_context(), kind)
    try:
        if kind == "bounce":
            if mode_name is None:
                raise ConfigError("--mode is required for a bounce, e.g. --mode invalid_address")
            message = dsn_for_mode(
                mode_name,
                recipients,
                dialect=dialect,
                action=action,
                sender=sender,
                flavour=flavour,
                ret=ret,
                envid=envid,
                orcpt=orcpt,
                now=when,
            )
        else:
            if len(recipients) > 1:
                raise ConfigError(f"a {kind} is about one recipient; {len(recipients)} given")
            recipient = recipients[0]
            original = OriginalMessage(
                envelope_sender=sender, content=sample_message(sender, [recipient])
            )
            if kind == "auto_reply":
                message = build_auto_reply(original, recipient, style=style, now=when)
            else:
                message = build_complaint(
                    original,
                    recipient,
                    feedback_type=feedback_type,
                    headers_only=ret == "hdrs",
                    now=when,
                )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(dsn_bytes(message, crlf=crlf), nl=False)

"""``harness schema`` and ``harness check``: the callback formats from the command line."""

from __future__ import annotations

import json
from typing import IO, Any, Literal

import click
import orjson

from harness.checks import Severity
from harness.clevertap.inspect import Endpoint, Inspection, inspect
from harness.clevertap.schema import json_schema

__all__ = ["check", "schema"]


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["legacy", "v2"]),
    default="legacy",
    show_default=True,
    help="Which callback format.",
)
@click.option(
    "--scenario",
    is_flag=True,
    help="Print the schema of scenario files instead (for editors' YAML language servers).",
)
@click.pass_context
def schema(ctx: click.Context, fmt: Literal["legacy", "v2"], scenario: bool) -> None:
    """Print the JSON Schema (draft 2020-12) of a CleverTap callback format, or of scenarios."""
    if scenario:
        if ctx.get_parameter_source("fmt") is not click.core.ParameterSource.DEFAULT:
            raise click.UsageError("--format is about callbacks; it cannot go with --scenario")
        # Imported here: the scenario model is not needed for the callback schemas.
        from harness.scenario.schema import scenario_json_schema

        click.echo(json.dumps(scenario_json_schema(), indent=2, ensure_ascii=False))
        return
    click.echo(json.dumps(json_schema(fmt), indent=2, ensure_ascii=False))


@click.command()
@click.argument("file", type=click.File("rb"))
@click.option(
    "--endpoint",
    type=click.Choice([e.value for e in Endpoint]),
    default=None,
    help="The callback URL the payload is meant for. Default: guessed from the payload (an "
    "array of only unsubscribe events: unsubscribe; any other array: bounce; an object: v2).",
)
@click.option(
    "--content-type",
    default="application/json",
    show_default=True,
    help="The Content-Type header to judge; an empty string means none was sent.",
)
@click.option(
    "--now",
    type=float,
    default=None,
    help="Receive time as a Unix epoch, for reproducible ts checks. Default: the current time.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of lines.")
def check(
    file: IO[bytes], endpoint: str | None, content_type: str, now: float | None, as_json: bool
) -> None:
    """Check a callback payload FILE ('-' for stdin) as the fake CleverTap would.

    Prints one line per violation, then a summary. Exits 0 when there is no error (warnings
    are allowed), 1 when there is one, 2 on usage errors.
    """
    try:
        body = file.read()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {file.name!r}: {exc}", param_hint="FILE") from None
    guessed = endpoint is None
    target = _guess_endpoint(body) if endpoint is None else Endpoint(endpoint)
    result = inspect(body, endpoint=target, content_type=content_type or None, now=now)
    errors = sum(v.severity is Severity.ERROR for v in result.violations)
    warnings = len(result.violations) - errors
    if as_json:
        click.echo(json.dumps(_as_json(result, target, guessed, errors, warnings), indent=2))
    else:
        for violation in result.violations:
            click.echo(violation.format())
        click.echo(_summary(result, target, guessed, errors, warnings))
    if errors:
        raise click.exceptions.Exit(1)


def _guess_endpoint(body: bytes) -> Endpoint:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Endpoint.BOUNCE  # unreadable anyway; inspect() says why
    if isinstance(payload, dict):
        return Endpoint.V2
    if (
        isinstance(payload, list)
        and payload
        and all(isinstance(e, dict) and e.get("event") == "unsubscribe" for e in payload)
    ):
        return Endpoint.UNSUBSCRIBE
    return Endpoint.BOUNCE


def _summary(
    result: Inspection, endpoint: Endpoint, guessed: bool, errors: int, warnings: int
) -> str:
    what = f"{result.format} payload" if result.format else "unreadable body"
    where = f"the {endpoint} endpoint" + (" (guessed)" if guessed else "")
    events = _plural(len(result.events), "event")
    found = (
        "no violations"
        if not result.violations
        else f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"
    )
    verdict = "FAIL" if errors else "OK"
    return f"{verdict}  {what} at {where}: {events}, {found}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _as_json(
    result: Inspection, endpoint: Endpoint, guessed: bool, errors: int, warnings: int
) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "endpoint": str(endpoint),
        "endpoint_guessed": guessed,
        "format": result.format,
        "errors": errors,
        "warnings": warnings,
        "events": [
            {"event": e.event, "email": e.email, "ts": e.ts, "meta": e.meta, "path": e.path}
            for e in result.events
        ],
        "violations": [v.to_json() for v in result.violations],
    }

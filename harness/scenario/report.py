"""Reports of judged scenario runs: terminal (rich), plain text, JSON and JUnit XML.

Every function takes the :class:`~harness.scenario.judge.Verdict` of each scenario run (or one
verdict) and renders only what is in them.

**Terminal / text** (:func:`print_report`, :func:`render_text`): per scenario a header line
(``PASS``/``FAIL``, name, file, duration, callbacks), its notes, a table of expectations (met
or not, with the reason and the journal seqs that prove it; the integration's stop after
SIGTERM among them), for each unmet expected callback an expected-vs-seen diff of the nearest
callbacks that did arrive and what the mail world saw for that recipient, a table of
violations (code, severity, path, message with expected and seen, journal seqs), then a summary
line ``N passed, M failed``.

**JSON** (:func:`report_json`, stable; new keys may be added, none removed or renamed)::

    {"format": "clevertap-harness-report", "version": 1,
     "passed": bool,                                   # every scenario passed
     "summary": {"total": int, "passed": int, "failed": int},
     "scenarios": [                                    # Verdict.to_json(), one per scenario
       {"scenario": str, "path": str | null, "passed": bool,
        "expectations": [{"kind": "callback"|"absent"|"nothing_else"|"violations"
                                  |"integration",
                          "path": "expect.callbacks[0]", "description": str, "met": bool,
                          "reason": str, "evidence": [seq, ...], "arrived_after": float | null,
                          "nearest": [{"seq", "at", "endpoint", "event", "email", "ts", "meta",
                                       "status", "fault", "codes"}, ...],
                          "world": [str, ...]}, ...],          # what the mail world saw
                                                               # (a missing expected callback)
        "violations": [Violation.to_json(), ...],
        "unexpected": [{"seq", "at", "endpoint", "event", ...}, ...],
        "allowed": [code, ...],
        "timings": {"started", "finished", "deadline", "duration"},
        "counts": {"callbacks": int, "entries": int},
        "notes": [str, ...]}, ...]}                    # e.g. judged at the deadline, unsettled

**JUnit XML** (:func:`junit_xml`): ``<testsuites>`` holding one ``<testsuite>`` for the run and
one ``<testcase>`` per scenario; a failed scenario has a ``<failure>`` whose text is the plain
text report of that scenario. It follows the common JUnit schema that CI servers read (Jenkins,
GitLab, GitHub test reporters).

:func:`exit_code` is 0 only when every scenario passed (and there was at least one).
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.checks import Severity
from harness.scenario.judge import ExpectationResult, Verdict

__all__ = [
    "exit_code",
    "junit_xml",
    "print_report",
    "render_html",
    "render_text",
    "report_json",
    "summary",
    "write_json",
    "write_junit",
]

REPORT_FORMAT = "clevertap-harness-report"
REPORT_VERSION = 1


def _many(verdicts: Verdict | Sequence[Verdict]) -> list[Verdict]:
    return [verdicts] if isinstance(verdicts, Verdict) else list(verdicts)


def summary(verdicts: Verdict | Sequence[Verdict]) -> str:
    """``N passed, M failed``."""
    many = _many(verdicts)
    passed = sum(v.passed for v in many)
    return f"{passed} passed, {len(many) - passed} failed"


def exit_code(verdicts: Verdict | Sequence[Verdict]) -> int:
    """0 when every scenario passed, 1 otherwise (also when there was none to judge)."""
    many = _many(verdicts)
    return 0 if many and all(v.passed for v in many) else 1


# -- terminal and text ---------------------------------------------------------------------------


def print_report(
    verdicts: Verdict | Sequence[Verdict],
    *,
    console: Console | None = None,
    failed_only: bool = False,
) -> None:
    """Print the report on *console* (a new stdout console by default), with colour if it can.

    *failed_only*: the reports of the failed scenarios only (the summary still counts all).
    """
    _render(console or Console(), _many(verdicts), plain=False, total=True, failed_only=failed_only)


def render_text(verdicts: Verdict | Sequence[Verdict], *, width: int = 120) -> str:
    """The report as plain text (no colour, ASCII tables), lines at most *width* long.

    The summary line ends the report of a sequence of verdicts, not that of a single one (the
    text of an assertion or of one JUnit test case).
    """
    out = io.StringIO()
    console = Console(
        file=out,
        width=width,
        color_system=None,
        force_terminal=False,
        no_color=True,
        highlight=False,
        emoji=False,
        soft_wrap=False,
    )
    _render(console, _many(verdicts), plain=True, total=not isinstance(verdicts, Verdict))
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"


def render_html(verdicts: Verdict | Sequence[Verdict], *, width: int = 120) -> str:
    """The terminal report as HTML: the same lines, tables and colours as :func:`print_report`
    (rich's export), in one ``<pre class="report">`` (the dashboard's report page)."""
    console = Console(
        file=io.StringIO(),
        record=True,
        width=width,
        color_system="truecolor",
        force_terminal=True,
        highlight=False,
        emoji=False,
        soft_wrap=False,
    )
    _render(console, _many(verdicts), plain=False, total=not isinstance(verdicts, Verdict))
    return console.export_html(
        inline_styles=True,
        code_format='<pre class="report" style="color:{foreground};background-color:{background}">'
        "<code>{code}</code></pre>",
    )


def _render(
    console: Console,
    verdicts: Sequence[Verdict],
    *,
    plain: bool,
    total: bool,
    failed_only: bool = False,
) -> None:
    table_box = box.ASCII2 if plain else box.SIMPLE_HEAD
    for verdict in verdicts:
        if not (failed_only and verdict.passed):
            _render_one(console, verdict, table_box)
    if not total:
        return
    line = Text(summary(verdicts), style="bold")
    if not plain:
        line.stylize("green" if verdicts and all(v.passed for v in verdicts) else "red")
    console.print(line)


def _render_one(console: Console, verdict: Verdict, table_box: box.Box) -> None:
    status = Text("PASS", style="bold green") if verdict.passed else Text("FAIL", style="bold red")
    head = Text.assemble(status, " ", (verdict.scenario, "bold"))
    if verdict.path:
        head.append(f" ({verdict.path})")
    plural = "" if verdict.callbacks == 1 else "s"
    head.append(f"  {verdict.duration:.1f} s, {verdict.callbacks} callback{plural}")
    # Lines outside the tables are never wrapped: a long path or address stays searchable.
    console.print(head, soft_wrap=True)
    for note in verdict.notes:
        console.print(Text(f"note: {note}", style="yellow"), soft_wrap=True)

    table = Table(box=table_box, show_edge=False, pad_edge=False, expand=False)
    table.add_column("expectation", overflow="fold")
    table.add_column("met", no_wrap=True)
    table.add_column("evidence", overflow="fold")
    for result in verdict.expectations:
        met = Text("yes", style="green") if result.met else Text("NO", style="bold red")
        table.add_row(f"{result.path}: {result.description}", met, result.reason)
    console.print(table)

    for result in verdict.failures:
        if result.kind == "callback":
            _render_diff(console, result)

    if verdict.violations:
        failing = verdict.failing_violations
        vtable = Table(box=table_box, show_edge=False, pad_edge=False, title_justify="left")
        vtable.add_column("code", no_wrap=True)
        vtable.add_column("severity", no_wrap=True)
        vtable.add_column("path", overflow="fold")
        vtable.add_column("message", overflow="fold")
        vtable.add_column("journal", overflow="fold")
        for violation in verdict.violations:
            severity = str(violation.severity)
            if violation not in failing and violation.code in verdict.allowed:
                severity += " (allowed)"
            style = "red" if violation in failing else "yellow"
            detail = []
            if violation.expected is not None:
                detail.append(f"expected {violation.expected}")
            if violation.seen is not None:
                detail.append(f"seen {violation.seen}")
            message = violation.message + (f" ({', '.join(detail)})" if detail else "")
            seqs = ", ".join(str(s) for s in violation.evidence)
            code = Text(violation.code, style=style)
            vtable.add_row(code, severity, violation.path, message, seqs or "-")
        console.print(Text(f"violations: {len(verdict.violations)}", style="bold"))
        console.print(vtable)
    console.print()


def _render_diff(console: Console, result: ExpectationResult) -> None:
    """Expected next to the nearest callbacks that did arrive, as a diff."""
    console.print(Text(f"{result.path}: expected vs seen", style="bold"), soft_wrap=True)
    console.print(Text(f"  - expected  {result.description}", style="green"), soft_wrap=True)
    if not result.nearest:
        console.print(Text("  + seen      no callback at all", style="red"), soft_wrap=True)
    for event in result.nearest:
        console.print(Text(f"  + seen      {event.describe()}", style="red"), soft_wrap=True)
    if result.world:
        console.print(Text("  the mail world, for this recipient:"), soft_wrap=True)
    for line in result.world:
        console.print(Text(f"    {line}"), soft_wrap=True)


# -- JSON ----------------------------------------------------------------------------------------


def report_json(verdicts: Verdict | Sequence[Verdict]) -> dict[str, Any]:
    """The JSON report (see the module docstring for its stable shape)."""
    many = _many(verdicts)
    passed = sum(v.passed for v in many)
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "passed": bool(many) and passed == len(many),
        "summary": {"total": len(many), "passed": passed, "failed": len(many) - passed},
        "scenarios": [v.to_json() for v in many],
    }


def write_json(verdicts: Verdict | Sequence[Verdict], path: str | Path) -> None:
    """Write :func:`report_json` to *path* (UTF-8, indented)."""
    text = json.dumps(report_json(verdicts), indent=2, ensure_ascii=False) + "\n"
    Path(path).write_text(text, encoding="utf-8")


# -- JUnit XML -----------------------------------------------------------------------------------


def junit_xml(
    verdicts: Verdict | Sequence[Verdict],
    *,
    name: str = "clevertap-harness",
    timestamp: datetime | None = None,
) -> str:
    """The run as JUnit XML: one testsuite, one testcase per scenario."""
    many = _many(verdicts)
    failed = sum(not v.passed for v in many)
    total_time = sum(v.duration for v in many)
    when = timestamp or (
        datetime.fromtimestamp(min(v.started for v in many), UTC) if many else datetime.now(UTC)
    )
    counts = {
        "tests": str(len(many)),
        "failures": str(failed),
        "errors": "0",
        "skipped": "0",
        "time": f"{total_time:.3f}",
    }
    root = ET.Element("testsuites", {"name": name, **{k: counts[k] for k in counts}})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": name,
            **counts,
            "timestamp": when.replace(tzinfo=None).isoformat(timespec="seconds"),
            "hostname": "localhost",
        },
    )
    for verdict in many:
        attributes = {
            "name": verdict.scenario,
            "classname": _classname(verdict),
            "time": f"{verdict.duration:.3f}",
        }
        if verdict.path:
            attributes["file"] = verdict.path
        case = ET.SubElement(suite, "testcase", attributes)
        text = render_text(verdict)
        if not verdict.passed:
            failure = ET.SubElement(
                case, "failure", {"message": _failure_message(verdict), "type": "ScenarioFailed"}
            )
            failure.text = text
        else:
            out = ET.SubElement(case, "system-out")
            out.text = text
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(verdicts: Verdict | Sequence[Verdict], path: str | Path, **options: Any) -> None:
    """Write :func:`junit_xml` to *path* (UTF-8)."""
    Path(path).write_text(junit_xml(verdicts, **options), encoding="utf-8")


def _classname(verdict: Verdict) -> str:
    if verdict.path:
        parent = Path(verdict.path).parent.name
        if parent:
            return f"harness.{parent}"
    return "harness.scenarios"


def _failure_message(verdict: Verdict) -> str:
    unmet = verdict.failures
    first = unmet[0] if unmet else None
    errors = [v for v in verdict.failing_violations if v.severity is Severity.ERROR]
    parts = [f"{len(unmet)} of {len(verdict.expectations)} expectations not met"]
    if first is not None:
        parts.append(f"{first.path}: {first.description}: {first.reason}")
    if errors:
        parts.append(f"{len(errors)} violations")
    return "; ".join(parts)

"""How the dashboard shows records: one-line summaries, payloads with their violating paths
marked, transcripts and raw messages. Pure functions of the typed records; no journal reads."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

from harness.clevertap.inspect import _key_path  # the one spelling of a violation's JSON path
from harness.journal import Entry
from harness.records import (
    Callback,
    Click,
    Dsn,
    DsnSkipped,
    FaultsChanged,
    HostChange,
    Sent,
    SmtpClose,
    SmtpMessage,
    SmtpOpen,
    SmtpReply,
    SubmissionProbe,
    ViolationFound,
)

__all__ = ["clock", "payload_html", "summary", "transcript"]


def clock(at: float) -> str:
    """``HH:MM:SS.mmm`` UTC: entries of one run are seconds apart, the date adds nothing."""
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")[:-3]


def summary(entry: Entry) -> str:
    """One line that says what the entry is about."""
    r = entry.data
    if isinstance(r, Callback):
        answer = f"→ {r.status}" if r.status is not None else "→ no answer"
        events = ", ".join(f"{e.event} {e.email}" for e in r.events[:3])
        if len(r.events) > 3:
            events += f" (+{len(r.events) - 3})"
        fault = f" [fault {r.fault.spec}]" if r.fault else ""
        if r.endpoint is None:
            # Journaled so that staging sees it (docs/server.md, wrong paths).
            return f"{r.method} {r.path} {answer}: no callback endpoint at this path"
        return f"{r.method} {r.path} {answer}{fault}: {events or 'no events'}"
    if isinstance(r, SmtpOpen):
        variant = f" playing {r.variant}" if r.variant else ""
        return f"{r.host} {r.session} opened by {r.peer}{variant}"
    if isinstance(r, SmtpReply):
        mode = f" ({r.mode})" if r.mode else ""
        return f"{r.host} {r.stage} {r.recipient}: {r.reply}{mode}"
    if isinstance(r, SmtpMessage):
        subject = f" “{r.subject}”" if r.subject else ""
        to = ", ".join(a.address for a in r.recipients)
        return f"{r.host} accepted {r.id} from {r.sender or '<>'} for {to} ({r.size} B){subject}"
    if isinstance(r, SmtpClose):
        return (
            f"{r.host} {r.session} ended ({r.end}) after {r.duration:.2f} s, "
            f"{len(r.commands) + r.commands_dropped} commands"
        )
    if isinstance(r, Dsn):
        sent = "sent" if r.ok else f"NOT sent: {r.error or r.reply}"
        if r.report != "dsn":
            what = "auto-reply" if r.report == "auto_reply" else "complaint"
            by = ", ".join(x.recipient for x in r.recipients)
            return f"{what} ({r.style}) from {by} to {r.to} {sent}"
        statuses = ", ".join(f"{x.recipient} {x.action} {x.status}" for x in r.recipients)
        return f"DSN ({r.dialect}) to {r.to} {sent}: {statuses}"
    if isinstance(r, DsnSkipped):
        return f"DSN not sent for {', '.join(r.recipients)}: {r.reason}"
    if isinstance(r, Sent):
        state = "ok" if r.ok else f"failed: {r.error or r.reply}"
        return f"sent {r.message_id} to {', '.join(r.to)} ({state})"
    if isinstance(r, Click):
        state = f"→ {r.status}" if r.status is not None else f"failed: {r.error}"
        if r.scan:
            return f"link scanner fetched {r.recipient}'s links {state}"
        return f"{r.recipient} unsubscribed via {r.via} {state}"
    if isinstance(r, SubmissionProbe):
        state = "ACCEPTED" if r.accepted else "refused"
        answer = r.error or f"{r.stage} {r.reply}"
        return f"submission probe {r.probe}: {state} ({answer})"
    if isinstance(r, ViolationFound):
        return f"{r.violation.code} {r.violation.message}"
    if isinstance(r, HostChange):
        variant = f" ({r.variant})" if r.variant else ""
        return f"host {r.host} {r.state}{variant}"
    if isinstance(r, FaultsChanged):
        return "faults: " + ("; ".join(r.rules) if r.rules else "none")
    return f"{r.source}: {r.what} {r.detail}".rstrip()  # a Note: every other kind is above


def payload_html(body: str, marked: Collection[str]) -> Markup:
    """*body* (JSON text) indented, each value whose JSON path is in *marked* wrapped in a
    ``<mark>`` that names the path; the body as it came when it is not JSON."""
    try:
        value = json.loads(body)
    except ValueError:
        return Markup("<pre class=payload>{}</pre>").format(body)
    out: list[str] = []
    _render(value, "$", 0, marked, out)
    return Markup("<pre class=payload>" + "".join(out) + "</pre>")


def _render(value: Any, path: str, depth: int, marked: Collection[str], out: list[str]) -> None:
    pad = "  " * (depth + 1)
    end = "  " * depth
    if path in marked:
        out.append(f'<mark title="{escape(path)}">')
    if isinstance(value, dict) and value:
        out.append("{\n")
        for i, (key, item) in enumerate(value.items()):
            out.append(f"{pad}{escape(json.dumps(key, ensure_ascii=False))}: ")
            _render(item, _key_path(path, key), depth + 1, marked, out)
            out.append(",\n" if i < len(value) - 1 else "\n")
        out.append(end + "}")
    elif isinstance(value, list) and value:
        out.append("[\n")
        for i, item in enumerate(value):
            out.append(pad)
            _render(item, f"{path}[{i}]", depth + 1, marked, out)
            out.append(",\n" if i < len(value) - 1 else "\n")
        out.append(end + "]")
    else:
        out.append(str(escape(json.dumps(value, ensure_ascii=False))))
    if path in marked:
        out.append("</mark>")


def transcript(record: SmtpClose) -> list[tuple[str, str]]:
    """The session as ``(who, line)`` pairs: ``S`` server, ``C`` client.

    The record keeps commands and reply lines apart; they are put back in order by reply
    (a multi-line reply continues while its fourth character is ``-``): the greeting, then
    each command and its reply, and after a ``354`` the message and its end-of-data reply. A
    session cut in the middle, or one that does not pair up, shows the commands, then the
    replies.
    """
    units: list[list[str]] = []
    for line in record.replies:
        if units and units[-1][-1][3:4] == "-":
            units[-1].append(line.reply)
        else:
            units.append([line.reply])
    lines: list[tuple[str, str]] = []
    if not record.commands_dropped and units:
        pending = iter(units)
        lines += [("S", r) for r in next(pending)]
        try:
            for command in record.commands:
                lines.append(("C", command))
                reply = next(pending)
                lines += [("S", r) for r in reply]
                if command.upper().startswith("DATA") and reply[-1].startswith("354"):
                    lines.append(("C", "<the message, then .>"))
                    lines += [("S", r) for r in next(pending)]
        except StopIteration:
            pass  # the last command got no reply (the client or the server hung up)
        if next(pending, None) is None:
            return lines
    lines = [("C", c) for c in record.commands]
    if record.commands_dropped:
        lines.insert(len(lines) // 2, ("…", f"{record.commands_dropped} commands left out"))
    lines += [("S", r.reply) for r in record.replies]
    return lines

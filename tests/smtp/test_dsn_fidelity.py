"""Postfix and Exim dialects against the real DSNs of Postfix 3.7.11 and Exim 4.96.

Each real DSN in ``../shared/reference/real-dsns/`` is read for its *situation* (who sent what
to whom, what the remote server answered and at which command, RET, ENVID, ORCPT, SMTPUTF8,
when) and the harness builds its own DSN for the same situation. The two must then agree on
everything but run-specific values: top-level headers and their order, the MIME tree (content
types, charsets, transfer encodings, part headers), per-message and per-recipient fields and
their order, Action and Status, the form of every typed field, what is returned, and the
explanation text once dates, ids and boundaries are masked.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from harness.smtp.dsn import OriginalMessage, RecipientReport, build_dsn, dsn_bytes

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "reference" / "real-dsns"
FILES = sorted(p.name for p in REAL.glob("*.eml")) if REAL.is_dir() else []

pytestmark = pytest.mark.skipif(
    not FILES, reason=f"the real DSNs are not at {REAL} (a checkout without ../shared)"
)

_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_RETURNED_TYPES = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/global-headers",
)
_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_EXPIRED = ": retry timeout exceeded"
# Headers a local delivery agent adds when it stores a DSN in a mailbox (postfix-13).
_MAILBOX_HEADERS = ("return-path", "x-original-to", "delivered-to")


def parse(data: bytes) -> Message:
    return email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.compat32)


def text(value: object) -> str:
    """A header value as str, 8-bit bytes decoded (compat32 keeps them surrogate-escaped)."""
    raw = str(value).encode("utf-8", "surrogateescape")
    return " ".join(raw.decode("utf-8", "replace").split())


def blocks_of(part: Message) -> list[Message]:
    payload = part.get_payload()
    assert isinstance(payload, list)
    if part.get_content_type() == "message/delivery-status":
        return payload
    # message/global-delivery-status is parsed as one embedded message: headers, then body.
    inner = payload[0]
    body = str(inner.get_payload())
    rest = [
        email.message_from_string(c, policy=email.policy.compat32)
        for c in body.split("\n\n")
        if c.strip()
    ]
    return [inner, *rest]


def find(message: Message, types: tuple[str, ...]) -> Message:
    return next(p for p in message.walk() if p.get_content_type() in types)


def strip_trace(head: str) -> str:
    """The stored message's headers without the MTA's Return-Path and Received lines."""
    lines = head.split("\n")
    out: list[str] = []
    skipping = 0
    for line in lines:
        if (
            skipping < 2
            and line[:1] not in (" ", "\t")
            and line.split(":")[0].lower()
            in (
                "return-path",
                "received",
            )
        ):
            skipping += 1
            continue
        if line[:1] in (" ", "\t") and not out and skipping:
            continue
        out.append(line)
    return "\n".join(out)


@dataclass(frozen=True)
class Situation:
    original: OriginalMessage
    reports: list[RecipientReport]
    mta: str
    now: datetime


def situation(real: Message) -> Situation:
    """What happened, read from the real DSN (the inputs, never the output's form)."""
    status_part = find(real, _STATUS_TYPES)
    per_message, *blocks = blocks_of(status_part)
    mta = text(per_message["Reporting-MTA"]).partition(";")[2].strip()
    now = parsedate_to_datetime(text(real["Date"]).split(" (")[0])
    human = str(find(real, ("text/plain",)).get_payload(decode=True).decode())
    in_reply_to = "end of DATA" if re.search(r"end of data", human, re.I) else "RCPT TO"
    returned = find(real, _RETURNED_TYPES)
    payload = returned.get_payload()
    if isinstance(payload, list):
        inner = payload[0].as_bytes(policy=email.policy.compat32.clone(linesep="\n"))
    else:
        inner = str(payload).encode("ascii", "surrogateescape")
    head, _, body = inner.partition(b"\n\n")
    head_text = head.decode("utf-8", "surrogateescape")
    received = re.search(r"^Received:.*?;\s*(.+?)$", head_text, re.M | re.S)
    arrival_field = per_message.get("Arrival-Date")
    if arrival_field is not None:
        arrival = parsedate_to_datetime(text(arrival_field).split(" (")[0])
    else:
        assert received is not None
        arrival = parsedate_to_datetime(" ".join(received.group(1).split()).split(" (")[0])
    actions = {text(b["Action"]).lower() for b in blocks}
    headers_only = returned.get_content_type() in ("text/rfc822-headers", "message/global-headers")
    content = strip_trace(head_text).encode("utf-8", "surrogateescape") + b"\n\n" + body
    reports = []
    for block in blocks:
        action = text(block["Action"]).lower()
        status = text(block["Status"])
        diagnostic = (
            text(block["Diagnostic-Code"]).partition(";")[2].strip()
            if block["Diagnostic-Code"]
            else None
        )
        expired = diagnostic is not None and diagnostic.endswith(_EXPIRED)
        if expired and diagnostic is not None:
            diagnostic = diagnostic[: -len(_EXPIRED)]
        if status in ("5.0.0", "4.0.0", "2.0.0"):
            # Exim's generic status: the real code is in the reply, or the server never answered.
            found = _ENHANCED.search(diagnostic or "")
            if found:
                status = found.group(1)
            elif action in ("failed", "delayed"):
                status = "4.4.1"
        if action == "delayed" or expired:
            status = "4" + status[1:]
        if diagnostic is None and action in ("failed", "delayed"):
            diagnostic = "connect to 127.0.0.1[127.0.0.1]:2599: Connection refused"
        until = block.get("Will-Retry-Until")
        reports.append(
            RecipientReport(
                recipient=text(block["Final-Recipient"]).partition(";")[2].strip(),
                action=action,
                status=status,
                diagnostic=diagnostic,
                orcpt=text(block["Original-Recipient"]) if block["Original-Recipient"] else None,
                notify=frozenset({"SUCCESS"}) if action in ("delivered", "relayed") else None,
                remote_mta="127.0.0.1[127.0.0.1]" if block["Remote-MTA"] else None,
                in_reply_to=in_reply_to,
                will_retry_until=(
                    parsedate_to_datetime(text(until).split(" (")[0]).timestamp() if until else None
                ),
            )
        )
    failed = real["X-Failed-Recipients"]
    if failed is not None:
        # Exim lists the failures in its own order there and in the text, and writes the
        # status blocks the other way round: the header gives the order it handled them in.
        order = [a.strip() for a in text(failed).split(",")]
        reports.sort(key=lambda r: order.index(r.recipient))
    envid = per_message.get("Original-Envelope-Id")
    original = OriginalMessage(
        envelope_sender=text(real["To"]),
        content=content,
        envid=text(envid) if envid else None,
        ret="HDRS" if headers_only and "delayed" not in actions else None,
        arrival=arrival.timestamp(),
        smtputf8=status_part.get_content_type() == "message/global-delivery-status",
    )
    return Situation(original, reports, mta, now)


def masked(value: str) -> str:
    """*value* without run-specific parts: digits, Exim and Postfix ids, boundaries."""
    value = re.sub(r"\b1[0-9A-Za-z]{5}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\b", "EXIMID", value)
    value = re.sub(r"\b[0-9A-F]{10,12}\b", "QUEUEID", value)
    return re.sub(r"\d+", "0", value)


def typed(value: object) -> str:
    """The form of a typed field: ``"rfc822; "``, ``"smtp; 550"`` (type, spacing, reply code)."""
    raw = text(value)
    kind, sep, rest = str(value).partition(";")
    spacing = rest[: len(rest) - len(rest.lstrip())]
    code = re.match(r"\s*(\d{3})", rest)
    return (
        f"{kind}{sep}{spacing}"
        + (code.group(1) if code else "")
        + (_EXPIRED if raw.endswith(_EXPIRED) else "")
    )


_TYPED = ("final-recipient", "original-recipient", "remote-mta", "diagnostic-code", "reporting-mta")


def skeleton(message: Message) -> dict[str, Any]:
    """Everything about *message* that is not specific to one run."""
    names = list(message.keys())
    if names and names[0].lower() in _MAILBOX_HEADERS:
        names = [n for n in names if n.lower() not in _MAILBOX_HEADERS]
    boundary = message.get_boundary() or ""
    tree: list[dict[str, Any]] = []

    def describe(part: Message, depth: int) -> None:
        tree.append(
            {
                "depth": depth,
                "type": part.get_content_type(),
                "charset": part.get_content_charset(),
                "headers": list(part.keys()) if depth else None,
                "cte": part.get("Content-Transfer-Encoding"),
                "description": part.get("Content-Description"),
            }
        )
        # Into multiparts, not into returned messages (their headers are compared below).
        if part.get_content_maintype() == "multipart":
            for child in part.get_payload():
                describe(child, depth + 1)

    describe(message, 0)
    status_part = find(message, _STATUS_TYPES)
    blocks = []
    for block in blocks_of(status_part):
        fields = {}
        for name, value in block.items():
            key = name.lower()
            if key in _TYPED:
                fields[name] = typed(value)
            elif key in ("action", "status"):
                fields[name] = text(value)
            elif key.endswith("date") or key == "will-retry-until":
                fields[name] = masked(text(value))
            else:
                fields[name] = None
        blocks.append(fields)
    returned = find(message, _RETURNED_TYPES)
    payload = returned.get_payload()
    if isinstance(payload, list):
        returned_names = list(payload[0].keys())
        returned_body = bool(str(payload[0].get_payload()).strip())
    else:
        returned_names = [
            line.split(":")[0] for line in str(payload).split("\n") if line and line[0] not in " \t"
        ]
        returned_body = False
    human = str(find(message, ("text/plain",)).get_payload(decode=True).decode("utf-8", "replace"))
    return {
        "headers": names,
        "content-type": text(message["Content-Type"]).replace(boundary, "BOUNDARY"),
        "date": masked(text(message["Date"])),
        # The mailer-daemon's domain is the MTA's own setting (myorigin, qualify_domain).
        "from": re.sub(r"@[^>\s]+", "@HOST", text(message["From"])),
        "subject": masked(text(message["Subject"])),
        "auto-submitted": text(message["Auto-Submitted"]),
        "x-failed-recipients": text(message["X-Failed-Recipients"])
        if message["X-Failed-Recipients"]
        else None,
        "preamble": message.preamble,
        "tree": tree,
        "blocks": blocks,
        "returned": {
            "type": returned.get_content_type(),
            "headers": returned_names,
            "body": returned_body,
        },
        "text": masked(human).rstrip("\n").split("\n"),
    }


@pytest.mark.parametrize("name", FILES)
def test_the_harness_dsn_matches_the_real_one(name: str) -> None:
    real = parse((REAL / name).read_bytes())
    case = situation(real)
    dialect = name.split("-")[0]
    ours_message = build_dsn(
        case.original, case.reports, dialect=dialect, reporting_mta=case.mta, now=case.now
    )
    assert ours_message is not None
    ours = parse(dsn_bytes(ours_message, crlf=True))
    expected, seen = skeleton(real), skeleton(ours)
    for key in expected:
        assert seen[key] == expected[key], f"{name}: {key} differs"


def test_every_real_dsn_is_checked() -> None:
    # 13 from Postfix, 11 from Exim (MANIFEST.md); a missing file would shrink the check.
    assert len([f for f in FILES if f.startswith("postfix-")]) == 13
    assert len([f for f in FILES if f.startswith("exim-")]) == 11

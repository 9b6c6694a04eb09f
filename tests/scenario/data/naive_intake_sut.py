"""A naive integration for the report tests, started as a real subprocess: it relays, and its
bounce processor reports whatever arrives at its intake with one fixed event.

It follows docs/integration-contract.md as far as the runner needs (``HARNESS_HOST``, the ready
file, ``HARNESS_MX_MAP``, the callback URLs of both formats, SIGTERM): each submitted recipient
is relayed on its own from the VERP address ``bounces+LOCAL=DOMAIN@naive.test``. Its intake is
the classic bug of a bounce processor that never looks at what it got. Knobs (environment):

- ``NAIVE_EVENT``: the event every mail at the intake becomes (``hardbounce``, ``softbounce``,
  ``unsubscribe``, ``hard_bounce``, ``spam``, ``unsubscribed``...), or ``none`` to report
  nothing at all;
- ``NAIVE_ADDRESS=final``: take the address from the DSN's ``Final-Recipient`` (or an ARF
  report's ``Original-Rcpt-To``) instead of the VERP address.

Every report is logged to stderr as ``reported EVENT ADDRESS: STATUS``.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
from aiosmtpd.smtp import SMTP, Envelope, Session

SENDER_DOMAIN = "naive.test"


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def verp(recipient: str) -> str:
    local, _, domain = recipient.rpartition("@")
    return f"bounces+{local}={domain}@{SENDER_DOMAIN}"


def unverp(address: str) -> str | None:
    local = address.partition("@")[0]
    tag, plus, rest = local.partition("+")
    if tag != "bounces" or not plus or "=" not in rest:
        return None
    user, _, domain = rest.rpartition("=")
    return f"{user}@{domain}"


class Relay:
    """The submission listener: relays each recipient on its own."""

    def __init__(self) -> None:
        self.metas: dict[str, str] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        parsed = email.message_from_bytes(content, policy=email.policy.compat32)
        meta = " ".join(str(parsed.get("X-CleverTap_META", "")).split())
        for rcpt in envelope.rcpt_tos:
            self.metas[rcpt.lower()] = meta
            task = asyncio.create_task(relay(rcpt, content))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return "250 2.0.0 queued"


async def relay(rcpt: str, content: bytes) -> None:
    mx = {k.lower(): v for k, v in json.loads(os.environ.get("HARNESS_MX_MAP") or "{}").items()}
    target = mx.get(rcpt.rpartition("@")[2].lower())
    if target is None:
        log(f"no MX for {rcpt}")
        return
    host, _, port = target.rpartition(":")
    try:
        await aiosmtplib.send(
            content, sender=verp(rcpt), recipients=[rcpt], hostname=host, port=int(port)
        )
        log(f"relayed {rcpt}")
    except aiosmtplib.SMTPException as exc:
        log(f"relay of {rcpt} failed: {exc}")


class Intake:
    """The bounce intake: every mail becomes NAIVE_EVENT for one address."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = email.message_from_bytes(
            envelope.original_content or b"", policy=email.policy.default
        )
        for rcpt in envelope.rcpt_tos:
            address = unverp(rcpt)
            if os.environ.get("NAIVE_ADDRESS") == "final":
                address = named_in(message) or address
            if address is None:
                log(f"intake: nobody to report for {rcpt}")
                continue
            task = asyncio.create_task(report(address, self.relay.metas.get(address.lower(), "")))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return "250 2.0.0 Ok"


def named_in(message: email.message.Message) -> str | None:
    """The Final-Recipient of a DSN, or the Original-Rcpt-To of an ARF report."""
    for part in message.walk():
        if part.get_content_type() in ("message/delivery-status", "message/feedback-report"):
            for block in part.get_payload():
                for name in ("Final-Recipient", "Original-Rcpt-To"):
                    value = block.get(name)
                    if value:
                        return str(value).rpartition(";")[2].strip(" <>")
    return None


async def report(address: str, meta: str) -> None:
    event = os.environ.get("NAIVE_EVENT", "hardbounce")
    if event == "none":
        log(f"not reporting {address}")
        return
    body: Any
    if os.environ.get("HARNESS_CALLBACK_FORMAT") == "v2":
        url = os.environ["HARNESS_V2_URL"]
        item = {"type": event, "email": address, "meta": meta}
        success, failed = ([item], []) if event == "delivered" else ([], [item])
        body = {"version": "v2", "events": {"success": success, "failed": failed}}
    else:
        which = "UNSUBSCRIBE" if event == "unsubscribe" else "BOUNCE"
        url = os.environ[f"HARNESS_{which}_URL"]
        body = [{"event": event, "data": [{"e": address, "ts": int(time.time())}]}]
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.post(url, json=body)
    log(f"reported {event} {address}: {response.status_code}")


async def main() -> int:
    loop = asyncio.get_running_loop()
    host = os.environ["HARNESS_HOST"]
    relay_handler = Relay()
    submission = await loop.create_server(
        lambda: SMTP(relay_handler, hostname="naive.test"), host, 0
    )
    intake = await loop.create_server(
        lambda: SMTP(Intake(relay_handler), hostname="intake.naive.test"), host, 0
    )
    smtp_port = submission.sockets[0].getsockname()[1]
    intake_port = intake.sockets[0].getsockname()[1]
    ready = Path(os.environ["HARNESS_READY_FILE"])
    tmp = ready.with_name(ready.name + ".tmp")
    addresses = {"smtp": f"{host}:{smtp_port}", "bounce_intake": f"{host}:{intake_port}"}
    tmp.write_text(json.dumps(addresses), encoding="utf-8")
    os.replace(tmp, ready)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    log("ready")
    await stop.wait()
    submission.close()
    intake.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

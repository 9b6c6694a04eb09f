"""A minimal integration under test for the runner's own tests, started as a real subprocess.

It follows the parts of docs/integration-contract.md the runner relies on (``HARNESS_HOST``,
``HARNESS_READY_FILE`` written atomically, SMTP submission with SMTPUTF8, SIGTERM) and nothing
else: it relays nothing. Knobs (environment):

- ``MINI_BOUNCE=1``: report every submitted recipient as a legacy ``hardbounce`` at once;
- ``MINI_DUPLICATE=S``: report it again S seconds later (a duplicate);
- ``MINI_DEAF=1``: ignore SIGTERM (the runner must kill it);
- ``MINI_EXIT_AFTER=S``: exit on its own, status 3, S seconds after it is ready;
- ``MINI_NO_UTF8=1``: do not offer SMTPUTF8.

Every submission is logged to stderr as ``got FROM -> TO utf8=BOOL``; every ``HARNESS_*``
variable it was given as ``env NAME=VALUE``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.smtp import SMTP, Envelope, Session


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Handler:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        utf8 = "SMTPUTF8" in envelope.mail_options
        for rcpt in envelope.rcpt_tos:
            log(f"got {envelope.mail_from} -> {rcpt} utf8={utf8}")
            if os.environ.get("MINI_BOUNCE") == "1":
                task = asyncio.create_task(report(rcpt))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        return "250 2.0.0 queued"


async def report(rcpt: str) -> None:
    url = os.environ["HARNESS_BOUNCE_URL"]
    body: Any = [{"event": "hardbounce", "data": [{"e": rcpt, "ts": int(time.time())}]}]
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.post(url, json=body)
        log(f"reported {rcpt}: {response.status_code}")
        duplicate = os.environ.get("MINI_DUPLICATE")
        if duplicate:
            await asyncio.sleep(float(duplicate))
            response = await client.post(url, json=body)
            log(f"reported {rcpt} again: {response.status_code}")


async def main() -> int:
    loop = asyncio.get_running_loop()
    host = os.environ["HARNESS_HOST"]
    for name in sorted(os.environ):
        if name.startswith("HARNESS_"):
            log(f"env {name}={os.environ[name]}")
    handler = Handler()
    utf8 = os.environ.get("MINI_NO_UTF8") != "1"
    server = await loop.create_server(
        lambda: SMTP(handler, enable_SMTPUTF8=utf8, hostname="mini.test"), host, 0
    )
    port = server.sockets[0].getsockname()[1]
    ready = Path(os.environ["HARNESS_READY_FILE"])
    tmp = ready.with_name(ready.name + ".tmp")
    tmp.write_text(json.dumps({"smtp": f"{host}:{port}"}), encoding="utf-8")
    os.replace(tmp, ready)
    stop = asyncio.Event()
    if os.environ.get("MINI_DEAF") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log("ready, deaf to SIGTERM")
    else:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        log("ready")
    exit_after = os.environ.get("MINI_EXIT_AFTER")
    if exit_after:
        await asyncio.sleep(float(exit_after))
        log("leaving on my own")
        return 3
    await stop.wait()
    log("SIGTERM: stopping")
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

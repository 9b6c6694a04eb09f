"""One Postfix run with every catalog mode: a private Postfix relays to the harness's fake MX hosts.

Every per-recipient mode gets a recipient ``<mode>@rcpt.test`` on one host, every server-down
variant a host (and a domain) of its own, and each recipient its own message (end-of-DATA modes
answer for the whole transaction, and Postfix puts the recipients of one message for one host
into one transaction). Postfix routes with the harness's own transport map
(:meth:`MailWorld.postfix_transport_map`, as a ``texthash:`` file) and sends its DSNs to a
Maildir intake. The run ends when every recipient's fate is logged (sent, bounced or expired) and
the queue is empty, i.e. every DSN was delivered.

The result is plain JSON data, so that under pytest-xdist one worker runs Postfix and the others
read its result (see ``conftest.py``).
"""

from __future__ import annotations

import smtplib
import tempfile
import time
from email.message import Message
from pathlib import Path
from typing import Any

from harness.smtp.catalog import CATALOG, Stage
from harness.smtp.world import MailWorld
from tests.realmta.intake import MaildirIntake
from tests.realmta.journal_reads import decisions_by_recipient, sessions_of_host
from tests.realmta.postfix import PrivatePostfix, wait_until

__all__ = ["GREYLIST_THEN_ACCEPT", "OVERSIZE", "RECIPIENTS", "SENDER", "host_name", "run_relay"]

SENDER = "news@brand.test"
RCPT_DOMAIN = "rcpt.test"
GREYLIST_THEN_ACCEPT = f"greylist-then-accept@{RCPT_DOMAIN}"
OVERSIZE = "user@small.test"
"""A host with a small size limit: Postfix declares SIZE= at MAIL and meets ``too_large`` there."""
SMALL_LIMIT = 2000


def down_domain(variant: str) -> str:
    return f"{host_name(variant)}.test"


def host_name(variant: str) -> str:
    """The fake MX host playing the server-down *variant*."""
    return variant.replace("_", "-")


def _recipients() -> dict[str, str]:
    """Recipient -> the catalog mode it plays."""
    found: dict[str, str] = {}
    for name, mode in CATALOG.items():
        if mode.server_down:
            found[f"user@{down_domain(name)}"] = name
        else:
            found[f"{name.replace('_', '-')}@{RCPT_DOMAIN}"] = name
    found[GREYLIST_THEN_ACCEPT] = "greylist"
    found[OVERSIZE] = "too_large"
    return found


RECIPIENTS = _recipients()
FINAL = frozenset({"sent", "bounced", "expired"})


def _rules() -> dict[str, Any]:
    rules: dict[str, Any] = {}
    for rcpt, name in RECIPIENTS.items():
        if rcpt.endswith("@" + RCPT_DOMAIN):
            if CATALOG[name].stage is Stage.LATER:
                # queue_expiry only exists inside a DSN: accepted now, reported later.
                rules[rcpt] = {"accept_then_bounce": name, "after": "1s", "dsn": "postfix"}
            else:
                rules[rcpt] = name
    rules[GREYLIST_THEN_ACCEPT] = ["greylist", "accept"]
    return rules


def build_world(journal_intake: Path) -> MailWorld:
    world = MailWorld(bounce_intake=journal_intake)
    world.add_host("mx", domains=[RCPT_DOMAIN], rules=_rules())
    world.add_host("small", domains=["small.test"], size_limit=SMALL_LIMIT)
    for name, mode in CATALOG.items():
        if mode.server_down:
            options: dict[str, Any] = {"server_down": name}
            if name == "tls_broken":
                options["tls"] = "starttls"
            world.add_host(host_name(name), domains=[down_domain(name)], **options)
    return world


def _message(rcpt: str) -> bytes:
    body = "Hello from the real-MTA suite.\r\n"
    if rcpt == OVERSIZE:
        body += ("x" * 70 + "\r\n") * (2 * SMALL_LIMIT // 70)
    return (
        f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: realmta {rcpt}\r\n"
        f"Message-ID: <{rcpt}.realmta@brand.test>\r\n\r\n{body}"
    ).encode()


def _queue_empty(postfix: PrivatePostfix) -> bool | None:
    for sub in ("maildrop", "incoming", "active", "deferred"):
        folder = postfix.queue / sub
        if folder.exists() and any(p.is_file() for p in folder.rglob("*")):
            return None
    return True


def run_relay(timeout: float = 100.0) -> dict[str, Any]:
    """Run Postfix against every mode; return what happened, as JSON data."""
    workdir = Path(tempfile.mkdtemp(prefix="harness-realmta-"))
    started = time.monotonic()
    with MaildirIntake(workdir / "dsns") as intake:
        world = build_world(workdir / "harness-dsns")
        with world:
            transport = world.postfix_transport_map()
            transport += f"brand.test smtp:[127.0.0.1]:{intake.port}\n"
            postfix = PrivatePostfix(transport).start()
            try:
                with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
                    client.ehlo("submitter.brand.test")
                    for rcpt in RECIPIENTS:
                        client.sendmail(
                            SENDER,
                            [rcpt],
                            _message(rcpt),
                            mail_options=["RET=HDRS", f"ENVID={rcpt.partition('@')[0]}"],
                            rcpt_options=["NOTIFY=SUCCESS,FAILURE,DELAY"],
                        )

                def settled() -> bool | None:
                    fates = {d.recipient for d in postfix.deliveries() if d.status in FINAL}
                    if not set(RECIPIENTS) <= fates:
                        return None
                    return _queue_empty(postfix)

                wait_until("every recipient's fate and every DSN", settled, timeout=timeout)
                history = {
                    rcpt: [
                        {"status": d.status, "dsn": d.dsn, "text": d.text}
                        for d in postfix.history(rcpt)
                    ]
                    for rcpt in RECIPIENTS
                }
                errors = list(postfix.errors())
                transport_used = postfix.transport.read_text()
            finally:
                postfix.stop()
                postfix.cleanup()
        decisions = decisions_by_recipient(world.journal)
        sessions = {name: sessions_of_host(world.journal, name) for name in world.hosts}
        dsns = [_dsn_facts(m) for m in intake.messages()]
    return {
        "recipients": {
            rcpt: {
                "mode": mode,
                "history": history[rcpt],
                "decisions": decisions.get(rcpt, []),
                "dsns": [
                    {**block, "from": d["from"], "subject": d["subject"]}
                    for d in dsns
                    for block in d["blocks"]
                    if block["recipient"] == rcpt
                ],
            }
            for rcpt, mode in RECIPIENTS.items()
        },
        "sessions": sessions,
        "postfix_errors": errors,
        "transport_map": transport_used,
        "elapsed": time.monotonic() - started,
    }


def _dsn_facts(message: Message) -> dict[str, Any]:
    """From, Subject and one block per recipient of a DSN's ``message/delivery-status`` part."""
    blocks: list[dict[str, Any]] = []
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        if not isinstance(payload, list):
            continue
        for block in payload[1:]:
            if not isinstance(block, Message):
                continue
            blocks.append(
                {
                    "recipient": str(block.get("Final-Recipient", "")).partition(";")[2].strip(),
                    "action": str(block.get("Action", "")).strip().lower(),
                    "status": str(block.get("Status", "")).strip(),
                    "diagnostic": " ".join(str(block.get("Diagnostic-Code", "")).split()),
                    "remote_mta": str(block.get("Remote-MTA", "")).strip() or None,
                }
            )
    return {
        "from": str(message.get("From", "")),
        "subject": str(message.get("Subject", "")),
        "blocks": blocks,
    }

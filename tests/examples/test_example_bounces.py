"""The example integration reads every bounce the world sends: real ones and every dialect.

The gateway runs as a real process (see test_example_integration.py). Each real DSN of
``../shared/reference/real-dsns/`` and each DSN the harness generates (every dialect, a hard, a
soft and an expired failure, the RFC 6533 form, a delay), plus auto-replies and a complaint, is
delivered to the bounce intake for a recipient of its own; then the callbacks must be exactly the
expected ones: a bounce of the right class, an unsubscribe (legacy) or ``spam`` (v2) for the
complaint, and nothing for delays, successes and auto-replies.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from example_peers import eventually
from test_example_integration import (
    META_1,
    World,
    legacy,
    legacy_items,
    mx_map,
    send_dsn,
    submit,
    v2,
    v2_items,
    wait_items,
)

from harness.smtp.dialects import DIALECTS, NO_DELAY_WARNINGS
from harness.smtp.dsn import (
    OriginalMessage,
    RecipientReport,
    build_dsn,
    dsn_bytes,
    dsn_for_mode,
)
from harness.smtp.reports import build_auto_reply, build_complaint

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    world = World(tmp_path)
    try:
        yield world
    finally:
        await world.close()


ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "reference" / "real-dsns"

# What the contract (docs/integration-contract.md, 4.2) makes of each real DSN.
REAL_EXPECTED: dict[str, str | None] = {
    "exim-01": "hardbounce",  # 5.0.0, 550 5.1.1 in Diagnostic-Code
    "exim-02": None,  # delivered
    "exim-03": "hardbounce",
    "exim-04": "softbounce",  # 552 5.2.2: mailbox full
    "exim-05": "softbounce",  # 554 5.7.1: policy
    "exim-06": None,  # delayed
    "exim-07": None,
    "exim-08": None,
    "exim-12": "softbounce",  # server down until expiry: 5.0.0 and no Diagnostic-Code at all
    "exim-13": "softbounce",  # 452 ...: retry timeout exceeded
    "exim-14": "softbounce",
    "postfix-01": "hardbounce",
    "postfix-02": None,  # relayed
    "postfix-03": "hardbounce",
    "postfix-04": "hardbounce",
    "postfix-05": None,  # delayed
    "postfix-06": None,
    "postfix-07": "softbounce",  # expired, Status 4.2.2
    "postfix-08": "softbounce",  # expired, Status 4.4.1
    "postfix-09": "softbounce",
    "postfix-10": "softbounce",  # 5.2.2
    "postfix-11": "softbounce",  # 5.7.1 at end of DATA
    "postfix-12": "hardbounce",  # RFC 6533, not valid UTF-8
    "postfix-13": "hardbounce",  # LF line ends (from a mailbox file)
}


@dataclass(frozen=True)
class Case:
    name: str
    expected: str | None
    """softbounce, hardbounce, unsubscribe (legacy; v2: spam) or None (no callback)."""
    data: bytes | None = None
    build: str = ""
    """How to build it from the copy the MX received, when *data* is None."""


def cases() -> list[Case]:
    out = []
    if REAL.is_dir():
        for path in sorted(REAL.glob("*.eml")):
            key = "-".join(path.name.split("-")[:2])
            out.append(Case(f"real {path.name}", REAL_EXPECTED[key], path.read_bytes()))
    for dialect in DIALECTS:
        out.append(
            Case(f"{dialect} invalid_address", "hardbounce", build=f"{dialect}:invalid_address")
        )
        out.append(Case(f"{dialect} mailbox_full", "softbounce", build=f"{dialect}:mailbox_full"))
        out.append(Case(f"{dialect} queue_expiry", "softbounce", build=f"{dialect}:queue_expiry"))
        if dialect not in NO_DELAY_WARNINGS:
            out.append(Case(f"{dialect} delayed", None, build=f"{dialect}:delayed"))
    for dialect in ("generic", "postfix", "exim"):
        out.append(Case(f"{dialect} smtputf8", "hardbounce", build=f"{dialect}:smtputf8"))
    out.append(Case("auto-reply vacation", None, build="auto_reply:vacation"))
    out.append(Case("auto-reply exchange", None, build="auto_reply:exchange"))
    out.append(Case("complaint", "unsubscribe", build="complaint:"))
    return out


def build(case: Case, verp: str, recipient: str, copy: bytes) -> bytes:
    """The bytes of *case*, about *recipient* and the *copy* of the campaign it received."""
    if case.data is not None:
        return case.data
    kind, _, what = case.build.partition(":")
    original = OriginalMessage(envelope_sender=verp, content=copy, smtputf8=what == "smtputf8")
    if kind == "auto_reply":
        return dsn_bytes(build_auto_reply(original, recipient, style=what))
    if kind == "complaint":
        return dsn_bytes(build_complaint(original, recipient))
    if what == "smtputf8":
        # The campaign came with SMTPUTF8: Postfix and Exim answer with the RFC 6533 form.
        report = RecipientReport(
            recipient=recipient,
            action="failed",
            status="5.1.1",
            diagnostic=f"550 5.1.1 <{recipient}>: Recipient address rejected",
            remote_mta="mx.example.com",
            in_reply_to="RCPT TO",
        )
        message = build_dsn(original, [report], dialect=kind)
        assert message is not None
        return dsn_bytes(message)
    mode, action = (what, "failed") if what != "delayed" else ("mailbox_full", "delayed")
    return dsn_bytes(
        dsn_for_mode(mode, recipient, dialect=kind, action=action, sender=verp, content=copy)
    )


def send_with_smtplib(intake: tuple[str, int], to: str, data: bytes) -> tuple[int, bytes]:
    """Send *data* as is with the standard library's client, which (unlike aiosmtplib) keeps
    bare LF line ends: the reply to the final dot."""
    host, port = intake
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.ehlo()
        client.mail("")
        client.rcpt(to)
        return client.data(data)


async def deliver_all(
    world: World, env_of: Callable[..., dict[str, str]]
) -> tuple[Any, Any, list[Case], dict[str, str]]:
    mx = await world.mx()
    receiver = await world.receiver()
    sut = await world.sut(env_of(receiver, HARNESS_MX_MAP=mx_map(example_com=mx.address)))
    all_cases = cases()
    recipients = {case.name: f"r{i}@example.com" for i, case in enumerate(all_cases)}
    await submit(sut, [*recipients.values(), "sentinel@example.com"])
    await eventually(lambda: len(mx.received) == len(recipients) + 1, sut.log)
    copies = {r.rcpt: r.content for r in mx.received}
    for case in all_cases:
        recipient = recipients[case.name]
        verp = "bounces+{}={}@sut.test".format(*recipient.split("@"))
        data = build(case, verp, recipient, copies[recipient])
        if b"\r\n" not in data:
            code, reply = await asyncio.to_thread(send_with_smtplib, sut.intake, verp, data)
            assert code == 250, f"{case.name}: {code} {reply!r}"
        else:
            await send_dsn(sut, verp, data)
    return sut, receiver, all_cases, recipients


async def test_every_bounce_is_read_legacy(world: World) -> None:
    sut, receiver, all_cases, recipients = await deliver_all(world, legacy)
    expected = sorted(
        (case.expected, recipients[case.name]) for case in all_cases if case.expected is not None
    )
    # A sentinel last: once its callback arrived, everything sent before it was processed.
    verp = "bounces+sentinel=example.com@sut.test"
    await send_dsn(
        sut, verp, dsn_bytes(dsn_for_mode("invalid_address", "sentinel@example.com", sender=verp))
    )
    expected.append(("hardbounce", "sentinel@example.com"))

    def seen() -> list[tuple[str, str]]:
        return [
            (e, r) for e, r, _ in legacy_items(receiver) + legacy_items(receiver, "/unsubscribe")
        ]

    await wait_items(sut, receiver, len(expected), seen)
    names = {r: n for n, r in recipients.items()}
    mismatched = sorted(set(seen()) ^ set(expected))
    assert not mismatched, (
        "\n".join(
            f"{'unexpected' if m in seen() else 'missing'}: {m[0]} for {names.get(m[1], m[1])}"
            for m in mismatched
        )
        + f"\nSUT log:\n{sut.log()}"
    )
    assert len(seen()) == len(expected)  # each once
    log = sut.log()
    assert "automatic reply from r" in log
    assert "Traceback" not in log


async def test_a_complaint_is_spam_in_v2_and_an_auto_reply_nothing(world: World) -> None:
    mx = await world.mx()
    receiver = await world.receiver()
    sut = await world.sut(v2(receiver, HARNESS_MX_MAP=mx_map(example_com=mx.address)))
    await submit(sut, ["ann@example.com", "bob@example.com"], meta=META_1)
    await wait_items(sut, receiver, 2, lambda: v2_items(receiver))
    copies = {r.rcpt: r.content for r in mx.received}
    for name in ("ann", "bob"):
        verp = f"bounces+{name}=example.com@sut.test"
        original = OriginalMessage(envelope_sender=verp, content=copies[f"{name}@example.com"])
        await send_dsn(sut, verp, dsn_bytes(build_auto_reply(original, f"{name}@example.com")))
    verp = "bounces+ann=example.com@sut.test"
    original = OriginalMessage(envelope_sender=verp, content=copies["ann@example.com"])
    complaint = dsn_bytes(build_complaint(original, "ann@example.com"))
    await send_dsn(sut, verp, complaint)
    await send_dsn(sut, verp, complaint)  # a second report of the same complaint: nothing more
    await wait_items(sut, receiver, 3, lambda: v2_items(receiver))
    # The exim server-down expiry, for bob: soft.
    exim = REAL / "exim-12-failed-retry-timeout-server-down.eml"
    if exim.is_file():
        await send_dsn(sut, "bounces+bob=example.com@sut.test", exim.read_bytes())
        await wait_items(sut, receiver, 4, lambda: v2_items(receiver))
    items = v2_items(receiver)[2:]
    assert items[0] == {
        "type": "spam",
        "email": "ann@example.com",
        "meta": META_1,
        "description": "complaint: feedback report (abuse)",
    }
    if exim.is_file():
        assert items[1]["type"] == "soft_bounce"
        assert items[1]["email"] == "bob@example.com"
        assert items[1]["description"] == "DSN: retry timeout exceeded"
    await asyncio.sleep(0.3)  # a batching window: nothing else may follow
    assert len(v2_items(receiver)) == 2 + len(items)

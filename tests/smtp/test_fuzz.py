"""Seeded SMTP fuzzing: thousands of hostile sessions, no internal error ever reaches anyone.

Sessions are built from a seeded grammar of valid, near-valid and broken SMTP (odd parameters,
non-UTF-8 bytes, Unicode digits, long lines, AUTH payloads, BDAT chunks, bare STARTTLS, body
lines after a drop) and sent pipelined over real TCP connections. The test asserts that no
traceback is logged, no reply carries an internal exception (aiosmtpd's ``Error: (Type) ...``),
and every session is journaled exactly once. Bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterator

import pytest

from harness.smtp.world import MailWorld
from tests.smtp.journal_reads import session_peers, session_replies

SEED = 20261129
SESSIONS = 3000
BUDGET = 30.0  # seconds of fuzzing at most; the count is reported when the budget cuts it short
CONCURRENCY = 40

_WORDS = [
    b"HELO",
    b"EHLO",
    b"MAIL",
    b"RCPT",
    b"DATA",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"VRFY",
    b"EXPN",
    b"HELP",
    b"AUTH",
    b"STARTTLS",
    b"BDAT",
    b"ETRN",
    b"XCLIENT",
]
_PARAMS = [b"SIZE=", b"BODY=", b"SMTPUTF8", b"RET=", b"ENVID=", b"AUTH=", b"NOTIFY=", b"ORCPT="]
_ODD = [
    "\u00b2".encode(),
    "\u0663".encode(),
    b"\xff",
    b"\xfe\xff",
    b"\xed\xa0\x80",
    b"\x00",
    b"-1",
    b"99999999999999999999",
    b"",
    b"+",
    b"+ZZ",
    b"=",
    b"<",
    b">",
    b"\t",
    b"\x1b[0m",
    "jos\u00e9".encode(),
    b"FULL",
    b"HDRS",
    b"NEVER",
    b"SUCCESS,FAILURE",
    b"rfc822;a@b.test",
    b"8BITMIME",
    b"BINARYMIME",
    b"x" * 600,
]
_ADDRESSES = [
    b"<a@example.com>",
    b"<full@example.com>",
    b"<bad@example.com>",
    b"<>",
    b"<later@example.com>",
    b"a@example.com",
    b"<@route:a@example.com>",
    b"<a@b@c>",
    "<jos\u00e9@example.com>".encode(),
    b"<\xff@example.com>",
    b"<" + b"a" * 300 + b">",
    b"<a@other.test>",
    b"<a@ascii.test>",
]


def _command(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.25:
        verb = rng.choice([b"MAIL FROM:", b"RCPT TO:", b"mail from:", b"RCPT TO: "])
        line = verb + rng.choice(_ADDRESSES)
        for _ in range(rng.randrange(3)):
            line += b" " + rng.choice(_PARAMS) + rng.choice(_ODD)
        return line
    if roll < 0.35:
        mechanism = rng.choice([b"PLAIN", b"LOGIN", b"CRAM-MD5", b"plain", b""])
        separator = rng.choice([b" ", b"\t", b"  "])
        return (
            b"AUTH "
            + mechanism
            + separator
            + rng.choice([b"AHVzZXIAc2VjcmV0", b"=", b"*", b"\xff", b"dXNlcg=="])
        )
    if roll < 0.45:
        return b"BDAT " + rng.choice([b"5", b"0 LAST", b"x", b"-1", b"3 LAST", b""])
    if roll < 0.55:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    if roll < 0.6:
        return rng.choice(_WORDS) + b" " + b"y" * rng.choice([10, 600, 1100, 5000])
    word = rng.choice(_WORDS)
    if rng.random() < 0.5:
        word += b" " + rng.choice(_ODD + _ADDRESSES)
    return word


def _session(rng: random.Random) -> bytes:
    lines: list[bytes] = []
    if rng.random() < 0.9:
        lines.append(rng.choice([b"EHLO fuzz.test", b"HELO fuzz.test", b"EHLO", b"EHLO \xff"]))
    for _ in range(rng.randrange(1, 12)):
        lines.append(_command(rng))
        if rng.random() < 0.15:
            lines.append(b"DATA")
            body = [b"Subject: fuzz", b""]
            body += [
                rng.choice(
                    [
                        b"hello",
                        b"x" * 1200,
                        b"..dot",
                        b"\xff\xfe",
                        b"RCPT TO:<v@x>",
                        b"HELP",
                        b"."[:0],
                    ]
                )
                for _ in range(rng.randrange(4))
            ]
            lines += [*body, b"."]
    if rng.random() < 0.7:
        lines.append(b"QUIT")
    return b"".join(line + b"\r\n" for line in lines)


class _Tracebacks(logging.Handler):
    """Counts log records that carry an exception, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "Traceback" in record.getMessage():
            self.records.append(record)


@pytest.fixture
def tracebacks() -> Iterator[_Tracebacks]:
    handler = _Tracebacks()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


async def _run(port: int, payload: bytes) -> tuple[int, bytes]:
    """Send *payload* pipelined; read until the server closes or stays silent for a while."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    local = int(writer.get_extra_info("sockname")[1])
    received = b""
    try:
        writer.write(payload)
        await writer.drain()
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 1.0)
            if not chunk:
                break
            received += chunk
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
    return local, received


@pytest.mark.timeout(120)
def test_fuzzed_sessions_get_no_internal_errors(tracebacks: _Tracebacks) -> None:
    world = MailWorld()
    rules = {
        "full@example.com": "mailbox_full",
        "bad@example.com": "invalid_address",
        "later@example.com": {"accept_then_bounce": "invalid_address", "after": "1h"},
    }
    world.add_host(
        "mx",
        domains=["example.com"],
        rules=rules,
        tls="starttls",
        auth={"user": "secret"},
        size_limit=20_000,
        timeout=5,
    )
    world.add_host("ascii", domains=["ascii.test"], smtputf8=False, timeout=5)
    rng = random.Random(SEED)
    payloads = [(rng.choice(["mx", "ascii"]), _session(rng)) for _ in range(SESSIONS)]

    async def fuzz(ports: dict[str, int]) -> tuple[list[tuple[int, bytes]], float]:
        started = time.monotonic()
        results: list[tuple[int, bytes]] = []
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(host: str, payload: bytes) -> None:
            if time.monotonic() - started > BUDGET:
                return
            async with limit:
                results.append(await _run(ports[host], payload))

        await asyncio.gather(*(one(h, p) for h, p in payloads))
        return results, time.monotonic() - started

    with world:
        ports = {name: host.port for name, host in world.hosts.items()}
        results, elapsed = asyncio.run(fuzz(ports))
        # Sessions are journaled when they end; the server may still be closing the last ones.
        deadline = time.monotonic() + 10
        while len(session_peers(world.journal)) < len(results) and time.monotonic() < deadline:
            time.sleep(0.1)
        peers = session_peers(world.journal)
        replies = session_replies(world.journal)
    assert len(results) >= 1000, f"only {len(results)} sessions in {elapsed:.1f} s"
    internal = [r for _, r in results if b"Error: (" in r]
    assert internal == [], internal[:3]
    assert [r for r in replies if "Error: (" in r] == []
    assert tracebacks.records == [], [r.getMessage() for r in tracebacks.records[:3]]
    # Every connection is journaled once: one session per client port.
    ports_seen = sorted(int(p.rpartition(":")[2]) for p in peers)
    assert ports_seen == sorted(local for local, _ in results)

"""Independent parsers read every dialect: flufl.bounce in process, Sisimai through Perl.

Every dialect x every mode an accept-then-bounce or a queue expiry can report (plus the RFC 6533
variant, an auto-reply and a complaint) is built once and given to both parsers. Each must find
the recipient, and its hard/soft call must match the mode's class, *or* the disagreement is listed
in the table of ``docs/dsn.md`` ("Where the parsers disagree") with who is right. The table is
read here, both ways: a disagreement it does not list fails, and so does a row that no longer
happens (or, for a row with wildcards, no longer happens everywhere it claims).

Sisimai (Debian ``libsisimai-perl``) runs once over the whole batch (loading it costs more than
parsing); the tests skip with the reason when Perl or the module is missing.
"""

from __future__ import annotations

import email
import email.policy
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from flufl.bounce import all_failures

from harness.smtp.catalog import CATALOG, BounceClass
from harness.smtp.dialects import DIALECTS, Dialect
from harness.smtp.dsn import OriginalMessage, dsn_bytes, dsn_for_mode
from harness.smtp.reports import build_auto_reply, build_complaint

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "dsn.md"
SCRIPT = Path(__file__).with_name("sisimai_verdicts.pl")
NOW = 1_700_000_000
RCPT = "a@example.com"
VERP = "bounces+a=example.com@sut.test"
UTF8_SENDER = "jürgen@sender.test"

BOUNCE_MODES = [
    m.name for m in CATALOG.values() if not m.server_down and (m.code is None or m.code >= 400)
]
"""What ``accept_then_bounce`` accepts (queue_expiry among them), as harness.smtp.rules checks."""


@dataclass(frozen=True)
class Case:
    dialect: str
    case: str
    """A mode name, ``smtputf8`` (invalid_address, RFC 6533), ``auto_reply`` or ``complaint``."""
    expected: str
    """``hard``, ``soft``, or for what is not a bounce: ``auto_reply``/``complaint``."""
    data: bytes


def _cases() -> Iterator[Case]:
    for dialect in DIALECTS:
        for mode in BOUNCE_MODES:
            message = dsn_for_mode(mode, RCPT, dialect=dialect, sender=VERP, now=NOW)
            yield Case(dialect, mode, str(CATALOG[mode].bounce_class), dsn_bytes(message))
        message = dsn_for_mode(
            "invalid_address", RCPT, dialect=dialect, sender=UTF8_SENDER, now=NOW
        )
        yield Case(dialect, "smtputf8", "hard", dsn_bytes(message))
    original = OriginalMessage(
        envelope_sender=VERP,
        content=(
            b"From: <news@brand.test>\r\nTo: <a@example.com>\r\nSubject: Hi\r\n"
            b"Message-ID: <m1@brand.test>\r\n\r\nHello.\r\n"
        ),
    )
    for style in ("vacation", "exchange"):
        reply = build_auto_reply(original, RCPT, style=style, now=NOW)
        yield Case(style, "auto_reply", "auto_reply", dsn_bytes(reply))
    yield Case("arf", "complaint", "complaint", dsn_bytes(build_complaint(original, RCPT, now=NOW)))


@cache
def cases() -> tuple[Case, ...]:
    return tuple(_cases())


def flufl_verdict(case: Case) -> str:
    message = email.message_from_bytes(case.data, policy=email.policy.compat32)
    temporary, permanent = all_failures(message)
    found = {a.decode("ascii", "replace") for a in temporary | permanent}
    if not found:
        return "nothing"
    if found != {RCPT}:
        return "wrong recipient: " + ", ".join(sorted(found))
    return "permanent" if RCPT.encode() in permanent else "temporary"


def flufl_agrees(case: Case, seen: str) -> bool:
    # flufl's "permanent" is "this message will not arrive", which every failed report is; only
    # a hard bounce can agree with it. It has no notion of auto-replies or complaints.
    if case.expected in ("auto_reply", "complaint"):
        return seen == "nothing"
    return seen == {"hard": "permanent", "soft": "temporary"}[case.expected]


@cache
def sisimai_results(batch: Path) -> dict[str, dict[str, object]]:
    if shutil.which("perl") is None:
        pytest.skip("perl is not installed")
    probe = subprocess.run(["perl", "-MSisimai", "-e", "1"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("Sisimai is not installed (Debian: apt-get install libsisimai-perl)")
    out = subprocess.run(
        ["perl", str(SCRIPT), str(batch)], capture_output=True, text=True, check=True, timeout=120
    )
    results: dict[str, dict[str, object]] = {}
    for line in out.stdout.splitlines():
        row = json.loads(line)
        results[str(row["file"]).removesuffix(".eml")] = row
    return results


def sisimai_verdict(row: dict[str, object] | None) -> str:
    if row is None:
        return "nothing"
    if row["recipient"] != RCPT:
        return f"wrong recipient: {row['recipient']}"
    reason = str(row["reason"])
    if reason == "vacation":
        return "auto_reply"
    if reason == "feedback":
        return "complaint"
    return {1: "soft", 0: "hard"}.get(int(str(row["soft"])), f"neither ({reason})")


def key(case: Case) -> str:
    return f"{case.dialect}--{case.case}"


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("oracle-batch")
    for case in cases():
        (directory / f"{key(case)}.eml").write_bytes(case.data)
    return directory


# -- the table in docs/dsn.md ---------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    parser: str
    dialect: str
    case: str
    seen: str

    def covers(self, parser: str, case: Case) -> bool:
        if parser != self.parser:
            return False
        if self.dialect != "*" and self.dialect != case.dialect:
            return False
        if self.case.startswith("class:"):
            return case.expected == self.case.removeprefix("class:")
        return self.case in ("*", case.case)


def table() -> list[Row]:
    text = DOC.read_text()
    start = text.index("<!-- oracle-disagreements:start -->")
    end = text.index("<!-- oracle-disagreements:end -->")
    rows = []
    for line in text[start:end].splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or cells[0] in ("parser", "") or set(cells[0]) <= {"-", ":"}:
            continue
        rows.append(Row(*cells[:4]))
    return rows


def check(parser: str, seen: dict[Case, str], agrees: dict[Case, bool]) -> None:
    rows = [r for r in table() if r.parser == parser]
    unlisted = []
    for case, verdict in seen.items():
        if agrees[case]:
            continue
        if not any(r.covers(parser, case) and r.seen == verdict for r in rows):
            unlisted.append(f"{case.dialect} {case.case}: expected {case.expected}, saw {verdict}")
    stale = []
    for row in rows:
        covered = [c for c in seen if row.covers(parser, c)]
        wildcard = row.dialect == "*" or row.case == "*" or row.case.startswith("class:")
        holds = [c for c in covered if not agrees[c] and seen[c] == row.seen]
        if not holds or (wildcard and len(holds) != len(covered)):
            stale.append(f"{row} holds for {len(holds)} of {len(covered)} cases")
    assert not unlisted, f"{parser} disagrees and docs/dsn.md does not say why:\n" + "\n".join(
        unlisted
    )
    assert not stale, f"rows of docs/dsn.md that {parser} no longer bears out:\n" + "\n".join(stale)


def test_every_dialect_and_mode_is_in_the_matrix() -> None:
    dialects = {c.dialect for c in cases()}
    assert set(DIALECTS) <= dialects
    assert "queue_expiry" in BOUNCE_MODES
    assert "invalid_address" in BOUNCE_MODES
    assert len(cases()) == len(DIALECTS) * (len(BOUNCE_MODES) + 1) + 3


def test_flufl_bounce_agrees_or_the_docs_say_why() -> None:
    seen = {case: flufl_verdict(case) for case in cases()}
    check("flufl.bounce", seen, {case: flufl_agrees(case, seen[case]) for case in cases()})


def test_sisimai_agrees_or_the_docs_say_why(batch: Path) -> None:
    results = sisimai_results(batch)
    seen = {case: sisimai_verdict(results.get(key(case))) for case in cases()}
    check("sisimai", seen, {case: seen[case] == case.expected for case in cases()})


def test_the_classes_the_table_speaks_of_exist() -> None:
    classes = {f"class:{c}" for c in BounceClass}
    modes = set(BOUNCE_MODES) | {"smtputf8", "auto_reply", "complaint", "*"}
    for row in table():
        assert row.parser in ("flufl.bounce", "sisimai"), row
        assert row.dialect in {*DIALECTS, "*", "vacation", "exchange", "arf"}, row
        assert row.case in modes | classes, row
    assert Dialect.GENERIC in DIALECTS

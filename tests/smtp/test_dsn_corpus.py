"""Our dialects against real Postfix and Exim DSNs from the Sisimai corpus (read, never copied)."""

from __future__ import annotations

import email
import email.policy
from collections import Counter
from email.message import Message
from pathlib import Path
from typing import TypeVar

import pytest

from harness.smtp.dsn import Dialect, dsn_bytes, dsn_for_mode, recipients_of

pytestmark = pytest.mark.corpus

T = TypeVar("T")
Shape = tuple[tuple[str, ...], frozenset[str], frozenset[str]]


def shape(message: Message) -> Shape | None:
    """Part content types, per-message field names, per-recipient field names (first block)."""
    if message.get_content_type() != "multipart/report":
        return None
    parts = message.get_payload()
    assert isinstance(parts, list)
    types = tuple(p.get_content_type() for p in parts)
    status = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    if not status or not isinstance(status[0].get_payload(), list):
        return None
    blocks = status[0].get_payload()
    if len(blocks) < 2:
        return None
    return (
        types,
        frozenset(k.lower() for k in blocks[0]),
        frozenset(k.lower() for k in blocks[1]),
    )


def real_shapes(corpus: Path, mta: str) -> list[Shape]:
    files = sorted((corpus / "sisimai-set-of-emails" / "bsd").glob(f"lhost-{mta}-*.eml"))
    if not files:
        pytest.skip(f"no lhost-{mta}-*.eml in the corpus")
    shapes = []
    for path in files:
        found = shape(email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32))
        if found is not None:
            shapes.append(found)
    return shapes


def majority(values: list[T]) -> T:
    [(value, count)] = Counter(values).most_common(1)
    assert count * 2 > len(values), f"no majority among {len(values)} real DSNs"
    return value


def ours(dialect: Dialect, mode: str = "invalid_address", **kwargs: str) -> Shape:
    message = dsn_for_mode(mode, "a@example.com", dialect=dialect, now=1_700_000_000, **kwargs)
    parsed = email.message_from_bytes(dsn_bytes(message), policy=email.policy.compat32)
    found = shape(parsed)
    assert found is not None
    return found


@pytest.mark.parametrize(("dialect", "mta"), [(Dialect.POSTFIX, "postfix"), (Dialect.EXIM, "exim")])
def test_part_structure_matches_the_majority_of_real_dsns(
    corpus_dir: Path, dialect: Dialect, mta: str
) -> None:
    # Majority among the real multipart/report DSNs of that MTA (old Exim also sends plain
    # text bounces, which are not DSNs and are not what this dialect imitates).
    real = real_shapes(corpus_dir, mta)
    assert ours(dialect)[0] == majority([s[0] for s in real])


@pytest.mark.parametrize(("dialect", "mta"), [(Dialect.POSTFIX, "postfix"), (Dialect.EXIM, "exim")])
def test_field_names_match_the_majority_of_real_dsns(
    corpus_dir: Path, dialect: Dialect, mta: str
) -> None:
    real = real_shapes(corpus_dir, mta)
    _, per_message, per_recipient = ours(dialect)
    assert per_message == majority([s[1] for s in real])
    assert per_recipient == majority([s[2] for s in real])


def test_postfix_headers_only_matches_real_ones(corpus_dir: Path) -> None:
    real = [s[0] for s in real_shapes(corpus_dir, "postfix")]
    headers_only = ours(Dialect.POSTFIX, ret="hdrs")[0]
    assert headers_only in real


def test_postfix_connection_failure_fields_match_real_ones(corpus_dir: Path) -> None:
    # Real Postfix DSNs for a host that could not be reached: no Remote-MTA.
    bsd = corpus_dir / "sisimai-set-of-emails" / "bsd"
    real = []
    for path in sorted(bsd.glob("lhost-postfix-*.eml")):
        data = path.read_bytes()
        if b"Diagnostic-Code: X-Postfix; connect to" in data:
            found = shape(email.message_from_bytes(data, policy=email.policy.compat32))
            if found is not None:
                real.append(found[2])
    if not real:
        pytest.skip("no Postfix connection-failure DSN in the corpus")
    assert set(real) == {ours(Dialect.POSTFIX, "refused")[2]}


def test_recipients_of_reads_real_dsns(corpus_dir: Path) -> None:
    # The reader deliver_dsn journals with must understand real DSNs, not only ours.
    read = 0
    for path in sorted((corpus_dir / "sisimai-set-of-emails" / "bsd").glob("lhost-postfix-*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
        if shape(message) is None:
            continue
        found = recipients_of(message)
        assert found, path.name
        for recipient in found:
            assert "@" in recipient["recipient"], path.name
            assert recipient["action"] in {"failed", "delayed", "delivered", "relayed", "expanded"}
            assert recipient["status"][:1] in {"2", "4", "5"}, path.name
        read += 1
    assert read >= 50

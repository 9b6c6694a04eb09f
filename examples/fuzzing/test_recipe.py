"""Fuzz your own payload builder and bounce handler with harness.strategies (docs/fuzzing.md)."""

from __future__ import annotations

import json
import time

from harness import strategies as hs
from harness.clevertap.inspect import Endpoint, inspect
from harness.smtp.catalog import BounceClass, Reply
from hypothesis import given
from hypothesis import strategies as st

from bounce_handler import classify_reply, read_dsn
from payload_builder import build_legacy

NOW = int(time.time())
events = st.sampled_from(["softbounce", "hardbounce", "unsubscribe"])
noticed = st.lists(st.tuples(events, hs.addresses(), st.floats(NOW - 86400, NOW)), max_size=20)


@given(noticed)
def test_the_builder_only_writes_payloads_that_pass_every_check(
    triples: list[tuple[str, str, float]],
) -> None:
    for url, body in build_legacy(triples).items():
        inspection = inspect(body, endpoint=Endpoint(url), now=NOW)
        assert inspection.violations == [], [v.format() for v in inspection.violations]


@given(noticed)
def test_the_builder_loses_no_recipient(triples: list[tuple[str, str, float]]) -> None:
    sent = [
        (event["event"], item["e"].lower())
        for body in build_legacy(triples).values()
        for event in json.loads(body)
        for item in event["data"]
    ]
    assert sorted(sent) == sorted({(event, address.lower()) for event, address, _ in triples})


@given(hs.smtp_replies(bounce_class=BounceClass.HARD))
def test_hard_replies_are_hard(reply: Reply) -> None:
    assert classify_reply(str(reply)) == "hard"


@given(hs.smtp_replies(bounce_class=BounceClass.SOFT))
def test_soft_replies_are_soft(reply: Reply) -> None:
    assert classify_reply(str(reply)) == "soft"


@given(hs.dsn_messages(action="failed"))
def test_every_failed_dsn_is_read_with_its_class(sample: hs.DsnSample) -> None:
    assert read_dsn(sample.data) == [(sample.recipient, sample.bounce_class.value)]


@given(hs.dsn_messages(action="delayed"))
def test_a_delay_is_not_a_bounce(sample: hs.DsnSample) -> None:
    assert read_dsn(sample.data) == []

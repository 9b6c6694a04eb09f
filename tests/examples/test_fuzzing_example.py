"""Run the fuzzing recipe of examples/fuzzing (docs/fuzzing.md) as part of the suite."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

# The recipe is laid out like a user's project: its modules import each other by bare name.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "fuzzing"))

import payload_builder
import test_recipe
from test_recipe import (
    test_a_delay_is_not_a_bounce,
    test_every_failed_dsn_is_read_with_its_class,
    test_hard_replies_are_hard,
    test_soft_replies_are_soft,
    test_the_builder_loses_no_recipient,
    test_the_builder_only_writes_payloads_that_pass_every_check,
)

__all__ = [
    "test_a_delay_is_not_a_bounce",
    "test_every_failed_dsn_is_read_with_its_class",
    "test_hard_replies_are_hard",
    "test_soft_replies_are_soft",
    "test_the_builder_loses_no_recipient",
    "test_the_builder_only_writes_payloads_that_pass_every_check",
]


def test_the_recipe_catches_a_builder_writing_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    def in_milliseconds(noticed: Iterable[tuple[str, str, float]]) -> dict[str, bytes]:
        return payload_builder.build_legacy((e, a, when * 1000) for e, a, when in noticed)

    monkeypatch.setattr(test_recipe, "build_legacy", in_milliseconds)
    with pytest.raises(AssertionError, match="CT303"):
        test_the_builder_only_writes_payloads_that_pass_every_check()


def test_the_recipe_catches_a_handler_classifying_by_code_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def by_code(reply: str) -> str | None:
        code = int(reply[:3])
        return None if code < 400 else "hard" if code >= 500 else "soft"

    monkeypatch.setattr(test_recipe, "classify_reply", by_code)
    # 552 5.2.2 (mailbox full) is permanent by its code, yet a soft bounce for CleverTap.
    with pytest.raises(AssertionError):
        test_soft_replies_are_soft()

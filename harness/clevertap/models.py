"""Typed models of CleverTap's two callback formats (pydantic v2).

They describe the *shape* CleverTap accepts: JSON types, required keys, event names, the v2
``version`` and batch limit. Value judgements that need context (is the address valid, is ``ts``
plausible for the receive time, is this event a duplicate) are payload checks, run by
:func:`harness.clevertap.inspect.inspect`; so are the tolerable oddities reported as warnings
(extra keys in legacy items, empty lists). The JSON Schema of :mod:`harness.clevertap.schema` is
generated from these models; ``tests/clevertap/test_schema.py`` keeps the two in agreement.

Legacy (the "Generic SMTP" page), a JSON array POSTed to the bounce or unsubscribe URL::

    [{"event": "softbounce", "data": [{"e": "a@x.com", "ts": 1435322805}]}]

v2 ("SMTP callbacks v2"), one object; unknown keys are ignored, as CleverTap does::

    {"version": "v2", "events": {"success": [...], "failed": [...]}}

The models are strict (no coercion): ``"ts": "1435322805"`` or ``true`` is not an integer.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictInt, model_validator

__all__ = [
    "LegacyEvent",
    "LegacyItem",
    "LegacyPayload",
    "V2Events",
    "V2Item",
    "V2Payload",
]

from harness.vocab import LEGACY_EVENTS, MAX_V2_EVENTS, V2_TYPES

LegacyEventName = Literal["softbounce", "hardbounce", "unsubscribe"]
V2Type = Literal["delivered", "hard_bounce", "soft_bounce", "spam", "unsubscribed"]
# pydantic needs the names as Literal types; the vocabulary's home is harness.vocab.
if set(get_args(LegacyEventName)) != set(LEGACY_EVENTS) or set(get_args(V2Type)) != set(
    V2_TYPES
):  # pragma: no cover - caught by any test run
    raise RuntimeError("harness.clevertap.models disagrees with harness.vocab on event names")


class LegacyItem(BaseModel):
    """One address of a legacy event. Extra keys are tolerated (the checks warn about them)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    e: str = Field(description="The recipient's email address.")
    ts: StrictInt = Field(
        description="Unix epoch in seconds of the event; the current epoch if unknown."
    )


class LegacyEvent(BaseModel):
    """One event name with the addresses it applies to."""

    model_config = ConfigDict(strict=True, extra="ignore")

    event: LegacyEventName = Field(
        description="softbounce and hardbounce go to the bounce URL, unsubscribe to the "
        "unsubscribe URL."
    )
    data: list[LegacyItem]


class LegacyPayload(RootModel[list[LegacyEvent]]):
    """A legacy callback body: a JSON array of events."""

    model_config = ConfigDict(strict=True)


class V2Item(BaseModel):
    """One v2 event. Unknown keys are ignored, as CleverTap does."""

    model_config = ConfigDict(strict=True, extra="ignore")

    type: V2Type
    email: str = Field(description="The recipient's email address.")
    meta: str = Field(
        min_length=1,
        description="The X-CleverTap_META header of the message, echoed unchanged.",
    )
    description: str | None = Field(
        default=None, description="Why it failed, e.g. the SMTP reply; shown as the error."
    )


class V2Events(BaseModel):
    """The two lists of a v2 callback; together at most 1000 events."""

    model_config = ConfigDict(strict=True, extra="ignore")

    success: list[V2Item] = Field(default_factory=list, max_length=MAX_V2_EVENTS)
    failed: list[V2Item] = Field(default_factory=list, max_length=MAX_V2_EVENTS)

    @model_validator(mode="after")
    def _at_most_max_events(self) -> V2Events:
        # JSON Schema cannot bound the sum of two arrays' lengths; the schema bounds each list
        # and this validator bounds the total (see test_schema's documented divergences).
        total = len(self.success) + len(self.failed)
        if total > MAX_V2_EVENTS:
            raise ValueError(f"at most {MAX_V2_EVENTS} events per call, got {total}")
        return self


class V2Payload(BaseModel):
    """A v2 callback body."""

    model_config = ConfigDict(strict=True, extra="ignore")

    version: Literal["v2"]
    events: V2Events

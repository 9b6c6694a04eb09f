"""JSON Schema (draft 2020-12) of the two callback formats, generated from the models.

pydantic's ``model_json_schema()`` already writes draft 2020-12 keywords (``$defs``, ``$ref``,
``const``, ``prefixItems``); this module makes the result a self-describing document: it names
the dialect (``$schema``), gives it an ``$id``, and says in ``$comment`` the two places where a
JSON Schema cannot say what the models (and the checks) say:

- JSON Schema's ``integer`` accepts ``1700000000.0`` (a number with a zero fraction); the models
  and check CT302 do not, because a float ``ts`` is a bug in the sender even when it is whole.
- JSON Schema cannot bound the *sum* of two array lengths; the schema bounds ``success`` and
  ``failed`` to 1000 each, the models and check CT403 bound them together.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from harness.clevertap.models import LegacyPayload, V2Payload
from harness.errors import ConfigError

__all__ = ["DIALECT", "json_schema"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
"""The ``$schema`` of every exported schema."""

_MODELS: dict[str, type[BaseModel]] = {"legacy": LegacyPayload, "v2": V2Payload}
_COMMENTS = {
    "legacy": "Generated from harness.clevertap.models.LegacyPayload. Stricter than this schema: "
    "ts must be a JSON integer without a fraction (1700000000.0 is rejected).",
    "v2": "Generated from harness.clevertap.models.V2Payload. Stricter than this schema: success "
    "and failed hold at most 1000 events together, not each.",
}


def json_schema(fmt: Literal["legacy", "v2"]) -> dict[str, Any]:
    """The draft 2020-12 JSON Schema of the callback format *fmt* (``legacy`` or ``v2``)."""
    model = _MODELS.get(fmt)
    if model is None:
        raise ConfigError(f"fmt must be 'legacy' or 'v2', got {fmt!r}")
    generated = model.model_json_schema(mode="validation")
    return {
        "$schema": DIALECT,
        "$id": f"urn:clevertap-harness:callback:{fmt}",
        "$comment": _COMMENTS[fmt],
        **generated,
    }

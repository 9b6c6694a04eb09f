"""Callback-side faults: make the fake CleverTap misbehave so an integration's retries get tested.

A fault plan is an ordered list of :class:`FaultRule`. For each callback request the rules are
asked in order; the first one that fires decides what happens to the request:

- ``status``: answer with an HTTP status (500, 503, 429 ...), with ``Retry-After`` if asked;
- ``close``: close the TCP connection without answering a single byte;
- ``reset``: abort the TCP connection with a reset (RST);
- ``delay``: wait, then answer normally.

Every action can wait ``delay`` seconds first. A rule fires for the first ``first`` requests it
is asked about, or with a seeded ``probability`` (the same seed gives the same decisions for the
same sequence of requests), or always. A rule only counts the requests it is asked about, so
``[close first=1, 503 first=2]`` closes request 1, answers 503 to requests 2 and 3, and lets
request 4 through.

Rules are written in Python, in JSON (control API) or in a short text form (``harness serve
--fault``)::

    503,first=3                  503 for the first three requests
    429,retry_after=10,p=0.25,seed=7
    close,first=1,endpoints=v2
    reset
    delay=0.5                    answer normally, half a second late (or delay=500ms: any
                                 duration of harness.durations, as in scenario files)
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from harness.clevertap.inspect import Endpoint
from harness.durations import DURATION_PATTERN, parse_duration
from harness.errors import ConfigError

__all__ = ["FaultDecision", "FaultPlan", "FaultRule", "parse_fault"]

Action = Literal["status", "close", "reset", "delay"]


class FaultRule(BaseModel):
    """One scripted misbehaviour. See the module docstring for how rules combine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action = Field(description="status, close, reset or delay.")
    status: int | None = Field(
        default=None, ge=400, le=599, description="The status to answer (action status only)."
    )
    retry_after: int | None = Field(
        default=None, ge=0, description="Seconds for a Retry-After header (action status only)."
    )
    delay: Annotated[
        float,
        BeforeValidator(parse_duration),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "number", "minimum": 0},
                    {"type": "string", "pattern": DURATION_PATTERN},
                ]
            }
        ),
    ] = Field(
        default=0.0,
        ge=0,
        le=300,
        description='How long to wait before acting: seconds, or "200ms", "2s", "1.5m".',
    )
    first: int | None = Field(
        default=None, ge=1, description="Fire for the first N requests this rule is asked about."
    )
    probability: float | None = Field(
        default=None, ge=0, le=1, description="Fire with this probability (seeded)."
    )
    seed: int = Field(default=0, description="Seed of the probability draws.")
    endpoints: frozenset[Endpoint] | None = Field(
        default=None, description="Only requests to these endpoints; all when absent."
    )

    @model_validator(mode="after")
    def _consistent(self) -> FaultRule:
        if self.action == "status" and self.status is None:
            raise ValueError("action 'status' needs a status (400-599)")
        if self.action != "status" and (self.status is not None or self.retry_after is not None):
            raise ValueError(
                f"status and retry_after only apply to action 'status', not {self.action!r}"
            )
        if self.action == "delay" and self.delay <= 0:
            raise ValueError("action 'delay' needs a delay in seconds greater than 0")
        if self.first is not None and self.probability is not None:
            raise ValueError("give either first or probability, not both")
        return self

    def describe(self) -> str:
        """The rule in the short text form :func:`parse_fault` reads."""
        parts = [str(self.status) if self.action == "status" else self.action]
        if self.action == "delay":
            parts = [f"delay={self.delay:g}"]
        elif self.delay:
            parts.append(f"delay={self.delay:g}")
        if self.retry_after is not None:
            parts.append(f"retry_after={self.retry_after}")
        if self.first is not None:
            parts.append(f"first={self.first}")
        if self.probability is not None:
            parts.append(f"p={self.probability:g},seed={self.seed}")
        if self.endpoints is not None:
            parts.append("endpoints=" + "+".join(sorted(e.value for e in self.endpoints)))
        return ",".join(parts)


_KEYS = {"p": "probability", "retry-after": "retry_after"}


def parse_fault(text: str) -> FaultRule:
    """Read a rule in the short text form (see the module docstring); ConfigError when invalid."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError("empty fault: expected e.g. '503,first=3', 'close' or 'delay=200ms'")
    head, rest = items[0], items[1:]
    fields: dict[str, Any] = {}
    if head.isdigit():
        fields.update(action="status", status=int(head))
    elif head.startswith("delay="):
        fields.update(action="delay", delay=head.partition("=")[2])
    elif head in ("close", "reset", "delay"):
        fields["action"] = head
    else:
        raise ConfigError(
            f"fault {text!r}: unknown action {head!r}; expected a status code (e.g. 503), "
            "close, reset or delay=DURATION (e.g. delay=200ms)"
        )
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"fault {text!r}: expected key=value, got {item!r}")
        key = _KEYS.get(key, key)
        if key == "endpoints":
            fields[key] = [v for v in value.split("+") if v]
        else:
            fields[key] = value
    try:
        # Text values go through lax validation so "3" becomes 3, as a command line needs.
        return FaultRule.model_validate(fields, strict=False)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'rule'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"fault {text!r}: {problems}") from None


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What the plan decided for one request."""

    index: int
    """The position of the rule that fired."""
    rule: FaultRule

    def to_json(self) -> dict[str, Any]:
        """The compact form journaled with the request."""
        return {"rule": self.index, "action": self.rule.action, "spec": self.rule.describe()}


class _RuleState:
    __slots__ = ("applied", "rng", "rule", "seen")

    def __init__(self, rule: FaultRule) -> None:
        self.rule = rule
        self.seen = 0
        self.applied = 0
        self.rng = random.Random(rule.seed)


class FaultPlan:
    """The live fault rules of one server with their counters. Thread-safe.

    The server asks :meth:`decide` once per callback request; tests and the control API replace
    the rules with :meth:`set` and read the counters with :meth:`snapshot`.
    """

    def __init__(self, rules: tuple[FaultRule, ...] | list[FaultRule] = ()) -> None:
        self._lock = threading.Lock()
        self._states = [_RuleState(r) for r in rules]

    def set(self, rules: tuple[FaultRule, ...] | list[FaultRule]) -> None:
        """Replace every rule; counters and random draws start again."""
        states = [_RuleState(r) for r in rules]
        with self._lock:
            self._states = states

    def clear(self) -> None:
        """Remove every rule."""
        self.set(())

    def reset(self) -> None:
        """Keep the rules, start their counters and random draws again."""
        with self._lock:
            self._states = [_RuleState(s.rule) for s in self._states]

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return [s.rule for s in self._states]

    def __bool__(self) -> bool:
        return bool(self._states)

    def decide(self, endpoint: Endpoint) -> FaultDecision | None:
        """The fault for the next request to *endpoint*, or None to answer normally."""
        if not self._states:  # the hot path without faults: no lock, no work
            return None
        with self._lock:
            for index, state in enumerate(self._states):
                rule = state.rule
                if rule.endpoints is not None and endpoint not in rule.endpoints:
                    continue
                state.seen += 1
                if rule.first is not None:
                    fires = state.seen <= rule.first
                elif rule.probability is not None:
                    fires = state.rng.random() < rule.probability
                else:
                    fires = True
                if fires:
                    state.applied += 1
                    return FaultDecision(index, rule)
        return None

    def snapshot(self) -> list[dict[str, Any]]:
        """Every rule as JSON with its counters ``seen`` and ``applied``."""
        with self._lock:
            return [
                {**s.rule.model_dump(mode="json"), "seen": s.seen, "applied": s.applied}
                for s in self._states
            ]

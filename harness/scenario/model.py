"""The scenario language as typed models: one YAML file scripts the whole world of a test run.

A scenario names the fake CleverTap's settings (``clevertap``), the fake mail world (``mx`` hosts
per domain and/or one ``relay``), DSN defaults (``dsn``), the ``campaign`` to submit, the
``unsubscribe`` clicks, the ``integration`` under test and what to ``expect``. The reference with
examples is ``docs/scenarios.md``; :func:`harness.scenario.loader.load_scenario` reads a file with
line-precise errors, :func:`harness.scenario.schema.scenario_json_schema` exports the format.

Problems found by validators carry their own sub-paths, expected and seen values in the error
context (``ctx["problems"]``), so that the loader can point at the exact YAML node.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from harness.clevertap.addresses import address_problem, domain_problem
from harness.clevertap.faults import FaultRule
from harness.clevertap.inspect import Endpoint
from harness.clevertap.settings import DEFAULT_PATHS, ServerSettings
from harness.durations import DURATION_PATTERN
from harness.errors import did_you_mean
from harness.smtp import rules as smtp_rules
from harness.smtp.catalog import FLAVOURS, SERVER_DOWN
from harness.smtp.dialects import DIALECTS
from harness.vocab import (
    CLASS_OF_EVENT,
    CLICK_VIAS,
    LEGACY_EVENTS,
    SCAN,
    SUBMISSION_PROBES,
    UNSUBSCRIBE_EVENTS,
    V2_TYPES,
    MailReport,
    address_key,
)

__all__ = [
    "SERVER_DOWN_MODES",
    "AbsentCallback",
    "Addresses",
    "CallbackFault",
    "Campaign",
    "CleverTapSettings",
    "Click",
    "Credentials",
    "DsnDefaults",
    "Endpoints",
    "Expect",
    "ExpectedCallback",
    "HostPlan",
    "Integration",
    "MailHost",
    "MxHost",
    "Problem",
    "ReadyProbe",
    "RecipientGenerator",
    "Scenario",
    "TsExpectation",
    "ViolationPolicy",
    "parse_duration",
]


SERVER_DOWN_MODES = SERVER_DOWN
"""Host-level failure modes: the whole server misbehaves, whoever the recipient is."""

META_FIELDS = ("e", "n", "campaign", "ts")
"""Placeholders a ``campaign.meta`` template may use."""
RETRY_REPORT_MARGIN = 5.0
"""Seconds of ``expect.within`` left for reporting after the default retry budget: the
callback's batching window and a retry or two of a failed callback."""
DEFAULT_META = "{e}|{campaign}|{ts}|{n}|0|wzrk_default|"
"""Shaped after the ``X-CleverTap_META`` sample in CleverTap's v2 docs (pipe-separated)."""


# ---------------------------------------------------------------------------------------------
# Problems carried through pydantic


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a scenario, at *path* (keys and list indexes from the top)."""

    path: tuple[str | int, ...]
    message: str
    expected: str | None = None
    seen: str | None = None
    key: bool = False
    """Point at the key (an unknown key) rather than at its value."""

    def text(self) -> str:
        """``message (expected …, seen …)``."""
        detail = []
        if self.expected is not None:
            detail.append(f"expected {self.expected}")
        if self.seen is not None:
            detail.append(f"seen {self.seen}")
        return f"{self.message} ({', '.join(detail)})" if detail else self.message


def _fail(problems: Sequence[Problem]) -> PydanticCustomError:
    """One pydantic error carrying several located problems (pydantic stops at one per value)."""
    summary = "; ".join(
        (".".join(str(p) for p in problem.path) + ": " if problem.path else "") + problem.text()
        for problem in problems
    )
    return PydanticCustomError(
        "scenario_problem", "{summary}", {"summary": summary, "problems": list(problems)}
    )


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


# ---------------------------------------------------------------------------------------------
# Durations

DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": DURATION_PATTERN},
    ],
    "description": 'Seconds as a number, or a string with a unit: "200ms", "2s", "1.5m", "1h".',
}


def parse_duration(value: Any) -> float:
    """Seconds from ``2``, ``1.5``, ``"500ms"``, ``"2s"``, ``"10m"``, ``"1h"`` or ``"1d"``."""
    try:
        return smtp_rules.parse_duration(value)
    except smtp_rules.RuleError as exc:
        raise _fail([_from_rule_error(exc)]) from None


Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(DURATION_SCHEMA)]
"""Seconds; written as a number or with a unit (``ms``, ``s``, ``m``, ``h``)."""


# ---------------------------------------------------------------------------------------------
# Addresses, domains, host:port

_HOST_PORT = re.compile(r"^(?P<host>[^\s:]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


def _address(value: str) -> str:
    # The checks' policy (harness.clevertap.addresses): what a callback may name, a scenario may.
    problem = address_problem(value)
    if problem is not None:
        raise _fail([Problem((), f"not an email address: {problem}", "local@domain", repr(value))])
    return value


def _domain(value: str) -> str:
    problem = domain_problem(value)
    if problem is not None:
        raise _fail(
            [Problem((), f"not a domain name: {problem}", "a name like example.com", repr(value))]
        )
    return value.lower()


def _host_port(value: str) -> str:
    match = _HOST_PORT.match(value)
    if not match or not 1 <= int(match.group("port")) <= 65535:
        raise _fail([Problem((), "bad address", "host:port, port 1-65535", repr(value))])
    return value


def _allowed_host(value: str) -> str:
    text = value.strip().lower()
    try:
        ipaddress.ip_network(text, strict=False)
        return text
    except ValueError:
        pass
    name = text.removeprefix("*.")
    if name == "localhost" or domain_problem(name) is None:
        return text
    raise _fail(
        [
            Problem(
                (),
                "not a host pattern",
                "a name (unsub.example.com), *.example.com, an IP address or a network "
                "(10.0.0.0/8)",
                repr(value),
            )
        ]
    )


AllowedHost = Annotated[str, AfterValidator(_allowed_host)]
"""Where the unsubscribe clicker may go (harness.scenario.clicks.ClickScope reads it)."""

Address = Annotated[
    str,
    AfterValidator(_address),
    Field(json_schema_extra={"format": "email"}),
]
Domain = Annotated[str, AfterValidator(_domain)]
HostPort = Annotated[
    str,
    AfterValidator(_host_port),
    Field(json_schema_extra={"pattern": r"^\S+:\d{1,5}$"}),
]


# ---------------------------------------------------------------------------------------------
# The per-recipient behaviour grammar (owned by the mail world; see harness.smtp.rules)

BEHAVIOUR_MARKER = "x-harness-behaviour"
"""Where the JSON Schema of a behaviour goes; :mod:`harness.scenario.schema` fills it in."""

Behaviour = Annotated[Any, WithJsonSchema({BEHAVIOUR_MARKER: True})]
"""A per-recipient behaviour: a mode name, a raw reply, a list by attempt, or a mapping."""


def _is_rule_key(key: str) -> bool:
    """Rule keys name recipients (``@``), domains (``.``) or patterns (``*``); settings do not."""
    return any(c in key for c in "@.*")


def _rule_problems(data: Mapping[str, Any]) -> list[Problem]:
    """Every bad rule in *data*, checked with the mail world's own parser.

    The parser stops at the first error of a rule set; parsing rule by rule reports one
    problem per bad rule, so a file with three typos shows all three.
    """
    problems = []
    for key, value in data.items():
        try:
            smtp_rules.Rules.parse({key: value})
        except smtp_rules.RuleError as exc:
            problems.append(_from_rule_error(exc))
    return problems


def _from_rule_error(exc: smtp_rules.RuleError) -> Problem:
    seen = _shown(exc.seen)
    return Problem(
        exc.path, exc.reason, exc.expected, seen, key=exc.reason.startswith("unknown key")
    )


# ---------------------------------------------------------------------------------------------
# Models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Endpoints(_Model):
    """Paths of the fake CleverTap's callback URLs (CleverTap's real ones are not public)."""

    bounce: str = Field(DEFAULT_PATHS[Endpoint.BOUNCE], description="Legacy bounce callbacks.")
    unsubscribe: str = Field(
        DEFAULT_PATHS[Endpoint.UNSUBSCRIBE], description="Legacy unsubscribe callbacks."
    )
    v2: str = Field(DEFAULT_PATHS[Endpoint.V2], description="SMTP callbacks v2.")

    @model_validator(mode="after")
    def _paths(self) -> Endpoints:
        problems = []
        paths = {"bounce": self.bounce, "unsubscribe": self.unsubscribe, "v2": self.v2}
        for name, path in paths.items():
            if not path.startswith("/"):
                problems.append(
                    Problem((name,), "bad path", "a path starting with '/'", repr(path))
                )
        if not problems and len(set(paths.values())) != len(paths):
            problems.append(
                Problem(
                    (), "callback paths must differ", "three paths", str(sorted(paths.values()))
                )
            )
        if problems:
            raise _fail(problems)
        return self


class CallbackFault(_Model):
    """A fault the fake CleverTap injects into its callback responses, in short form.

    ``{status: 503, first: 3}`` answers the first three callbacks with 503;
    ``{close: true, first: 1}`` closes the connection once without answering;
    ``{delay: 200ms}`` answers late; ``{status: 500, probability: 0.2, seed: 1}`` fails about
    one in five, reproducibly. See :mod:`harness.clevertap.faults` for how faults combine.
    """

    status: int | None = Field(None, ge=400, le=599, description="Answer with this HTTP status.")
    retry_after: int | None = Field(None, ge=0, description="Retry-After seconds (with status).")
    close: bool = Field(False, description="Close the connection without answering.")
    reset: bool = Field(False, description="Abort the connection with a TCP reset.")
    delay: Duration | None = Field(None, description="Wait this long first.")
    first: int | None = Field(None, ge=1, description="Only the first N callbacks.")
    probability: float | None = Field(None, ge=0, le=1, description="Fire with this chance.")
    seed: int = Field(0, description="Seed of the chance (with probability).")
    endpoints: list[Literal["bounce", "unsubscribe", "v2"]] | None = Field(
        None, description="Only callbacks to these endpoints (default: all)."
    )

    @model_validator(mode="after")
    def _shape(self) -> CallbackFault:
        actions = [k for k in ("status", "close", "reset") if getattr(self, k) not in (None, False)]
        if len(actions) > 1:
            raise _fail(
                [
                    Problem(
                        (actions[1],),
                        "one action per fault",
                        "one of status, close, reset",
                        " and ".join(actions),
                    )
                ]
            )
        if not actions and not self.delay:
            raise _fail(
                [
                    Problem(
                        (),
                        "a fault that does nothing",
                        "status, close, reset or delay",
                        "none of them",
                    )
                ]
            )
        try:
            self.rule()
        except ValidationError as exc:
            raise _fail(
                [
                    Problem((), str(e["msg"]).removeprefix("Value error, "))
                    for e in exc.errors(include_url=False)
                ]
            ) from None
        return self

    def rule(self) -> FaultRule:
        """The :class:`~harness.clevertap.faults.FaultRule` the fake CleverTap runs."""
        action: Literal["status", "close", "reset", "delay"] = (
            "status"
            if self.status is not None
            else "close"
            if self.close
            else "reset"
            if self.reset
            else "delay"
        )
        return FaultRule(
            action=action,
            status=self.status,
            retry_after=self.retry_after,
            delay=self.delay or 0.0,
            first=self.first,
            probability=self.probability,
            seed=self.seed,
            endpoints=None
            if self.endpoints is None
            else frozenset(Endpoint(e) for e in self.endpoints),
        )


class CleverTapSettings(_Model):
    """The fake CleverTap: which callback format the integration must use, paths, strictness."""

    format: Literal["legacy", "v2"] = Field(
        "legacy", description="legacy (bounce + unsubscribe URLs) or v2 (one URL, meta echo)."
    )
    endpoints: Endpoints = Field(default_factory=Endpoints)  # type: ignore[arg-type]
    strictness: Literal["strict", "lenient"] = Field(
        "strict",
        description="strict: payloads with errors get 400; lenient: 200 like a real endpoint.",
    )
    faults: list[CallbackFault] = Field(
        default_factory=list, description="Faults injected into callback responses, in order."
    )
    complaint_as: Literal["spam", "unsubscribe"] | None = Field(
        None,
        description="What a complaint (RFC 5965 feedback report) must be reported as: spam "
        "(the v2 spam type) or unsubscribe (legacy unsubscribe, v2 unsubscribed). Default: "
        "spam with v2, unsubscribe with legacy (it has no spam event).",
    )

    @property
    def complaint_event(self) -> str:
        """The event name a complaint must become in this format (``spam``, ``unsubscribe``,
        ``unsubscribed``)."""
        if self.format == "legacy":
            return "unsubscribe"  # legacy has no spam event (complaint_as: spam is refused)
        return "unsubscribed" if self.complaint_as == "unsubscribe" else "spam"

    def server_settings(self, **overrides: Any) -> ServerSettings:
        """The fake CleverTap's :class:`~harness.clevertap.settings.ServerSettings`."""
        fields: dict[str, Any] = {
            "bounce_path": self.endpoints.bounce,
            "unsubscribe_path": self.endpoints.unsubscribe,
            "v2_path": self.endpoints.v2,
            "strict": self.strictness == "strict",
            "faults": tuple(f.rule() for f in self.faults),
        }
        return ServerSettings(**{**fields, **overrides})


class Credentials(_Model):
    """SMTP AUTH credentials."""

    username: str = Field(min_length=1)
    password: str = Field(min_length=1)


class MailHost(_Model):
    """A fake mail server: per-recipient rules plus host settings.

    Keys containing ``@``, ``.`` or ``*`` are rules (an address, a whole domain, a pattern such
    as ``*@example.com``) mapping to a behaviour; other keys are settings.
    """

    rules: dict[str, Behaviour] = Field(default_factory=dict, validation_alias="@rules")
    server_down: str | None = Field(
        None,
        description="The whole host fails this way: " + ", ".join(SERVER_DOWN_MODES) + ".",
        json_schema_extra={"enum": list(SERVER_DOWN_MODES)},
    )
    tls: Literal["none", "starttls", "required", "implicit"] = Field(
        "none",
        description="none; starttls offered; required (STARTTLS before MAIL); implicit TLS.",
    )
    auth: Credentials | None = Field(None, description="Require SMTP AUTH with these.")
    flavour: Literal[FLAVOURS] | None = Field(  # type: ignore[valid-type]
        None, description="Provider flavour of reply texts: " + ", ".join(FLAVOURS) + "."
    )
    idle_timeout: Duration | None = Field(
        None, gt=0, description="Seconds without a command before 421 and hang-up (300s)."
    )
    session_timeout: Duration | None = Field(
        None, gt=0, description="Longest a whole session may last (600s)."
    )
    tarpit_timeout: Duration | None = Field(
        None, gt=0, description="How long a tarpit connection is held before closing (300s)."
    )
    slow_delay: Duration | None = Field(
        None, ge=0, description="The slow variant's delay before every reply (1s)."
    )
    line_length_limit: int | None = Field(
        None,
        ge=80,
        description="Longest message line taken in DATA, in octets; none by default (as Postfix).",
    )

    def server_options(self) -> dict[str, Any]:
        """The limits set here, as :class:`harness.smtp.server.MXHost` keyword arguments."""
        names = {
            "idle_timeout": "timeout",
            "session_timeout": "session_timeout",
            "tarpit_timeout": "tarpit_timeout",
            "slow_delay": "slow_delay",
            "line_length_limit": "line_length_limit",
        }
        values = {option: getattr(self, field) for field, option in names.items()}
        return {option: value for option, value in values.items() if value is not None}

    @model_validator(mode="before")
    @classmethod
    def _split_rules(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        settings = {k: v for k, v in data.items() if not (isinstance(k, str) and _is_rule_key(k))}
        rules = {k: v for k, v in data.items() if isinstance(k, str) and _is_rule_key(k)}
        return {**settings, "@rules": rules}

    @field_validator("rules")
    @classmethod
    def _rules(cls, rules: dict[str, Any]) -> dict[str, Any]:
        problems = _rule_problems(rules)
        if problems:
            raise _fail(problems)
        return rules

    @field_validator("server_down")
    @classmethod
    def _server_down(cls, value: str | None) -> str | None:
        if value is not None and value not in SERVER_DOWN_MODES:
            hint = did_you_mean(value, SERVER_DOWN_MODES)
            message = f"unknown server-down mode {value!r}" + (
                f"; did you mean {hint}?" if hint else ""
            )
            raise _fail([Problem((), message, "one of " + ", ".join(SERVER_DOWN_MODES))])
        return value

    @model_validator(mode="after")
    def _down_means_no_rules(self) -> MailHost:
        # A host that refuses, tarpits or drops never reaches RCPT, so its rules could never
        # apply; "slow" still answers, so rules make sense there.
        if self.server_down not in (None, "slow") and self.rules:
            first = next(iter(self.rules))
            raise _fail(
                [
                    Problem(
                        (first,),
                        f"rules on a host that is down ({self.server_down}) never apply",
                        "no rules, or server_down: slow",
                        key=True,
                    )
                ]
            )
        return self


class MxHost(MailHost):
    """The MX host of one domain (the key under ``mx:``), optionally serving more domains."""

    also: list[Domain] = Field(
        default_factory=list, description="More domains whose MX is this same host."
    )


class RecipientGenerator(_Model):
    """``{count: 100, pattern: "user{n}@example.com"}``: many recipients in one line."""

    count: int = Field(ge=1, le=100_000, description="How many recipients.")
    pattern: str = Field(description="An address with {n}, the recipient's number.")
    start: int = Field(1, ge=0, description="The first n.")
    behaviours: dict[str, Behaviour] = Field(
        default_factory=dict,
        description='Behaviour by recipient number: {"1-10": mailbox_full, "11": greylist}.',
    )

    @model_validator(mode="before")
    @classmethod
    def _keys_as_text(cls, data: Any) -> Any:
        # YAML reads `7: greylist` with an integer key; ranges like `1-10` come as text.
        if isinstance(data, Mapping) and isinstance(data.get("behaviours"), Mapping):
            data = {**data, "behaviours": {str(k): v for k, v in data["behaviours"].items()}}
        return data

    @model_validator(mode="after")
    def _check(self) -> RecipientGenerator:
        problems: list[Problem] = []
        names = [f for _, f, _, _ in string.Formatter().parse(self.pattern) if f is not None]
        if names != ["n"] or address_problem(self.pattern.replace("{n}", "1")) is not None:
            problems.append(
                Problem(
                    ("pattern",),
                    "bad recipient pattern",
                    'an address with one {n}, like "user{n}@example.com"',
                    repr(self.pattern),
                )
            )
        last = self.start + self.count - 1
        taken: dict[int, str] = {}
        for key in self.behaviours:
            span = _parse_span(key)
            if span is None or not (self.start <= span[0] <= span[1] <= last):
                problems.append(
                    Problem(
                        ("behaviours", key),
                        "bad recipient range",
                        f'"n" or "a-b" with {self.start} <= a <= b <= {last}',
                        repr(key),
                        key=True,
                    )
                )
                continue
            for n in range(span[0], span[1] + 1):
                if n in taken:
                    problems.append(
                        Problem(
                            ("behaviours", key),
                            f"recipient {n} already has a behaviour (from {taken[n]!r})",
                            key=True,
                        )
                    )
                    break
                taken[n] = key
        problems.extend(
            Problem(("behaviours", *p.path), p.message, p.expected, p.seen)
            for p in _rule_problems(self.behaviours)
        )
        if problems:
            raise _fail(problems)
        return self

    def addresses(self) -> list[str]:
        """Every generated address, in order."""
        return [self.pattern.format(n=n) for n in range(self.start, self.start + self.count)]

    def assignments(self) -> dict[str, Any]:
        """Address -> behaviour for the recipients given one under ``behaviours``."""
        out: dict[str, Any] = {}
        for key, behaviour in self.behaviours.items():
            span = _parse_span(key)
            if span is not None:
                for n in range(span[0], span[1] + 1):
                    out[self.pattern.format(n=n)] = behaviour
        return out


def _parse_span(key: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", key)
    if not match:
        return None
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) else low
    return (low, high) if low <= high else None


def _recipients_shape(value: Any) -> str | None:
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping | RecipientGenerator):
        return "generator"
    return None


class Campaign(_Model):
    """The campaign the harness submits to the integration, playing CleverTap."""

    sender: Address = Field(alias="from", description="The From address of every message.")
    subject: str = Field("Harness campaign", description="The subject of every message.")
    text: str = Field(
        "Hello from the harness.\n\nUnsubscribe: *|UNSUBSCRIBE|*\n",
        description="The plain-text body; *|UNSUBSCRIBE|* as CleverTap writes it.",
    )
    to: Annotated[
        Annotated[list[Address], Tag("list")] | Annotated[RecipientGenerator, Tag("generator")],
        Discriminator(_recipients_shape),
    ] = Field(description="A list of addresses, or a generator {count, pattern, behaviours}.")
    meta: str = Field(
        DEFAULT_META,
        description="Template of the X-CleverTap_META header; placeholders: "
        + ", ".join("{" + f + "}" for f in META_FIELDS)
        + ".",
    )
    campaign_id: str = Field("harness", description="The value of {campaign} in meta.")
    per_connection: int = Field(1, ge=1, description="Messages sent per SMTP connection.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers added to every message."
    )

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise _fail([Problem((), "no recipients", "at least one address", "[]")])
        if _recipients_shape(value) is None:
            raise _fail(
                [Problem((), "bad recipients", "a list or {count, pattern}", _shown(value))]
            )
        return value

    @field_validator("meta")
    @classmethod
    def _meta(cls, value: str) -> str:
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        except ValueError as exc:
            raise _fail([Problem((), f"bad meta template: {exc}")]) from None
        for name in names:
            if name not in META_FIELDS:
                hint = did_you_mean(name, META_FIELDS)
                message = f"unknown placeholder {{{name}}}" + (
                    f"; did you mean {hint}?" if hint else ""
                )
                raise _fail(
                    [
                        Problem(
                            (), message, "one of " + ", ".join("{" + f + "}" for f in META_FIELDS)
                        )
                    ]
                )
        return value

    @model_validator(mode="after")
    def _unique(self) -> Campaign:
        seen: set[str] = set()
        if isinstance(self.to, list):
            for i, address in enumerate(self.to):
                if address.lower() in seen:
                    raise _fail([Problem(("to", i), f"{address} is listed twice")])
                seen.add(address.lower())
        return self

    @property
    def recipients(self) -> list[str]:
        """Every recipient address, in sending order."""
        return list(self.to) if isinstance(self.to, list) else self.to.addresses()

    def meta_for(self, address: str, n: int, ts: int) -> str:
        """The ``X-CleverTap_META`` value for recipient number *n* (from 1) sent at *ts*."""
        return self.meta.format(e=address, n=n, campaign=self.campaign_id, ts=ts)


ClickVia = Literal["one_click", "get", "mailto", "scan"]
ProbeName = Literal["wrong_password", "wrong_user", "no_auth"]
# pydantic needs the names as Literal types; their home is harness.vocab.
if get_args(ClickVia) != CLICK_VIAS or get_args(ProbeName) != SUBMISSION_PROBES:  # pragma: no cover
    raise RuntimeError("harness.scenario.model disagrees with harness.vocab on clicks or probes")


class Click(_Model):
    """An unsubscribe click by a recipient, after their message reached their mail server."""

    recipient: Address
    via: ClickVia = Field(
        "one_click",
        description="one_click: RFC 8058 POST; get: open the link; mailto: mail the address; "
        "scan: a link scanner GETs every link and submits nothing (must not unsubscribe).",
    )
    after: Duration = Field(0.0, description="Delay after the message was accepted.")


class Addresses(_Model):
    """Where an integration that is already running listens."""

    smtp: HostPort = Field(description="Its SMTP submission port (host:port).")
    bounce: HostPort | None = Field(None, description="Its SMTP intake for DSNs (host:port).")
    http: str | None = Field(None, description="Base URL of its HTTP side (unsubscribe pages).")

    @field_validator("http")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise _fail([Problem((), "bad URL", "http://host:port[/path]", repr(value))])
        return value


class ReadyProbe(_Model):
    """How to tell the integration is ready, when not by its ready file."""

    tcp: HostPort | None = Field(None, description="Ready when this port accepts connections.")
    http: str | None = Field(None, description="Ready when this URL answers 2xx.")

    @model_validator(mode="after")
    def _one(self) -> ReadyProbe:
        if (self.tcp is None) == (self.http is None):
            raise _fail([Problem((), "give exactly one probe", "tcp or http", "both or neither")])
        return self


class Integration(_Model):
    """The integration under test: a command the harness starts, or addresses of one running.

    Left out (or with neither ``command`` nor ``addresses``), the runner starts the bundled
    example integration; ``env`` and ``cwd`` still apply to it.
    """

    command: list[str] | None = Field(
        None, description="Argv (or one shell-like string) to start it; cwd is the scenario's."
    )
    cwd: str | None = Field(None, description="Working directory, relative to the scenario file.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables.")
    addresses: Addresses | None = Field(None, description="Where an already running one listens.")
    auth: Credentials | None = Field(None, description="SMTP AUTH for campaign submission.")
    tls: Literal["none", "starttls", "implicit"] = Field(
        "none", description="How the campaign driver secures submission."
    )
    ready: ReadyProbe | None = Field(
        None, description="Readiness probe; default: the ready file of the integration contract."
    )
    ready_timeout: Duration = Field(10.0, description="How long to wait for readiness.")
    stop_timeout: Duration = Field(
        5.0,
        description="How long it may take to exit after SIGTERM; then SIGKILL, and the "
        "scenario fails.",
    )
    retry_budget: Duration | None = Field(
        None,
        description="How long its retry schedule for one message may take (HARNESS_RETRY_BUDGET); "
        "default: expect.within minus 5 s, at least half of expect.within.",
    )
    submission_probes: list[ProbeName] = Field(
        default_factory=list,
        description="After the campaign, submissions tried with bad credentials that the "
        "integration must refuse: wrong_password, wrong_user, no_auth (needs auth).",
    )

    @field_validator("command", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = shlex.split(value)
            except ValueError as exc:
                raise _fail([Problem((), f"bad command line: {exc}")]) from None
        if isinstance(value, list) and not value:
            raise _fail([Problem((), "empty command", "a program and its arguments", "[]")])
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_text(cls, value: Any) -> Any:
        # `PORT: 8080` is an integer in YAML; environment values are text anyway.
        if isinstance(value, Mapping):
            return {
                k: (str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v)
                for k, v in value.items()
            }
        return value

    @model_validator(mode="after")
    def _which(self) -> Integration:
        problems: list[Problem] = []
        # Neither is fine: the bundled example, tuned by `env` (e.g. its EXAMPLE_* knobs).
        if self.command is not None and self.addresses is not None:
            problems.append(Problem((), "give command or addresses", "at most one", "both"))
        elif self.addresses is not None:
            for key in ("cwd", "env"):
                if getattr(self, key):
                    problems.append(
                        Problem((key,), f"{key} only applies to a command the harness starts")
                    )
        if self.submission_probes and self.auth is None:
            problems.append(
                Problem(
                    ("submission_probes",),
                    "submission probes need integration.auth: without credentials the "
                    "integration is not asked to require AUTH, so it may accept anybody",
                    "an auth: {username, password} block",
                )
            )
        for i, name in enumerate(self.submission_probes):
            if name in self.submission_probes[:i]:
                problems.append(Problem(("submission_probes", i), f"{name} is listed twice"))
        if problems:
            raise _fail(problems)
        return self


EventName = Literal[
    "softbounce",
    "hardbounce",
    "unsubscribe",
    "delivered",
    "soft_bounce",
    "hard_bounce",
    "spam",
    "unsubscribed",
]
# pydantic needs the names as a Literal type; their home is harness.vocab.
if set(get_args(EventName)) != set(CLASS_OF_EVENT):  # pragma: no cover - caught by any test run
    raise RuntimeError("harness.scenario.model disagrees with harness.vocab on event names")


class TsExpectation(_Model):
    """A check of a callback's ``ts``."""

    within: Duration = Field(description="ts within this of the real event.")


class ExpectedCallback(_Model):
    """A callback that must arrive: ``{event: softbounce, e: full@example.com}``."""

    event: EventName = Field(description="Legacy: softbounce, hardbounce, unsubscribe. v2: type.")
    e: Address = Field(description="The recipient the callback is about.")
    ts: TsExpectation | None = Field(None, description="Check the timestamp (legacy only).")
    count: int = Field(1, ge=1, description="How many times it must arrive.")


class AbsentCallback(_Model):
    """A callback that must not arrive; without ``event``, no callback at all for ``e``."""

    event: EventName | None = None
    e: Address


class ViolationPolicy(_Model):
    """Which check violations the run tolerates: ``none`` or ``{allow: [CT301, ...]}``."""

    allow: list[Annotated[str, Field(pattern=r"^CT\d{3}$")]] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _none(cls, data: Any) -> Any:
        if data == "none":
            return {"allow": []}
        if isinstance(data, str):
            raise _fail(
                [Problem((), "bad violations policy", "none or {allow: [codes]}", repr(data))]
            )
        return data


class Expect(_Model):
    """What must (and must not) happen before the deadline."""

    within: Duration = Field(30.0, description="Deadline for every expected callback.")
    callbacks: list[ExpectedCallback] = Field(
        default_factory=list, description="Callbacks that must arrive before the deadline."
    )
    absent: list[AbsentCallback] = Field(
        default_factory=list, description="Callbacks that must not arrive."
    )
    nothing_else: bool = Field(False, description="Fail on any callback not listed.")
    violations: ViolationPolicy = Field(
        default_factory=ViolationPolicy,
        description="none (default) or {allow: [codes]}.",
    )
    quiet: Duration = Field(
        1.5,
        description="Once everything settled, how long nothing new may happen before judging "
        "(long enough to see a duplicate or a resent callback).",
    )
    after_dsn: Duration = Field(
        2.0,
        description="How long the run goes on after each DSN reached the integration (its "
        "callback, or a duplicate of it).",
    )


class DsnDefaults(_Model):
    """Defaults for DSNs sent by accept-then-bounce rules."""

    dialect: Literal[DIALECTS] = Field(  # type: ignore[valid-type]
        "postfix", description="The mail system the DSNs imitate (see docs/dsn.md)."
    )
    delay: Duration = Field(1.0, description="Time from acceptance to the DSN.")


class Scenario(_Model):
    """A whole scenario. Build one with :func:`harness.scenario.loader.load_scenario`."""

    name: str = Field(min_length=1, description="Short name; defaults to the file name.")
    description: str = Field("", description="What the scenario proves.")
    clevertap: CleverTapSettings = Field(default_factory=CleverTapSettings)  # type: ignore[arg-type]
    mx: dict[Domain, MxHost] = Field(default_factory=dict, description="Fake MX hosts by domain.")
    relay: MailHost | None = Field(None, description="One smarthost for every domain.")
    dsn: DsnDefaults = Field(default_factory=DsnDefaults)  # type: ignore[arg-type]
    campaign: Campaign
    unsubscribe: list[Click] = Field(default_factory=list, description="Recipients' clicks.")
    unsubscribe_allow_hosts: list[AllowedHost] = Field(
        default_factory=list,
        description="Hosts the unsubscribe clicker may contact besides loopback and the "
        "integration's announced addresses (redirects included): names, *.domain, IP addresses, "
        "networks like 10.0.0.0/8.",
    )
    integration: Integration | None = Field(
        None, description="The integration under test; default: the bundled example."
    )
    expect: Expect = Field(default_factory=Expect)  # type: ignore[arg-type]

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The file the scenario was loaded from, if any."""
        return self._source

    @property
    def base_dir(self) -> Path:
        """Where relative paths resolve: the scenario file's directory (or the current one)."""
        return self._source.parent if self._source is not None else Path.cwd()

    @property
    def recipients(self) -> list[str]:
        """Every campaign recipient, in sending order."""
        return self.campaign.recipients

    @property
    def retry_budget(self) -> float:
        """Seconds the integration's retry schedule for one message may take (first attempt to
        giving up): ``integration.retry_budget``, else ``expect.within`` minus 5 s for reporting
        (at least half of ``within``)."""
        if self.integration is not None and self.integration.retry_budget is not None:
            return float(self.integration.retry_budget)
        within = float(self.expect.within)
        return max(within / 2, within - RETRY_REPORT_MARGIN)

    @model_validator(mode="after")
    def _cross(self) -> Scenario:
        problems = list(_cross_problems(self))
        if problems:
            raise _fail(problems)
        return self

    def complainers(self) -> set[str]:
        """Keys (:func:`~harness.vocab.address_key`) of the recipients whose mail server may
        send a complaint about them (a ``complaint`` behaviour, on any attempt)."""
        plans = self.hosts()
        relay = next((p for p in plans if p.role == "relay"), None)
        by_domain = {d.lower(): p for p in plans for d in p.domains}
        rules: dict[int, smtp_rules.Rules] = {}
        found: set[str] = set()
        for address in self.recipients:
            plan = relay or by_domain.get(address.rsplit("@", 1)[1].lower())
            if plan is None:
                continue
            parsed = rules.get(id(plan))
            if parsed is None:
                parsed = rules[id(plan)] = plan.parsed_rules()
            if MailReport.COMPLAINT in parsed.match(address)[1].reports():
                found.add(address_key(address))
        return found

    def hosts(self) -> list[HostPlan]:
        """The mail servers a runner must start: declared MX hosts, implicit accept-all MX hosts
        for recipient domains nobody declared (when there is no relay), and the relay.

        Behaviours assigned by ``campaign.to.behaviours`` are merged in as exact-address rules
        of the relay if there is one, else of the recipient's MX host; ``accept_then_bounce``
        rules that name no ``dsn`` or ``after`` get the scenario's ``dsn:`` defaults.
        """
        assigned = (
            self.campaign.to.assignments()
            if isinstance(self.campaign.to, RecipientGenerator)
            else {}
        )
        plans: list[HostPlan] = []
        by_domain: dict[str, HostPlan] = {}
        for domain, host in self.mx.items():
            plan = HostPlan("mx", [domain, *host.also], dict(host.rules), host)
            plans.append(plan)
            for d in plan.domains:
                by_domain[d] = plan
        if self.relay is None:
            for address in self.recipients:
                domain = address.rsplit("@", 1)[1].lower()
                if domain not in by_domain:
                    plan = HostPlan("mx", [domain], {}, MxHost.model_validate({}))
                    plans.append(plan)
                    by_domain[domain] = plan
            for address, behaviour in assigned.items():
                by_domain[address.rsplit("@", 1)[1].lower()].rules[address] = behaviour
        else:
            relay = HostPlan("relay", [], dict(self.relay.rules), self.relay)
            relay.rules.update(assigned)
            plans.append(relay)
        for plan in plans:
            plan.rules = {k: _dsn_defaults(v, self.dsn) for k, v in plan.rules.items()}
        return plans


@dataclass(slots=True)
class HostPlan:
    """A mail server to start, as :meth:`Scenario.hosts` computes it."""

    role: Literal["mx", "relay"]
    domains: list[str]
    """The domains whose MX is this host (empty for the relay)."""
    rules: dict[str, Any]
    """Rule key -> behaviour, in the scenario's order, assignments from the campaign merged."""
    host: MailHost
    """The declared settings (server_down, tls, auth, flavour)."""

    def parsed_rules(self) -> smtp_rules.Rules:
        """The rules parsed by the mail world (:class:`harness.smtp.rules.Rules`)."""
        return smtp_rules.Rules.parse(self.rules, flavour=self.host.flavour or "postfix")


def _dsn_defaults(behaviour: Any, dsn: DsnDefaults) -> Any:
    if isinstance(behaviour, list):
        return [_dsn_defaults(b, dsn) for b in behaviour]
    if isinstance(behaviour, Mapping):
        out = {
            k: _dsn_defaults(v, dsn) if k in ("then", "else") else v for k, v in behaviour.items()
        }
        if "accept_then_bounce" in out or "accept_then_report" in out:
            out.setdefault("dsn", dsn.dialect)
            out.setdefault("after", dsn.delay)
        elif "auto_reply" in out or "complaint" in out:
            out.setdefault("after", dsn.delay)
        return out
    if behaviour in ("auto_reply", "complaint"):
        return {behaviour: None, "after": dsn.delay}
    return behaviour


def _cross_problems(s: Scenario) -> Iterator[Problem]:
    recipients = s.recipients
    lowered = {a.lower() for a in recipients}
    allowed_events = LEGACY_EVENTS if s.clevertap.format == "legacy" else V2_TYPES

    def outside(address: str, path: tuple[str | int, ...]) -> Problem | None:
        if address.lower() in lowered:
            return None
        # difflib over 100k generated addresses is slow; the closest few by prefix suffice.
        hint = did_you_mean(address, recipients[:2000])
        return Problem(
            path,
            f"{address} is not a campaign recipient" + (f"; did you mean {hint}?" if hint else ""),
        )

    # mx domains: declared twice (key and another host's `also`)
    owner: dict[str, str] = {}
    for domain, host in s.mx.items():
        for i, d in enumerate([domain, *host.also]):
            path: tuple[str | int, ...] = (
                ("mx", domain) if i == 0 else ("mx", domain, "also", i - 1)
            )
            if d in owner and owner[d] != domain:
                yield Problem(path, f"domain {d} already has an MX host (mx.{owner[d]})")
            owner.setdefault(d, domain)

    # campaign behaviours must land somewhere that can apply them
    if isinstance(s.campaign.to, RecipientGenerator) and s.relay is None:
        for address, _ in s.campaign.to.assignments().items():
            domain = address.rsplit("@", 1)[1].lower()
            target = s.mx.get(owner.get(domain, ""))
            if target is not None and target.server_down not in (None, "slow"):
                yield Problem(
                    ("campaign", "to", "behaviours"),
                    f"{address} gets a behaviour but mx.{owner[domain]} is down "
                    f"({target.server_down})",
                )
                break
            if target is not None and address in target.rules:
                yield Problem(
                    ("campaign", "to", "behaviours"),
                    f"{address} has a rule under mx.{owner[domain]} too; keep one",
                )
                break

    for i, click in enumerate(s.unsubscribe):
        problem = outside(click.recipient, ("unsubscribe", i, "recipient"))
        if problem:
            yield problem
    # A link scanner's fetches are not an unsubscribe action: they never justify one.
    clicked = {address_key(c.recipient) for c in s.unsubscribe if c.via != SCAN}
    scanned = {address_key(c.recipient) for c in s.unsubscribe if c.via == SCAN}
    if s.clevertap.format == "legacy" and s.clevertap.complaint_as == "spam":
        yield Problem(
            ("clevertap", "complaint_as"),
            "the legacy format has no spam event: a complaint is reported as an unsubscribe",
            "unsubscribe (or clevertap.format: v2)",
            "'spam'",
        )
    elif s.clevertap.complaint_event in UNSUBSCRIBE_EVENTS and any(
        cb.event in UNSUBSCRIBE_EVENTS for cb in s.expect.callbacks
    ):
        # A complaint unsubscribes without a click (when that is the scenario's mapping).
        clicked |= s.complainers()

    for i, cb in enumerate(s.expect.callbacks):
        where: tuple[str | int, ...] = ("expect", "callbacks", i)
        if cb.event not in allowed_events:
            yield Problem(
                (*where, "event"),
                f"{cb.event!r} is not a {s.clevertap.format} event (clevertap.format is "
                f"{s.clevertap.format})",
                "one of " + ", ".join(allowed_events),
                repr(cb.event),
            )
        problem = outside(cb.e, (*where, "e"))
        if problem:
            yield problem
        elif cb.event in UNSUBSCRIBE_EVENTS and address_key(cb.e) not in clicked:
            only_scanned = address_key(cb.e) in scanned
            yield Problem(
                (*where, "e"),
                f"an unsubscribe is expected for {cb.e} but nobody clicks for it"
                + (" (a scan is no click: it must not unsubscribe)" if only_scanned else ""),
                "an unsubscribe: entry for this recipient"
                + (" with via one_click, get or mailto" if only_scanned else ""),
            )
        if cb.ts is not None and s.clevertap.format == "v2":
            yield Problem((*where, "ts"), "v2 callbacks carry no ts", "no ts check with v2")

    expected = {(cb.event, address_key(cb.e)) for cb in s.expect.callbacks}
    for i, ab in enumerate(s.expect.absent):
        where = ("expect", "absent", i)
        if ab.event is not None and ab.event not in allowed_events:
            yield Problem(
                (*where, "event"),
                f"{ab.event!r} is not a {s.clevertap.format} event",
                "one of " + ", ".join(allowed_events),
                repr(ab.event),
            )
        problem = outside(ab.e, (*where, "e"))
        if problem:
            yield problem
        if any(
            e == address_key(ab.e) and (ab.event is None or ab.event == ev) for ev, e in expected
        ):
            yield Problem(where, f"{ab.e} is both expected and absent")

    # A relay rule key or mx rule key outside every recipient is harmless (a catch-all pattern),
    # but an exact address rule nobody is sent to is almost always a typo.
    for domain, host in s.mx.items():
        for key in host.rules:
            if "@" in key and "*" not in key and "?" not in key and key.lower() not in lowered:
                problem = outside(key, ("mx", domain, key))
                if problem:
                    yield problem

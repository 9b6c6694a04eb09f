"""The behaviour grammar: what a fake mail server does for each recipient.

Behaviours are parsed from plain data (what YAML gives), so a scenario maps onto them directly:

- a string: a catalog mode (``"mailbox_full"``), ``"accept"``, or a raw reply
  (``"550 5.7.1 go away"``, at RCPT unless a stage is given);
- a list: one behaviour per attempt, the last one repeating: ``[greylist, accept]``;
- a mapping, one of

  - ``{mode: mailbox_full, flavour: yahoo, stage: rcpt, class: hard}`` or
    ``{reply: "550 5.7.1 x", stage: end_of_data, class: soft}``;
  - ``{mode: mailbox_full, for: 10m, then: accept}``: a time window from the first attempt;
  - ``{probability: 0.3, mode: throttle, else: accept, seed: 7}``: seeded chance;
  - ``{accept_then_bounce: invalid_address, after: 2s, dsn: postfix, action: failed}``, with
    ``final_recipient: alias@y.test`` for a DSN that names another address (aliasing);
  - ``{accept_then_report: delivered, after: 1s, dsn: postfix}``: a success DSN (``delivered``,
    ``relayed`` or ``expanded``), ``final_recipient`` as above;
  - ``{auto_reply: vacation, after: 1s}`` (or just ``auto_reply``): accept, then an RFC 3834
    out-of-office reply to the sender;
  - ``{complaint: abuse, after: 1s}`` (or just ``complaint``): accept, then an RFC 5965
    feedback-loop report (the recipient marked the message as spam).

  ``for`` and ``probability`` wrap whatever the rest of the mapping describes; when both are
  given the window is outermost.

Attempts (sequences), windows and chances are counted per (envelope sender, recipient), the way
greylisting counts triplets; each nested behaviour counts from the first time it is reached.
Chances are decided by hashing (seed, sender, recipient, attempt), so the same seed gives the
same decisions whatever order concurrent connections arrive in.

:class:`Rules` maps recipients to behaviours. Keys are an exact address (``a@x.test``), a
domain (``x.test``) or a wildcard pattern (``*@x.test``, ``bounce-*@x.test``, ``*.x.test``;
``*`` and ``?`` as in shell globs). Matching ignores case and goes: exact address, then patterns
in the order given (first match wins), then domain, then the default (``accept``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import translate
from typing import Any

from harness import durations
from harness.addresses import address_problem
from harness.errors import ConfigError, did_you_mean
from harness.smtp.catalog import CATALOG, FLAVOURS, BounceClass, FailureMode, Reply, Stage
from harness.smtp.dialects import (
    AUTO_REPLY_STYLES,
    COMPLAINT_TYPES,
    DIALECTS,
    FAILURE_ACTIONS,
    SUCCESS_ACTIONS,
    Dialect,
    able_to_report,
    unable_to_report,
)
from harness.vocab import MailReport

__all__ = [
    "DSN_DIALECTS",
    "RECIPIENT_STAGES",
    "Behaviour",
    "Bounce",
    "Outcome",
    "RuleError",
    "Rules",
    "class_of",
    "parse_behaviour",
    "parse_duration",
    "parse_reply",
]

Path = tuple[str | int, ...]

RECIPIENT_STAGES = (Stage.RCPT, Stage.DATA, Stage.END_OF_DATA)
"""The stages a per-recipient behaviour can fail at (earlier ones belong to the whole host)."""

DSN_DIALECTS = DIALECTS
"""DSN dialects ``accept_then_bounce`` can ask for: :data:`harness.smtp.dialects.DIALECTS`."""

DSN_ACTIONS = FAILURE_ACTIONS
"""The actions of ``accept_then_bounce``: :data:`harness.smtp.dialects.FAILURE_ACTIONS`."""


class RuleError(ConfigError):
    """A behaviour or rule set that does not parse.

    ``path`` locates the bad value inside the data given (mapping keys and list indexes), so a
    scenario loader can turn it into ``file:line:column``; ``expected`` and ``seen`` say what
    was wanted and what was found.
    """

    def __init__(self, path: Path, message: str, *, expected: str, seen: object) -> None:
        self.path = tuple(path)
        self.expected = expected
        self.seen = seen
        self.reason = message
        where = ".".join(str(p) for p in self.path) or "<top>"
        super().__init__(f"{where}: {message} (expected {expected}, seen {seen!r})")


# -- outcomes ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bounce:
    """Accept now, then mail a report about this recipient to the sender after ``after``
    seconds: a DSN (failed, delayed or a success), an auto-reply or a complaint (``report``)."""

    status: str
    """The enhanced status the DSN reports (``5.1.1``); empty for the other reports."""
    diagnostic: str | None
    """The remote reply quoted in ``Diagnostic-Code`` (``550 5.1.1 ...``), if any."""
    after: float
    dialect: str
    """The DSN dialect; empty for the other reports."""
    action: str
    """The DSN's ``Action``; empty for the other reports."""
    report: MailReport = MailReport.DSN
    final_recipient: str | None = None
    """The DSN's ``Final-Recipient`` when it differs from the address sent to (aliasing)."""
    style: str | None = None
    """The auto-reply's style, or the complaint's feedback type."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the server does for one recipient on one attempt."""

    stage: Stage
    reply: Reply
    bounce_class: BounceClass
    mode: str | None = None
    """The catalog mode behind the reply, or None for a raw reply."""
    rule: str | None = None
    """The rule key that matched the recipient (None for the default)."""
    attempt: int = 1
    bounce: Bounce | None = None

    @property
    def accepted(self) -> bool:
        """True when the recipient gets through (a 2xx at its stage)."""
        return self.reply.code < 300


@dataclass(slots=True)
class Context:
    """What a behaviour decides on. ``now`` comes from the server's (injectable) clock."""

    sender: str
    recipient: str
    now: float
    values: Mapping[str, str] = field(default_factory=dict)
    """Placeholder values for reply texts (``rcpt``, ``peer``, ``host``)."""
    rule: str | None = None
    """The rule key that matched the recipient: every outcome carries it."""


# -- behaviours ----------------------------------------------------------------------------------


class Behaviour:
    """A parsed behaviour: :meth:`decide` gives the outcome of one attempt."""

    def decide(self, ctx: Context) -> Outcome:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget attempts, windows and chances seen so far."""

    def describe(self) -> str:
        """A short human description, for reports."""
        raise NotImplementedError

    def reports(self) -> frozenset[MailReport]:
        """The kinds of report this behaviour may mail back later (DSN, auto-reply, complaint)."""
        return frozenset()


@dataclass(eq=False)
class _Fixed(Behaviour):
    stage: Stage
    mode: FailureMode | None
    raw: Reply | None
    flavour: str
    bounce_class: BounceClass

    def decide(self, ctx: Context) -> Outcome:
        if self.mode is not None:
            reply = self.mode.reply(self.flavour, **ctx.values)
            if reply is None:  # pragma: no cover - excluded at parse time
                raise AssertionError(f"mode {self.mode.name} has no reply")
            return Outcome(self.stage, reply, self.bounce_class, self.mode.name, ctx.rule)
        if self.raw is None:  # pragma: no cover - one of the two is always set
            raise AssertionError("a fixed behaviour without a reply")
        return Outcome(self.stage, self.raw, self.bounce_class, rule=ctx.rule)

    def describe(self) -> str:
        what = self.mode.name if self.mode else str(self.raw)
        return f"{what} at {self.stage} ({self.bounce_class})"


def _key(ctx: Context) -> tuple[str, str]:
    return (ctx.sender.lower(), ctx.recipient.lower())


@dataclass(eq=False)
class _Sequence(Behaviour):
    steps: list[Behaviour]
    _attempts: dict[tuple[str, str], int] = field(default_factory=dict)

    def decide(self, ctx: Context) -> Outcome:
        key = _key(ctx)
        n = self._attempts.get(key, 0) + 1
        self._attempts[key] = n
        outcome = self.steps[min(n, len(self.steps)) - 1].decide(ctx)
        return replace(outcome, attempt=n)

    def reset(self) -> None:
        self._attempts.clear()
        for step in self.steps:
            step.reset()

    def describe(self) -> str:
        return "attempts: " + ", then ".join(s.describe() for s in self.steps)

    def reports(self) -> frozenset[MailReport]:
        return frozenset().union(*(s.reports() for s in self.steps))


@dataclass(eq=False)
class _Window(Behaviour):
    during: Behaviour
    seconds: float
    then: Behaviour
    _first: dict[tuple[str, str], float] = field(default_factory=dict)

    def decide(self, ctx: Context) -> Outcome:
        first = self._first.setdefault(_key(ctx), ctx.now)
        if ctx.now - first < self.seconds:
            return self.during.decide(ctx)
        return self.then.decide(ctx)

    def reset(self) -> None:
        self._first.clear()
        self.during.reset()
        self.then.reset()

    def describe(self) -> str:
        return f"{self.during.describe()} for {self.seconds:g} s, then {self.then.describe()}"

    def reports(self) -> frozenset[MailReport]:
        return self.during.reports() | self.then.reports()


@dataclass(eq=False)
class _Chance(Behaviour):
    probability: float
    hit: Behaviour
    miss: Behaviour
    seed: int
    _attempts: dict[tuple[str, str], int] = field(default_factory=dict)

    def draw(self, sender: str, recipient: str, attempt: int) -> float:
        """A number in [0, 1) fixed by (seed, sender, recipient, attempt)."""
        token = f"{self.seed}\0{sender}\0{recipient}\0{attempt}".encode()
        digest = hashlib.blake2b(token, digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def decide(self, ctx: Context) -> Outcome:
        key = _key(ctx)
        n = self._attempts.get(key, 0) + 1
        self._attempts[key] = n
        branch = self.hit if self.draw(*key, n) < self.probability else self.miss
        return branch.decide(ctx)

    def reset(self) -> None:
        self._attempts.clear()
        self.hit.reset()
        self.miss.reset()

    def describe(self) -> str:
        return (
            f"{self.hit.describe()} with probability {self.probability:g} "
            f"(seed {self.seed}), else {self.miss.describe()}"
        )

    def reports(self) -> frozenset[MailReport]:
        return self.hit.reports() | self.miss.reports()


@dataclass(eq=False)
class _AcceptThenBounce(Behaviour):
    mode: FailureMode | None
    raw: Reply | None
    flavour: str
    bounce_class: BounceClass
    after: float
    dialect: str
    action: str
    final_recipient: str | None = None

    def decide(self, ctx: Context) -> Outcome:
        if self.mode is not None:
            reply = self.mode.reply(self.flavour, **ctx.values)
            status = (reply.enhanced if reply else None) or self.mode.enhanced or "5.0.0"
            diagnostic = str(reply) if reply else None
        else:
            if self.raw is None:  # pragma: no cover - one of the two is always set
                raise AssertionError("accept_then_bounce without a reply")
            status = self.raw.enhanced or f"{self.raw.code // 100}.0.0"
            diagnostic = str(self.raw)
        bounce = Bounce(
            status,
            diagnostic,
            self.after,
            self.dialect,
            self.action,
            final_recipient=self.final_recipient,
        )
        return Outcome(
            Stage.LATER,
            _ACCEPT_REPLY,
            self.bounce_class,
            self.mode.name if self.mode else None,
            ctx.rule,
            bounce=bounce,
        )

    def describe(self) -> str:
        what = self.mode.name if self.mode else str(self.raw)
        alias = f" for {self.final_recipient}" if self.final_recipient else ""
        return (
            f"accept, then a {self.dialect} DSN ({self.action}, {what}){alias} "
            f"after {self.after:g} s"
        )

    def reports(self) -> frozenset[MailReport]:
        return frozenset({MailReport.DSN})


@dataclass(eq=False)
class _AcceptThenReport(Behaviour):
    """Accept, then a success DSN (delivered, relayed, expanded)."""

    action: str
    after: float
    dialect: str
    final_recipient: str | None = None

    def decide(self, ctx: Context) -> Outcome:
        # A success DSN quotes the reply to the final dot (Postfix's "queued as").
        bounce = Bounce(
            "2.0.0",
            "250 2.0.0 Ok: queued",
            self.after,
            self.dialect,
            self.action,
            final_recipient=self.final_recipient,
        )
        return Outcome(
            Stage.LATER, _ACCEPT_REPLY, BounceClass.NONE, "accept", ctx.rule, bounce=bounce
        )

    def describe(self) -> str:
        alias = f" for {self.final_recipient}" if self.final_recipient else ""
        return (
            f"accept, then a {self.dialect} success DSN ({self.action}){alias} "
            f"after {self.after:g} s"
        )

    def reports(self) -> frozenset[MailReport]:
        return frozenset({MailReport.DSN})


@dataclass(eq=False)
class _AcceptThenMail(Behaviour):
    """Accept, then an auto-reply or a complaint to the sender."""

    report: MailReport
    style: str
    after: float

    def decide(self, ctx: Context) -> Outcome:
        bounce = Bounce("", None, self.after, "", "", report=self.report, style=self.style)
        return Outcome(
            Stage.LATER, _ACCEPT_REPLY, BounceClass.NONE, "accept", ctx.rule, bounce=bounce
        )

    def describe(self) -> str:
        what = "an auto-reply" if self.report is MailReport.AUTO_REPLY else "a complaint"
        return f"accept, then {what} ({self.style}) after {self.after:g} s"

    def reports(self) -> frozenset[MailReport]:
        return frozenset({self.report})


_ACCEPT_MODE = CATALOG["accept"]
_ACCEPT_REPLY = Reply(250, "2.1.5", "Ok")
ACCEPT: Behaviour = _Fixed(Stage.RCPT, _ACCEPT_MODE, None, "postfix", BounceClass.NONE)


# -- parsing -------------------------------------------------------------------------------------

_REPLY = re.compile(r"([245]\d\d)(?:[ -]([245]\.\d{1,3}\.\d{1,3}))?(?:[ -](.*))?", re.DOTALL)

_FIXED_KEYS = ("mode", "reply", "flavour", "stage", "class")
_WINDOW_KEYS = ("for", "then")
_CHANCE_KEYS = ("probability", "else", "seed")
_BOUNCE_KEYS = (
    "accept_then_bounce",
    "after",
    "dsn",
    "action",
    "flavour",
    "class",
    "final_recipient",
)
_REPORT_KEYS = ("accept_then_report", "after", "dsn", "final_recipient")
_MAIL_KEYS = {
    MailReport.AUTO_REPLY: ("auto_reply", "after"),
    MailReport.COMPLAINT: ("complaint", "after"),
}
_MAIL_CHOICES = {MailReport.AUTO_REPLY: AUTO_REPLY_STYLES, MailReport.COMPLAINT: COMPLAINT_TYPES}
_LATER_KEYS = ("accept_then_bounce", "accept_then_report", "auto_reply", "complaint")


def parse_duration(value: object, path: Path = ()) -> float:
    """Seconds from ``"2s"``, ``"500ms"``, ``"10m"``, ``"1h"``, ``"1d"`` or a plain number
    (:func:`harness.durations.parse_duration`, located at *path*)."""
    try:
        return durations.parse_duration(value)
    except durations.DurationError:
        raise RuleError(
            path, "not a duration", expected=durations.DURATION_EXPECTED, seen=value
        ) from None


def parse_reply(text: str, path: Path = ()) -> Reply:
    """A :class:`Reply` from ``"550 5.1.1 text"`` (the enhanced code and text are optional)."""
    m = _REPLY.fullmatch(text.strip())
    if not m:
        raise RuleError(
            path,
            "not an SMTP reply",
            expected='a reply like "550 5.1.1 text" (code 2xx, 4xx or 5xx)',
            seen=text,
        )
    code, enhanced, rest = int(m.group(1)), m.group(2), (m.group(3) or "").strip()
    if enhanced and enhanced[0] != m.group(1)[0]:
        raise RuleError(
            path,
            "the enhanced status class must match the reply code's first digit",
            expected=f"{m.group(1)[0]}.x.x",
            seen=enhanced,
        )
    if "\r" in rest or "\n" in rest:
        raise RuleError(path, "a reply is one line", expected="no line breaks", seen=text)
    return Reply(code, enhanced, rest or ("Ok" if code < 300 else "Rejected"))


_CLASS_BY_ENHANCED: dict[str, BounceClass] = {}
for _m in CATALOG.values():
    if _m.enhanced and not _m.server_down:
        _CLASS_BY_ENHANCED.setdefault(_m.enhanced, _m.bounce_class)


def class_of(reply: Reply) -> BounceClass:
    """The default class of a raw reply.

    2xx is ``none``. Otherwise a catalog mode with the same enhanced status decides (``5.2.2``
    is soft, ``5.1.1`` hard, ``5.7.1`` soft); failing that, 5xx is hard and 4xx soft.
    """
    if reply.code < 300:
        return BounceClass.NONE
    if reply.enhanced and reply.enhanced in _CLASS_BY_ENHANCED:
        return _CLASS_BY_ENHANCED[reply.enhanced]
    return BounceClass.HARD if reply.code >= 500 else BounceClass.SOFT


def _choice(value: object, known: Sequence[str], what: str, path: Path) -> str:
    if isinstance(value, str) and value in known:
        return value
    hint = did_you_mean(value, known) if isinstance(value, str) else None
    message = f"unknown {what}" + (f"; did you mean {hint}?" if hint else "")
    raise RuleError(path, message, expected="one of " + ", ".join(known), seen=value)


def _check_keys(data: Mapping[str, Any], allowed: Iterable[str], path: Path, form: str) -> None:
    known = list(allowed)
    for key in data:
        if key not in known:
            hint = did_you_mean(str(key), known)
            message = f"unknown key for {form}" + (f"; did you mean {hint!s}?" if hint else "")
            raise RuleError(
                (*path, str(key)), message, expected="one of " + ", ".join(known), seen=key
            )


def _mode_or_reply(value: object, path: Path) -> tuple[FailureMode | None, Reply | None]:
    """A catalog mode or a raw reply from a string, with a "did you mean" for a misspelt mode."""
    if not isinstance(value, str) or not value.strip():
        raise RuleError(
            path,
            "not a behaviour",
            expected="a catalog mode name, 'accept' or a reply like '550 5.1.1 text'",
            seen=value,
        )
    name = value.strip()
    if name in CATALOG:
        return CATALOG[name], None
    if name[:1].isdigit():
        return None, parse_reply(name, path)
    hint = did_you_mean(name, [*CATALOG, "auto_reply", "complaint"])
    message = "unknown failure mode" + (f"; did you mean {hint}?" if hint else "")
    raise RuleError(
        path,
        message,
        expected="a catalog mode (see `harness catalog`) or a reply like '550 5.1.1 text'",
        seen=value,
    )


def _recipient_mode(mode: FailureMode, path: Path, *, bounce: bool = False) -> None:
    if mode.server_down:
        raise RuleError(
            path,
            f"{mode.name!r} is a server-down variant: it applies to a whole host "
            f"(server_down: {mode.name}), not to one recipient",
            expected="a per-recipient mode",
            seen=mode.name,
        )
    if mode.stage is Stage.LATER and not bounce:
        raise RuleError(
            path,
            f"{mode.name!r} only ever shows in a DSN; write "
            f"{{accept_then_bounce: {mode.name}, after: ...}}",
            expected="a mode with an SMTP reply",
            seen=mode.name,
        )


def _fixed(
    mode: FailureMode | None,
    raw: Reply | None,
    *,
    flavour: str,
    stage: object,
    klass: object,
    path: Path,
) -> _Fixed:
    if mode is not None:
        _recipient_mode(mode, path)
        default_stage, default_class = mode.stage, mode.bounce_class
    elif raw is not None:
        default_stage, default_class = Stage.RCPT, class_of(raw)
    else:  # pragma: no cover - callers pass one
        raise AssertionError("neither mode nor reply")
    the_stage = default_stage
    if stage is not None:
        names = [str(s) for s in RECIPIENT_STAGES]
        the_stage = Stage(_choice(stage, names, "stage", (*path, "stage")))
    the_class = default_class
    if klass is not None:
        names = [str(c) for c in BounceClass]
        the_class = BounceClass(_choice(klass, names, "class", (*path, "class")))
    code = raw.code if raw else mode.code if mode else None
    if code is not None and code < 300 and the_class is not BounceClass.NONE:
        raise RuleError(
            (*path, "class"),
            "an accepting (2xx) reply is not a bounce",
            expected="class none",
            seen=str(the_class),
        )
    return _Fixed(the_stage, mode, raw, flavour, the_class)


def _flavour(data: Mapping[str, Any], path: Path, default: str) -> str:
    if "flavour" not in data:
        return default
    return _choice(data["flavour"], FLAVOURS, "flavour", (*path, "flavour"))


def parse_behaviour(data: object, path: Path = (), *, flavour: str = "postfix") -> Behaviour:
    """Parse one behaviour (string, list or mapping; see the module docstring).

    *flavour* is the default provider flavour of reply texts (a host's own); *path* is
    prefixed to the path of any :class:`RuleError`.
    """
    if isinstance(data, str) and data.strip() in ("auto_reply", "complaint"):
        return _parse_mail({data.strip(): None}, path)
    if isinstance(data, str):
        mode, raw = _mode_or_reply(data, path)
        return _fixed(mode, raw, flavour=flavour, stage=None, klass=None, path=path)
    if isinstance(data, list):
        if not data:
            raise RuleError(path, "an empty sequence", expected="at least one behaviour", seen=data)
        steps = [parse_behaviour(v, (*path, i), flavour=flavour) for i, v in enumerate(data)]
        return steps[0] if len(steps) == 1 else _Sequence(steps)
    if isinstance(data, Mapping):
        return _parse_mapping(data, path, flavour)
    raise RuleError(
        path,
        "not a behaviour",
        expected="a mode name or reply (string), a list by attempt, or a mapping",
        seen=data,
    )


def _parse_mapping(data: Mapping[str, Any], path: Path, flavour: str) -> Behaviour:
    if "for" in data:
        rest = {k: v for k, v in data.items() if k not in _WINDOW_KEYS}
        if "then" not in data:
            raise RuleError(
                path, "a window needs a 'then'", expected="then: <behaviour>", seen=dict(data)
            )
        seconds = parse_duration(data["for"], (*path, "for"))
        during = _parse_mapping(rest, path, flavour)
        then = parse_behaviour(data["then"], (*path, "then"), flavour=flavour)
        return _Window(during, seconds, then)
    if "probability" in data:
        rest = {k: v for k, v in data.items() if k not in _CHANCE_KEYS}
        p = data["probability"]
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise RuleError(
                (*path, "probability"), "not a probability", expected="a number 0..1", seen=p
            )
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise RuleError((*path, "seed"), "not a seed", expected="an integer", seen=seed)
        hit = _parse_mapping(rest, path, flavour)
        miss = parse_behaviour(data.get("else", "accept"), (*path, "else"), flavour=flavour)
        return _Chance(float(p), hit, miss, seed)
    later = [k for k in _LATER_KEYS if k in data]
    if len(later) > 1:
        raise RuleError(
            path,
            f"give only one of {', '.join(later)}",
            expected="one of " + ", ".join(_LATER_KEYS),
            seen=dict(data),
        )
    if "accept_then_bounce" in data:
        return _parse_bounce(data, path, flavour)
    if "accept_then_report" in data:
        return _parse_report(data, path)
    if "auto_reply" in data or "complaint" in data:
        return _parse_mail(data, path)
    _check_keys(
        data,
        (*_FIXED_KEYS, *_WINDOW_KEYS, *_CHANCE_KEYS, *_LATER_KEYS),
        path,
        "a behaviour",
    )
    if "then" in data or "else" in data or "seed" in data:
        key = next(k for k in ("then", "else", "seed") if k in data)
        owner = "for" if key == "then" else "probability"
        raise RuleError(
            (*path, key), f"{key!r} needs {owner!r} beside it", expected=owner, seen=dict(data)
        )
    has_mode, has_reply = "mode" in data, "reply" in data
    if has_mode == has_reply:
        raise RuleError(
            path,
            "give exactly one of 'mode' and 'reply'"
            if has_mode
            else "a behaviour mapping needs 'mode', 'reply', 'accept_then_bounce', "
            "'accept_then_report', 'auto_reply', 'complaint', 'for' or 'probability'",
            expected="mode: <catalog mode> or reply: '550 5.1.1 text'",
            seen=dict(data),
        )
    the_flavour = _flavour(data, path, flavour)
    if has_mode:
        mode, raw = _mode_or_reply(data["mode"], (*path, "mode"))
        if raw is not None:
            raise RuleError(
                (*path, "mode"),
                "a raw reply goes under 'reply', not 'mode'",
                expected="a catalog mode",
                seen=data["mode"],
            )
    else:
        mode, raw = None, parse_reply(_text(data["reply"], (*path, "reply")), (*path, "reply"))
    return _fixed(
        mode,
        raw,
        flavour=the_flavour,
        stage=data.get("stage"),
        klass=data.get("class"),
        path=path,
    )


def _text(value: object, path: Path) -> str:
    if not isinstance(value, str):
        raise RuleError(path, "not a string", expected="a reply like '550 5.1.1 text'", seen=value)
    return value


def _parse_bounce(data: Mapping[str, Any], path: Path, flavour: str) -> Behaviour:
    _check_keys(data, _BOUNCE_KEYS, path, "accept_then_bounce")
    where = (*path, "accept_then_bounce")
    mode, raw = _mode_or_reply(data["accept_then_bounce"], where)
    if mode is not None:
        _recipient_mode(mode, where, bounce=True)
        if mode.code is not None and mode.code < 300:
            raise RuleError(
                where, "a bounce needs a failure", expected="a failing mode", seen=mode.name
            )
        default_class = mode.bounce_class
    else:
        if raw is None or raw.code < 400:
            seen = str(raw) if raw else data["accept_then_bounce"]
            raise RuleError(where, "a bounce needs a failure", expected="4xx or 5xx", seen=seen)
        default_class = class_of(raw)
    klass = default_class
    if "class" in data:
        names = [str(c) for c in BounceClass if c is not BounceClass.NONE]
        klass = BounceClass(_choice(data["class"], names, "class", (*path, "class")))
    after = parse_duration(data.get("after", 0), (*path, "after"))
    dialect = _choice(data.get("dsn", "generic"), DSN_DIALECTS, "DSN dialect", (*path, "dsn"))
    action = _choice(data.get("action", "failed"), DSN_ACTIONS, "DSN action", (*path, "action"))
    why = unable_to_report(Dialect(dialect), action)
    if why is not None:
        raise RuleError(
            (*path, "action"),
            f"the {dialect} dialect cannot report it as {action}: {why}",
            expected="action: failed, or one of " + ", ".join(able_to_report(action)),
            seen=action,
        )
    return _AcceptThenBounce(
        mode,
        raw,
        _flavour(data, path, flavour),
        klass,
        after,
        dialect,
        action,
        _final_recipient(data, path),
    )


def _final_recipient(data: Mapping[str, Any], path: Path) -> str | None:
    if "final_recipient" not in data:
        return None
    value = data["final_recipient"]
    where = (*path, "final_recipient")
    problem = address_problem(value) if isinstance(value, str) else "not a string"
    if problem is not None:
        raise RuleError(
            where,
            f"not an address: {problem}",
            expected="the address the DSN names instead of the one sent to (alias@other.test)",
            seen=value,
        )
    return str(value)


def _parse_report(data: Mapping[str, Any], path: Path) -> Behaviour:
    _check_keys(data, _REPORT_KEYS, path, "accept_then_report")
    action = _choice(
        data["accept_then_report"],
        SUCCESS_ACTIONS,
        "success DSN action",
        (*path, "accept_then_report"),
    )
    after = parse_duration(data.get("after", 0), (*path, "after"))
    dialect = _choice(data.get("dsn", "generic"), DSN_DIALECTS, "DSN dialect", (*path, "dsn"))
    why = unable_to_report(Dialect(dialect), action)
    if why is not None:
        raise RuleError(
            (*path, "dsn"),
            f"the {dialect} dialect cannot report it as {action}: {why}",
            expected="one of " + ", ".join(able_to_report(action)),
            seen=dialect,
        )
    return _AcceptThenReport(action, after, dialect, _final_recipient(data, path))


def _parse_mail(data: Mapping[str, Any], path: Path) -> Behaviour:
    report = MailReport.AUTO_REPLY if "auto_reply" in data else MailReport.COMPLAINT
    key = str(report)
    _check_keys(data, _MAIL_KEYS[report], path, key)
    choices = _MAIL_CHOICES[report]
    value = data[key]
    if value is None:
        style = choices[0]
    elif report is MailReport.COMPLAINT and value == "not-spam":
        raise RuleError(
            (*path, key),
            "a not-spam feedback report (RFC 6430) is not a complaint",
            expected="one of " + ", ".join(choices),
            seen=value,
        )
    else:
        what = "auto-reply style" if report is MailReport.AUTO_REPLY else "feedback type"
        style = _choice(value, choices, what, (*path, key))
    after = parse_duration(data.get("after", 0), (*path, "after"))
    return _AcceptThenMail(report, style, after)


# -- rule sets -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    key: str
    behaviour: Behaviour


class Rules:
    """Recipient -> behaviour, with the matching order of the module docstring.

    >>> rules = Rules.parse({"full@x.test": "mailbox_full", "*@x.test": "accept"})
    >>> rules.decide("s@y.test", "full@x.test", now=0.0).reply.code
    452
    """

    def __init__(
        self,
        rules: Mapping[str, Behaviour] | None = None,
        *,
        default: Behaviour | None = None,
    ) -> None:
        self.default = default if default is not None else ACCEPT
        self._exact: dict[str, _Rule] = {}
        self._domains: dict[str, _Rule] = {}
        self._patterns: list[tuple[Callable[[str], re.Match[str] | None], bool, _Rule]] = []
        self._all: list[_Rule] = []
        for key, behaviour in (rules or {}).items():
            self._add(key, behaviour)

    def _add(self, key: str, behaviour: Behaviour) -> None:
        rule = _Rule(key, behaviour)
        self._all.append(rule)
        lowered = key.strip().lower()
        if "*" in lowered or "?" in lowered:
            # A pattern with an "@" matches whole addresses; one without matches the domain.
            self._patterns.append((re.compile(translate(lowered)).match, "@" in lowered, rule))
        elif "@" in lowered:
            self._exact[lowered] = rule
        else:
            self._domains[lowered] = rule

    @classmethod
    def parse(
        cls,
        data: object,
        path: Path = (),
        *,
        flavour: str = "postfix",
        default: object = "accept",
    ) -> Rules:
        """Rules from a mapping of key -> behaviour data; errors are :class:`RuleError`."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise RuleError(
                path,
                "rules are a mapping",
                expected="address, domain or pattern -> behaviour",
                seen=data,
            )
        parsed: dict[str, Behaviour] = {}
        for key, value in data.items():
            if not isinstance(key, str) or not _valid_key(key):
                raise RuleError(
                    (*path, str(key)),
                    "not a rule key",
                    expected="an address (a@x.test), a domain (x.test) or a pattern (*@x.test)",
                    seen=key,
                )
            parsed[key] = parse_behaviour(value, (*path, key), flavour=flavour)
        fallback = parse_behaviour(default, (*path, "default"), flavour=flavour)
        return cls(parsed, default=fallback)

    def match(self, recipient: str) -> tuple[str | None, Behaviour]:
        """The key and behaviour for *recipient* (key None for the default)."""
        address = recipient.lower()
        rule = self._exact.get(address)
        if rule is not None:
            return rule.key, rule.behaviour
        domain = address.rpartition("@")[2]
        for matcher, whole, rule in self._patterns:
            if matcher(address if whole else domain):
                return rule.key, rule.behaviour
        rule = self._domains.get(domain)
        if rule is not None:
            return rule.key, rule.behaviour
        return None, self.default

    def decide(
        self, sender: str, recipient: str, *, now: float, values: Mapping[str, str] | None = None
    ) -> Outcome:
        """The outcome of this attempt of *sender* to reach *recipient*."""
        key, behaviour = self.match(recipient)
        return behaviour.decide(Context(sender, recipient, now, values or {}, key))

    def verify(self, recipient: str, *, values: Mapping[str, str] | None = None) -> Reply | None:
        """The permanent refusal *recipient* always gets at RCPT, for VRFY; None otherwise.

        Only a fixed behaviour answers (a mode or reply, no list, window or chance): those
        count attempts, and a VRFY is not an attempt.
        """
        _, behaviour = self.match(recipient)
        if not isinstance(behaviour, _Fixed) or behaviour.stage is not Stage.RCPT:
            return None
        outcome = behaviour.decide(Context("", recipient, 0.0, values or {}))
        return outcome.reply if outcome.reply.code >= 500 else None

    def reset(self) -> None:
        """Forget every attempt counted so far (sequences start again, windows reopen)."""
        for rule in self._all:
            rule.behaviour.reset()
        self.default.reset()

    def describe(self) -> list[tuple[str, str]]:
        """(key, description) for every rule in the order given, then the default."""
        return [(r.key, r.behaviour.describe()) for r in self._all] + [
            ("(default)", self.default.describe())
        ]

    def __len__(self) -> int:
        return len(self._all)


_PATTERN_KEY = re.compile(r"[^\s@]+@[^\s@]+|[^\s@]+")


def _valid_key(key: str) -> bool:
    """An address as the callback checks judge it (one address policy:
    :mod:`harness.addresses`, a leaf module), or a domain, pattern or other key
    without spaces (domains are judged where they name a host: the scenario's ``mx`` keys)."""
    key = key.strip()
    if "@" in key and not any(c in key for c in "*?["):
        return address_problem(key) is None
    return bool(key) and _PATTERN_KEY.fullmatch(key) is not None

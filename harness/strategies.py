"""Hypothesis strategies for fuzzing CleverTap integrations and the harness itself.

::

    from hypothesis import given
    from harness import strategies as hs

    @given(hs.mutated_payloads(codes=["CT303"]))
    def test_my_receiver_rejects_ms_timestamps(case): ...

What is here:

- :func:`addresses`: valid addresses, with the hard cases (quoted local parts, IDN domains,
  plus tags, SMTPUTF8 local parts) switchable one by one;
- :func:`legacy_payloads`, :func:`v2_payloads`: valid payload objects of each format;
  :func:`payloads`: valid :class:`CallbackRequest` objects ready to send (body, endpoint,
  Content-Type), which pass every check of :func:`harness.clevertap.inspect.inspect`;
- :func:`mutated_payloads`: near-valid requests, one mutation each, carrying the check code it
  must trigger (every payload check, CT101 to CT404);
- :func:`smtp_replies`: replies of the failure catalog, by bounce class;
- :func:`dsn_messages`: RFC 3464 DSNs as real MTAs write them (:mod:`harness.smtp.dsn`);
- :func:`scenarios`: scenario YAML texts the scenario loader accepts.

Timestamps are placed relative to a ``now`` argument (epoch seconds, default: the time the
strategy was built) with an hour of margin from every bound of the ts checks, so that a payload
inspected with ``now`` (or posted to a server within the hour) gets exactly the verdict it
was built for. Checks run with the default :class:`~harness.clevertap.inspect.CheckConfig`.

All options are keyword-only and checked when the strategy is built: a bad one raises
:class:`~harness.errors.ConfigError` naming the argument.
"""

from __future__ import annotations

import json
import string
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from io import StringIO
from typing import Any, Literal

try:
    from hypothesis import strategies as st
    from hypothesis.strategies import SearchStrategy
except ModuleNotFoundError as exc:  # hypothesis is an extra: say which one
    raise ModuleNotFoundError(
        f"harness.strategies needs {exc.name}: pip install 'clevertap-harness[hypothesis]'",
        name=exc.name,
    ) from None

from harness.clevertap.inspect import CheckConfig, DuplicateIndex, Endpoint, Inspection, inspect
from harness.errors import ConfigError, UnknownNameError
from harness.smtp.catalog import CATALOG, FLAVOURS, BounceClass, Reply
from harness.smtp.dialects import (
    EXPANDING_DIALECTS,
    NO_DELAY_WARNINGS,
    PLAIN_TEXT_DIALECTS,
    SUCCESS_ACTIONS,
    SUCCESS_DIALECTS,
)
from harness.smtp.dsn import (
    ACTIONS,
    Dialect,
    dsn_bytes,
    dsn_for_mode,
    get_dialect,
)
from harness.vocab import LEGACY_EVENTS, MAX_V2_EVENTS, V2_TYPES

__all__ = [
    "MUTATION_CODES",
    "CallbackRequest",
    "DsnSample",
    "addresses",
    "dsn_messages",
    "legacy_payloads",
    "mutated_payloads",
    "payloads",
    "scenarios",
    "smtp_replies",
    "v2_payloads",
]

_CONFIG = CheckConfig()
_MARGIN = 3600
"""Seconds kept between generated timestamps and every bound of the ts checks."""


# -- the request type ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """One callback request as an integration would send it, and the verdict it must get.

    ``payload`` is the JSON value the body encodes (None when the body is not JSON at all);
    ``body`` the exact bytes to send to the ``endpoint`` URL with ``content_type`` (None: send no
    Content-Type header). ``before`` holds bodies to send first, in order, to the same URL (a
    duplicate across payloads needs an earlier payload). ``code`` is the check code this request
    must trigger, None for a valid one; ``mutation`` says in words what was changed.
    """

    endpoint: Endpoint
    payload: Any
    body: bytes
    content_type: str | None
    now: float
    code: str | None = None
    mutation: str = ""
    before: tuple[bytes, ...] = field(default=())

    def inspect(self, *, config: CheckConfig | None = None) -> Inspection:
        """Run the payload checks on this request at ``now`` (after sending ``before``)."""
        history = DuplicateIndex()
        for seq, earlier in enumerate(self.before, start=1):
            inspect(
                earlier,
                endpoint=self.endpoint,
                content_type=self.content_type,
                config=config,
                history=history,
                now=self.now,
                seq=seq,
            )
        return inspect(
            self.body,
            endpoint=self.endpoint,
            content_type=self.content_type,
            config=config,
            history=history,
            now=self.now,
            seq=len(self.before) + 1,
        )


# -- argument checks -------------------------------------------------------------------------------


def _now(now: float | None) -> int:
    if now is None:
        return int(time.time())
    if isinstance(now, bool) or not isinstance(now, int | float) or not 10**9 <= now <= 10**10:
        raise ConfigError(
            f"now must be epoch seconds between 1e9 and 1e10 (years 2001 to 2286), got {now!r}"
        )
    return int(now)


def _size(name: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an int between {low} and {high}, got {value!r}")
    return value


def _names(name: str, values: Iterable[str], known: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ConfigError(f"{name} must be a list of names, not the string {values!r}")
    chosen = tuple(dict.fromkeys(values))
    if not chosen:
        raise ConfigError(f"{name} must name at least one, got an empty list")
    for value in chosen:
        if value not in known:
            raise UnknownNameError(name.rstrip("s"), str(value), known)
    return chosen


def _strategy(name: str, value: Any) -> SearchStrategy[Any] | None:
    if value is not None and not isinstance(value, SearchStrategy):
        raise ConfigError(f"{name} must be a hypothesis strategy or None, got {value!r}")
    return value


# -- addresses -------------------------------------------------------------------------------------

_ALNUM = string.ascii_lowercase + string.digits
# RFC 5322 atext beyond letters and digits: valid in an unquoted local part, often mishandled.
_ATEXT_SPECIAL = "!#$%&'*/=?^_`{|}~-"
# Letters only (IDNA 2008 PVALID, NFC): accented Latin, Cyrillic, CJK.
_UTF8_LETTERS = "äöüéèñçøåæœßпримерθλ用户例え"
_IDN_LETTERS = "äöüéèñçøåæœпример"
_TLDS = ("com", "org", "net", "io", "de", "jp", "test")
# printable ASCII but the quote and the backslash (which would need quoted-pairs)
_QTEXT = "".join(c for c in string.printable[:95] if c not in '"\\')


def _atoms(alphabet: str, max_size: int = 8) -> SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=1, max_size=max_size)


def _dot_atom(alphabet: str) -> SearchStrategy[str]:
    return st.lists(_atoms(alphabet), min_size=1, max_size=3).map(".".join)


def _label(alphabet: str) -> SearchStrategy[str]:
    # Single hyphens between runs: no leading, trailing or doubled hyphen (IDNA reserves "ab--").
    return st.lists(_atoms(alphabet, 6), min_size=1, max_size=2).map("-".join)


def addresses(
    *, smtputf8: bool = True, idn: bool = True, quoted: bool = True, plus_tags: bool = True
) -> SearchStrategy[str]:
    """Valid email addresses, as the address check (RFC 5321 / RFC 6531) accepts them.

    Always: dot-atom local parts (with RFC 5322 specials such as ``'`` and ``/``) at ASCII
    domains. Each flag adds a hard case: ``smtputf8`` non-ASCII local parts (``用户@``),
    ``idn`` internationalised domain labels (``bücher.de``), ``quoted`` quoted local parts with
    spaces (``"a b"@``), ``plus_tags`` sub-addresses (``user+tag@``). Addresses are at most 64
    octets before the ``@``. Shrinks towards a short plain address like ``a@a.com``.
    """
    for name, flag in (
        ("smtputf8", smtputf8),
        ("idn", idn),
        ("quoted", quoted),
        ("plus_tags", plus_tags),
    ):
        if not isinstance(flag, bool):
            raise ConfigError(f"{name} must be True or False, got {flag!r}")
    locals_: list[SearchStrategy[str]] = [
        _dot_atom(_ALNUM),
        _dot_atom(_ALNUM + _ATEXT_SPECIAL),
    ]
    if plus_tags:
        locals_.append(
            st.tuples(_dot_atom(_ALNUM), _atoms(_ALNUM + "-_")).map(lambda t: f"{t[0]}+{t[1]}")
        )
    if smtputf8:
        locals_.append(_dot_atom(_ALNUM + _UTF8_LETTERS))
    if quoted:
        locals_.append(st.text(alphabet=_QTEXT, min_size=1, max_size=12).map(lambda t: f'"{t}"'))
    labels = [_label(_ALNUM)]
    if idn:
        labels.append(_label(_ALNUM + _IDN_LETTERS))
    domains = st.tuples(
        st.lists(st.one_of(labels), min_size=1, max_size=2), st.sampled_from(_TLDS)
    ).map(lambda t: ".".join([*t[0], t[1]]))
    return (
        st.tuples(st.one_of(locals_), domains)
        .filter(lambda t: len(t[0].encode()) <= 64)
        .map(lambda t: f"{t[0]}@{t[1]}")
    )


# -- valid payloads --------------------------------------------------------------------------------


def _ts(now: int) -> SearchStrategy[int]:
    # An offset from now, so that examples shrink to ts == now.
    oldest = int(_CONFIG.max_age) - _MARGIN
    return st.integers(min_value=-oldest, max_value=0).map(lambda offset: now + offset)


def legacy_payloads(
    *,
    events: Sequence[str] = ("softbounce", "hardbounce"),
    min_events: int = 1,
    max_events: int = 10,
    now: float | None = None,
    emails: SearchStrategy[str] | None = None,
) -> SearchStrategy[list[dict[str, Any]]]:
    """Valid legacy payloads: ``[{"event": name, "data": [{"e": address, "ts": seconds}]}]``.

    Between *min_events* and *max_events* (event, address) pairs, each address once, drawn from
    *events* (names of the legacy format; the default suits the bounce URL, ``["unsubscribe"]``
    the unsubscribe URL) and *emails* (default :func:`addresses`), grouped into one event object
    per name. Every ``ts`` lies in the 30 days up to *now*, an hour clear of the limits. Shrinks
    towards one softbounce for a short address with ``ts == now``.
    """
    chosen = _names("events", events, sorted(LEGACY_EVENTS))
    low = _size("min_events", min_events, 1, 10_000)
    high = _size("max_events", max_events, low, 10_000)
    when = _now(now)
    pool = _strategy("emails", emails) or addresses()

    @st.composite
    def build(draw: st.DrawFn) -> list[dict[str, Any]]:
        items = draw(
            st.lists(
                st.tuples(st.sampled_from(chosen), pool, _ts(when)),
                min_size=low,
                max_size=high,
                unique_by=lambda t: t[1].lower(),
            )
        )
        grouped: dict[str, list[dict[str, Any]]] = {}
        for name, email, ts in items:
            grouped.setdefault(name, []).append({"e": email, "ts": ts})
        return [{"event": name, "data": data} for name, data in grouped.items()]

    return build()


_V2_FAILED = tuple(t for t in V2_TYPES if t != "delivered")


def _metas(email: str, n: int, ts: int) -> SearchStrategy[str]:
    # CleverTap's shape (address|ids|send time|date|0|wzrk_default|id|), or any non-empty text.
    shaped = f"{email}|1568798080|{ts}|20241104|0|wzrk_default|{n}|"
    return st.one_of(st.just(shaped), st.text(min_size=1, max_size=40))


def _descriptions() -> SearchStrategy[str | None]:
    replies = [str(r) for m in CATALOG.values() if (r := m.reply("postfix")) and m.code != 250]
    return st.one_of(st.none(), st.sampled_from(replies))


def v2_payloads(
    *,
    types: Sequence[str] = tuple(sorted(V2_TYPES)),
    min_events: int = 1,
    max_events: int = 10,
    now: float | None = None,
    emails: SearchStrategy[str] | None = None,
) -> SearchStrategy[dict[str, Any]]:
    """Valid v2 payloads: ``{"version": "v2", "events": {"success": [...], "failed": [...]}}``.

    Between *min_events* and *max_events* (at most 1000) events of *types*, each (type,
    address) once; ``delivered`` goes to ``success``, the other types to ``failed``. Each event
    has a non-empty ``meta`` (often CleverTap's ``a@x|...|wzrk_default|`` shape), sometimes a
    ``description`` from the failure catalog and unknown keys CleverTap ignores. *now* fixes
    the send time shown in ``meta``. Shrinks towards one event with a short address.
    """
    chosen = _names("types", types, sorted(V2_TYPES))
    low = _size("min_events", min_events, 1, MAX_V2_EVENTS)
    high = _size("max_events", max_events, low, MAX_V2_EVENTS)
    when = _now(now)
    pool = _strategy("emails", emails) or addresses()

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        keys = draw(
            st.lists(
                st.tuples(st.sampled_from(chosen), pool),
                min_size=low,
                max_size=high,
                unique_by=lambda t: (t[0], t[1].lower()),
            )
        )
        success: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for n, (kind, email) in enumerate(keys, start=1):
            item: dict[str, Any] = {
                "type": kind,
                "email": email,
                "meta": draw(_metas(email, n, when)),
            }
            if kind != "delivered":
                description = draw(_descriptions())
                if description is not None:
                    item["description"] = description
            if draw(st.booleans()) and draw(st.booleans()):
                item["campaign_id"] = n  # unknown keys are ignored, as CleverTap documents
            (success if kind == "delivered" else failed).append(item)
        events: dict[str, Any] = {}
        # An empty list next to the other one is valid; sometimes it is there, sometimes not.
        keep_success, keep_failed = draw(st.booleans()), draw(st.booleans())
        if success or keep_success:
            events["success"] = success
        if failed or keep_failed:
            events["failed"] = failed
        return {"version": "v2", "events": events}

    return build()


_VALID_CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "application/json;charset=UTF-8",
    "Application/JSON",
)


def _encode(payload: Any, draw: st.DrawFn) -> bytes:
    style = draw(st.sampled_from(["compact", "spaced", "ascii", "indented"]))
    if style == "compact":
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    elif style == "spaced":
        text = json.dumps(payload, ensure_ascii=False)
    elif style == "ascii":
        text = json.dumps(payload)  # \\u escapes for every non-ASCII character
    else:
        text = json.dumps(payload, ensure_ascii=False, indent=2)
    return text.encode("utf-8")


def _formats(format: str | None) -> tuple[str, ...]:
    if format is None:
        return ("legacy", "v2")
    if format not in ("legacy", "v2"):
        raise ConfigError(f"format must be 'legacy', 'v2' or None (both), got {format!r}")
    return (format,)


@st.composite
def _valid_request(draw: st.DrawFn, formats: tuple[str, ...], now: int) -> CallbackRequest:
    fmt = draw(st.sampled_from(formats))
    if fmt == "v2":
        endpoint = Endpoint.V2
        payload: Any = draw(v2_payloads(now=now))
    else:
        endpoint = draw(st.sampled_from([Endpoint.BOUNCE, Endpoint.UNSUBSCRIBE]))
        events = (
            ["unsubscribe"] if endpoint is Endpoint.UNSUBSCRIBE else ["softbounce", "hardbounce"]
        )
        payload = draw(legacy_payloads(events=events, now=now))
    content_type = draw(st.sampled_from(_VALID_CONTENT_TYPES))
    return CallbackRequest(endpoint, payload, _encode(payload, draw), content_type, now)


def payloads(
    *, format: Literal["legacy", "v2"] | None = None, now: float | None = None
) -> SearchStrategy[CallbackRequest]:
    """Valid callback requests of *format* (both when None), with no violation at all.

    A legacy payload goes to the bounce URL (softbounce, hardbounce) or to the unsubscribe URL
    (unsubscribe); a v2 payload to the v2 URL. The body is UTF-8 JSON in one of several layouts
    (compact, spaced, ``\\u``-escaped, indented) and the Content-Type one of the accepted
    spellings. Shrinks towards a one-event legacy bounce, compact, ``application/json``.
    """
    return _valid_request(_formats(format), _now(now))


# -- mutated payloads ------------------------------------------------------------------------------

Mutation = Callable[[st.DrawFn, CallbackRequest], CallbackRequest]


def _reencode(
    draw: st.DrawFn, base: CallbackRequest, payload: Any, code: str, what: str, **changes: Any
) -> CallbackRequest:
    return replace(
        base, payload=payload, body=_encode(payload, draw), code=code, mutation=what, **changes
    )


def _copy(payload: Any) -> Any:
    return json.loads(json.dumps(payload))


def _legacy_item(draw: st.DrawFn, payload: list[dict[str, Any]]) -> tuple[int, int]:
    i = draw(st.integers(0, len(payload) - 1))
    j = draw(st.integers(0, len(payload[i]["data"]) - 1))
    return i, j


def _v2_items(payload: dict[str, Any]) -> list[tuple[str, int]]:
    return [
        (name, k)
        for name in ("success", "failed")
        for k in range(len(payload["events"].get(name, [])))
    ]


def _v2_item(draw: st.DrawFn, payload: dict[str, Any]) -> tuple[str, int]:
    return draw(st.sampled_from(_v2_items(payload)))


# transport


def _not_json(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    text = base.body.decode("utf-8")
    how = draw(st.sampled_from(["cut", "quotes", "trailing comma"]))
    if how == "cut":
        # Any proper prefix of a JSON array or object is incomplete; cut at a character, not a
        # byte, so the result stays UTF-8.
        cut = draw(st.integers(0, len(text) - 1))
        body, what = text[:cut], f"body cut after {cut} characters"
    elif how == "quotes":
        body, what = text.replace('"', "'"), "single quotes instead of double quotes"
    else:
        body, what = (
            text[:-1] + ",]" if text.endswith("]") else text[:-1] + ",}",
            "a trailing comma",
        )
    return replace(base, payload=None, body=body.encode("utf-8"), code="CT101", mutation=what)


def _not_utf8(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    text = json.dumps(base.payload, ensure_ascii=False)
    encodings = ["utf-16", "utf-32"]
    if not text.isascii():
        try:
            text.encode("latin-1")
            encodings.append("latin-1")
        except UnicodeEncodeError:
            pass
    encoding = draw(st.sampled_from(encodings))
    # utf-16 and utf-32 start with a byte order mark, never valid UTF-8 (b"\xff\xfe").
    return replace(
        base,
        body=text.encode(encoding),
        code="CT102",
        mutation=f"body encoded as {encoding}",
    )


def _bad_content_type(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    content_type = draw(
        st.sampled_from(
            [
                None,
                "",
                "text/plain",
                "application/x-www-form-urlencoded",
                "text/json",
                "application/jsonp",
                "multipart/form-data; boundary=x",
                "application/problem+json",
            ]
        )
    )
    return replace(
        base, content_type=content_type, code="CT103", mutation=f"Content-Type {content_type!r}"
    )


def _bad_charset(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    charset = draw(st.sampled_from(["iso-8859-1", "latin1", "utf-16", "us-ascii", "windows-1252"]))
    return replace(
        base,
        content_type=f"application/json; charset={charset}",
        code="CT104",
        mutation=f"charset={charset}",
    )


# shape


_SCALARS = st.sampled_from([0, 42, "hardbounce", True, None, 1.5])


def _wrong_shape(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    payload = _copy(base.payload)
    if draw(st.booleans()) and draw(st.booleans()):
        scalar = draw(_SCALARS)
        return _reencode(draw, base, scalar, "CT201", f"payload is {scalar!r}")
    if base.endpoint is not Endpoint.V2:
        how = draw(st.sampled_from(["unwrapped", "data object", "item scalar", "event scalar"]))
        i, j = _legacy_item(draw, payload)
        if how == "unwrapped":
            payload, what = payload[i], "one event object, not wrapped in an array"
        elif how == "data object":
            payload[i]["data"] = payload[i]["data"][j]
            what = f"$[{i}].data is an object, not an array"
        elif how == "item scalar":
            payload[i]["data"][j] = draw(_SCALARS.filter(lambda v: v is not None))
            what = f"$[{i}].data[{j}] is not an object"
        else:
            payload[i] = payload[i]["event"]
            what = f"$[{i}] is a string, not an event object"
        return _reencode(draw, base, payload, "CT201", what)
    events = payload["events"]
    name, k = _v2_item(draw, payload)
    other = "failed" if name == "success" else "success"
    hows = ["events list", "item scalar", "description"]
    if events.get(other):
        hows.append("list object")  # only when the other list keeps events (else CT204 too)
    how = draw(st.sampled_from(hows))
    if how == "events list":
        payload["events"] = [*events.get("success", []), *events.get("failed", [])]
        what = "events is an array, not an object"
    elif how == "list object":
        events[name] = events[name][k]
        what = f"events.{name} is an object, not an array"
    elif how == "item scalar":
        events[name][k] = draw(_SCALARS.filter(lambda v: v is not None))
        what = f"events.{name}[{k}] is not an object"
    else:
        events[name][k]["description"] = draw(st.sampled_from([550, ["550 5.1.1"], True]))
        what = f"events.{name}[{k}].description is not a string"
    return _reencode(draw, base, payload, "CT201", what)


_LEGACY_NEAR = [
    "bounce",
    "hard_bounce",
    "soft_bounce",
    "Hardbounce",
    "HARDBOUNCE",
    "hard-bounce",
    "unsubscribed",
    "softBounce",
    "spam",
    "",
    " hardbounce",
    1,
    None,
]
_V2_NEAR = [
    "hardbounce",
    "softbounce",
    "bounce",
    "unsubscribe",
    "Delivered",
    "hard-bounce",
    "failed",
    "open",
    "",
    None,
    2,
]


def _unknown_event(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    payload = _copy(base.payload)
    if base.endpoint is Endpoint.V2:
        name, k = _v2_item(draw, payload)
        kind = draw(st.sampled_from(_V2_NEAR))
        payload["events"][name][k]["type"] = kind
        return _reencode(draw, base, payload, "CT202", f"events.{name}[{k}].type is {kind!r}")
    i = draw(st.integers(0, len(payload) - 1))
    event = draw(st.sampled_from(_LEGACY_NEAR))
    payload[i]["event"] = event
    return _reencode(draw, base, payload, "CT202", f"$[{i}].event is {event!r}")


def _wrong_endpoint(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    if base.endpoint is Endpoint.V2:
        endpoint = draw(st.sampled_from([Endpoint.BOUNCE, Endpoint.UNSUBSCRIBE]))
    elif base.endpoint is Endpoint.BOUNCE:
        endpoint = draw(st.sampled_from([Endpoint.UNSUBSCRIBE, Endpoint.V2]))
    else:
        endpoint = draw(st.sampled_from([Endpoint.BOUNCE, Endpoint.V2]))
    return replace(
        base,
        endpoint=endpoint,
        code="CT203",
        mutation=f"a {base.endpoint} payload sent to the {endpoint} URL",
    )


def _empty(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    payload = _copy(base.payload)
    if base.endpoint is Endpoint.V2:
        payload["events"] = draw(
            st.sampled_from([{}, {"success": []}, {"failed": []}, {"success": [], "failed": []}])
        )
        return _reencode(draw, base, payload, "CT204", "no events in success or failed")
    if draw(st.booleans()):
        return _reencode(draw, base, [], "CT204", "an empty array")
    i = draw(st.integers(0, len(payload) - 1))
    payload[i]["data"] = []
    return _reencode(draw, base, payload, "CT204", f"$[{i}].data is empty")


def _missing_key(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    payload = _copy(base.payload)
    if base.endpoint is Endpoint.V2:
        where = draw(st.sampled_from(["version", "events", "event", "type", "email"]))
        if where == "version":
            del payload["version"]
        elif where == "events":
            del payload["events"]
        elif where == "event":
            # The key table of CleverTap's docs says "event"; its samples say "events".
            payload["event"] = payload.pop("events")
        else:
            name, k = _v2_item(draw, payload)
            del payload["events"][name][k][where]
            where = f"events.{name}[{k}].{where}"
        return _reencode(draw, base, payload, "CT205", f"{where} missing")
    i, j = _legacy_item(draw, payload)
    where = draw(st.sampled_from(["event", "data", "e", "ts"]))
    if where in ("event", "data"):
        del payload[i][where]
        path = f"$[{i}].{where}"
    else:
        del payload[i]["data"][j][where]
        path = f"$[{i}].data[{j}].{where}"
    return _reencode(draw, base, payload, "CT205", f"{path} missing")


def _extra_key(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    payload = _copy(base.payload)
    if base.endpoint is Endpoint.V2:
        name = draw(st.sampled_from(["failure", "bounced", "errors", "delivered"]))
        payload["events"][name] = [{"type": "hard_bounce", "email": "x@example.com", "meta": "m"}]
        return _reencode(draw, base, payload, "CT206", f"an unknown list events.{name}")
    i, j = _legacy_item(draw, payload)
    if draw(st.booleans()):
        key = draw(st.sampled_from(["reason", "email", "timestamp", "type", "E"]))
        payload[i]["data"][j][key] = "550 5.1.1"
        path = f"$[{i}].data[{j}].{key}"
    else:
        key = draw(st.sampled_from(["count", "source", "events"]))
        payload[i][key] = 1
        path = f"$[{i}].{key}"
    return _reencode(draw, base, payload, "CT206", f"an extra key {path}")


def _bad_version(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    payload = _copy(base.payload)
    version = draw(st.sampled_from(["2", "V2", "v1", "v3", 2, 2.0, None, ""]))
    payload["version"] = version
    return _reencode(draw, base, payload, "CT207", f"version is {version!r}")


# values


def _bad_addresses(email: str) -> SearchStrategy[Any]:
    local, _, domain = email.rpartition("@")
    return st.sampled_from(
        [
            local + domain,
            f"{local}@@{domain}",
            f"{local} x@{domain}",
            f"Name <{email}>",
            f"<{email}>",
            f"{local}@{domain.split('.')[0]}",
            f"{email}.",
            f".{email}",
            f"{local}..x@{domain}",
            f"@{domain}",
            f"{local}@",
            "",
            f"{local}@-{domain}",
            123,
            None,
            [email],
        ]
    )


def _plain_addresses() -> SearchStrategy[str]:
    return addresses(smtputf8=False, idn=False, quoted=False, plus_tags=False)


def _bad_address(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    payload = _copy(base.payload)
    good = draw(_plain_addresses().filter(lambda a: "." not in a.partition("@")[0]))
    bad = draw(_bad_addresses(good))
    if base.endpoint is Endpoint.V2:
        name, k = _v2_item(draw, payload)
        payload["events"][name][k]["email"] = bad
        path = f"events.{name}[{k}].email"
    else:
        i, j = _legacy_item(draw, payload)
        payload[i]["data"][j]["e"] = bad
        path = f"$[{i}].data[{j}].e"
    return _reencode(draw, base, payload, "CT301", f"{path} is {bad!r}")


def _legacy_ts(code: str, values: Callable[[int, int, st.DrawFn], Any]) -> Mutation:
    def mutate(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
        payload = _copy(base.payload)
        i, j = _legacy_item(draw, payload)
        item = payload[i]["data"][j]
        item["ts"] = values(item["ts"], int(base.now), draw)
        return _reencode(draw, base, payload, code, f"$[{i}].data[{j}].ts is {item['ts']!r}")

    return mutate


def _ts_not_int(ts: int, now: int, draw: st.DrawFn) -> Any:
    return draw(
        st.sampled_from([str(ts), ts + 0.5, float(ts), True, False, None, [ts], {"s": ts}, "now"])
    )


def _ts_unit(ts: int, now: int, draw: st.DrawFn) -> int:
    return ts * draw(st.sampled_from([1000, 10**6, 10**9]))


def _ts_future(ts: int, now: int, draw: st.DrawFn) -> int:
    return now + int(_CONFIG.max_future_skew) + _MARGIN + draw(st.integers(0, 10**7))


def _ts_old(ts: int, now: int, draw: st.DrawFn) -> int:
    return now - int(_CONFIG.max_age) - _MARGIN - draw(st.integers(0, 2 * 10**9))


# batch


def _duplicate(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    payload = _copy(base.payload)

    def twin(email: str) -> str:
        # Addresses compare case-insensitively: a case variant is the same recipient.
        return email.swapcase() if email.isascii() and draw(st.booleans()) else email

    if base.endpoint is Endpoint.V2:
        name, k = _v2_item(draw, payload)
        item = dict(payload["events"][name][k])
        item["email"] = twin(item["email"])
        item["meta"] = item["meta"] + "-again"
        payload["events"][name].insert(draw(st.integers(0, len(payload["events"][name]))), item)
        return _reencode(draw, base, payload, "CT401", f"events.{name}[{k}] twice")
    i, j = _legacy_item(draw, payload)
    item = {"e": twin(payload[i]["data"][j]["e"]), "ts": payload[i]["data"][j]["ts"]}
    if draw(st.booleans()):
        data = payload[i]["data"]
        data.insert(draw(st.integers(0, len(data))), item)
        what = f"$[{i}].data[{j}] twice in the same event"
    else:
        payload.append({"event": payload[i]["event"], "data": [item]})
        what = f"$[{i}].data[{j}] again in a second {payload[i]['event']} object"
    return _reencode(draw, base, payload, "CT401", what)


def _duplicate_across(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    return replace(base, before=(base.body,), code="CT402", mutation="the same payload sent twice")


def _too_many(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    payload = _copy(base.payload)
    taken = {
        (i["type"], i["email"].lower())
        for n, k in _v2_items(payload)
        for i in [payload["events"][n][k]]
    }
    total = len(taken)
    target = MAX_V2_EVENTS + 1 + draw(st.integers(0, 20))
    success = payload["events"].setdefault("success", [])
    n = 0
    while total < target:
        n += 1
        email = f"bulk{n}@bulk.example.com"
        if ("delivered", email) not in taken:
            success.append({"type": "delivered", "email": email, "meta": f"m{n}"})
            total += 1
    return _reencode(draw, base, payload, "CT403", f"{total} events in one call")


def _bad_meta(draw: st.DrawFn, base: CallbackRequest) -> CallbackRequest:
    payload = _copy(base.payload)
    name, k = _v2_item(draw, payload)
    how = draw(st.sampled_from(["missing", "", None, 123, ["m"]]))
    if how == "missing":
        del payload["events"][name][k]["meta"]
    else:
        payload["events"][name][k]["meta"] = how
    return _reencode(draw, base, payload, "CT404", f"events.{name}[{k}].meta is {how!r}")


_BOTH = ("legacy", "v2")
_MUTATIONS: dict[str, tuple[tuple[str, ...], Mutation]] = {
    "CT101": (_BOTH, _not_json),
    "CT102": (_BOTH, _not_utf8),
    "CT103": (_BOTH, _bad_content_type),
    "CT104": (_BOTH, _bad_charset),
    "CT201": (_BOTH, _wrong_shape),
    "CT202": (_BOTH, _unknown_event),
    "CT203": (_BOTH, _wrong_endpoint),
    "CT204": (_BOTH, _empty),
    "CT205": (_BOTH, _missing_key),
    "CT206": (_BOTH, _extra_key),
    "CT207": (("v2",), _bad_version),
    "CT301": (_BOTH, _bad_address),
    "CT302": (("legacy",), _legacy_ts("CT302", _ts_not_int)),
    "CT303": (("legacy",), _legacy_ts("CT303", _ts_unit)),
    "CT304": (("legacy",), _legacy_ts("CT304", _ts_future)),
    "CT305": (("legacy",), _legacy_ts("CT305", _ts_old)),
    "CT401": (_BOTH, _duplicate),
    "CT402": (_BOTH, _duplicate_across),
    "CT403": (("v2",), _too_many),
    "CT404": (("v2",), _bad_meta),
}
MUTATION_CODES: tuple[str, ...] = tuple(_MUTATIONS)
"""Every check code :func:`mutated_payloads` can aim at (every payload check)."""


@st.composite
def _mutated(
    draw: st.DrawFn, codes: tuple[str, ...], formats: tuple[str, ...], now: int
) -> CallbackRequest:
    code = draw(st.sampled_from(codes))
    allowed, mutate = _MUTATIONS[code]
    usable = tuple(f for f in formats if f in allowed)
    base = draw(_valid_request(usable, now))
    return mutate(draw, base)


def mutated_payloads(
    *,
    format: Literal["legacy", "v2"] | None = None,
    codes: Iterable[str] | None = None,
    now: float | None = None,
) -> SearchStrategy[CallbackRequest]:
    """Near-valid callback requests: a valid one with one mutation, and the code it must trigger.

    Each request's ``code`` is the check it must trigger; the mutation is built so that it
    triggers no other check at all (``{v.code for v in case.inspect().violations} == {code}``).
    *codes* limits the targets (default :data:`MUTATION_CODES`); codes that only exist in one
    format (``CT207``, ``CT403``, ``CT404`` v2; ``CT302`` to ``CT305`` legacy) are only aimed at
    with that format. Shrinks towards the first code asked for, on a one-event payload.
    """
    formats = _formats(format)
    chosen = MUTATION_CODES if codes is None else _names("codes", codes, MUTATION_CODES)
    usable = tuple(c for c in chosen if set(_MUTATIONS[c][0]) & set(formats))
    if not usable:
        raise ConfigError(
            f"codes {list(chosen)} cannot be triggered with format {format!r}: "
            + ", ".join(f"{c} needs {'/'.join(_MUTATIONS[c][0])}" for c in chosen)
        )
    return _mutated(usable, formats, _now(now))


# -- SMTP replies and DSNs -------------------------------------------------------------------------


def smtp_replies(
    *, bounce_class: BounceClass | str | None = None, flavours: Sequence[str] = FLAVOURS
) -> SearchStrategy[Reply]:
    """Replies of the failure catalog (``harness catalog``), in the providers' *flavours*.

    *bounce_class* (``soft``, ``hard`` or ``none``) keeps the modes of that class: what an
    integration should report for the reply. Placeholders in the texts are filled with a
    recipient address. Shrinks towards the first mode of the catalog in the first flavour.
    """
    wanted = None
    if bounce_class is not None:
        try:
            wanted = BounceClass(bounce_class)
        except ValueError:
            raise UnknownNameError(
                "bounce_class", str(bounce_class), [c.value for c in BounceClass]
            ) from None
    chosen = _names("flavours", flavours, FLAVOURS)
    modes = [
        m
        for m in CATALOG.values()
        if m.code is not None and (wanted is None or m.bounce_class is wanted)
    ]
    if not modes:  # pragma: no cover - every class has a mode with a reply
        raise ConfigError(f"no catalog mode of class {bounce_class!r} has a reply")

    @st.composite
    def build(draw: st.DrawFn) -> Reply:
        mode = draw(st.sampled_from(modes))
        flavour = draw(st.sampled_from(chosen))
        rcpt = draw(_plain_addresses())
        reply = mode.reply(
            flavour, rcpt=rcpt, host=f"mx.{rcpt.partition('@')[2]}", peer="127.0.0.1"
        )
        if reply is None:  # pragma: no cover - modes were filtered on code
            raise ConfigError(f"catalog mode {mode.name!r} has no reply")
        return reply

    return build()


@dataclass(frozen=True, slots=True)
class DsnSample:
    """A generated DSN and what a bounce processor should read from it."""

    message: EmailMessage
    data: bytes
    """The DSN as sent over SMTP (CRLF line ends)."""
    recipient: str
    action: str
    """failed, delayed, delivered or relayed."""
    mode: str
    """The catalog mode reported."""
    bounce_class: BounceClass
    """What to tell CleverTap: the mode's class for ``failed``; ``none`` otherwise (a delay is
    not a bounce yet, a delivery never is)."""
    dialect: Dialect


def dsn_messages(
    *,
    dialect: Dialect | str | None = None,
    action: str | None = None,
    recipients: SearchStrategy[str] | None = None,
    now: float = 1_700_000_000,
) -> SearchStrategy[DsnSample]:
    """DSNs as real MTAs write them, for one recipient, via :func:`harness.smtp.dsn.dsn_for_mode`.

    *dialect* (any of :data:`harness.smtp.dialects.DIALECTS`; when None, one of those with a
    delivery-status part, so not ``qmail``, ``exim_legacy`` or ``yahoo``) and *action*
    (``failed``, ``delayed``, ``delivered``, ``relayed``, ``expanded``) are drawn when None; a
    dialect that cannot report the action drawn (no delay warnings, no success reports, no
    expansion) is not drawn.
    ``failed`` and ``delayed`` report a failure mode of the catalog, the others the ``accept``
    mode. *recipients* defaults to
    :func:`addresses` without quoted local parts (a non-ASCII one gives the RFC 6533 variant).
    Dates come from *now*, so equal draws give byte-identical DSNs. Shrinks towards a generic
    failed DSN for the first failure mode.
    """
    # Plain-text bounces have no delivery-status part: drawn only when asked for by name.
    dialects = (
        [d for d in Dialect if d not in PLAIN_TEXT_DIALECTS]
        if dialect is None
        else [get_dialect(dialect)]
    )
    if action is not None and action not in ACTIONS:
        raise ConfigError(f"action must be one of {', '.join(ACTIONS)} or None, got {action!r}")
    actions = list(ACTIONS) if action is None else [action]
    pool = _strategy("recipients", recipients) or addresses(quoted=False)
    failures = [m.name for m in CATALOG.values() if m.bounce_class is not BounceClass.NONE]

    @st.composite
    def build(draw: st.DrawFn) -> DsnSample:
        chosen_action = draw(st.sampled_from(actions))
        mode = (
            draw(st.sampled_from(failures)) if chosen_action in ("failed", "delayed") else "accept"
        )
        # Not every mail system sends delay warnings or success reports.
        able = [
            d
            for d in dialects
            if not (chosen_action == "delayed" and d in NO_DELAY_WARNINGS)
            and not (chosen_action in SUCCESS_ACTIONS and d not in SUCCESS_DIALECTS)
            and not (chosen_action == "expanded" and d not in EXPANDING_DIALECTS)
        ]
        if not able:
            raise ConfigError(f"the {dialects[0]} dialect cannot report {chosen_action!r}")
        chosen_dialect = draw(st.sampled_from(able))
        recipient = draw(pool)
        message = dsn_for_mode(
            mode,
            recipient,
            dialect=chosen_dialect,
            action=chosen_action,
            flavour=draw(st.sampled_from(FLAVOURS)),
            ret=draw(st.sampled_from([None, "HDRS", "FULL"])),
            now=now,
        )
        klass = CATALOG[mode].bounce_class if chosen_action == "failed" else BounceClass.NONE
        return DsnSample(
            message, dsn_bytes(message), recipient, chosen_action, mode, klass, chosen_dialect
        )

    return build()


# -- scenarios -------------------------------------------------------------------------------------

_RULE_MODES = [m.name for m in CATALOG.values() if not m.server_down and m.name != "queue_expiry"]
_REPORTS: dict[str, Any] = {
    "auto_reply": "auto_reply",
    "complaint": "complaint",
    "success_dsn": {"accept_then_report": "delivered", "dsn": "postfix"},
}
"""Behaviours that accept, then mail a report back (by the name :func:`scenarios` draws)."""


def _yaml(data: Any) -> str:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    out = StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def scenarios(
    *, format: Literal["legacy", "v2"] | None = None, max_recipients: int = 6
) -> SearchStrategy[str]:
    """Scenario files (YAML text) that :func:`harness.scenario.loader.parse_scenario` accepts.

    One to *max_recipients* recipients over one or two domains, each with a catalog mode, a
    greylist-then-accept sequence, or a report (an auto-reply, a complaint, a success DSN);
    unsubscribe clicks for some delivered recipients; the
    callbacks those behaviours should cause listed under ``expect``. Shrinks towards one
    accepted recipient and no expectation.
    """
    formats = _formats(format)
    high = _size("max_recipients", max_recipients, 1, 100)
    locals_ = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8)

    @st.composite
    def build(draw: st.DrawFn) -> str:
        fmt = draw(st.sampled_from(formats))
        domains = draw(
            st.lists(
                st.sampled_from(["example.com", "example.org", "mail.test"]),
                min_size=1,
                max_size=2,
                unique=True,
            )
        )
        names = draw(st.lists(locals_, min_size=1, max_size=high, unique=True))
        mx: dict[str, dict[str, Any]] = {d: {} for d in domains}
        recipients, expected, clicks = [], [], []
        for n, name in enumerate(names):
            domain = domains[n % len(domains)]
            address = f"{name}@{domain}"
            recipients.append(address)
            mode = draw(st.sampled_from(["accept", *_RULE_MODES, *_REPORTS]))
            if mode in _REPORTS:
                # Accepted, then a report: a complaint is an unsubscribe (spam in v2), with no
                # click; an auto-reply and a success DSN ask for nothing.
                mx[domain][address] = _REPORTS[mode]
                if mode == "complaint":
                    expected.append(
                        {"event": "unsubscribe" if fmt == "legacy" else "spam", "e": address}
                    )
                continue
            sequence = mode == "greylist" and draw(st.booleans())
            mx[domain][address] = ["greylist", "accept"] if sequence else mode
            klass = BounceClass.NONE if sequence else CATALOG[mode].bounce_class
            if klass is BounceClass.HARD:
                expected.append(
                    {"event": "hardbounce" if fmt == "legacy" else "hard_bounce", "e": address}
                )
            elif klass is BounceClass.SOFT:
                expected.append(
                    {"event": "softbounce" if fmt == "legacy" else "soft_bounce", "e": address}
                )
            elif draw(st.booleans()):
                clicks.append(
                    {
                        "recipient": address,
                        "via": draw(st.sampled_from(["one_click", "get", "mailto"])),
                    }
                )
                expected.append(
                    {"event": "unsubscribe" if fmt == "legacy" else "unsubscribed", "e": address}
                )
            elif fmt == "v2":
                expected.append({"event": "delivered", "e": address})
        document: dict[str, Any] = {
            "name": "generated-" + "-".join(names[:2]),
            "clevertap": {"format": fmt},
            "mx": mx,
            "campaign": {"from": "news@brand.test", "to": recipients},
        }
        if clicks:
            document["unsubscribe"] = clicks
        expect: dict[str, Any] = {"within": draw(st.sampled_from(["30s", 10, "1m"]))}
        if expected:
            expect["callbacks"] = expected
        expect["nothing_else"] = draw(st.booleans())
        document["expect"] = expect
        return _yaml(document)

    return build()

"""Inspect one callback request: parse it and run every registered payload check.

This is the function both the fake CleverTap server and the respx mock call for every request,
so it is the hot path of callback ingestion: one JSON parse (orjson), one hand-written walk over
the payload that both collects the events and finds the violations. No pydantic validation per
request: the models in :mod:`harness.clevertap.models` describe the same shape for users and for
the schema export, and the tests keep the walk and the models in agreement.

The walk never raises on bad input: every problem is a :class:`~harness.checks.Violation`
(codes in :mod:`harness.clevertap.checks`), and every event item is recorded as far as it can be
read, so nothing a client sent is lost.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec
import orjson

from harness.addresses import address_problem
from harness.checks import Check, Severity, Violation
from harness.clevertap import checks as c
from harness.errors import did_you_mean
from harness.records import CallbackEvent
from harness.vocab import (
    LEGACY_BOUNCE_EVENTS,
    LEGACY_EVENTS,
    LEGACY_UNSUBSCRIBE_EVENTS,
    V2_TYPES,
    Endpoint,
    address_key,
)

if TYPE_CHECKING:
    from harness.journal import Journal

__all__ = [
    "CheckConfig",
    "DuplicateIndex",
    "Endpoint",
    "EventRecord",
    "Inspection",
    "inspect",
    "key_path",
    "quick_inspect",
]


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """Settings of the payload checks (all times in seconds)."""

    max_future_skew: float = 300.0
    """A ``ts`` further than this in the future (receive time + skew) is a violation."""
    max_age: float = 30 * 86400.0
    """A ``ts`` older than this before receive time is implausible."""
    duplicate_window: float = 3600.0
    """The same (event, address) again within this window across payloads is a duplicate."""
    max_v2_events: int = 1000
    """CleverTap's documented limit of events per v2 call."""


class EventRecord(msgspec.Struct, frozen=True, gc=False):
    """One event found in a payload, normalised across formats, valid or not.

    ``event`` is the legacy event name or the v2 ``type``; ``ts`` is None where the payload gave
    none (v2) or gave something that is not an integer; ``path`` is the JSON path of the item.
    ``event`` and ``email`` are ``""`` where the payload gave no string.
    """

    # A msgspec struct, not a dataclass: one is built per event on the hot path, and a frozen
    # dataclass's __init__ (object.__setattr__ per field) cost more than the rest of the item.

    event: str
    email: str
    ts: int | None
    meta: str | None
    path: str


@dataclass(slots=True)
class Inspection:
    """What :func:`inspect` found in one request."""

    format: Literal["legacy", "v2"] | None
    payload: Any
    """The parsed JSON, or None when the body is not JSON."""
    events: list[EventRecord] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no violation is of error severity."""
        violations = self.violations
        return not violations or not any(v.severity is Severity.ERROR for v in violations)


class History(Protocol):
    """Where :func:`inspect` looks up earlier events for CT402 (duplicates across payloads).

    The fake CleverTap's history is its journal (:class:`JournalHistory`); a standalone
    :class:`DuplicateIndex` serves ``harness check`` and the strategies.
    """

    def lookup(
        self, keys: Iterable[tuple[str, str]], now: float, window: float
    ) -> dict[tuple[str, str], tuple[float, int | None]]: ...

    def record(
        self, keys: Iterable[tuple[str, str]], now: float, seq: int | None = None
    ) -> None: ...


class JournalHistory:
    """The duplicate history of a journal: its callbacks that count for CT402.

    Nothing is kept here but a floor: the journal indexes every event it records, and
    :meth:`~harness.journal.Journal.last_remembered` answers the lookup from that index.
    :meth:`clear` forgets the events journaled so far without touching the journal.
    """

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._since = 0

    def lookup(
        self, keys: Iterable[tuple[str, str]], now: float, window: float
    ) -> dict[tuple[str, str], tuple[float, int | None]]:
        return self.journal.remembered_many(keys, after=now - window, since=self._since)

    def record(self, keys: Iterable[tuple[str, str]], now: float, seq: int | None = None) -> None:
        """Nothing to do: the journal indexes the entry when it is appended."""

    def clear(self) -> None:
        self._since = self.journal.next_seq - 1


class DuplicateIndex:
    """Remembers (event, address) pairs across payloads, to flag resends within a window.

    Thread-safe; the server keeps one per app and clears it on reset. :func:`inspect` looks keys
    up with :meth:`lookup` and, only when the payload has no error (CleverTap would have accepted
    it), stores them with :meth:`record`: a corrected resend of a rejected payload is not a
    duplicate.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[float, int | None]] = {}

    def seen(
        self, key: tuple[str, str], now: float, window: float, seq: int | None = None
    ) -> tuple[float, int | None] | None:
        """Record *key* at *now*; return the earlier (time, journal seq) if within *window*."""
        with self._lock:
            previous = self._seen.get(key)
            self._seen[key] = (now, seq)
        if previous is not None and now - previous[0] <= window:
            return previous
        return None

    def lookup(
        self, keys: Iterable[tuple[str, str]], now: float, window: float
    ) -> dict[tuple[str, str], tuple[float, int | None]]:
        """The keys of *keys* recorded within *window* before *now*, with their (time, seq)."""
        found: dict[tuple[str, str], tuple[float, int | None]] = {}
        with self._lock:
            get = self._seen.get
            for key in keys:
                previous = get(key)
                if previous is not None and now - previous[0] <= window:
                    found[key] = previous
        return found

    def record(self, keys: Iterable[tuple[str, str]], now: float, seq: int | None = None) -> None:
        """Remember every key of *keys* as received at *now* (in journal entry *seq*)."""
        value = (now, seq)
        with self._lock:
            self._seen.update(dict.fromkeys(keys, value))

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._seen.clear()


_DEFAULT_CONFIG = CheckConfig()
_MISSING: Any = object()
_LEGACY_EVENT_KEYS = frozenset({"event", "data"})
# The legacy events each legacy URL refuses (c.WRONG_ENDPOINT, reported by legacy_event()).
_REFUSED_EVENTS = {
    Endpoint.BOUNCE: LEGACY_UNSUBSCRIBE_EVENTS,
    Endpoint.UNSUBSCRIBE: LEGACY_BOUNCE_EVENTS,
}
_LEGACY_ITEM_KEYS = frozenset({"e", "ts"})
_V2_LISTS = ("success", "failed")
_SORTED_LEGACY = sorted(LEGACY_EVENTS)
_SORTED_V2 = sorted(V2_TYPES)
# ts at or beyond 10**11 s is the year 5138: no date in seconds, so another unit.
_UNITS = (
    (10**14, "milliseconds", 10**3),
    (10**17, "microseconds", 10**6),
    (10**20, "nanoseconds", 10**9),
)


def inspect(
    body: bytes,
    *,
    endpoint: Endpoint,
    content_type: str | None = "application/json",
    config: CheckConfig | None = None,
    history: History | None = None,
    now: float | None = None,
    seq: int | None = None,
) -> Inspection:
    """Parse *body* as a callback that arrived at *endpoint* and run every payload check.

    *now* is the receive time (defaults to ``time.time()``); *history*, when given, is consulted
    for duplicates across payloads and, if the payload has no error, updated with its events as
    received in journal entry *seq* (the evidence later duplicates point to). Never raises on
    bad input: every problem is a violation.
    """
    # Positional arguments: keywords cost these Python-level constructors a dict per call.
    walk = _Walk(
        endpoint if type(endpoint) is Endpoint else Endpoint(endpoint),
        _DEFAULT_CONFIG if config is None else config,
        time.time() if now is None else now,
    )
    walk.content_type(content_type)
    payload = walk.parse(body)
    if payload is _MISSING:
        return Inspection(None, None, [], walk.violations)
    fmt = walk.payload(payload)
    inspection = Inspection(fmt, payload, walk.events, walk.violations)
    if history is not None and walk.keys:
        walk.duplicates_across(history)
        if inspection.ok:
            history.record(walk.keys, walk.now, seq)
    return inspection


# -- the clean callback, decoded by type ----------------------------------------------------------
#
# Nearly every callback an integration sends is clean: well-formed, every value in range, no
# violation. For those, quick_inspect() lets msgspec decode the body straight into the structs
# below (which refuse any other shape: a missing or unknown key, a value of another JSON type)
# and checks only the values. The walk above stays the one that explains: whatever the structs
# refuse, or a value check doubts, goes to inspect(), so every violation and message comes from
# one place. tests/clevertap/test_quick.py holds the two to the same verdicts.


class _LegacyItem(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    e: str
    ts: int


class _LegacyEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    event: str
    data: list[_LegacyItem]


class _V2Item(msgspec.Struct, gc=False):
    # Unknown keys of a v2 item are ignored, as CleverTap documents (and the walk does).
    type: str
    email: str
    meta: str
    description: str | None = None


class _V2Lists(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    # An unknown list ("failure") is refused: the walk reports it (CT206).
    success: list[_V2Item] = msgspec.field(default_factory=list)
    failed: list[_V2Item] = msgspec.field(default_factory=list)


class _V2Payload(msgspec.Struct, gc=False):
    version: str
    events: _V2Lists


_LEGACY_DECODER = msgspec.json.Decoder(list[_LegacyEvent])
_V2_DECODER = msgspec.json.Decoder(_V2Payload)
# The event names each legacy URL takes, mapped to themselves: one lookup both checks a name and
# gives the interned string (one copy of "hardbounce" for all the events that name it).
_LEGACY_TAKES = {
    Endpoint.BOUNCE: {name: name for name in LEGACY_BOUNCE_EVENTS},
    Endpoint.UNSUBSCRIBE: {name: name for name in LEGACY_UNSUBSCRIBE_EVENTS},
}
_V2_TAKES = {name: name for name in V2_TYPES}
Clean = tuple[Literal["legacy", "v2"], tuple[CallbackEvent, ...]]
"""What :func:`quick_inspect` finds in a clean callback: its format and its events."""


def quick_inspect(
    body: bytes,
    *,
    endpoint: Endpoint,
    content_type: str | None,
    config: CheckConfig,
    history: History | None,
    now: float,
    seq: int | None = None,
) -> Clean | None:
    """The format and events of a callback in which :func:`inspect` would find no violation at
    all, or None when it may find one (then ask :func:`inspect`, which explains).

    *body* must be valid UTF-8 (the caller has decoded it already). Looks the events up in
    *history* and records them there (as received in journal entry *seq*), as :func:`inspect`
    does.
    """
    if _content_type_problems(content_type):
        return None
    low = now - config.max_age
    high = min(now + config.max_future_skew, 10**11 - 1)
    keys: dict[tuple[str, str], None] = {}
    found: list[CallbackEvent] = []
    add = found.append
    try:
        if endpoint is Endpoint.V2:
            fmt: Literal["legacy", "v2"] = "v2"
            v2 = _V2_DECODER.decode(body)
            lists = v2.events
            total = len(lists.success) + len(lists.failed)
            if v2.version != "v2" or not total or total > config.max_v2_events:
                return None
            for items in (lists.success, lists.failed):
                for v2_item in items:
                    kind = _V2_TAKES.get(v2_item.type)
                    email = v2_item.email
                    if kind is None or not v2_item.meta or address_problem(email) is not None:
                        return None
                    key = (kind, address_key(email))
                    if key in keys:
                        return None
                    keys[key] = None
                    add(CallbackEvent(kind, email, None, v2_item.meta))
        else:
            fmt = "legacy"
            events = _LEGACY_DECODER.decode(body)
            takes = _LEGACY_TAKES[endpoint]
            if not events:
                return None
            for event in events:
                name = takes.get(event.event)
                if name is None or not event.data:
                    return None
                for item in event.data:
                    email, ts = item.e, item.ts
                    if not low <= ts <= high or address_problem(email) is not None:
                        return None
                    key = (name, address_key(email))
                    if key in keys:
                        return None
                    keys[key] = None
                    add(CallbackEvent(name, email, ts))
    except (msgspec.DecodeError, RecursionError):
        # Malformed, a shape the structs refuse, or nesting too deep (in a key they skip): the
        # walk tells which.
        return None
    if history is not None:
        if history.lookup(keys, now, config.duplicate_window):
            return None  # a resend (CT402): the walk writes the violation
        history.record(keys, now, seq)
    return fmt, tuple(found)


class _Walk:
    """State of one inspection: the violations and events found so far."""

    __slots__ = ("config", "endpoint", "events", "keys", "now", "ts_bounds", "violations")

    def __init__(self, endpoint: Endpoint, config: CheckConfig, now: float) -> None:
        self.endpoint = endpoint
        self.config = config
        self.now = now
        self.violations: list[Violation] = []
        self.events: list[EventRecord] = []
        # CleverTap matches users by address; (event, lower-cased address) keys compare them
        # case-insensitively, as mailbox providers in practice do. Value: the first path.
        self.keys: dict[tuple[str, str], str] = {}
        # ts values in [low, high] draw no violation (high stays below the unit threshold).
        self.ts_bounds = (now - config.max_age, min(now + config.max_future_skew, 10**11 - 1))

    def add(
        self,
        check: Check,
        path: str,
        message: str,
        expected: str | None = None,
        seen: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.violations.append(
            Violation(
                check.code, check.severity, path, message, expected, seen, (), dict(extra or {})
            )
        )

    # --- transport ---------------------------------------------------------------------------

    def content_type(self, value: str | None) -> None:
        problems = _content_type_problems(value)
        if problems:
            self.violations.extend(problems)

    def parse(self, body: bytes) -> Any:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        # The slow path runs only for bodies orjson refuses. It tells invalid UTF-8 apart from
        # bad JSON, and accepts what orjson rejects although RFC 8259 allows it (1e400).
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            self.add(
                c.NOT_UTF8,
                "$",
                f"body is not UTF-8: byte {exc.object[exc.start]:#04x} at offset {exc.start}",
                "UTF-8",
                repr(bytes(exc.object[max(0, exc.start - 10) : exc.start + 10])),
                {"offset": exc.start},
            )
            return _MISSING
        if not text.strip():
            self.add(c.NOT_JSON, "$", "body is empty", "a JSON array or object", repr(text[:40]))
            return _MISSING
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            self.add(c.NOT_JSON, "$", f"body is not JSON: {exc}", "JSON", _clip(repr(text)))
            return _MISSING

    # --- shape -------------------------------------------------------------------------------

    def payload(self, payload: Any) -> Literal["legacy", "v2"] | None:
        legacy_url = self.endpoint is not Endpoint.V2
        if isinstance(payload, list):
            if not legacy_url:
                self.add(
                    c.WRONG_ENDPOINT,
                    "$",
                    "legacy payload (an array) sent to the v2 callback URL",
                    "a v2 object",
                    "an array",
                )
            self.legacy(payload)
            return "legacy"
        if isinstance(payload, dict):
            if legacy_url:
                if "version" in payload or "events" in payload:
                    self.add(
                        c.WRONG_ENDPOINT,
                        "$",
                        f"v2 payload (an object) sent to the {self.endpoint} callback URL",
                        "a legacy array",
                        "a v2 object",
                    )
                    self.v2(payload)
                    return "v2"
                # A single legacy event not wrapped in an array: say so, still read its events.
                self.add(
                    c.WRONG_SHAPE,
                    "$",
                    "payload must be an array of events",
                    "an array",
                    _show(payload),
                )
                self.legacy_event(payload, "$")
                return "legacy"
            self.v2(payload)
            return "v2"
        expected = "a v2 object" if not legacy_url else "an array"
        self.add(c.WRONG_SHAPE, "$", "payload is not an array or object", expected, _show(payload))
        return None

    def legacy(self, payload: list[Any]) -> None:
        if not payload:
            self.add(c.EMPTY, "$", "payload has no events", "at least one event", "[]")
        refused = _REFUSED_EVENTS.get(self.endpoint, frozenset())
        for i, event in enumerate(payload):
            path = f"$[{i}]"
            if type(event) is dict and len(event) == 2:
                # The well-formed event (nearly every one): exactly "event" and "data", a name
                # this endpoint takes, items. legacy_event() would find nothing to report.
                name = event.get("event")
                data = event.get("data")
                if (
                    type(name) is str
                    and type(data) is list
                    and data
                    and name in LEGACY_EVENTS
                    and name not in refused
                ):
                    self.legacy_items(name, data, path)
                    continue
            if isinstance(event, dict):
                self.legacy_event(event, path)
            else:
                self.add(c.WRONG_SHAPE, path, "event is not an object", "an object", _show(event))

    def legacy_event(self, event: dict[str, Any], path: str) -> None:
        name = event.get("event", _MISSING)
        if name is _MISSING:
            self.add(c.MISSING_KEY, f"{path}.event", "required key 'event' is missing")
            name = ""
        elif not isinstance(name, str) or name not in LEGACY_EVENTS:
            self.unknown(f"{path}.event", "event", name, _SORTED_LEGACY)
            if not isinstance(name, str):
                name = ""
        elif self.endpoint is Endpoint.BOUNCE and name in LEGACY_UNSUBSCRIBE_EVENTS:
            self.add(
                c.WRONG_ENDPOINT,
                f"{path}.event",
                f"{name!r} event sent to the bounce callback URL",
                "softbounce or hardbounce",
                repr(name),
            )
        elif self.endpoint is Endpoint.UNSUBSCRIBE and name in LEGACY_BOUNCE_EVENTS:
            self.add(
                c.WRONG_ENDPOINT,
                f"{path}.event",
                f"{name!r} event sent to the unsubscribe callback URL",
                "unsubscribe",
                repr(name),
            )
        if len(event) != 2 or not _LEGACY_EVENT_KEYS.issuperset(event):
            self.extra_keys(event, path, _LEGACY_EVENT_KEYS)
        data = event.get("data", _MISSING)
        if data is _MISSING:
            self.add(c.MISSING_KEY, f"{path}.data", "required key 'data' is missing")
            return
        if not isinstance(data, list):
            self.add(c.WRONG_SHAPE, f"{path}.data", "data is not an array", "an array", _show(data))
            return
        if not data:
            self.add(c.EMPTY, f"{path}.data", "data is empty", "at least one item", "[]")
            return
        self.legacy_items(name, data, path)

    def legacy_items(self, name: str, data: list[Any], path: str) -> None:
        # Fast path for the well-formed item, which is nearly every item: the same verdicts as
        # legacy_item() reaches, with no call and no allocation beyond the record itself.
        low, high = self.ts_bounds
        events_append = self.events.append
        keys = self.keys
        for j, item in enumerate(data):
            item_path = f"{path}.data[{j}]"
            if type(item) is dict and len(item) == 2:
                email = item.get("e")
                ts = item.get("ts")
                if (
                    type(email) is str
                    and type(ts) is int
                    and low <= ts <= high
                    and address_problem(email) is None
                ):
                    events_append(EventRecord(name, email, ts, None, item_path))
                    if name:
                        key = (name, address_key(email))
                        if keys.setdefault(key, item_path) is not item_path:
                            self.duplicate(key, email, item_path)
                    continue
            self.legacy_item(item, item_path, name)

    def legacy_item(self, item: Any, item_path: str, name: str) -> None:
        if not isinstance(item, dict):
            self.add(c.WRONG_SHAPE, item_path, "item is not an object", "an object", _show(item))
            return
        email = item.get("e", _MISSING)
        ts = item.get("ts", _MISSING)
        if len(item) != 2 or email is _MISSING or ts is _MISSING:
            self.extra_keys(item, item_path, _LEGACY_ITEM_KEYS)
        if email is _MISSING:
            self.add(c.MISSING_KEY, f"{item_path}.e", "required key 'e' is missing")
            email = ""
        elif not self.address(email, f"{item_path}.e"):
            email = email if isinstance(email, str) else ""
        if ts is _MISSING:
            self.add(c.MISSING_KEY, f"{item_path}.ts", "required key 'ts' is missing")
            ts = None
        else:
            ts = self.timestamp(ts, f"{item_path}.ts")
        self.events.append(EventRecord(name, email, ts, None, item_path))
        if name and email:
            self.remember(name, email, item_path)

    def v2(self, payload: dict[str, Any]) -> None:
        version = payload.get("version", _MISSING)
        if version is _MISSING:
            self.add(c.MISSING_KEY, "$.version", "required key 'version' is missing")
        elif version != "v2":
            self.add(c.BAD_VERSION, "$.version", 'version is not "v2"', '"v2"', _show(version))
        events = payload.get("events", _MISSING)
        base = "$.events"
        if events is _MISSING:
            alt = payload.get("event", _MISSING)
            if alt is _MISSING:
                self.add(c.MISSING_KEY, base, "required key 'events' is missing")
                return
            # CleverTap's key table says "event" where its samples say "events"; report the
            # erratum but read the events, so that none is lost.
            self.add(
                c.MISSING_KEY,
                base,
                "required key 'events' is missing; found 'event' (the spelling of the key table "
                "in CleverTap's docs; its samples say 'events')",
                "'events'",
                "'event'",
            )
            events, base = alt, "$.event"
        if not isinstance(events, dict):
            self.add(c.WRONG_SHAPE, base, "events is not an object", "an object", _show(events))
            return
        if len(events) > 2 or not all(k in _V2_LISTS for k in events):
            for key in events:
                if key not in _V2_LISTS:
                    self.add(
                        c.EXTRA_KEY,
                        key_path(base, key),
                        f"unknown list {key!r}: its events are never read",
                        "success or failed",
                        repr(key),
                    )
        total = 0
        for list_name in _V2_LISTS:
            items = events.get(list_name, _MISSING)
            if items is _MISSING:
                continue
            list_path = f"{base}.{list_name}"
            if not isinstance(items, list):
                self.add(
                    c.WRONG_SHAPE,
                    list_path,
                    f"{list_name} is not an array",
                    "an array",
                    _show(items),
                )
                continue
            total += len(items)
            for k, item in enumerate(items):
                self.v2_item(item, f"{list_path}[{k}]")
        if total == 0:
            self.add(c.EMPTY, base, "no events in success or failed", "at least one event", "0")
        elif total > self.config.max_v2_events:
            limit = self.config.max_v2_events
            self.add(
                c.TOO_MANY_EVENTS,
                base,
                f"{total} events in one call; CleverTap rejects more than {limit} with 400 "
                '"More than allowed events were sent"',
                f"at most {limit}",
                str(total),
                {"events": total, "limit": limit},
            )

    def v2_item(self, item: Any, path: str) -> None:
        if type(item) is dict:
            kind = item.get("type")
            email = item.get("email")
            meta = item.get("meta")
            description = item.get("description")
            if (
                type(kind) is str
                and kind in V2_TYPES
                and type(email) is str
                and type(meta) is str
                and meta
                and (description is None or type(description) is str)
                and address_problem(email) is None
            ):
                self.events.append(EventRecord(kind, email, None, meta, path))
                key = (kind, address_key(email))
                if self.keys.setdefault(key, path) is not path:
                    self.duplicate(key, email, path)
                return
        self.v2_item_checked(item, path)

    def v2_item_checked(self, item: Any, path: str) -> None:
        if not isinstance(item, dict):
            self.add(c.WRONG_SHAPE, path, "event is not an object", "an object", _show(item))
            return
        kind = item.get("type", _MISSING)
        if kind is _MISSING:
            self.add(
                c.MISSING_KEY,
                f"{path}.type",
                "required key 'type' is missing (CleverTap: \"Mandatory parameter missing\")",
            )
            kind = ""
        elif not isinstance(kind, str) or kind not in V2_TYPES:
            self.unknown(f"{path}.type", "type", kind, _SORTED_V2)
            if not isinstance(kind, str):
                kind = ""
        email = item.get("email", _MISSING)
        if email is _MISSING:
            self.add(
                c.MISSING_KEY,
                f"{path}.email",
                "required key 'email' is missing (CleverTap: \"Mandatory parameter missing\")",
            )
            email = ""
        elif not self.address(email, f"{path}.email"):
            email = email if isinstance(email, str) else ""
        meta = item.get("meta", _MISSING)
        if meta is _MISSING:
            self.add(c.V2_META, f"{path}.meta", "required key 'meta' is missing")
            meta = None
        elif not isinstance(meta, str):
            self.add(c.V2_META, f"{path}.meta", "meta is not a string", "a string", _show(meta))
            meta = None
        elif not meta:
            self.add(c.V2_META, f"{path}.meta", "meta is empty", "the X-CleverTap_META value", '""')
        description = item.get("description")
        if description is not None and not isinstance(description, str):
            self.add(
                c.WRONG_SHAPE,
                f"{path}.description",
                "description is not a string",
                "a string",
                _show(description),
            )
        self.events.append(EventRecord(kind, email, None, meta, path))
        if kind and email:
            self.remember(kind, email, path)

    def unknown(self, path: str, key: str, value: Any, known: list[str]) -> None:
        hint = did_you_mean(value, known) if isinstance(value, str) else None
        message = f"unknown {key} {_show(value)}"
        if hint:
            message += f"; did you mean {hint}?"
        self.add(c.UNKNOWN_EVENT, path, message, "one of " + ", ".join(known), _show(value))

    def extra_keys(self, obj: dict[str, Any], path: str, allowed: frozenset[str]) -> None:
        for key in obj:
            if key not in allowed:
                self.add(
                    c.EXTRA_KEY,
                    key_path(path, key),
                    f"unexpected key {key!r}",
                    " and ".join(sorted(allowed)),
                    repr(key),
                )

    # --- values ------------------------------------------------------------------------------

    def address(self, value: Any, path: str) -> bool:
        """Check an address; True when it is valid."""
        if not isinstance(value, str):
            self.add(c.BAD_ADDRESS, path, "address is not a string", "a string", _show(value))
            return False
        problem = address_problem(value)
        if problem is None:
            return True
        self.add(
            c.BAD_ADDRESS, path, f"not a valid email address: {problem}", "an address", _show(value)
        )
        return False

    def timestamp(self, ts: Any, path: str) -> int | None:
        """Check a legacy ``ts``; return it when it is an integer."""
        # type() rather than isinstance(): bool is a subclass of int.
        if type(ts) is not int:
            if isinstance(ts, bool):
                what = "a boolean"
            elif isinstance(ts, float) and ts.is_integer() and abs(ts) >= 2**63:
                # orjson turns integers beyond 64 bits into floats; none is a usable time anyway.
                what = "a number beyond the 64-bit integer range"
            elif isinstance(ts, float):
                what = "a number with a fraction or exponent"
            elif isinstance(ts, str):
                what = "a string" + ("; send the number unquoted" if ts.strip().isdigit() else "")
            elif ts is None:
                what = "null"
            else:
                what = "an array" if isinstance(ts, list) else "an object"
            self.add(c.TS_NOT_INT, path, f"ts is {what}", "an integer (epoch seconds)", _show(ts))
            return None
        config = self.config
        if ts >= 10**11:
            for bound, unit, divisor in _UNITS:
                if ts < bound:
                    seconds = ts // divisor
                    self.add(
                        c.TS_UNIT,
                        path,
                        f"ts looks like {unit}: {ts} is {seconds} s ({_iso(seconds)})",
                        "epoch seconds",
                        str(ts),
                        {"unit": unit, "seconds": seconds},
                    )
                    return ts
        limit = self.now + config.max_future_skew
        if ts > limit:
            ahead = ts - self.now
            self.add(
                c.TS_FUTURE,
                path,
                f"ts is {ahead:g} s after the receive time ({_iso(ts)})",
                f"at most {_iso(limit)}",
                str(ts),
                {"ahead": ahead, "received": self.now},
            )
        elif ts < self.now - config.max_age:
            age = self.now - ts
            self.add(
                c.TS_OLD,
                path,
                f"ts is {age / 86400:.1f} days before the receive time ({_iso(ts)})",
                f"at least {_iso(self.now - config.max_age)}",
                str(ts),
                {"age": age, "received": self.now},
            )
        return ts

    # --- batch -------------------------------------------------------------------------------

    def remember(self, event: str, email: str, path: str) -> None:
        key = (event, address_key(email))
        if self.keys.setdefault(key, path) is not path:
            self.duplicate(key, email, path)

    def duplicate(self, key: tuple[str, str], email: str, path: str) -> None:
        first = self.keys[key]
        self.add(
            c.DUPLICATE_IN_PAYLOAD,
            path,
            f"{key[0]} for {email} already at {first}; CleverTap does not deduplicate",
            "each (event, address) once",
            f"again at {path}",
            {"first": first},
        )

    def duplicates_across(self, history: History) -> None:
        found = history.lookup(self.keys, self.now, self.config.duplicate_window)
        for key, (at, seq) in found.items():
            event, email = key
            ago = self.now - at
            self.violations.append(
                Violation(
                    c.DUPLICATE_ACROSS.code,
                    c.DUPLICATE_ACROSS.severity,
                    self.keys[key],
                    f"{event} for {email} already received {ago:g} s earlier; CleverTap does "
                    "not deduplicate, so it counts twice",
                    f"no resend within {self.config.duplicate_window:g} s",
                    f"received {ago:g} s earlier",
                    () if seq is None else (seq,),
                    {"previous_at": at}
                    if seq is None
                    else {"previous_at": at, "previous_seq": seq},
                )
            )


@lru_cache(maxsize=256)
def _content_type_problems(value: str | None) -> tuple[Violation, ...]:
    # Cached: a client sends the same header on every request. Violations are immutable.
    if not value or not value.strip():
        return (_violation(c.BAD_CONTENT_TYPE, "no Content-Type header", "application/json"),)
    found = []
    media, _, params = value.partition(";")
    if media.strip().lower() != "application/json":
        found.append(
            _violation(
                c.BAD_CONTENT_TYPE,
                "Content-Type is not application/json",
                "application/json",
                repr(value),
            )
        )
    for param in params.split(";"):
        name, _, raw = param.partition("=")
        if name.strip().lower() == "charset":
            charset = raw.strip().strip('"').lower()
            if charset not in ("utf-8", "utf8"):
                found.append(
                    _violation(
                        c.BAD_CHARSET,
                        "Content-Type names a charset other than UTF-8",
                        "no charset or charset=utf-8",
                        repr(raw.strip()),
                    )
                )
    return tuple(found)


def _violation(check: Check, message: str, expected: str, seen: str | None = None) -> Violation:
    return Violation(check.code, check.severity, "$", message, expected, seen)


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON value")


def key_path(base: str, key: str) -> str:
    """The path of *key* inside *base* as violations spell it (``events[0].profile.Email``,
    ``evtData['a b']``); the dashboard marks the same spelling in the payloads it shows."""
    if key.isidentifier():
        return f"{base}.{key}"
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{base}['{escaped}']"


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _show(value: Any) -> str:
    """A short JSON-ish rendering of *value* for ``seen``."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    try:
        return _clip(json.dumps(value, ensure_ascii=False))
    except ValueError:  # a float json cannot render, e.g. from an int too big for orjson
        return _clip(repr(value))


def _iso(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "out of range"

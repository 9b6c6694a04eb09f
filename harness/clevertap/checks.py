"""The payload checks (CT1xx transport, CT2xx shape, CT3xx values, CT4xx batch).

This module only *declares* them in the registry of :mod:`harness.checks`; the single walk that
finds them is :func:`harness.clevertap.inspect.inspect`, which refers to the constants below.

Severity policy: **error** for what CleverTap would reject (a 400 for v2) or misread (an event
counted twice, a timestamp in the wrong unit, an address it cannot match); **warning** for what it
tolerates but is probably a bug in the integration (extra keys in a legacy item, an odd charset,
an empty list, a late timestamp, a resend).

Every example is a request in the ``.http`` file convention: optional ``# config: key=value``
comments (fields of :class:`~harness.clevertap.inspect.CheckConfig`), a request line whose last
path segment names the endpoint (``bounce``, ``unsubscribe`` or ``v2``), headers (``Date`` is the
receive time; no ``Content-Type`` header means none was sent), a blank line and the body, encoded
in the charset the Content-Type names. Several requests, sent in order to one server, are
separated by a ``###`` line. ``docs/checks.md`` shows the same examples and a test replays them.
"""

from __future__ import annotations

from harness.checks import Check, Severity, register

__all__ = [
    "BAD_ADDRESS",
    "BAD_CHARSET",
    "BAD_CONTENT_TYPE",
    "BAD_VERSION",
    "DUPLICATE_ACROSS",
    "DUPLICATE_IN_PAYLOAD",
    "EMPTY",
    "EXTRA_KEY",
    "MISSING_KEY",
    "NOT_JSON",
    "NOT_UTF8",
    "TOO_MANY_EVENTS",
    "TS_FUTURE",
    "TS_NOT_INT",
    "TS_OLD",
    "TS_UNIT",
    "UNKNOWN_EVENT",
    "V2_META",
    "WRONG_ENDPOINT",
    "WRONG_SHAPE",
]

_E = Severity.ERROR
_W = Severity.WARNING
_DATE = "Date: Tue, 14 Nov 2023 22:13:20 GMT"  # 1700000000, the receive time of every example


def _request(endpoint: str, body: str, content_type: str | None = "application/json") -> str:
    header = f"Content-Type: {content_type}\n" if content_type is not None else ""
    return f"POST /{endpoint} HTTP/1.1\n{header}{_DATE}\n\n{body}"


def _legacy(event: str, item: str) -> str:
    return f'[{{"event": "{event}", "data": [{item}]}}]'


_OK_ITEM = '{"e": "a@example.com", "ts": 1700000000}'

# --- CT1xx transport -------------------------------------------------------------------------

NOT_JSON = register(
    Check(
        code="CT101",
        title="body is not JSON",
        severity=_E,
        family="transport",
        example=_request("bounce", _legacy("hardbounce", _OK_ITEM)[:-1] + ",]"),
        explanation="The body does not parse as JSON (RFC 8259): a syntax error, an empty body, "
        "a byte order mark, or tokens such as NaN that JSON does not have. Nothing in it can be "
        "read, so every event it carried is lost.",
    )
)
NOT_UTF8 = register(
    Check(
        code="CT102",
        title="body is not UTF-8",
        severity=_E,
        family="transport",
        example=_request(
            "bounce",
            _legacy("hardbounce", '{"e": "josé@example.com", "ts": 1700000000}'),
            "application/json; charset=ISO-8859-1",
        ),
        explanation="JSON exchanged between systems must be UTF-8 (RFC 8259, section 8.1). "
        "A body in Latin-1 or UTF-16 garbles internationalised addresses or does not parse. "
        "Encode the body as UTF-8.",
    )
)
BAD_CONTENT_TYPE = register(
    Check(
        code="CT103",
        title="Content-Type is not application/json",
        severity=_E,
        family="transport",
        example=_request(
            "bounce", _legacy("hardbounce", _OK_ITEM), "application/x-www-form-urlencoded"
        ),
        explanation="CleverTap does not publish the Content-Type it requires; the harness sends "
        "and expects `application/json`, and a receiver may refuse or misparse anything else "
        "(a missing header included). Parameters such as `charset=utf-8` are allowed.",
    )
)
BAD_CHARSET = register(
    Check(
        code="CT104",
        title="Content-Type names a charset other than UTF-8",
        severity=_W,
        family="transport",
        example=_request(
            "bounce", _legacy("hardbounce", _OK_ITEM), "application/json; charset=ISO-8859-1"
        ),
        explanation="`application/json` has no charset parameter and JSON is UTF-8; a "
        "different charset is at best ignored and at worst honoured by a receiver that then "
        "decodes the body wrongly. A warning, because an ASCII body reads the same either way.",
    )
)

# --- CT2xx shape -----------------------------------------------------------------------------

WRONG_SHAPE = register(
    Check(
        code="CT201",
        title="a value has the wrong JSON type",
        severity=_E,
        family="shape",
        example=_request("bounce", '{"event": "hardbounce", "data": [' + _OK_ITEM + "]}"),
        explanation="The structure is not the documented one: a legacy body must be an array "
        "of objects each with a `data` array of objects; a v2 body an object whose `events` "
        "holds the `success` and `failed` arrays of objects. CleverTap cannot read events out "
        "of any other structure.",
    )
)
UNKNOWN_EVENT = register(
    Check(
        code="CT202",
        title="unknown event name or type",
        severity=_E,
        family="shape",
        example=_request("bounce", _legacy("bounce", _OK_ITEM)),
        explanation="Legacy `event` must be `softbounce`, `hardbounce` or `unsubscribe`; v2 "
        "`type` must be `delivered`, `hard_bounce`, `soft_bounce`, `spam` or `unsubscribed`. "
        "The two formats spell bounces differently, a common mix-up.",
    )
)
WRONG_ENDPOINT = register(
    Check(
        code="CT203",
        title="event sent to the wrong callback URL",
        severity=_E,
        family="shape",
        example=_request("bounce", _legacy("unsubscribe", _OK_ITEM)),
        explanation="Bounces (`softbounce`, `hardbounce`) go to the bounce callback URL and "
        "`unsubscribe` events to the unsubscribe callback URL; a v2 object goes to the v2 URL "
        "and a legacy array to a legacy one. Sent elsewhere, they are misfiled or dropped.",
    )
)
EMPTY = register(
    Check(
        code="CT204",
        title="no events in the payload or in an event's data",
        severity=_W,
        family="shape",
        example=_request("bounce", '[{"event": "hardbounce", "data": []}]'),
        explanation="An empty legacy array, an empty `data` list or a v2 payload with no "
        "events records nothing. CleverTap does not document how it answers one; it usually "
        "means the integration's batching sent a callback it did not need to.",
    )
)
MISSING_KEY = register(
    Check(
        code="CT205",
        title="required key missing",
        severity=_E,
        family="shape",
        example=_request("bounce", _legacy("hardbounce", '{"e": "a@example.com"}')),
        explanation="Legacy events need `event` and `data`, their items `e` and `ts`; v2 needs "
        "`version` and `events`, and every item `type` and `email` (CleverTap answers 400 "
        '"Mandatory parameter missing"). A missing v2 `meta` is CT404.',
    )
)
EXTRA_KEY = register(
    Check(
        code="CT206",
        title="unexpected key",
        severity=_W,
        family="shape",
        example=_request(
            "bounce",
            _legacy(
                "hardbounce",
                '{"e": "a@example.com", "ts": 1700000000, "reason": "550 5.1.1 user unknown"}',
            ),
        ),
        explanation="A key the legacy format does not define, often a misspelt one "
        "(`email` for `e`). It is tolerated but carries nothing. Unknown keys in v2 items are "
        "ignored, as CleverTap documents; an unknown list under v2 `events` (`failure` for "
        "`failed`) is reported, because the events in it are never read.",
    )
)
BAD_VERSION = register(
    Check(
        code="CT207",
        title='v2 version is not "v2"',
        severity=_E,
        family="shape",
        example=_request(
            "v2",
            '{"version": "2", "events": {"success": [{"type": "delivered", '
            '"email": "a@example.com", "meta": "m1"}]}}',
        ),
        explanation='A v2 callback must carry `"version": "v2"` exactly (a string).',
    )
)

# --- CT3xx values ----------------------------------------------------------------------------

BAD_ADDRESS = register(
    Check(
        code="CT301",
        title="not a valid email address",
        severity=_E,
        family="values",
        example=_request(
            "bounce", _legacy("hardbounce", '{"e": "a@@example.com", "ts": 1700000000}')
        ),
        explanation="`e` (legacy) or `email` (v2) must be one address in RFC 5321 / RFC 6531 "
        "syntax (internationalised local parts and IDN domains are fine), with no display name, "
        "brackets or spaces; otherwise CleverTap cannot match it to a user. Deliverability is "
        "not checked.",
    )
)
TS_NOT_INT = register(
    Check(
        code="CT302",
        title="ts is not an integer",
        severity=_E,
        family="values",
        example=_request(
            "bounce", _legacy("hardbounce", '{"e": "a@example.com", "ts": "1700000000"}')
        ),
        explanation="`ts` is a Unix epoch in whole seconds, a JSON integer: not a string, a "
        "number with a fraction or exponent, a boolean or null.",
    )
)
TS_UNIT = register(
    Check(
        code="CT303",
        title="ts is in milliseconds or microseconds",
        severity=_E,
        family="values",
        example=_request(
            "bounce", _legacy("hardbounce", '{"e": "a@example.com", "ts": 1700000000000}')
        ),
        explanation="`ts` is in seconds; a value of 10^11 or more is no plausible date in "
        "seconds (the year 5138), so it is read as milliseconds, microseconds or nanoseconds. "
        "The message and `extra.seconds` give the value in seconds.",
    )
)
TS_FUTURE = register(
    Check(
        code="CT304",
        title="ts is in the future",
        severity=_E,
        family="values",
        example=_request(
            "bounce", _legacy("hardbounce", '{"e": "a@example.com", "ts": 1700086400}')
        ),
        explanation="An event cannot happen after it is reported. `ts` is later than the "
        "receive time plus `max_future_skew` (300 s by default): a clock or time zone bug.",
    )
)
TS_OLD = register(
    Check(
        code="CT305",
        title="ts is implausibly old",
        severity=_W,
        family="values",
        example=_request(
            "bounce", _legacy("hardbounce", '{"e": "a@example.com", "ts": 1600000000}')
        ),
        explanation="`ts` is earlier than the receive time minus `max_age` (30 days by "
        "default). Late reports happen, so this is a warning; but 0, negative values or dates "
        "years back are bugs. If the time of the event is unknown, CleverTap asks for the "
        "current epoch.",
    )
)

# --- CT4xx batch -----------------------------------------------------------------------------

DUPLICATE_IN_PAYLOAD = register(
    Check(
        code="CT401",
        title="the same event twice in one payload",
        severity=_E,
        family="batch",
        example=_request(
            "bounce",
            '[{"event": "hardbounce", "data": [' + _OK_ITEM + ", " + _OK_ITEM + "]}]",
        ),
        explanation="The same (event, address) appears twice in one callback (addresses "
        "compared case-insensitively). CleverTap does not deduplicate, so it counts twice.",
    )
)
DUPLICATE_ACROSS = register(
    Check(
        code="CT402",
        title="the same event again within the duplicate window",
        severity=_W,
        family="batch",
        example=_request("bounce", _legacy("hardbounce", _OK_ITEM))
        + "\n###\n"
        + _request("bounce", _legacy("hardbounce", _OK_ITEM)),
        explanation="An (event, address) already received in an accepted callback (one with "
        "no error) arrives again within `duplicate_window` (an hour by default). CleverTap does "
        "not deduplicate, so a resend counts twice. A warning, because resending after a 5xx "
        "is what CleverTap asks for; a scenario decides whether it was one.",
    )
)
TOO_MANY_EVENTS = register(
    Check(
        code="CT403",
        title="more than 1000 events in one v2 call",
        severity=_E,
        family="batch",
        example="# config: max_v2_events=2\n"
        + _request(
            "v2",
            '{"version": "v2", "events": {"failed": ['
            '{"type": "hard_bounce", "email": "a@example.com", "meta": "m1"}, '
            '{"type": "hard_bounce", "email": "b@example.com", "meta": "m2"}, '
            '{"type": "soft_bounce", "email": "c@example.com", "meta": "m3"}]}}',
        ),
        explanation="CleverTap accepts at most 1000 events per v2 call (`success` and "
        '`failed` together) and rejects more with 400 "More than allowed events were sent": '
        "the whole batch is lost. The example lowers the limit (`max_v2_events`) to stay short.",
    )
)
V2_META = register(
    Check(
        code="CT404",
        title="v2 meta missing or empty",
        severity=_E,
        family="batch",
        example=_request(
            "v2",
            '{"version": "v2", "events": {"failed": [{"type": "hard_bounce", '
            '"email": "a@example.com", "meta": ""}]}}',
        ),
        explanation="Every v2 event must echo, unchanged, the `X-CleverTap_META` header of the "
        "message it is about; CleverTap ties the event to its campaign through it and reports "
        '"invalid meta" otherwise.',
    )
)

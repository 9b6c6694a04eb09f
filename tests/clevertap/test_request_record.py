"""The journal record of a callback request is built by position (the hot path): each value must
land in the field of its name, whatever order Callback's fields are declared in."""

from __future__ import annotations

from harness.checks import Severity, Violation
from harness.clevertap.app import _request_record
from harness.records import Callback, CallbackEvent, FaultHit


def test_every_value_lands_in_the_field_of_its_name() -> None:
    events = (CallbackEvent("hardbounce", "a@example.com", 1700000000),)
    violations = (Violation("CT101", Severity.ERROR, "$", "message"),)
    fault = FaultHit(rule=3, action="delay", spec="delay 1s")
    built = _request_record(
        "bounce",
        "/callbacks/bounce",
        "127.0.0.1:5000",
        "application/json",
        120,
        "[]",
        True,
        100,
        "PUT",
        True,
        418,
        format="legacy",
        events=events,
        violations=violations,
        fault=fault,
        error="boom",
    )
    assert built == Callback(
        endpoint="bounce",
        path="/callbacks/bounce",
        peer="127.0.0.1:5000",
        content_type="application/json",
        size=120,
        body="[]",
        body_base64=True,
        truncated=True,
        method="PUT",
        disconnected=True,
        status=418,
        format="legacy",
        events=events,
        violations=violations,
        fault=fault,
        error="boom",
    )
    # Every field was given a value of its own above: a value in the wrong field cannot match.
    assert len(Callback.__struct_fields__) == 16

"""The typed records and the vocabulary: one home per fact, documented from the types."""

from __future__ import annotations

import ast
from pathlib import Path

import msgspec
import pytest

from harness.checks import Severity, Violation
from harness.records import (
    RECORD_TYPES,
    Callback,
    CallbackEvent,
    Click,
    ClickStep,
    DroppedMessage,
    Dsn,
    DsnRecipient,
    DsnSkipped,
    FaultHit,
    FaultsChanged,
    HostChange,
    Kind,
    Note,
    Recipient,
    ScheduledBounce,
    Sent,
    SmtpClose,
    SmtpMessage,
    SmtpOpen,
    SmtpReply,
    SubmissionProbe,
    TranscriptLine,
    ViolationFound,
    record_from_json,
    record_json,
    reference_markdown,
)

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "harness"

SAMPLES = [
    Callback(
        endpoint="v2",
        path="/v2",
        peer="127.0.0.1:5000",
        body="{}",
        events=(CallbackEvent("hard_bounce", "a@x.test", None, "m"),),
        violations=(Violation("CT101", Severity.ERROR, "$", "bad", extra={"k": 1}),),
        status=400,
        fault=FaultHit(rule=0, action="status", spec="status=503", retry_after=2),
    ),
    SmtpOpen(host="mx1", session="mx1-1", peer="127.0.0.1:1", port=25, variant="slow"),
    SmtpReply(
        host="mx1",
        session="mx1-1",
        recipient="a@x.test",
        sender="n@b.test",
        stage="later",
        code=250,
        enhanced="2.1.5",
        reply="250 2.1.5 Ok",
        mode="invalid_address",
        bounce_class="hard",
        attempt=1,
        bounce=ScheduledBounce(
            after=2.0, status="5.1.1", diagnostic=None, dialect="postfix", action="failed"
        ),
    ),
    SmtpMessage(
        host="mx1",
        session="mx1-1",
        id="MX1000007",
        recipients=(Recipient(address="a@x.test", notify=("FAILURE",), orcpt="rfc822;a@x.test"),),
        headers=(("Subject", "Hi"),),
    ),
    SmtpClose(
        host="mx1",
        session="mx1-1",
        peer="127.0.0.1:1",
        commands=("EHLO c.test",),
        replies=(TranscriptLine(stage="ehlo", reply="250 HELP"),),
        dropped_message=DroppedMessage(sender="n@b.test", recipients=("a@x.test",), after_dot=True),
        end="server_dropped",
    ),
    Dsn(
        to="bounces@b.test",
        recipients=(DsnRecipient(recipient="a", action="failed", status="5.1.1"),),
    ),
    DsnSkipped(host="mx1", message="MX1000007", recipients=("a@x.test",), sender="", reason="null"),
    Sent(message_id="<1@b>", sender="n@b.test", to=("a@x.test",), ok=True),
    Click(
        recipient="a@x.test",
        via="get",
        steps=(ClickStep(method="GET", url="http://127.0.0.1/u", status=200),),
    ),
    ViolationFound(violation=Violation("CT503", Severity.ERROR, "$[0]", "soft as hard")),
    HostChange(host="mx1", state="down", variant="refused"),
    FaultsChanged(rules=("status=503",)),
    Note(source="test", what="hello"),
    SubmissionProbe(
        probe="wrong_password",
        username="clevertap",
        auth_reply="235 2.7.0 Authentication successful",
        accepted=True,
        stage="auth",
        reply="235 2.7.0 Authentication successful",
        steps=("AUTH -> 235 2.7.0 Authentication successful",),
    ),
]


def test_every_kind_has_one_record_type_and_a_sample_here() -> None:
    assert set(RECORD_TYPES) == set(Kind)
    assert {type(s) for s in SAMPLES} == set(RECORD_TYPES.values())


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: type(r).__name__)
def test_json_form_converts_back_to_the_same_record(record: object) -> None:
    kind = type(record).KIND  # type: ignore[attr-defined]
    data = record_json(record)
    assert isinstance(data, dict)
    assert record_from_json(kind, data) == record
    # The stored form (MessagePack) round-trips too.
    stored = msgspec.msgpack.encode(record)
    assert msgspec.msgpack.decode(stored, type=type(record)) == record


def test_json_form_of_a_short_record_fills_in_the_defaults() -> None:
    record = record_from_json("smtp_reply", {
        "host": "mx1", "session": "mx1-1", "recipient": "a@x.test", "sender": "",
        "stage": "rcpt", "code": 550, "enhanced": "5.1.1", "reply": "550 5.1.1 no", "class": "hard",
    })  # fmt: skip
    assert isinstance(record, SmtpReply)
    assert record.bounce_class == "hard"
    assert record.mode is None


def test_json_form_errors_name_the_field() -> None:
    with pytest.raises(msgspec.ValidationError, match="needs the field 'host'"):
        record_from_json("smtp_open", {"session": "x", "peer": "y"})
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        record_from_json("note", {"source": "a", "what": "b", "nope": 1})
    with pytest.raises(msgspec.ValidationError, match="Expected `int`"):
        record_from_json("smtp_reply", {
            "host": "mx1", "session": "s", "recipient": "a", "sender": "", "stage": "rcpt",
            "code": "550", "enhanced": None, "reply": "550",
        })  # fmt: skip


def test_callback_events_keep_their_documented_array_form() -> None:
    data = record_json(SAMPLES[0])
    assert data["events"] == [["hard_bounce", "a@x.test", None, "m"]]


def test_one_matcher_one_address_rule() -> None:
    event = CallbackEvent("hardbounce", "Straße@Example.com")
    assert event.matches("hardbounce", "STRASSE@example.COM")  # casefold, not lower
    assert event.matches(None, "strasse@example.com")
    assert not event.matches("softbounce", None)
    assert not event.matches(None, "other@example.com")


def test_the_journal_reference_page_is_generated_from_the_types() -> None:
    page = (ROOT / "docs" / "journal.md").read_text(encoding="utf-8")
    start = page.index("<!-- generated: records -->\n") + len("<!-- generated: records -->\n")
    end = page.index("<!-- end generated: records -->")
    assert page[start:end] == reference_markdown(), (
        "docs/journal.md is out of date; regenerate the section between the markers with "
        "harness.records.reference_markdown()"
    )


# -- one home per fact, imports point down ------------------------------------------------------


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


# Command-line entry modules are the top of the graph: they may reach up lazily to wire
# subcommands together (`harness serve SCENARIO`, `harness schema --scenario`).
_CLI = {"cli.py", "serve.py", "dsn_cli.py"}


@pytest.mark.parametrize("layer", ["clevertap", "smtp"])
def test_the_servers_never_import_the_scenario_layer(layer: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((PACKAGE / layer).glob("*.py"))
        if path.name not in _CLI
        for module in _imports(path)
        if module.startswith("harness.scenario")
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "module", ["checks.py", "vocab.py", "records.py", "journal.py", "errors.py"]
)
def test_the_bottom_modules_import_nothing_above_them(module: str) -> None:
    allowed = {
        "checks.py": {"harness.errors"},
        "vocab.py": set(),
        "records.py": {"harness.checks", "harness.vocab"},
        "journal.py": {"harness.errors", "harness.records", "harness.vocab"},
        "errors.py": set(),
    }[module]
    used = {m for m in _imports(PACKAGE / module) if m.startswith("harness")}
    assert used <= allowed, f"{module} imports {sorted(used - allowed)}"


def test_event_names_are_defined_once() -> None:
    # The vocabulary lives in harness.vocab; pydantic's Literal types repeat it under a check
    # that fails at import if they disagree. No other module may define a collection of them.
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "vocab.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple | ast.Set):
                names = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
                if {"softbounce", "hardbounce"} <= set(names) or {"soft_bounce", "spam"} <= set(
                    names
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []

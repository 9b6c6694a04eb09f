"""JSON Schema (draft 2020-12) of the scenario format, for editors and other tools.

Generated from :class:`harness.scenario.model.Scenario`, then completed where the models accept
more than pydantic can describe on its own: the behaviour grammar of the mail world (with the
catalog's mode names as enums, so editors complete them), rule keys written directly in a host
mapping, and the shorthands the models turn into full forms (``violations: none``, a command as
one string). yaml-language-server users put this first line in a scenario::

    # yaml-language-server: $schema=../scenario.schema.json

The schema cannot express the cross-field rules (an event name that must match
``clevertap.format``, clicks and expectations only for campaign recipients, recipient ranges
within ``count``); the loader checks those.
"""

from __future__ import annotations

import copy
from typing import Any

from harness.scenario.model import (
    BEHAVIOUR_MARKER,
    DURATION_SCHEMA,
    SERVER_DOWN_MODES,
    Scenario,
)
from harness.smtp import rules
from harness.smtp.catalog import CATALOG, FLAVOURS, BounceClass, Stage
from harness.smtp.dialects import AUTO_REPLY_STYLES, COMPLAINT_TYPES, SUCCESS_ACTIONS

__all__ = ["DIALECT", "scenario_json_schema"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

_REPLY_PATTERN = r"^\s*[245]\d\d([ -].*)?$"
_RULE_KEY_PATTERN = r"[@.*]"
_RANGE_PATTERN = r"^\s*\d+\s*(-\s*\d+\s*)?$"
_REF = {"$ref": "#/$defs/Behaviour"}


def scenario_json_schema() -> dict[str, Any]:
    """The draft 2020-12 JSON Schema of a scenario file (a fresh copy on every call)."""
    schema = Scenario.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    defs["Behaviour"] = _behaviour_schema()
    schema = _replace_markers(schema)
    defs = schema["$defs"]

    for name in ("MailHost", "MxHost"):
        host = defs[name]
        host["properties"].pop("@rules", None)
        host["patternProperties"] = {_RULE_KEY_PATTERN: copy.deepcopy(_REF)}
        host["description"] = (
            host.get("description", "")
            + " Rule keys: an address (a@x.test), a domain (x.test) or a pattern (*@x.test)."
        ).strip()
    defs["MxHost"]["properties"]["server_down"] = _server_down()
    defs["MailHost"]["properties"]["server_down"] = _server_down()

    generator = defs["RecipientGenerator"]["properties"]["behaviours"]
    generator["propertyNames"] = {"pattern": _RANGE_PATTERN}

    # `name` defaults to the file name, so a file need not say it.
    schema["required"] = [r for r in schema.get("required", []) if r != "name"]
    # Letters beyond ASCII too: an IDN domain (bücher.example) is a domain the loader accepts.
    letter = r"A-Za-z0-9\u00a0-\uffff"
    schema["properties"]["mx"]["propertyNames"] = {
        "pattern": rf"^([{letter}]([{letter}-]*[{letter}])?\.)+[{letter}-]{{2,63}}$"
    }

    # Shorthands the models expand.
    defs["Expect"]["properties"]["violations"] = {
        "description": "none (no violation tolerated, the default) or {allow: [codes]}.",
        "anyOf": [{"const": "none"}, {"$ref": "#/$defs/ViolationPolicy"}],
        "default": "none",
    }
    integration = defs["Integration"]["properties"]
    integration["command"] = {
        "description": integration["command"].get("description", ""),
        "anyOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string"}, "minItems": 1},
            {"type": "null"},
        ],
        "default": None,
    }
    integration["env"]["additionalProperties"] = {"type": ["string", "number"]}
    if "CallbackFault" in defs:
        defs["CallbackFault"]["minProperties"] = 1

    return {
        "$schema": DIALECT,
        "$id": "urn:clevertap-harness:scenario",
        "title": "clevertap-harness scenario",
        "description": "One YAML file that scripts the world around a CleverTap SMTP "
        "integration. Reference: docs/scenarios.md.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def _replace_markers(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get(BEHAVIOUR_MARKER):
            return copy.deepcopy(_REF)
        return {k: _replace_markers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_markers(v) for v in node]
    return node


def _server_down() -> dict[str, Any]:
    return {
        "description": "The whole host fails this way, whoever the recipient: "
        + ", ".join(SERVER_DOWN_MODES)
        + ".",
        "anyOf": [{"enum": list(SERVER_DOWN_MODES)}, {"type": "null"}],
        "default": None,
    }


def _behaviour_schema() -> dict[str, Any]:
    """The mail world's behaviour grammar (see :mod:`harness.smtp.rules`)."""
    per_recipient = [
        name
        for name, mode in CATALOG.items()
        if not mode.server_down and mode.stage is not Stage.LATER
    ]
    bounce_modes = [
        name
        for name, mode in CATALOG.items()
        if not mode.server_down and (mode.code is None or mode.code >= 300)
    ]
    reply = {"type": "string", "pattern": _REPLY_PATTERN, "description": "550 5.1.1 text"}
    mode_or_reply = {
        "anyOf": [{"enum": [*per_recipient, "auto_reply", "complaint"]}, reply],
        "description": "A catalog mode (`harness catalog` lists them), accept, auto_reply, "
        "complaint, or a raw reply.",
    }
    duration = copy.deepcopy(DURATION_SCHEMA)
    return {
        "description": "What the mail server does for a recipient: a catalog mode, accept or a "
        "raw reply; a list by attempt (the last repeats); or a mapping.",
        "anyOf": [
            mode_or_reply,
            {"type": "array", "items": _REF, "minItems": 1, "description": "One per attempt."},
            {
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "anyOf": [
                    {"required": [k]}
                    for k in (
                        "mode",
                        "reply",
                        "accept_then_bounce",
                        "accept_then_report",
                        "auto_reply",
                        "complaint",
                        "for",
                        "probability",
                    )
                ],
                "properties": {
                    "mode": {"enum": per_recipient, "description": "A catalog mode."},
                    "reply": reply,
                    "flavour": {"enum": list(FLAVOURS), "description": "Provider reply texts."},
                    "stage": {
                        "enum": [str(s) for s in rules.RECIPIENT_STAGES],
                        "description": "Where the failure shows.",
                    },
                    "class": {
                        "enum": [str(c) for c in BounceClass],
                        "description": "How the integration must report it (soft, hard, none).",
                    },
                    "for": {**duration, "description": "Fail like this for this long, then..."},
                    "then": {**_REF, "description": "...behave like this (with for)."},
                    "probability": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": 1,
                        "description": "Fail like this with this chance, else...",
                    },
                    "else": {**_REF, "description": "...behave like this (with probability)."},
                    "seed": {"type": "integer", "description": "Seed of the chance."},
                    "accept_then_bounce": {
                        "anyOf": [{"enum": bounce_modes}, reply],
                        "description": "Accept, then send a DSN reporting this failure.",
                    },
                    "accept_then_report": {
                        "enum": list(SUCCESS_ACTIONS),
                        "description": "Accept, then send a success DSN with this Action "
                        "(dialects that send them: generic, postfix, exim, sendmail, "
                        "amazon_ses; expanded: generic, postfix, sendmail).",
                    },
                    "auto_reply": {
                        "anyOf": [{"enum": list(AUTO_REPLY_STYLES)}, {"type": "null"}],
                        "description": "Accept, then mail an RFC 3834 out-of-office reply "
                        "to the sender (no callback is due).",
                    },
                    "complaint": {
                        "anyOf": [{"enum": list(COMPLAINT_TYPES)}, {"type": "null"}],
                        "description": "Accept, then send an RFC 5965 feedback-loop complaint "
                        "with this Feedback-Type (clevertap.complaint_as says what it becomes).",
                    },
                    "final_recipient": {
                        "type": "string",
                        "description": "The DSN's Final-Recipient when it differs from the "
                        "address sent to (aliasing; Original-Recipient keeps that one).",
                    },
                    "after": {**duration, "description": "Delay before the DSN or report."},
                    "dsn": {"enum": list(rules.DSN_DIALECTS), "description": "DSN dialect."},
                    "action": {"enum": list(rules.DSN_ACTIONS), "description": "DSN Action."},
                },
            },
        ],
    }

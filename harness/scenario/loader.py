"""Load scenario files with errors that point at the line, column and field at fault.

Every problem in a file is reported at once, each on one line::

    scenarios/x.yaml:12:7: mx["example.com"].sever_down: unknown key 'sever_down'; did you mean
    'server_down'? (...)

ruamel.yaml's round-trip loader keeps the position of every key and value; pydantic reports where
a value failed as a path through the data, which we walk back to the YAML node.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent

from harness.errors import ScenarioError, did_you_mean
from harness.scenario.model import Problem, Scenario

__all__ = ["MAX_DEPTH", "MAX_VALUES", "load_scenario", "load_scenarios", "parse_scenario"]

SUFFIXES = (".yaml", ".yml")

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists a scenario file may have (real ones stay under 10)."""
MAX_VALUES = 1_000_000
"""Most values (scalars, mappings, lists) a scenario may hold once every alias is expanded."""

PathKey = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class _Pos:
    line: int
    column: int
    """Both 1-based, as editors show them."""


class _Document:
    """Plain Python data from a YAML document plus the position of every key and value."""

    def __init__(self, root: Any) -> None:
        self.values: dict[PathKey, _Pos] = {}
        self.keys: dict[PathKey, _Pos] = {}
        self.data = self._plain(root, (), _Pos(1, 1))

    def _plain(self, node: Any, path: PathKey, pos: _Pos) -> Any:
        self.values.setdefault(path, pos)
        if isinstance(node, CommentedMap):
            out: dict[Any, Any] = {}
            for key, value in node.items():
                # Keys are text in a scenario; `7: greylist` gives an int key, and JSON (the
                # schema's world) has only text keys, so make them agree.
                key_plain = str(self._scalar(key))
                try:
                    kline, kcol = node.lc.key(key)
                    vline, vcol = node.lc.value(key)
                    kpos, vpos = _Pos(kline + 1, kcol + 1), _Pos(vline + 1, vcol + 1)
                except (KeyError, TypeError):
                    # keys merged in with `<<: *anchor` have no position of their own here
                    kpos = vpos = pos
                self.keys[(*path, key_plain)] = kpos
                out[key_plain] = self._plain(value, (*path, key_plain), vpos)
            return out
        if isinstance(node, CommentedSeq):
            items = []
            for i, value in enumerate(node):
                try:
                    line, col = node.lc.item(i)
                    ipos = _Pos(line + 1, col + 1)
                except (KeyError, TypeError, IndexError):
                    ipos = pos
                items.append(self._plain(value, (*path, i), ipos))
            return items
        return self._scalar(node)

    @staticmethod
    def _scalar(node: Any) -> Any:
        # ruamel's round-trip scalars (ScalarFloat, ScalarBoolean, ...) subclass the builtins;
        # turn them into the builtins so that validation and error messages see plain values.
        if isinstance(node, bool):
            return bool(node)
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        if isinstance(node, str):
            return str(node)
        if isinstance(node, _dt.date):
            # YAML reads 2024-01-01 as a date; nothing in a scenario is a date, so keep the text.
            return node.isoformat()
        return node

    def locate(self, loc: Sequence[Any]) -> tuple[PathKey, bool]:
        """Turn a pydantic location into a path through the data.

        pydantic puts union members, validator names and our internal aliases into locations
        (``list[str]``, ``function-after[...]``, ``@rules``); those match nothing in the data and
        are skipped. Returns the path and whether its last element exists in the data.
        """
        node: Any = self.data
        path: list[str | int] = []
        exists = True
        for i, element in enumerate(loc):
            if isinstance(node, dict):
                key = _match_key(node, element)
                if key is not _MISSING:
                    path.append(key)
                    node = node[key]
                    continue
                if i == len(loc) - 1 and isinstance(element, str) and not _is_tag(element):
                    path.append(element)  # a missing key: say which
                    exists = False
                continue
            if isinstance(node, list) and isinstance(element, int) and 0 <= element < len(node):
                path.append(element)
                node = node[element]
        return tuple(path), exists

    def position(self, path: PathKey, *, key: bool = False, exists: bool = True) -> _Pos:
        if not exists:
            path = path[:-1]
        elif key and path in self.keys:
            return self.keys[path]
        while path not in self.values:
            path = path[:-1]
        return self.values[path]


_MISSING = object()


def _match_key(mapping: dict[Any, Any], element: Any) -> Any:
    if element in mapping:
        return element
    for key in mapping:
        if str(key) == str(element):
            return key
    return _MISSING


def _is_tag(element: str) -> bool:
    return element.startswith("@") or "[" in element


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def format_path(path: PathKey) -> str:
    """``expect.callbacks[0].e``; keys that are not identifiers go in brackets: ``mx["a.b"]``."""
    out = ""
    for element in path:
        if isinstance(element, int):
            out += f"[{element}]"
        elif _IDENT.match(element):
            out += f".{element}" if out else element
        else:
            out += '["' + element.replace('"', '\\"') + '"]'
    return out or "(top)"


# ---------------------------------------------------------------------------------------------
# pydantic errors -> problems

_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _seen(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float):
        return f"{value!r}"
    return type(value).__name__


def _problems(error: Mapping[str, Any], doc: _Document) -> Iterator[tuple[PathKey, _Pos, str]]:
    """The located problems in one pydantic error (one, or several for our own errors)."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    path, exists = doc.locate(error["loc"])
    if kind == "scenario_problem":
        problems: list[Problem] = ctx["problems"]
        for problem in problems:
            sub, sub_exists = doc.locate((*path, *problem.path))
            yield sub, doc.position(sub, key=problem.key, exists=sub_exists), problem.text()
        return
    if kind == "extra_forbidden":
        name = str(path[-1])
        allowed = _allowed_keys(path[:-1], doc.data)
        hint = did_you_mean(name, allowed)
        text = f"unknown key {name!r}" + (f"; did you mean {hint}?" if hint else "")
        if not hint and allowed:
            text += f" (expected one of {', '.join(allowed)})"
        yield path, doc.position(path, key=True), text
        return
    if kind == "missing":
        yield (
            path,
            doc.position(path, exists=exists),
            f"missing required key {str(path[-1])!r}" if path else "missing",
        )
        return
    pos = doc.position(path, exists=exists)
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        hint = did_you_mean(str(value), choices) if isinstance(value, str) else None
        text = f"unknown value {_seen(value)}" + (f"; did you mean {hint}?" if hint else "")
        text += f" (expected one of {', '.join(choices)})" if not hint else ""
        yield path, pos, text
        return
    if kind in _TYPE_NAMES:
        yield path, pos, f"wrong type (expected {_TYPE_NAMES[kind]}, seen {_seen(value)})"
        return
    if kind in _BOUNDS:
        limit = next(iter(ctx.values()))
        yield path, pos, f"out of range (expected {_BOUNDS[kind]} {limit}, seen {_seen(value)})"
        return
    if kind == "string_too_short":
        yield path, pos, "empty (expected some text)"
        return
    if kind == "string_pattern_mismatch":
        yield path, pos, f"bad value (expected text matching {ctx['pattern']}, seen {_seen(value)})"
        return
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        yield path, pos, str(error["msg"])
        return
    yield path, pos, f"{error['msg']} (seen {_seen(value)})"


@cache
def _schema() -> dict[str, Any]:
    from harness.scenario.schema import scenario_json_schema

    return scenario_json_schema()


def _allowed_keys(path: PathKey, data: Any) -> list[str]:
    """The keys the schema allows in the mapping at *path* (for "did you mean")."""
    schema = _schema()
    defs = schema.get("$defs", {})

    def expand(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if "$ref" in node:
            yield from expand(defs[node["$ref"].rsplit("/", 1)[1]])
            return
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(key, []):
                yield from expand(sub)
        yield node

    nodes = list(expand(schema))
    for element in path:
        next_nodes: list[dict[str, Any]] = []
        for node in nodes:
            if isinstance(element, int):
                if isinstance(node.get("items"), dict):
                    next_nodes.extend(expand(node["items"]))
                continue
            props = node.get("properties", {})
            if element in props:
                next_nodes.extend(expand(props[element]))
                continue
            for pattern, sub in node.get("patternProperties", {}).items():
                if re.search(pattern, element):
                    next_nodes.extend(expand(sub))
            if isinstance(node.get("additionalProperties"), dict):
                next_nodes.extend(expand(node["additionalProperties"]))
        nodes = next_nodes
    keys: list[str] = []
    for node in nodes:
        keys.extend(k for k in node.get("properties", {}) if k not in keys)
    return keys


# ---------------------------------------------------------------------------------------------
# Hostile YAML: budgets enforced while composing


class _BudgetComposer(Composer):
    """ruamel's composer with a depth limit and an alias expansion budget.

    The composer shares one node among an anchor and its aliases, so a 472-byte "billion
    laughs" file composes in microseconds; the blow-up comes later, from whoever walks the tree
    (our :class:`_Document`, pydantic). So we count here what that walk would visit: each value
    composed counts 1 and each alias counts the full size of what it names. Deep nesting is
    refused before the composer's recursion (three frames per level) can hit Python's limit.
    ruamel 0.19.1 has ``YAML().max_depth`` but no alias budget; one mechanism that works on
    every supported ruamel keeps both checks in one place.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader=loader)
        self._depth = 0
        self._values = 0
        self._sizes: dict[int, int] = {}
        """Expanded size of each composed node, by id (nodes live as long as the composer)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.parser.check_event(AliasEvent):
            event = self.parser.peek_event()
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:
                # ruamel registers a collection's anchor before its items, so `&a [*a]` names
                # a node still being composed: a cycle, infinite once expanded.
                raise ComposerError(
                    None,
                    None,
                    f"alias *{event.anchor} refers to a mapping or list that contains it "
                    "(a cycle); a scenario must be a tree",
                    event.start_mark,
                )
            self._count(size, event.start_mark, alias=event.anchor)
            return node
        event = self.parser.peek_event()
        if self._depth >= MAX_DEPTH:
            raise ComposerError(
                None,
                None,
                f"nested more than {MAX_DEPTH} levels deep; a scenario needs far fewer (is this "
                "file generated or hostile?)",
                event.start_mark,
            )
        self._count(1, event.start_mark, alias=None)
        before = self._values
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = self._values - before + 1
        return node

    def _count(self, size: int, mark: Any, *, alias: str | None) -> None:
        self._values += size
        if self._values <= MAX_VALUES:
            return
        if alias is None:
            problem = (
                f"more than {MAX_VALUES:,} values in one scenario; list recipients with a "
                "generator (campaign.to: {count: N, pattern: ...}) instead of one by one"
            )
        else:
            problem = (
                f"alias *{alias} expands to {size:,} values, which takes the document past "
                f"{MAX_VALUES:,} (an alias bomb?); write the values out or use fewer aliases"
            )
        raise ComposerError(None, None, problem, mark)


# ---------------------------------------------------------------------------------------------
# Public API


def parse_scenario(text: str, *, source: str | os.PathLike[str] = "<scenario>") -> Scenario:
    """A scenario from YAML *text*; *source* names it in error messages (and sets the base
    directory of relative paths when it is a real file). Raises :class:`ScenarioError`."""
    where = os.fspath(source)
    yaml = YAML(typ="rt")
    yaml.Composer = _BudgetComposer
    # Duplicate keys are an error (ruamel's default, stated here on purpose: a scenario that
    # says `full@example.com:` twice is a mistake, never "last one wins").
    yaml.allow_duplicate_keys = False
    try:
        root = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = " ".join(str(exc.problem or exc.context or "bad YAML").split())
        if exc.problem and exc.context and exc.context_mark is not None:
            start = exc.context_mark
            problem += f" ({exc.context} at {start.line + 1}:{start.column + 1})"
        raise ScenarioError([f"{where}:{line}:{col}: YAML: {problem}"]) from None
    except YAMLError as exc:
        raise ScenarioError([f"{where}:1:1: YAML: {' '.join(str(exc).split())}"]) from None
    except RecursionError:
        # The composer refuses deep nesting first; this is the net under whatever recurses
        # past it (a deep Python stack in the caller), so that no traceback escapes.
        raise ScenarioError(
            [f"{where}:1:1: YAML: nested too deeply to load (limit {MAX_DEPTH} levels)"]
        ) from None
    if not isinstance(root, CommentedMap):
        seen = "an empty file" if root is None else f"{_seen(_Document._scalar(root))}"
        if isinstance(root, CommentedSeq):
            seen = "a list"
        raise ScenarioError(
            [f"{where}:1:1: (top): not a scenario (expected a mapping of keys, seen {seen})"]
        )
    doc = _Document(root)
    data = doc.data
    path = Path(where)
    if "name" not in data:
        data["name"] = path.stem if path.suffix in SUFFIXES else "scenario"
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        lines = sorted(
            {
                (pos.line, pos.column, f"{format_path(p)}: {text}")
                for error in exc.errors(include_url=False)
                for p, pos, text in _problems(error, doc)
            }
        )
        raise ScenarioError(f"{where}:{ln}:{col}: {msg}" for ln, col, msg in lines) from None
    if path.is_file():
        scenario._source = path.resolve()
    return scenario


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Load one scenario file. Raises :class:`ScenarioError` listing every problem in it."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError([f"{file}: no such scenario file"]) from None
    except IsADirectoryError:
        raise ScenarioError([f"{file}: is a directory (use load_scenarios)"]) from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            [f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})"]
        ) from None
    except OSError as exc:
        raise ScenarioError([f"{file}: cannot read ({exc.strerror})"]) from None
    return parse_scenario(text, source=file)


def load_scenarios(paths: Iterable[str | os.PathLike[str]]) -> list[Scenario]:
    """Load scenario files and directories (their ``*.yaml``/``*.yml`` files, sorted).

    Every problem in every file is reported in one :class:`ScenarioError`; two scenarios with
    the same name are a problem too (reports and ``-k`` selection go by name).
    """
    problems: list[str] = []
    scenarios: list[Scenario] = []
    files: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
            if not found:
                problems.append(f"{path}: no scenario files (*.yaml, *.yml) in this directory")
            files.extend(found)
        else:
            files.append(path)
    if not files and not problems:
        problems.append("no scenario files given")
    names: dict[str, Path] = {}
    for file in files:
        try:
            scenario = load_scenario(file)
        except ScenarioError as exc:
            problems.extend(exc.problems)
            continue
        if scenario.name in names:
            problems.append(
                f"{file}:1:1: name: scenario name {scenario.name!r} is also used by "
                f"{names[scenario.name]}"
            )
            continue
        names[scenario.name] = file
        scenarios.append(scenario)
    if problems:
        raise ScenarioError(problems)
    return scenarios

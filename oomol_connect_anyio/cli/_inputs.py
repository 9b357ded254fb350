"""Reading what the user supplies: ``-i`` values, JSON files, job files.

The argparse types here run while the arguments are parsed, before anything
is sent; their errors become one usage line.
"""

from __future__ import annotations

import json
import math
import os
import sys
from argparse import ArgumentTypeError
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, cast

from .. import CreateTaskRequest, TaskInputValues, normalize_input_values
from ._errors import UsageError


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for JSON")
    return value


def _json(text: str) -> Any:
    """Strict JSON (no NaN or Infinity, which no server accepts)."""
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite)


class Assignment(NamedTuple):
    """One ``-i``: ``NAME=VALUE`` (``VALUE`` a string, typed later by the input's schema) or
    ``NAME:=JSON`` (``value`` already decoded)."""

    name: str
    value: Any
    is_json: bool


def assignment(text: str) -> Assignment:
    """``-i HANDLE=VALUE``, ``-i HANDLE:=JSON`` or ``-i NODE.HANDLE=VALUE`` (httpie's ``:=``)."""
    name, equals, raw = text.partition("=")
    is_json = name.endswith(":")
    name = name.removesuffix(":").strip()
    if not equals or not name:
        raise ArgumentTypeError(f"expected HANDLE=VALUE or HANDLE:=JSON, got {text!r}")
    if not is_json:
        return Assignment(name, raw, False)
    try:
        return Assignment(name, _json(raw), True)
    except ValueError as exc:
        raise ArgumentTypeError(f"-i {name}:= needs a JSON value ({exc}), got {raw!r}") from None


def _non_empty(what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not text.strip():
            raise ArgumentTypeError(f"{what} must not be empty")
        return text

    return check


task_id = _non_empty("the task id")
package_name = _non_empty("the package name")


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise ArgumentTypeError(f"cannot read {path}: {reason}") from None


def json_file(path: str) -> Any:
    """``--inputs-json FILE`` (``-`` for stdin): the decoded document."""
    try:
        return _json(_read_text(path))
    except ValueError as exc:
        raise ArgumentTypeError(f"{path} is not valid JSON: {exc}") from None


def readable_file(path: str) -> str:
    """``--file PATH``: an existing, readable regular file."""
    if os.path.isdir(path):
        raise ArgumentTypeError(f"{path} is a directory, not a file")
    if not os.path.isfile(path):
        raise ArgumentTypeError(f"no such file: {path}")
    if not os.access(path, os.R_OK):
        raise ArgumentTypeError(f"file is not readable: {path}")
    return path


class Jobs(NamedTuple):
    """The requests of a JSONL job file, and where they came from."""

    path: str
    requests: list[CreateTaskRequest]
    lines: list[int]
    """The line number (from 1) of each request."""


def jobs_file(path: str) -> Jobs:
    """``JOBS.jsonl`` (``-`` for stdin): one create request per non-blank line."""
    jobs: list[CreateTaskRequest] = []
    numbers: list[int] = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            job = _json(line)
        except ValueError as exc:
            raise ArgumentTypeError(f"{path} line {number}: invalid JSON: {exc}") from None
        if not isinstance(job, dict):
            raise ArgumentTypeError(
                f"{path} line {number}: expected an object like "
                '{"manifest": "pkg::block", "inputValues": {...}}'
            )
        problem = _job_problem(job)
        if problem:
            raise ArgumentTypeError(f"{path} line {number}: {problem}")
        jobs.append(cast(CreateTaskRequest, job))
        numbers.append(number)
    if not jobs:
        raise ArgumentTypeError(f"{path} has no jobs")
    return Jobs(path, jobs, numbers)


def _job_problem(job: dict[str, Any]) -> str | None:
    """What makes one job unusable (checked here to name its line), or ``None``."""
    target = job.get("manifest")
    if not isinstance(target, str) or not target.strip():
        return "'manifest' must be a non-empty string like \"pkg::block\""
    try:
        normalize_input_values(job.get("inputValues"))
    except (TypeError, ValueError) as exc:
        return f"inputValues: {exc}"
    return None


Schemas = Mapping[tuple[str, str], Any]
"""Declared ``json_schema`` per (node id, handle); node ``_`` is the block itself."""
ROOT = "_"


def is_flow(target: str) -> bool:
    """Flows are named without ``::`` (blocks are ``package::block``)."""
    return "::" not in target


def merge_inputs(
    target: str, assignments: Sequence[Assignment], document: Any, schemas: Schemas
) -> TaskInputValues:
    """``--inputs-json`` (any of the three forms) overlaid with the ``-i`` values, validated.

    For a flow, ``-i NODE.HANDLE=...`` is that node's input; values are typed by ``schemas``.
    """
    values: Any = {} if document is None else document
    per_node: dict[str, dict[str, Any]] = {}
    for item in assignments:
        node, handle = ROOT, item.name
        if is_flow(target) and "." in item.name:
            node, _, handle = item.name.partition(".")
        value = item.value if item.is_json else typed(item, schemas.get((node, handle)))
        per_node.setdefault(node, {})[handle] = value
    if set(per_node) - {ROOT}:
        values = _by_node(values, per_node)
    elif per_node:
        if not isinstance(values, dict):
            raise UsageError("-i can only be combined with an --inputs-json object")
        values = {**values, **per_node[ROOT]}
    try:
        normalize_input_values(values)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"input values: {exc}") from None
    return cast(TaskInputValues, values)


def _by_node(document: Any, per_node: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The node form of ``document`` (``{}`` or node form) with ``per_node`` laid over it."""
    if document in ({}, []):
        document = []
    if not isinstance(document, list) or not all(
        isinstance(item, dict) and "nodeId" in item for item in document
    ):
        raise UsageError("-i NODE.HANDLE can only be combined with node-form --inputs-json")
    merged: dict[str, dict[str, Any]] = {
        str(item["nodeId"]): {i.get("handle"): i.get("value") for i in item.get("inputs", [])}
        for item in document
    }
    for node, handles in per_node.items():
        merged.setdefault(node, {}).update(handles)
    return [
        {"nodeId": node, "inputs": [{"handle": h, "value": v} for h, v in handles.items()]}
        for node, handles in merged.items()
    ]


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def typed(item: Assignment, schema: Any) -> Any:
    """``-i NAME=VALUE``: the string itself, unless the schema declares only non-string types;
    then VALUE must be JSON of one of them."""
    declared = schema.get("type") if isinstance(schema, Mapping) else None
    types = [declared] if isinstance(declared, str) else list(declared or [])
    known = [t for t in types if t in _JSON_TYPES]
    if not known or "string" in types:
        return item.value
    expected = " or ".join(known)
    try:
        value = _json(item.value)
    except ValueError:
        value = _NOT_JSON
    if value is _NOT_JSON or not any(_JSON_TYPES[t](value) for t in known):
        raise UsageError(
            f"-i {item.name}={item.value}: the input is declared {expected} "
            f"(use -i {item.name}:=JSON for another value)"
        )
    return value


_NOT_JSON = object()


def manifest(text: str) -> str:
    """A manifest: ``package::block`` or a flow name/path."""
    if not text.strip():
        raise ArgumentTypeError("the manifest must not be empty, e.g. 'demo::echo'")
    return text

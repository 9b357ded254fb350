"""Reading what the user supplies: ``-i`` values, JSON files, job files.

The argparse types here run while the arguments are parsed, before anything
is sent; their errors become one usage line.
"""

from __future__ import annotations

import json
import os
import sys
from argparse import ArgumentTypeError
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from .. import CreateTaskRequest, TaskInputValues, normalize_input_values
from ._errors import UsageError


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json(text: str) -> Any:
    """Strict JSON (no NaN or Infinity, which no server accepts)."""
    return json.loads(text, parse_constant=_reject_constant)


def assignment(text: str) -> tuple[str, Any]:
    """``-i HANDLE=VALUE``: VALUE is parsed as JSON when it is valid JSON, else kept as text."""
    handle, equals, raw = text.partition("=")
    if not equals or not handle.strip():
        raise ArgumentTypeError(f"expected HANDLE=VALUE, got {text!r}")
    try:
        return handle.strip(), _json(raw)
    except ValueError:
        return handle.strip(), raw


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
    if not os.path.isfile(path):
        raise ArgumentTypeError(f"no such file: {path}")
    if not os.access(path, os.R_OK):
        raise ArgumentTypeError(f"file is not readable: {path}")
    return path


class Jobs(NamedTuple):
    """The requests of a JSONL job file, and where they came from."""

    path: str
    requests: list[CreateTaskRequest]


def jobs_file(path: str) -> Jobs:
    """``JOBS.jsonl`` (``-`` for stdin): one create request per non-blank line."""
    jobs: list[CreateTaskRequest] = []
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
        jobs.append(cast(CreateTaskRequest, job))  # run_many checks it before any request
    if not jobs:
        raise ArgumentTypeError(f"{path} has no jobs")
    return Jobs(path, jobs)


def merge_inputs(pairs: Sequence[tuple[str, Any]], document: Any) -> TaskInputValues:
    """``--inputs-json`` (any of the three forms) overlaid with ``-i`` pairs, validated."""
    values: Any = {} if document is None else document
    if pairs:
        if not isinstance(values, dict):
            raise UsageError("-i can only be combined with an --inputs-json object")
        values = {**values, **dict(pairs)}
    try:
        normalize_input_values(values)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"input values: {exc}") from None
    return cast(TaskInputValues, values)


def manifest(text: str) -> str:
    """A manifest: ``package::block`` or a flow name/path."""
    if not text.strip():
        raise ArgumentTypeError("the manifest must not be empty, e.g. 'demo::echo'")
    return text

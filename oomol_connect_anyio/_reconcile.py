"""Finding the task a create made when its answer was lost: pure functions over a
``GET /v1/tasks`` listing, for the lifecycle's creates and for batches that resume."""

from __future__ import annotations

import json
import re
from collections.abc import Container

import httpx

from ._errors import ApiError, ConnectionError
from ._inputs import normalize_input_values
from ._replies import TakenThenLost
from ._types import NodeInputs, Task

CLOCK_SKEW_MS = 30_000
"""How far the server's clock may run behind ours: a task created up to this long before
our create was sent (by our clock) may still be the one that create made."""
# How a create's connection may end once sent (a timeout, or the peer closing it).
_LOST = (
    httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.TimeoutException,
    TakenThenLost,
)


def reconcile_create(
    tasks: list[Task],
    manifest: str,
    input_values: list[NodeInputs],
    sent_at_ms: float,
    claimed: Container[str] = (),
    alike: int = 1,
) -> tuple[Task | None, list[str]]:
    """The task a create whose answer was lost made, from a ``GET /v1/tasks`` listing.

    A candidate has the same target and the same normalised ``inputValues``, was created no
    earlier than ``sent_at_ms`` minus ``CLOCK_SKEW_MS`` and is not in ``claimed`` (ids this
    client already owns). Returns ``(task, [])`` when exactly one matches, ``(None, [])``
    when none can (safe to create again), and ``(None, ids)`` when several match, or a task
    lacks what is needed to tell: creating again could duplicate, adopting could take
    another client's task, so neither is done.

    ``alike``: how many identical requests of this client (a resumed batch's) still look for
    their tasks. Any of their tasks will do for any of them, so up to that many matches are
    not a doubt: the oldest is returned (the caller claims it before the next lookup).
    """
    wanted = _canonical(input_values)
    earliest = sent_at_ms - CLOCK_SKEW_MS
    sure: list[Task] = []
    maybe: list[str] = []
    for task in tasks:
        task_id = task.get("id")
        if not isinstance(task_id, str) or task_id in claimed:
            continue
        if not _same_target(task.get("manifest_path"), manifest):
            continue
        created_at = task.get("created_at")
        if isinstance(created_at, (int, float)) and created_at < earliest:
            continue
        values = task.get("inputValues")
        if values is None or not isinstance(created_at, (int, float)):
            maybe.append(task_id)
            continue
        try:
            if _canonical(normalize_input_values(values)) != wanted:
                continue
        except (TypeError, ValueError):
            continue
        sure.append(task)
    if sure and len(sure) <= alike and not maybe:
        return min(sure, key=lambda task: (task["created_at"], task["id"])), []
    return None, [*(task["id"] for task in sure), *maybe]


def _canonical(values: list[NodeInputs]) -> str:
    nodes = sorted(
        (node["nodeId"], sorted((i["handle"], json.dumps(i.get("value"), sort_keys=True))
                                for i in node["inputs"]))
        for node in values
    )
    return json.dumps(nodes)


def _same_target(manifest_path: object, manifest: str) -> bool:
    """Whether a task's ``manifest_path`` is what ``manifest`` names.

    Servers report the installed path (``.../packages/<pkg>-<x.y.z>/blocks/<name>/...`` or
    ``.../packages/<pkg>/<x.y.z>/...``), not the ``pkg::name`` that was sent.
    """
    if not isinstance(manifest_path, str):
        return False
    if manifest_path == manifest:
        return True
    segments = [s for s in manifest_path.split("/") if s]
    package, sep, name = manifest.partition("::")
    if not sep:
        return manifest in segments
    version = re.compile(re.escape(package) + r"-\d")
    for index, segment in enumerate(segments):
        if segment == package or version.match(segment):
            return name in segments[index + 1 :]
    return False


def may_have_been_taken(error: Exception) -> bool:
    """Whether a failed create may have made a task: its connection was lost or timed out
    once the request was sent, or a proxy answered 502, 504, or 503 without Retry-After."""
    if isinstance(error, ConnectionError):
        return error.may_have_reached_server and isinstance(error.__cause__, _LOST)
    if isinstance(error, ApiError):
        if error.status in (502, 504):
            return True
        return error.status == 503 and getattr(error, "retry_after", None) is None
    return False


def may_send_again(error: Exception) -> bool:
    """Whether a create no task matches may be sent again: not after a timeout, as the
    server may still be working on the first one, nor after the server said it took it."""
    return not isinstance(error, ConnectionError) or not isinstance(
        error.__cause__, (httpx.TimeoutException, TakenThenLost)
    )


def never_created(error: BaseException) -> bool:
    """Whether a failed create certainly made no task, and failed because of the server, not
    the request: refused or cut before it was sent, a 429, or a 502/503/504 that says it was
    not taken. A batch over several servers sends such a create to another server."""
    if not isinstance(error, (ApiError, ConnectionError)) or error.task_id is not None:
        return False
    if isinstance(error, ApiError) and error.status not in (429, 502, 503, 504):
        return False
    return not may_have_been_taken(error)

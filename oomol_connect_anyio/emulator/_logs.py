"""Rendering of task logs; each entry is rendered to JSON once and cached on its task."""

from __future__ import annotations

from typing import Any

from ._clock import Clock
from ._http import dumps
from ._inputs import root_inputs
from ._tasks import Task

PROJECT_NAME = "oomol-connect-emulator"
ROOT_NODE = "_"


def visible_logs(task: Task, clock: Clock, now: float) -> list[bytes]:
    """The JSON encodings of the log entries visible at `now`, ascending ids from 1."""
    count = task.visible_count(now)
    if task.rendered is None:
        task.rendered = []
    rendered = task.rendered
    for index in range(len(rendered), count):
        rendered.append(dumps(_render(task, clock, index)))
    return rendered if count == len(rendered) else rendered[:count]


def _render(task: Task, clock: Clock, index: int) -> dict[str, Any]:
    offset, type_, node, payload = task.entries[index]
    at = clock.ms(task.start + offset)
    event: dict[str, Any] = {"session_id": task.id}
    if type_.startswith("Session"):
        event["path"] = task.target.path
        if type_ == "SessionStarted":
            event.update(create_at=at, partial=False, cache=False)
        else:
            event["finish_at"] = at
    else:
        event["job_id"] = task.id if node is None else f"{task.id}/{node}"
        event["stacks"] = (
            []
            if node is None
            else [{"flow_job_id": task.id, "flow": task.target.path, "node_id": node}]
        )
        if type_ == "BlockFinished":
            event["finish_at"] = at
        elif type_ == "BlockStarted" and payload is None:
            event["inputs"] = root_inputs(task.input_values)
    if payload:
        event.update(payload)
    return {
        "id": index + 1,
        "project_name": PROJECT_NAME,
        "session_id": task.id,
        "node_id": node or ROOT_NODE,
        "manifest_path": task.target.path,
        "type": type_,
        "event": event,
        "created_at": at,
    }

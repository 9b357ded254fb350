"""``tasks``: list, inspect, follow and stop tasks."""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Mapping
from typing import Any

from .. import OomolConnectClient, Task, TaskError, TaskLog, extract_result
from ._errors import Exit
from ._options import open_client, polling_options
from ._progress import TaskBoard
from ._render import Output, compact, log_error, timestamp

_TIME_KEYS = frozenset({"created_at", "updated_at", "createdAt", "updatedAt"})
# .../packages/<name>-<x.y.z>/blocks/<block> or .../packages/<name>/<x.y.z>/blocks/<block>
_BLOCK_PATH = re.compile(r"/packages/(?P<pkg>[^/]+?)(?:-\d[^/]*|/\d[^/]*)/blocks/(?P<block>[^/]+)")
_FLOW_PATH = re.compile(r"/flows/(?P<flow>[^/]+)/flow\.oo\.ya?ml$")
_EXIT_BY_STATUS = {"completed": Exit.OK, "failed": Exit.FAILED, "stopped": Exit.STOPPED}


def field_rows(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        (key, timestamp(value) if key in _TIME_KEYS else compact(value, 120))
        for key, value in obj.items()
    ]


def block_name(task: Task) -> str:
    """``pkg::block`` (or a flow's name) from the task's ``manifest_path``, else the path."""
    path = str(task.get("manifest_path", ""))
    found = _BLOCK_PATH.search(path)
    if found:
        return f"{found['pkg']}::{found['block']}"
    flow = _FLOW_PATH.search(path)
    return flow["flow"] if flow else path


def _short_time(ms: object) -> str:
    """``MM-DD HH:MM``: the list fits 80 columns (``--json`` has the exact time)."""
    if isinstance(ms, bool) or not isinstance(ms, (int, float)):
        return "-"
    return time.strftime("%m-%d %H:%M", time.localtime(ms / 1000))


async def tasks_list(args: argparse.Namespace, out: Output) -> int:
    async with open_client(args) as client:
        tasks = (await client.tasks.list())["tasks"]
    if args.status:
        tasks = [t for t in tasks if t.get("status") == args.status]
    if args.manifest:
        tasks = [t for t in tasks if args.manifest in (block_name(t), t.get("manifest_path"))]
    if args.limit:
        tasks = tasks[: args.limit]
    rows = [
        (t.get("id", "?"), t.get("status", "?"), _short_time(t.get("created_at")), block_name(t))
        for t in tasks
    ]
    documents = [{**task, "block": block_name(task)} for task in tasks]
    out.show({"tasks": documents}, "Tasks", ["id", "status", "created", "block"], rows)
    return Exit.OK


async def tasks_get(args: argparse.Namespace, out: Output) -> int:
    async with open_client(args) as client:
        task = await client.tasks.get(args.task_id)
    out.show({"task": task}, f"Task {args.task_id}", ["field", "value"], field_rows(task))
    return Exit.OK


def _log_detail(log: TaskLog) -> str:
    event: dict[str, Any] = log.get("event") or {}
    kind = log.get("type")
    if kind == "BlockLog":
        return str(event.get("log", "")).rstrip("\n")
    if kind == "BlockProgress":
        return f"{event.get('progress')}%"
    error = log_error(log)
    if error:
        return f"error: {error}"
    return compact(event["result"]) if event.get("result") is not None else ""


async def tasks_logs(args: argparse.Namespace, out: Output) -> int:
    async with open_client(args) as client:
        logs = await client.tasks.get_logs(args.task_id)
    rows = [
        (str(log.get("id", "")), timestamp(log.get("created_at")), log.get("type", "?"),
         log.get("node_id", ""), _log_detail(log))
        for log in logs
    ]
    out.show(
        {"task_id": args.task_id, "logs": logs}, f"Logs of task {args.task_id}",
        ["id", "time", "type", "node", "detail"], rows,
    )
    return Exit.OK


async def _result(
    client: OomolConnectClient, task: Task, out: Output, *, compact: bool = False
) -> int:
    """Print a task's status and result; the exit code says how it ended (or that it runs)."""
    status = str(task.get("status", "?"))
    logs = await client.tasks.get_logs(task["id"])
    result = extract_result(logs)
    reason = next((r for r in (log_error(log) for log in reversed(logs)) if r), None)
    code = _EXIT_BY_STATUS.get(status, Exit.UNEXPECTED)
    if out.json_mode:
        out.json({
            "ok": code == Exit.OK, "task_id": task["id"], "status": status,
            "result": result, "error": reason,
        }, compact=compact)
    elif code == Exit.OK:
        out.json(result)
    else:
        detail = f": {reason}" if reason else ""
        out.error(f"task {task['id']} is {status}{detail}")
    return code


async def tasks_result(args: argparse.Namespace, out: Output) -> int:
    """A past task's result; exit 3 failed, 4 stopped, 1 not ended yet."""
    async with open_client(args) as client:
        task = await client.tasks.get(args.task_id)
        return await _result(client, task, out)


async def tasks_watch(args: argparse.Namespace, out: Output) -> int:
    """Follow a task (progress and logs on stderr) until it ends; then as ``tasks result``."""
    board = TaskBoard(out)
    row = board.add(args.task_id)

    def on_progress(task: Task) -> None:
        row.on_progress(task)
        if out.json_mode:  # a stream: one object per line, the outcome last
            out.json({"ok": True, "event": "progress", "task_id": args.task_id,
                      "status": task.get("status")}, compact=True)

    def on_log(log: TaskLog) -> None:
        row.on_log(log)
        if out.json_mode:
            out.json({"ok": True, "event": "log", "task_id": args.task_id, "log": log},
                     compact=True)

    options = polling_options(args, on_progress=on_progress, on_log=on_log, created_here=False)
    async with open_client(args) as client:
        with board:
            try:
                task = await client.tasks.wait_for_completion(args.task_id, options)
            except TaskError as exc:  # failed or stopped: reported below, by exit code
                task = exc.task or await client.tasks.get(args.task_id)
            finally:
                row.finish()
        return await _result(client, task, out, compact=True)


async def tasks_stop(args: argparse.Namespace, out: Output) -> int:
    async with open_client(args) as client:
        before = await client.tasks.get(args.task_id)
        task = before if before.get("status") in _EXIT_BY_STATUS else (
            await client.tasks.stop(args.task_id)
        )
    title = (
        f"Stopped task {args.task_id}" if task is not before
        else f"Task {args.task_id} had already ended ({before.get('status')})"
    )
    out.show({"task": task, "was_running": task is not before}, title, ["field", "value"],
             field_rows(task))
    return Exit.OK

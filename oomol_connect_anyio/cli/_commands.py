"""The listing and management commands: tasks, blocks, flows, packages."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from .. import TaskLog
from ._errors import Exit
from ._options import open_client, polling_options
from ._progress import TaskBoard
from ._render import Output, compact, log_error, timestamp

_TIME_KEYS = frozenset({"created_at", "updated_at", "createdAt", "updatedAt"})


def _field_rows(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        (key, timestamp(value) if key in _TIME_KEYS else compact(value, 120))
        for key, value in obj.items()
    ]


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


async def tasks_list(args: argparse.Namespace, out: Output) -> int:
    async with open_client(args) as client:
        answer = await client.tasks.list()
    rows = [
        (t.get("id", "?"), t.get("status", "?"), t.get("manifest_path", ""),
         timestamp(t.get("created_at")), timestamp(t.get("updated_at")))
        for t in answer["tasks"]
    ]
    out.show(answer, "Tasks", ["id", "status", "manifest", "created", "updated"], rows)
    return Exit.OK


async def tasks_get(args: argparse.Namespace, out: Output) -> int:
    async with open_client(args) as client:
        task = await client.tasks.get(args.task_id)
    out.show(task, f"Task {args.task_id}", ["field", "value"], _field_rows(task))
    return Exit.OK


async def tasks_logs(args: argparse.Namespace, out: Output) -> int:
    async with open_client(args) as client:
        logs = await client.tasks.get_logs(args.task_id)
    rows = [
        (str(log.get("id", "")), timestamp(log.get("created_at")), log.get("type", "?"),
         log.get("node_id", ""), _log_detail(log))
        for log in logs
    ]
    out.show(
        {"logs": logs}, f"Logs of task {args.task_id}",
        ["id", "time", "type", "node", "detail"], rows,
    )
    return Exit.OK


async def tasks_stop(args: argparse.Namespace, out: Output) -> int:
    async with open_client(args) as client:
        task = await client.tasks.stop(args.task_id)
    out.show(task, f"Stopped task {args.task_id}", ["field", "value"], _field_rows(task))
    return Exit.OK


async def blocks(args: argparse.Namespace, out: Output) -> int:
    async with open_client(args) as client:
        answer = await client.blocks.list(include_all_versions=args.all_versions)
    rows = [
        (b.get("blockId", "?"), b.get("version", "?"), b.get("description", ""))
        for b in answer["blocks"]
    ]
    out.show(answer, "Blocks", ["block", "version", "description"], rows)
    return Exit.OK


async def flows(args: argparse.Namespace, out: Output) -> int:
    async with open_client(args) as client:
        answer = await client.flows.list()
    rows = [
        (f.get("name", "?"),
         ", ".join(
             f"{node.get('nodeId')}.{handle.get('handle')}"
             for node in f.get("inputs", []) for handle in node.get("inputs", [])
         ),
         f.get("description", ""))
        for f in answer["flows"]
    ]
    out.show(answer, "Flows", ["flow", "inputs", "description"], rows)
    return Exit.OK


async def packages_list(args: argparse.Namespace, out: Output) -> int:
    async with open_client(args) as client:
        answer = await client.packages.list()
    rows = [
        (p.get("name", "?"), p.get("version", "?"), p.get("description", ""))
        for p in answer["packages"]
    ]
    out.show(answer, "Packages", ["package", "version", "description"], rows)
    return Exit.OK


async def packages_install(args: argparse.Namespace, out: Output) -> int:
    label = args.name if args.version is None else f"{args.name}@{args.version}"
    async with open_client(args) as client:
        if args.wait:
            board = TaskBoard(out)
            row = board.add(f"install {label}")
            with board:
                try:
                    task = await client.packages.install_and_wait(
                        args.name, args.version, polling_options(args, on_progress=row.on_progress)
                    )
                finally:
                    row.finish()
        else:
            task = await client.packages.install(args.name, args.version)
    out.show(task, f"Install task for {label}", ["field", "value"], _field_rows(task))
    return Exit.OK

"""``run``: one task with live progress and logs, then its result as JSON."""

from __future__ import annotations

import argparse
from typing import Any

from .. import OomolConnectClient, RunResult, TaskError, TaskInputValues, TimeoutError
from ._errors import Exit
from ._inputs import merge_inputs
from ._options import open_client, polling_options
from ._progress import TaskBoard
from ._render import Output


def failure_fields(error: Exception) -> dict[str, Any]:
    """The JSON fields of a failed outcome (``task_id`` when the task exists)."""
    fields: dict[str, Any] = {"ok": False, "error": str(error), "error_type": type(error).__name__}
    task_id = getattr(error, "task_id", None)
    if task_id:
        fields["task_id"] = task_id
    return fields


async def run(args: argparse.Namespace, out: Output) -> int:
    inputs = merge_inputs(args.input, args.inputs_json)
    try:
        result = await _watched_run(args, out, inputs)
    except (TaskError, TimeoutError) as exc:
        if out.json_mode:
            out.json({"manifest": args.manifest, **failure_fields(exc)})
        raise
    if out.json_mode:
        out.json({
            "ok": True,
            "task_id": result["task_id"],
            "manifest": args.manifest,
            "status": result["task"].get("status"),
            "result": result["result"],
        })
    else:
        out.json(result["result"])
    return Exit.OK


async def _watched_run(
    args: argparse.Namespace, out: Output, inputs: TaskInputValues
) -> RunResult:
    board = TaskBoard(out)
    row = board.add(args.manifest)
    options = polling_options(args, on_progress=row.on_progress, on_log=row.on_log)
    async with open_client(args) as client:
        with board:
            try:
                if args.file:
                    return await client.tasks.run_with_files(
                        args.manifest, inputs, args.file, options
                    )
                return await client.tasks.run(
                    {"manifest": args.manifest, "inputValues": inputs}, options
                )
            except TimeoutError as exc:
                row.finish("timed out")
                raise _with_stop_note(exc, client) from None
            finally:
                row.finish()


def _with_stop_note(error: TimeoutError, client: OomolConnectClient) -> TimeoutError:
    """The timeout, telling whether the task was stopped on the server."""
    stopped = client.metrics["stops_sent"] > 0
    note = "it was stopped on the server" if stopped else "stopping it on the server failed"
    return TimeoutError(f"{error}; {note}", task_id=error.task_id, task=error.task)

"""``run``: one task with live progress and logs, then its result as JSON."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .. import ApiError, OomolConnectClient, RecordedError, RunResult, TaskInputValues
from ._errors import Exit
from ._inputs import ROOT, Assignment, Schemas, is_flow, merge_inputs
from ._options import open_client, polling_options
from ._progress import TaskBoard
from ._render import Output


def failure_fields(error: Exception) -> dict[str, Any]:
    """The JSON fields of a failed outcome (``task_id`` when the task exists)."""
    # A failure read back from a batch journal keeps the type of the error it recorded.
    kind = error.error_type if isinstance(error, RecordedError) else type(error).__name__
    fields: dict[str, Any] = {"ok": False, "error": str(error), "error_type": kind}
    task_id = getattr(error, "task_id", None)
    if task_id:
        fields["task_id"] = task_id
    return fields


async def run(args: argparse.Namespace, out: Output) -> int:
    async with open_client(args) as client:
        schemas = await input_schemas(client, args.manifest, args.input)
        inputs = merge_inputs(args.manifest, args.input, args.inputs_json, schemas)
        result = await _watched_run(args, out, client, inputs)
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


async def input_schemas(
    client: OomolConnectClient, target: str, assignments: Sequence[Assignment]
) -> Schemas:
    """The declared input schemas of ``target``, needed only to type ``-i NAME=VALUE`` values.

    A server that lists no such block or flow (or no flows at all) leaves every value a string.
    """
    if all(item.is_json for item in assignments):
        return {}
    try:
        if is_flow(target):
            flows = (await client.flows.list())["flows"]
            flow: Any = next((f for f in flows if f.get("name") == target), {})
            return {
                (str(node.get("nodeId")), str(handle.get("handle"))): handle.get("json_schema")
                for node in flow.get("inputs") or [] for handle in node.get("inputs") or []
            }
        blocks = (await client.blocks.list())["blocks"]
        block: Any = next((b for b in blocks if b.get("blockId") == target), {})
        return {
            (ROOT, str(handle.get("handle"))): handle.get("json_schema")
            for handle in block.get("inputs") or []
        }
    except ApiError:
        return {}


async def _watched_run(
    args: argparse.Namespace, out: Output, client: OomolConnectClient, inputs: TaskInputValues
) -> RunResult:
    board = TaskBoard(out)
    row = board.add(args.manifest)
    options = polling_options(args, on_progress=row.on_progress, on_log=row.on_log)
    with board:
        try:
            if args.file:
                return await client.tasks.run_with_files(args.manifest, inputs, args.file, options)
            return await client.tasks.run(
                {"manifest": args.manifest, "inputValues": inputs}, options
            )
        finally:
            row.finish()

"""The catalogue and package commands: blocks, flows, packages."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from ._errors import Exit
from ._options import open_client, polling_options
from ._progress import TaskBoard
from ._render import Output
from ._tasks import field_rows


def _versioned(
    out: Output,
    answer: Mapping[str, object],
    items: Sequence[Mapping[str, object]],
    title: str,
    name: tuple[str, str],
) -> int:
    """A listing of named, versioned things: name (its column, its key), version, description."""
    column, key = name
    rows = [
        (str(i.get(key, "?")), str(i.get("version", "?")), str(i.get("description", "")))
        for i in items
    ]
    out.show(answer, title, [column, "version", "description"], rows)
    return Exit.OK


async def blocks(args: argparse.Namespace, out: Output) -> int:
    async with open_client(args) as client:
        answer = await client.blocks.list(include_all_versions=args.all_versions)
    return _versioned(out, answer, answer["blocks"], "Blocks", ("block", "blockId"))


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
    return _versioned(out, answer, answer["packages"], "Packages", ("package", "name"))


async def install_tasks(args: argparse.Namespace, out: Output) -> int:
    async with open_client(args) as client:
        tasks = (await client.packages.list_install_tasks())["tasks"]
    rows = [
        (t.get("id", "?"), t.get("status", "?"), t.get("name", "?"), t.get("version") or "-",
         str(t.get("error") or ""))
        for t in tasks
    ]
    out.show({"tasks": tasks}, "Install tasks", ["id", "status", "package", "version", "error"],
             rows)
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
    out.show({"install": task}, f"Install task for {label}", ["field", "value"], field_rows(task))
    return Exit.OK

"""Quick start: list the blocks, run one, print its result (``python examples/basic_usage.py``)."""

from __future__ import annotations

import anyio
from _connect import POLLING, connect


async def main() -> None:
    async with connect() as client:
        # Only each package's latest version is listed, as "package::name".
        blocks = (await client.blocks.list())["blocks"]
        print(f"{len(blocks)} blocks:", ", ".join(sorted(b["blockId"] for b in blocks)))

        # run = create the task, poll until it ends, fetch its logs, extract the result.
        run = await client.tasks.run(
            {"manifest": "demo::upper", "inputValues": {"text": "hello, oomol"}}, POLLING
        )
        print(f"task {run['task_id']} {run['task']['status']}: result {run['result']}")


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")

"""Plain asyncio (3.10+, no TaskGroup, no asyncio.timeout).

Concurrent runs with ``asyncio.gather``, cancellation with ``task.cancel()``:
Cancelling the asyncio task running ``tasks.run`` stops the remote task too,
before the cancellation reaches you.
"""

from __future__ import annotations

import asyncio

from _connect import POLLING, connect

from oomol_connect_anyio import OomolConnectClient, Task


async def shout(client: OomolConnectClient, text: str) -> str:
    run = await client.tasks.run(
        {"manifest": "demo::upper", "inputValues": {"text": text}}, POLLING
    )
    return str(run["result"]["text"])


async def main() -> None:
    async with connect() as client:
        # Several runs at once: gather returns their results in order.
        words = await asyncio.gather(*(shout(client, w) for w in ["ready", "steady", "go"]))
        print("gathered:", " ".join(words))

        # A run that would take 30 s, cancelled from outside after 0.3 s.
        seen: list[Task] = []
        slow = asyncio.create_task(
            client.tasks.run(
                {"manifest": "demo::sleep", "inputValues": {"seconds": 30}},
                {**POLLING, "on_progress": seen.append},  # remember the task to inspect it
            )
        )
        await asyncio.sleep(0.3)
        slow.cancel()
        try:
            await slow
        except asyncio.CancelledError:
            task = await client.tasks.get(seen[-1]["id"])
            print(f"cancelled the slow run; its remote task {task['id']} is {task['status']}")


if __name__ == "__main__":
    asyncio.run(main())

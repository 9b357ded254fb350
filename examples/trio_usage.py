"""Trio: a nursery running several runs, and a cancel scope cutting one short.

Leaving ``trio.move_on_after`` cancels the run inside it; the client stops
the remote task (shielded, bounded) before the cancellation completes.
"""

from __future__ import annotations

import trio
from _connect import POLLING, connect

from oomol_connect_anyio import OomolConnectClient, Task


async def shout(client: OomolConnectClient, text: str) -> None:
    run = await client.tasks.run(
        {"manifest": "demo::upper", "inputValues": {"text": text}}, POLLING
    )
    print(f"  {text!r} -> {run['result']['text']!r}")


async def too_slow(client: OomolConnectClient) -> None:
    seen: list[Task] = []
    with trio.move_on_after(0.3) as scope:
        await client.tasks.run(
            {"manifest": "demo::sleep", "inputValues": {"seconds": 30}},
            {**POLLING, "on_progress": seen.append},  # remember the task to inspect it
        )
    if scope.cancelled_caught:
        task = await client.tasks.get(seen[-1]["id"])
        print(f"  gave up on the 30 s run after 0.3 s; its remote task is {task['status']}")


async def main() -> None:
    async with connect() as client:
        print("running in a nursery:")
        async with trio.open_nursery() as nursery:
            for text in ["alpha", "beta", "gamma"]:
                nursery.start_soon(shout, client, text)
            nursery.start_soon(too_slow, client)
        print("all done; stop requests sent:", client.metrics["stops_sent"])


if __name__ == "__main__":
    trio.run(main)

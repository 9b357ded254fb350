"""Callbacks, backoff, error handling and ``watch()``.

- ``on_log`` / ``on_progress`` callbacks, plain or async, see every log line
  and every status poll;
- the polling schedule: exponential backoff (or ``"fixed"``), with a cap;
- ``TaskFailedError`` carries the error text of the task's logs;
- ``TimeoutError`` (``timeout_ms``) stops the task on the server;
- ``watch()`` iterates a task's status polls and log lines as they arrive.
"""

from __future__ import annotations

import anyio
from _connect import connect

from oomol_connect_anyio import (
    OomolConnectClient,
    PollingOptions,
    Task,
    TaskFailedError,
    TaskLog,
    TaskLogEvent,
    TaskProgress,
    TimeoutError,
)

# Poll after 50 ms, then 100, 200, 400, 400... (the official default is 2 s x 1.5, capped at 10 s).
BACKOFF: PollingOptions = {
    "interval_ms": 50,
    "backoff_strategy": "exponential",
    "backoff_factor": 2,
    "max_interval_ms": 400,
}


def print_log(log: TaskLog) -> None:
    """A plain callback: called in order, once per new log line."""
    event = log.get("event", {})
    if log.get("type") == "BlockProgress":
        print(f"    progress {event['progress']:.0f}%")
    elif log.get("type") == "BlockLog":
        print(f"    log: {event['log']}")


async def print_status(task: Task) -> None:
    """An async callback: awaited after each status poll."""
    print(f"    status poll: {task['status']}")


async def callbacks(client: OomolConnectClient) -> None:
    print("1. callbacks and backoff:")
    run = await client.tasks.run(
        {"manifest": "demo::progress", "inputValues": {"steps": 3, "seconds": 0.3}},
        {**BACKOFF, "on_log": print_log, "on_progress": print_status},
    )
    stats = run.get("stats")
    polls = stats["status_polls"] if stats else "?"
    print(f"    result {run['result']} after {polls} status polls")


async def errors(client: OomolConnectClient) -> None:
    print("2. a failing task:")
    try:
        await client.tasks.run(
            {"manifest": "demo::fail", "inputValues": {"message": "disk full"}}, BACKOFF
        )
    except TaskFailedError as exc:
        print(f"    TaskFailedError: {exc}")
        stderr = [log["event"]["log"] for log in exc.logs if log["event"].get("stdio") == "stderr"]
        print(f"    its stderr: {stderr}")

    print("3. a timeout:")
    try:
        await client.tasks.run(
            {"manifest": "demo::sleep", "inputValues": {"seconds": 30}},
            {**BACKOFF, "timeout_ms": 300},
        )
    except TimeoutError as exc:
        task = await client.tasks.get(exc.task_id)
        print(f"    TimeoutError: {exc}; the task is now {task['status']} on the server")


async def watching(client: OomolConnectClient) -> None:
    print("4. watch():")
    task = await client.tasks.create(
        {"manifest": "demo::progress", "inputValues": {"steps": 2, "seconds": 0.2}}
    )
    async with client.tasks.watch(task["id"], BACKOFF) as events:
        async for event in events:
            if isinstance(event, TaskProgress):
                print(f"    status: {event.task['status']}")
            elif isinstance(event, TaskLogEvent):
                print(f"    log event: {event.log['type']}")


async def main() -> None:
    async with connect() as client:
        await callbacks(client)
        await errors(client)
        await watching(client)


if __name__ == "__main__":
    anyio.run(main)

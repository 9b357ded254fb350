"""One batch over several Connect servers with ``ServerPool``.

    python examples/server_pool.py                 # three embedded emulators
    OOMOL_CONNECT_BASE_URL=http://a:3000/api,http://b:3000/api python examples/server_pool.py

Each create goes to the server with the most free places; a task's polls stay with the
server that made it, and every outcome names its server. Halfway through, the example
stops one of its emulators: the runs that were on it fail (after a short outage budget,
set here so that the example ends soon; the default is 60 s), the server is drained, and
the rest of the batch goes on elsewhere.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from contextlib import AsyncExitStack

import anyio

from oomol_connect_anyio import OomolConnectClient, PollingOptions, ServerPool

POLLING: PollingOptions = {"interval_ms": 50, "max_interval_ms": 500, "poll_error_budget_ms": 1000}


async def main() -> None:
    async with AsyncExitStack() as stack:
        configured = os.environ.get("OOMOL_CONNECT_BASE_URL")
        stops: list[anyio.Event] = []
        if configured:
            urls = configured.split(",")
        else:  # three emulators, each served until its event is set
            group = await stack.enter_async_context(anyio.create_task_group())
            urls = [await group.start(_serve, stops) for _ in range(3)]
            print(f"(OOMOL_CONNECT_BASE_URL is not set: three emulators at {urls})",
                  file=sys.stderr)
        clients = [OomolConnectClient(base_url=url) for url in urls]
        requests = [{"manifest": "demo::sleep", "inputValues": {"seconds": 0.3, "job": i}}
                    for i in range(30)]
        async with ServerPool(clients, max_concurrency_per_server=3) as pool:
            done = 0

            def finished(index: int, outcome: object) -> None:
                nonlocal done
                done += 1
                if done == 10 and stops:
                    print(f"stopping the server at {urls[1]}", file=sys.stderr)
                    stops[1].set()

            outcomes = await pool.run_many(
                requests, polling_options=POLLING, return_exceptions=True, on_result=finished
            )
        ran = Counter(
            getattr(o, "server", None) if isinstance(o, Exception) else o["server"]
            for o in outcomes
        )
        failed = Counter(o.server for o in outcomes if isinstance(o, Exception))  # type: ignore[attr-defined]
        for url in urls:
            print(f"{url}: {ran[url]} runs, {failed[url]} failed")
        for stop in stops:
            stop.set()


async def _serve(stops: list[anyio.Event], *, task_status: anyio.abc.TaskStatus[str]) -> None:
    from oomol_connect_anyio.emulator import serve_emulator

    stop = anyio.Event()
    stops.append(stop)
    async with serve_emulator(host="127.0.0.1", port=0) as url:
        task_status.started(url)
        await stop.wait()


if __name__ == "__main__":
    anyio.run(main)

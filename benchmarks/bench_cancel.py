"""Cancel-to-stop latency: from an outer cancel to the emulator stopping the remote task.

    python benchmarks/bench_cancel.py [--repeat 5] [--quick]

A never-ending ``demo::sleep`` task is run, then the run is cancelled from outside:

* ``CancelScope.cancel()`` while the wait sleeps between polls (default polling);
* ``CancelScope.cancel()`` while a status poll is in flight (a second emulator answers
  ``GET /v1/tasks/{id}`` after 300 ms, fault injection);
* ``move_on_after`` around ``tasks.run``;
* ``move_on_after`` around ``run_many`` of 20 such tasks (latency of the last stop).

Server side: the emulator stamps a stopped task's ``updated_at`` (epoch ms) when it
handles the stop; latency = that stamp minus the client's ``time.time()`` at the cancel,
corrected by the clock offset measured on a create just before (same host clock, ~1 ms
resolution). Client side: from the cancel until the cancelled block exits (the shielded
stop request has returned by then). The official client has no remote stop on cancel: its
task is left running (checked in the emulator's task table).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _common
import anyio
from _common import Report, Server, median
from oomol_connect_sdk import OomolConnectClient as OfficialClient

from oomol_connect_anyio import OomolConnectClient as OurClient

NEVER = {"manifest": "demo::sleep", "inputValues": {"seconds": 10_000_000}}
CANCEL_AFTER = 0.5  # seconds after the run starts: during the first 2 s sleep


async def _clock_offset_ms(client: OurClient, server: Server) -> float:
    """The emulator's epoch-ms clock minus ours, measured around one create."""
    before = time.time() * 1000
    task = await client.tasks.create({"manifest": "demo::echo", "inputValues": {}})
    after = time.time() * 1000
    return float(task["created_at"]) - (before + after) / 2


def _client(server: Server) -> OurClient:
    return OurClient(base_url=server.url, api_token=server.token)


async def _cancel_during(server: Server, run: Callable[[OurClient], Awaitable[Any]],
                         delay: float) -> tuple[float, float]:
    """(cancel time in epoch ms, seconds from the cancel until the block exited)."""
    async with _client(server) as client:
        offset = await _clock_offset_ms(client, server)
        scope = anyio.CancelScope()
        exited: list[float] = []

        async def runner() -> None:
            with scope:
                await run(client)
            exited.append(time.perf_counter())

        async with anyio.create_task_group() as group:
            group.start_soon(runner)
            await anyio.sleep(delay)
            cancel_ms = time.time() * 1000 + offset
            cancel_at = time.perf_counter()
            scope.cancel()
        return cancel_ms, exited[0] - cancel_at


async def _move_on_after(server: Server, run: Callable[[OurClient], Awaitable[Any]],
                         delay: float) -> tuple[float, float]:
    async with _client(server) as client:
        offset = await _clock_offset_ms(client, server)
        start_wall, start = time.time(), time.perf_counter()
        with anyio.move_on_after(delay):
            await run(client)
        exited = time.perf_counter()
        return (start_wall + delay) * 1000 + offset, exited - (start + delay)


def _stops(server: Server, before: set[str]) -> list[tuple[str, dict[str, Any]]]:
    table = server.tasks()
    return [(task_id, server.task(task_id)) for task_id, row in table.items()
            if task_id not in before and row["manifest"] == "demo::sleep"]


def _one(server: Server, backend: str, how: str, delay: float, many: int) -> dict[str, Any]:
    def run(client: OurClient) -> Awaitable[Any]:
        if many:
            return client.tasks.run_many([NEVER] * many, max_concurrency=many)  # type: ignore[list-item]
        return client.tasks.run(NEVER)  # type: ignore[arg-type]

    before = set(server.tasks())
    measure = _cancel_during if how == "cancel" else _move_on_after
    cancel_ms, client_s = _common.run_on(backend, measure, server, run, delay)
    tasks = _stops(server, before)
    statuses = [task["status"] for _, task in tasks]
    latencies = [task["updated_at"] - cancel_ms for _, task in tasks
                 if task["status"] == "stopped"]
    return {
        "tasks": len(tasks),
        "stopped": statuses.count("stopped"),
        "server_latency_ms": max(latencies) if latencies else None,
        "client_exit_ms": client_s * 1000,
    }


def _official(server: Server) -> dict[str, Any]:
    async def main() -> float:
        client = OfficialClient({"base_url": server.url, "api_token": server.token})
        try:
            task = asyncio.ensure_future(client.tasks.run(
                {"blockId": "demo::sleep", "inputValues": NEVER["inputValues"]}))
            await asyncio.sleep(CANCEL_AFTER)
            cancelled = time.perf_counter()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return time.perf_counter() - cancelled
        finally:
            await client.close()

    before = set(server.tasks())
    client_s = asyncio.run(main())
    tasks = _stops(server, before)
    for task_id, task in tasks:  # hygiene
        if task["status"] == "running":
            server.stop(task_id)
    return {"tasks": len(tasks), "stopped": sum(t["status"] == "stopped" for _, t in tasks),
            "server_latency_ms": None, "client_exit_ms": client_s * 1000}


def main(argv: list[str] | None = None) -> Report:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    if args.quick:
        args.repeat = 1
    report = Report(
        "Cancel-to-stop latency",
        _common.command(__file__, argv),
        {"repeat": args.repeat, "cancel_after_s": CANCEL_AFTER},
    )
    # (label, backend, how, server, cancel after (s), run_many size or 0 for run)
    scenarios: list[tuple[str, str, str, str, float, int]] = []
    for backend in ("asyncio", "trio"):
        scenarios += [
            (f"ours, cancel() during the poll sleep/{backend}", backend, "cancel", "plain",
             CANCEL_AFTER, 0),
            (f"ours, cancel() during a poll in flight/{backend}", backend, "cancel", "slow",
             0.15, 0),
            (f"ours, move_on_after around run()/{backend}", backend, "move_on", "plain",
             CANCEL_AFTER, 0),
            (f"ours, move_on_after around run_many(20)/{backend}", backend, "move_on",
             "plain", CANCEL_AFTER, 20),
        ]
    scenarios.append(("official, asyncio task.cancel()/asyncio", "asyncio", "official",
                      "plain", CANCEL_AFTER, 0))
    results: dict[str, list[dict[str, Any]]] = {s[0]: [] for s in scenarios}
    with tempfile.TemporaryDirectory() as tmp:
        faults = Path(tmp) / "faults.json"
        faults.write_text(json.dumps([{"route": "GET /v1/tasks/{id}", "latency": [0.3, 0.3]}]))
        with _common.start_server(args) as plain, _common.start_server(
                args, extra=["--fault-config", str(faults)]) as slow:
            servers = {"plain": plain, "slow": slow}
            report.notes.append(f"servers: {_common.describe_server(plain)}; with a 300 ms "
                                f"poll latency: {_common.describe_server(slow)}")
            for _ in range(args.repeat):
                for label, backend, how, which, delay, many in scenarios:
                    server = servers[which]
                    if how == "official":
                        result = _official(server)
                    else:
                        result = _one(server, backend, how, delay, many)
                    results[label].append(result)
                    print(f"{label}: {result}", file=sys.stderr, flush=True)
    table = report.table(
        f"cancel {CANCEL_AFTER:g} s (in flight: 0.15 s) after the start of a run of a "
        "never-ending task; "
        f"{args.repeat} run(s) each",
        ["scenario", "server saw stop, ms (median)", "(max)", "client block exited, ms "
         "(median)", "remote tasks stopped"],
    )
    for label, rows in results.items():
        latencies = [r["server_latency_ms"] for r in rows if r["server_latency_ms"] is not None]
        table.add(label, median(latencies) if latencies else None,
                  max(latencies) if latencies else None,
                  median([r["client_exit_ms"] for r in rows]),
                  f"{sum(r['stopped'] for r in rows)}/{sum(r['tasks'] for r in rows)}")
        if label.startswith("ours"):
            worst = max(latencies) if latencies else None
            all_stopped = all(r["stopped"] == r["tasks"] for r in rows)
            report.goal(f"{label}: stop seen by the server < 50 ms after the cancel",
                        "no stop" if worst is None else f"max {worst:.1f} ms",
                        worst is not None and worst < 50 and all_stopped)
    report.raw = results
    report.finish(args)
    return report


if __name__ == "__main__":
    main()

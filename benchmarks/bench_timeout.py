"""Timeout precision: how late ``timeout_ms`` fires on a never-ending task, and what is left.

    python benchmarks/bench_timeout.py [--timeout-ms 1000] [--repeat 3] [--quick]

``tasks.run`` of ``demo::sleep`` with a huge ``seconds`` and ``timeout_ms``, with the
default polling (2 s, x1.5) and a fast one (50 ms fixed). Overshoot = the time
``run`` took (measured around the call, on a warm client) minus ``timeout_ms``: both
clients start their clock after the create request, so it includes that request and,
for this client, the remote stop it sends before raising. Then the emulator's task
table (``GET /__emulator/tasks``) tells whether the task was left running.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _common
import oomol_connect_sdk
from _common import Report, Server, median
from oomol_connect_sdk import OomolConnectClient as OfficialClient

import oomol_connect_anyio
from oomol_connect_anyio import OomolConnectClient as OurClient

NEVER = {"seconds": 10_000_000}
FAST = {"interval_ms": 50, "backoff_strategy": "fixed"}


def ours(fast: bool) -> Callable[[Server, float], Awaitable[float]]:
    async def run(server: Server, timeout_ms: float) -> float:
        polling = {**(FAST if fast else {}), "timeout_ms": timeout_ms}
        async with OurClient(base_url=server.url, api_token=server.token) as client:
            await client.blocks.list()  # a warm connection, as for the official client
            started = time.perf_counter()
            try:
                await client.tasks.run({"manifest": "demo::sleep", "inputValues": NEVER},
                                       polling)  # type: ignore[arg-type]
            except oomol_connect_anyio.TimeoutError:
                return time.perf_counter() - started
        raise AssertionError("no timeout")

    return run


def official(fast: bool) -> Callable[[Server, float], Awaitable[float]]:
    async def run(server: Server, timeout_ms: float) -> float:
        polling = {**(FAST if fast else {}), "timeout_ms": timeout_ms}
        client = OfficialClient({"base_url": server.url, "api_token": server.token})
        try:
            await client.blocks.list()
            started = time.perf_counter()
            try:
                await client.tasks.run({"blockId": "demo::sleep", "inputValues": NEVER},
                                       polling)
            except oomol_connect_sdk.TimeoutError:
                return time.perf_counter() - started
        finally:
            await client.close()
        raise AssertionError("no timeout")

    return run


VARIANTS: list[tuple[str, str, Callable[[Server, float], Awaitable[float]]]] = [
    ("ours, default polling/asyncio", "asyncio", ours(False)),
    ("ours, default polling/trio", "trio", ours(False)),
    ("ours, 50 ms polling/asyncio", "asyncio", ours(True)),
    ("ours, 50 ms polling/trio", "trio", ours(True)),
    ("official, default polling/asyncio", "asyncio", official(False)),
    ("official, 50 ms polling/asyncio", "asyncio", official(True)),
]


def measure(server: Server, backend: str, fn: Callable[[Server, float], Awaitable[float]],
            timeout_ms: float) -> dict[str, Any]:
    before = set(server.tasks())
    elapsed = _common.run_on(backend, fn, server, timeout_ms)
    new = [row for task_id, row in server.tasks().items() if task_id not in before]
    if len(new) != 1:
        raise RuntimeError(f"expected one new task, found {len(new)}")
    row = new[0]
    left_running = row["status"] not in ("stopped", "completed", "failed")
    if left_running:  # hygiene: the official client leaves it running
        server.stop(row["id"])
    return {"overshoot_ms": elapsed * 1000 - timeout_ms, "elapsed_ms": elapsed * 1000,
            "left_running": left_running, "status_after": row["status"]}


def main(argv: list[str] | None = None) -> Report:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--timeout-ms", type=float, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    if args.quick:
        args.timeout_ms, args.repeat = 300, 1
    report = Report(
        "Timeout precision (never-ending task, timeout_ms)",
        _common.command(__file__, argv),
        {"timeout_ms": args.timeout_ms, "repeat": args.repeat},
    )
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in VARIANTS}
    with _common.start_server(args) as server:
        report.notes.append(f"server: {_common.describe_server(server)}")
        for _ in range(args.repeat):
            for label, backend, fn in VARIANTS:
                result = measure(server, backend, fn, args.timeout_ms)
                results[label].append(result)
                print(f"{label}: overshoot {result['overshoot_ms']:.1f} ms, "
                      f"left {result['status_after']}", file=sys.stderr, flush=True)
    table = report.table(
        f"timeout_ms={args.timeout_ms:g} on demo::sleep(10^7 s); {args.repeat} run(s) each",
        ["variant", "overshoot ms (median)", "overshoot ms (max)", "remote task afterwards"],
    )
    for label, rows in results.items():
        overshoots = [r["overshoot_ms"] for r in rows]
        statuses = sorted({r["status_after"] for r in rows})
        table.add(label, median(overshoots), max(overshoots), "/".join(statuses))
    for label, rows in results.items():
        if label.startswith("ours"):
            worst = max(r["overshoot_ms"] for r in rows)
            stopped = all(r["status_after"] == "stopped" for r in rows)
            report.goal(f"{label}: overshoot < 20 ms and the remote task stopped",
                        f"max {worst:.1f} ms, {'stopped' if stopped else 'NOT stopped'}",
                        worst < 20 and stopped)
    report.raw = results
    report.notes.append(
        "The official client checks its timeout only between polls, so it overshoots by up "
        "to one polling interval (2 s, then 3 s, ... by default) and never stops the task; "
        "this client cancels the wait (sleep or request in flight) at the deadline and "
        "sends a shielded stop before raising TimeoutError.")
    report.finish(args)
    return report


if __name__ == "__main__":
    main()

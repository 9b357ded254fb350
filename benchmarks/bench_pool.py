"""One batch over 1, 2 and 3 Connect servers (emulator processes) through ``ServerPool``.

    python benchmarks/bench_pool.py [--tasks 600] [--seconds 0.2] [--per-server 16] [--quick]

Each server takes at most ``--per-server`` tasks at once (``max_concurrency_per_server``:
what one server's machine can run); the batch is ``run_many`` of ``demo::sleep`` tasks of
``--seconds`` each, 50 ms fixed polling, default client settings, on asyncio and trio. For
each number of servers: the wall time, tasks per second, and how the tasks spread (counted
by each emulator). The baseline, measured in the same run, is the plain client on one server
at the same per-server limit; a second row gives that one server the pool's whole limit, to
show what the client alone can drive. All processes share the machine's cores, so the
servers' own CPU competes with the client's: on a small machine the gain stops growing
when the client or the servers run out of CPU, not when the servers run out of places.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from typing import Any

import _common
from _common import Report, Server, ratio

from oomol_connect_anyio import OomolConnectClient, ServerPool

POLLING = {"interval_ms": 50, "backoff_strategy": "fixed"}


async def batch(servers: list[Server], params: dict[str, Any], pooled: bool) -> dict[str, Any]:
    """One batch; its wall time and each server's share (counters reset before)."""
    requests = [{"manifest": "demo::sleep", "inputValues": {"seconds": params["seconds"]}}
                for _ in range(params["tasks"])]
    for server in servers:
        server.reset_stats()
    clients = [OomolConnectClient(base_url=s.url, api_token=s.token) for s in servers]
    started = time.perf_counter()
    if pooled:
        async with ServerPool(clients, max_concurrency_per_server=params["per_server"]) as pool:
            outcomes = await pool.run_many(requests, polling_options=POLLING)  # type: ignore[arg-type]
    else:
        async with clients[0] as client:
            outcomes = await client.tasks.run_many(
                requests, max_concurrency=params["limit"], polling_options=POLLING,  # type: ignore[arg-type]
            )
    wall = time.perf_counter() - started
    if len(outcomes) != params["tasks"]:
        raise RuntimeError(f"{len(outcomes)} outcomes for {params['tasks']} tasks")
    shares = [int(server.stats()["tasks_created"]) for server in servers]
    if sum(shares) != params["tasks"]:
        raise RuntimeError(f"the servers created {shares} tasks for {params['tasks']} requests")
    return {"wall s": wall, "tasks/s": params["tasks"] / wall, "per server": shares}


def main(argv: list[str] | None = None) -> Report:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=600)
    p.add_argument("--seconds", type=float, default=0.2, help="each task's duration")
    p.add_argument("--per-server", type=int, default=16, help="tasks one server runs at once")
    p.add_argument("--servers", type=int, default=3, help="the most servers tried")
    args = p.parse_args(argv)
    if args.base_url:
        p.error("bench_pool starts its own emulator processes (no --base-url)")
    if args.quick:
        args.tasks, args.per_server, args.servers = 24, 4, 2
    params = {"tasks": args.tasks, "seconds": args.seconds, "per_server": args.per_server}
    report = Report("One batch over several servers (ServerPool)",
                    _common.command(__file__, argv), {**params, "servers": args.servers})
    results: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        # A short table of finished tasks, so that no variant pays for the ones before it.
        servers = [stack.enter_context(_common.start_server(args, max_finished=200))
                   for _ in range(args.servers)]
        report.notes.append("servers: " + "; ".join(_common.describe_server(s) for s in servers))
        for backend in ("asyncio", "trio"):
            variants = [(f"1 server, client/{backend}", servers[:1], False, args.per_server),
                        (f"1 server, limit {args.per_server * args.servers}/{backend}",
                         servers[:1], False, args.per_server * args.servers)]
            variants += [(f"{n} server{'s' if n > 1 else ''}, pool/{backend}", servers[:n],
                          True, args.per_server * n) for n in range(1, args.servers + 1)]
            for label, chosen, pooled, limit in variants:
                row = _common.run_on(backend, batch, chosen, {**params, "limit": limit}, pooled)
                results[label] = row
                print(f"{label}: {row}", file=sys.stderr, flush=True)
    table = report.table(
        f"{args.tasks} runs of {args.seconds:g} s, {args.per_server} at once per server",
        ["variant", "wall s", "tasks/s", "per server", "wall / 1 server"])
    for backend in ("asyncio", "trio"):
        base = results[f"1 server, client/{backend}"]["wall s"]
        for label, row in results.items():
            if label.endswith(f"/{backend}"):
                table.add(label, row["wall s"], row["tasks/s"],
                          " / ".join(map(str, row["per server"])), ratio(row["wall s"], base))
        most = results[f"{args.servers} servers, pool/{backend}"]
        report.goal(f"{backend}: {args.servers} servers finish the batch sooner than one",
                    f"{ratio(most['wall s'], base):.2f}x the wall time",
                    most["wall s"] < base)
        report.goal(f"{backend}: the pool spreads creates evenly (each server within 25% "
                    "of an equal share)", str(most["per server"]),
                    min(most["per server"]) >= 0.75 * args.tasks / args.servers)
    report.raw = results
    report.finish(args)
    return report


if __name__ == "__main__":
    main()

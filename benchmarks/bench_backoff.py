"""A batch against a server that takes at most K tasks at once: fixed limit vs adaptive.

    python benchmarks/bench_backoff.py [--k 4] [--tasks 120] [--seconds 0.2]
        [--retry-after 0.25] [--quick]

The emulator answers a create 429 (``Retry-After``) while K tasks or more are active
(fault rule ``max_active``). ``run_many`` of ``demo::sleep`` at a fixed limit of 4K, then
with ``adaptive_concurrency=True`` and the same ceiling, at default client settings
(``return_exceptions=True``; 50 ms fixed polling so that a task's end is seen soon), on
asyncio and trio. Counted on the server: the 429s, the tasks created, the mean number of
active tasks (sampled every 20 ms from ``/__emulator/stats``) and the peak; on the client:
runs lost (a create still answered 429 when the run's outage budget ran out) and wall time.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import _common
import anyio
import httpx
from _common import Report, Server, ratio

from oomol_connect_anyio import OomolConnectClient
from oomol_connect_anyio._pressure import current_pressure

CREATE = "POST /v1/tasks"
POLLING = {"interval_ms": 50, "backoff_strategy": "fixed"}
SAMPLE_EVERY = 0.02


async def batch(server: Server, params: dict[str, Any], adaptive: bool) -> dict[str, Any]:
    """One batch; what the server counted (reset before) and what the client saw."""
    ceiling = 4 * params["k"]
    requests = [{"manifest": "demo::sleep", "inputValues": {"seconds": params["seconds"]}}
                for _ in range(params["tasks"])]
    windows: list[float] = []
    samples: list[int] = []

    def on_progress(index: int, task: Any) -> None:
        pressure = current_pressure.get()
        if pressure is not None:
            windows.append(pressure.window)

    async def sample(http: httpx.AsyncClient, done: anyio.Event) -> None:
        while not done.is_set():
            stats = (await http.get(server.url + "/__emulator/stats")).json()
            by_status = stats["tasks_by_status"]
            samples.append(by_status.get("running", 0) + by_status.get("created", 0))
            with anyio.move_on_after(SAMPLE_EVERY):
                await done.wait()

    server.reset_stats()
    done = anyio.Event()
    async with httpx.AsyncClient(timeout=30) as http, anyio.create_task_group() as group:
        group.start_soon(sample, http, done)
        async with OomolConnectClient(base_url=server.url, api_token=server.token) as client:
            started = time.perf_counter()
            outcomes = await client.tasks.run_many(
                requests,
                max_concurrency=ceiling,
                adaptive_concurrency=adaptive,
                return_exceptions=True,
                polling_options={**POLLING, "on_progress": on_progress},  # type: ignore[typeddict-item]
            )
            wall = time.perf_counter() - started
        done.set()
    stats = server.stats()
    limited = sum(counts.get("429", 0) for counts in stats["statuses"].values())
    return {
        "429s": limited,
        "create 429s": stats["statuses"].get(CREATE, {}).get("429", 0),
        "created": stats["tasks_created"],
        "lost": sum(isinstance(outcome, Exception) for outcome in outcomes),
        "mean active": sum(samples) / len(samples) if samples else float("nan"),
        "peak active": stats["peak_active"],
        "mean window": sum(windows) / len(windows) if windows else float(ceiling),
        "wall s": wall,
    }


def main(argv: list[str] | None = None) -> Report:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=4, help="tasks the server takes at once")
    p.add_argument("--tasks", type=int, default=120)
    p.add_argument("--seconds", type=float, default=0.2, help="each task's duration")
    p.add_argument("--retry-after", type=float, default=0.25)
    args = p.parse_args(argv)
    if args.quick:
        args.k, args.tasks = 2, 24
    params = {"k": args.k, "tasks": args.tasks, "seconds": args.seconds,
              "retry_after": args.retry_after, "ceiling": 4 * args.k}
    report = Report("Backing off together (server takes K tasks at once)",
                    _common.command(__file__, argv), params)
    results: dict[str, dict[str, Any]] = {}
    with _common.start_server(args) as server:
        report.notes.append(f"server: {_common.describe_server(server)}")
        rule = {"route": CREATE, "max_active": args.k, "retry_after": args.retry_after}
        with httpx.Client() as http:
            http.post(server.url + "/__emulator/faults", json=rule).raise_for_status()
        for backend in ("asyncio", "trio"):
            for adaptive in (False, True):
                label = f"{'adaptive' if adaptive else 'fixed'} {4 * args.k}/{backend}"
                results[label] = _common.run_on(backend, batch, server, params, adaptive)
                print(f"{label}: {results[label]}", file=sys.stderr, flush=True)
    columns = ["variant", "429s", "create 429s", "created", "lost", "mean active",
               "peak active", "mean window", "wall s"]
    table = report.table(
        f"{args.tasks} runs of {args.seconds:g} s, server takes {args.k} at once "
        f"(429, Retry-After {args.retry_after:g} s, above that)", columns)
    for label, row in results.items():
        table.add(label, *(row[column] for column in columns[1:]))
    ratios = report.table("adaptive / fixed, same backend, same run",
                          ["backend", "429s", "mean active", "lost", "wall s"])
    for backend in ("asyncio", "trio"):
        fixed = results[f"fixed {4 * args.k}/{backend}"]
        adaptive = results[f"adaptive {4 * args.k}/{backend}"]
        ratios.add(backend, *(ratio(adaptive[c], fixed[c]) for c in ("429s", "mean active",
                                                                     "lost", "wall s")))
        report.goal(f"{backend}: adaptive sees fewer 429s than the fixed limit",
                    f"{adaptive['429s']} vs {fixed['429s']}", adaptive["429s"] < fixed["429s"])
        report.goal(f"{backend}: adaptive settles near K (mean active >= K/2)",
                    f"{adaptive['mean active']:.2f} of K={args.k}",
                    adaptive["mean active"] >= args.k / 2)
    report.raw = results
    report.notes.append(
        "A fixed limit keeps sending creates the server refuses: each one is asked again "
        "after Retry-After, by the transport (twice by default) and then by the run, within "
        "its outage budget (poll_error_budget_ms, 60 s), so no run is lost, but the server "
        "answers many more 429s. The adaptive window halves on a burst of 429s and grows by "
        "one after a window of accepted creates, so it oscillates between about K/2 and K+1.")
    report.finish(args)
    return report


if __name__ == "__main__":
    main()

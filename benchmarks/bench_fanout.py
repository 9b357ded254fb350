"""Fan-out: N runs of a T ms task at concurrency C, fixed polling every P ms.

    python benchmarks/bench_fanout.py [--tasks 1000] [--seconds 0.2] [--concurrency 100]
                                      [--interval-ms 50] [--rounds 1] [--no-sweep] [--quick]

* ours: ``client.tasks.run_many(requests, max_concurrency=C, polling_options=
  {"interval_ms": P, "backoff_strategy": "fixed"})`` on asyncio and trio;
* official: ``asyncio.gather`` + ``asyncio.Semaphore(C)`` around ``client.tasks.run``
  with the same polling options, as its README suggests;
* floors: the same create / poll / fetch-logs loop with plain httpx and with raw h11.

Reported: wall / ideal (ideal = N / C * T), requests per task and peak active tasks
(the emulator's counters), distinct TCP connections the server saw (the emulator's counters),
client CPU (``time.process_time``) and the server's CPU over the same interval (a
server near 1.0 CPU-second per second is saturated: the run then measures the server).
The sweep varies the keep-alive pool (``httpx.Limits``) and the transport of this
client, and jitters the floor's first poll, to find what costs on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import _common
import anyio
import httpx
from _common import Meter, Report, Server, median, ratio
from _floors import H11Floor, HttpxFloor
from oomol_connect_sdk import OomolConnectClient as OfficialClient

from oomol_connect_anyio import OomolConnectClient as OurClient


@dataclass
class Params:
    tasks: int
    seconds: float
    concurrency: int
    interval_ms: float

    @property
    def request(self) -> dict[str, Any]:
        return {"manifest": "demo::sleep", "inputValues": {"seconds": self.seconds}}

    @property
    def polling(self) -> dict[str, Any]:
        return {"interval_ms": self.interval_ms, "backoff_strategy": "fixed"}

    @property
    def ideal(self) -> float:
        return self.tasks / self.concurrency * self.seconds


@dataclass
class Variant:
    label: str
    backend: str
    run: Callable[[Server, Params], Awaitable[int]]
    notes: dict[str, Any] = field(default_factory=dict)


def _limits(spec: str | None) -> httpx.Limits | None:
    if spec is None:
        return None
    total, keepalive = (int(x) for x in spec.split("/"))
    return httpx.Limits(max_connections=total, max_keepalive_connections=keepalive)


class GatedClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose requests wait in an anyio limiter sized like its pool.

    httpcore's pool re-scans every queued request against every connection (and asks
    anyio for each socket's attributes) on each pool event: O(queue x connections) per
    request. Waiting here instead keeps httpcore's own queue empty.
    """

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(limits=httpx.Limits(max_connections=size,
                                             max_keepalive_connections=size), **kwargs)
        self._size = size
        self._gate: anyio.CapacityLimiter | None = None

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if self._gate is None:  # made inside the event loop, on first use
            self._gate = anyio.CapacityLimiter(self._size)
        async with self._gate:
            return await super().send(request, **kwargs)


def ours(limits: str | None = None,
         gate: int | None = None) -> Callable[[Server, Params], Awaitable[int]]:
    async def run(server: Server, params: Params) -> int:
        http_client: httpx.AsyncClient | None = None
        if gate is not None:
            http_client = GatedClient(gate, follow_redirects=True)
        elif limits is not None:
            http_client = httpx.AsyncClient(limits=_limits(limits), follow_redirects=True)
        async with OurClient(base_url=server.url, api_token=server.token,
                             http_client=http_client) as client:
            results = await client.tasks.run_many(
                [params.request] * params.tasks,  # type: ignore[list-item]
                max_concurrency=params.concurrency,
                polling_options=params.polling,  # type: ignore[arg-type]
            )
        if http_client is not None:
            await http_client.aclose()
        return sum(r["task"]["status"] == "completed" for r in results)

    return run


async def official(server: Server, params: Params) -> int:
    client = OfficialClient({"base_url": server.url, "api_token": server.token})
    semaphore = asyncio.Semaphore(params.concurrency)
    request = {"blockId": "demo::sleep", "inputValues": params.request["inputValues"]}

    async def one() -> Any:
        async with semaphore:
            return await client.tasks.run(request, params.polling)

    try:
        results = await asyncio.gather(*(one() for _ in range(params.tasks)))
    finally:
        await client.close()
    return sum(r["task"]["status"] == "completed" for r in results)


def floor(kind: str, jitter: bool = False) -> Callable[[Server, Params], Awaitable[int]]:
    async def run(server: Server, params: Params) -> int:
        client = H11Floor(server.url, server.token) if kind == "h11" else \
            HttpxFloor(server.url, server.token)
        limiter = anyio.CapacityLimiter(params.concurrency)
        interval = params.interval_ms / 1000
        done = 0

        async def one() -> None:
            nonlocal done
            async with limiter:
                if jitter:
                    task_id = await client.create("demo::sleep", {"seconds": params.seconds})
                    delay = random.uniform(0, interval)
                    while True:
                        await anyio.sleep(delay)
                        if (await client.get(task_id))["status"] in ("completed", "failed"):
                            break
                        delay = interval
                    await client.logs(task_id)
                    done += 1
                    return
                result = await client.run("demo::sleep", {"seconds": params.seconds}, interval)
                done += result["task"]["status"] == "completed"

        try:
            async with anyio.create_task_group() as group:
                for _ in range(params.tasks):
                    group.start_soon(one)
        finally:
            await client.aclose()
        return done

    return run


def variants(concurrency: int, sweep: bool) -> list[Variant]:
    c = concurrency
    found = [
        Variant("h11 floor/asyncio", "asyncio", floor("h11")),
        Variant("httpx floor/asyncio", "asyncio", floor("httpx")),
        Variant("ours/asyncio", "asyncio", ours()),
        Variant("ours/trio", "trio", ours()),
        Variant("official/asyncio", "asyncio", official),
    ]
    if sweep:
        found += [
            Variant("ours on httpx's pool 100/20/asyncio", "asyncio", ours("100/20")),
            Variant(f"ours on httpx's pool {c}/{c}/asyncio", "asyncio", ours(f"{c}/{c}")),
            Variant("ours on httpx's pool 100/20/trio", "trio", ours("100/20")),
            Variant("ours gated 4 (4/4)/asyncio", "asyncio", ours(gate=4)),
            Variant("httpx floor + jitter/asyncio", "asyncio", floor("httpx", jitter=True)),
        ]
    return found


async def _measure(variant: Variant, server: Server, params: Params) -> dict[str, Any]:
    gc.collect()
    server.reset_stats()
    with Meter(server) as meter:
        completed = await variant.run(server, params)
    stats = server.stats()
    requests = sum(stats["requests"].values())
    created = stats["tasks_created"] or 1
    polls = stats["requests"].get("GET /v1/tasks/{id}", 0)
    return {
        "completed": completed,
        "wall_s": meter.wall,
        "wall_vs_ideal": meter.wall / params.ideal,
        "requests_per_task": requests / created,
        "polls_per_task": polls / created,
        "peak_active": stats.get("peak_active"),
        "connections": stats.get("connections"),
        "client_cpu_s": meter.cpu,
        "client_cpu_per_request_ms": meter.cpu / max(1, requests) * 1000,
        "server_cpu_s": meter.server_cpu,
        "server_busy": None if meter.server_cpu is None else meter.server_cpu / meter.wall,
    }


def main(argv: list[str] | None = None) -> Report:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=0.2, help="task duration T")
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--interval-ms", type=float, default=50)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--no-sweep", dest="sweep", action="store_false",
                   help="only ours, official and the floors")
    p.add_argument("--only", help="comma-separated variant labels")
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.concurrency, args.rounds, args.sweep = 100, 50, 1, False
    params = Params(args.tasks, args.seconds, args.concurrency, args.interval_ms)
    chosen = variants(params.concurrency, args.sweep)
    if args.only:
        chosen = [v for v in chosen if v.label in args.only.split(",")]
    report = Report(
        "Fan-out (run_many vs gather + Semaphore)",
        _common.command(__file__, argv),
        {"tasks": params.tasks, "seconds": params.seconds, "concurrency": params.concurrency,
         "interval_ms": params.interval_ms, "rounds": args.rounds, "ideal_s": params.ideal},
    )
    results: dict[str, list[dict[str, Any]]] = {v.label: [] for v in chosen}
    with _common.start_server(args, max_finished=10_000) as server:
        report.notes.append(f"server: {_common.describe_server(server)}")
        for round_ in range(args.rounds):
            order = chosen[round_ % len(chosen):] + chosen[:round_ % len(chosen)]
            for variant in order:
                result = _common.run_on(variant.backend, _measure, variant, server, params)
                results[variant.label].append(result)
                print(f"{variant.label}: wall {result['wall_s']:.2f}s "
                      f"({result['wall_vs_ideal']:.2f}x ideal), "
                      f"{result['requests_per_task']:.1f} req/task, "
                      f"client CPU {result['client_cpu_s']:.2f}s, server CPU "
                      f"{result['server_cpu_s']}", file=sys.stderr, flush=True)

    def med(label: str, key: str) -> float | None:
        values = [r[key] for r in results[label] if r[key] is not None]
        return median(values) if values else None

    table = report.table(
        f"N={params.tasks} tasks of {params.seconds * 1000:g} ms, concurrency "
        f"{params.concurrency}, polling every {params.interval_ms:g} ms (fixed); "
        f"ideal {params.ideal:g} s; medians of {args.rounds} round(s)",
        ["variant", "wall s", "wall / ideal", "wall vs official", "req/task", "polls/task",
         "peak active", "TCP conns", "client CPU s", "client CPU ms/req", "server CPU s",
         "server busy"],
    )
    official_wall = med("official/asyncio", "wall_s") if "official/asyncio" in results else None
    for label in results:
        wall = med(label, "wall_s")
        table.add(label, wall, med(label, "wall_vs_ideal"), ratio(wall, official_wall),
                  med(label, "requests_per_task"), med(label, "polls_per_task"),
                  med(label, "peak_active"), med(label, "connections"),
                  med(label, "client_cpu_s"), med(label, "client_cpu_per_request_ms"),
                  med(label, "server_cpu_s"), med(label, "server_busy"))
        if any(r["completed"] != params.tasks for r in results[label]):
            report.notes.append(f"{label}: not every task completed: "
                                f"{[r['completed'] for r in results[label]]}")
    for backend in ("asyncio", "trio"):
        label = f"ours/{backend}"
        if label in results and official_wall:
            r = ratio(med(label, "wall_s"), official_wall)
            report.goal(f"{label}: wall time at most 0.6x the official client's",
                        f"{r:.2f}x", r is not None and r <= 0.6)
    report.raw = results
    report.notes.append(
        "'server busy' is the emulator's CPU seconds per wall second (1.0 = one core "
        "saturated); 'TCP conns' counts distinct client ports the server saw. 'ours' is the "
        "default client: requests built by the client and sent straight onto keep-alive "
        "lanes, bare httpcore connections (oomol_connect_anyio/_senders.py, _lanes.py); "
        "'on httpx's pool a/b' passes http_client=httpx.AsyncClient(limits="
        "httpx.Limits(max_connections=a, max_keepalive_connections=b)) instead (100/20 was "
        "the default before the lanes); 'gated n' is such a client (n/n) whose requests "
        "first wait in an anyio.CapacityLimiter(n) (GatedClient). A client that answers "
        "faster polls more "
        "often within the same fixed interval: compare 'client CPU ms/req' too.")
    report.finish(args)
    return report


if __name__ == "__main__":
    main()

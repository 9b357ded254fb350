"""Polling overhead: client CPU and wall time per status poll and per ``run()`` of an instant task.

    python benchmarks/bench_polling.py [--polls 2000] [--runs 500] [--rounds 3] [--quick]

Sequential requests against the emulator in its own process. Every variant does the
same requests (checked with the emulator's counters: ``req/op``):

* poll: ``GET /v1/tasks/{id}`` of a finished task, decoded;
* run:  ``tasks.run`` of ``demo::echo`` (finished at once): create, one status poll,
  one log fetch (3 requests for every variant).

Variants: this client on asyncio and trio (its default transport), the official
``oomol-connect-sdk``
(asyncio only), the plain-httpx floor (one shared ``AsyncClient``, no SDK logic) and
the raw h11 floor (h11 over an anyio socket). Rounds are interleaved, the median is
kept; ratios compare values measured in the same run, on the same event loop.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import _common
from _common import Meter, Report, Server, median, ratio
from _floors import H11Floor, HttpxFloor
from oomol_connect_sdk import OomolConnectClient as OfficialClient

from oomol_connect_anyio import OomolConnectClient as OurClient

ECHO = {"manifest": "demo::echo", "inputValues": {"text": "hello"}}
FLOOR_BY_BACKEND = {"asyncio": "httpx floor/asyncio", "trio": "httpx floor/trio"}


class Driver:
    """What a variant does: make a client, poll, run, close."""

    def __init__(self, name: str, backend: str) -> None:
        self.name = name
        self.backend = backend

    @property
    def label(self) -> str:
        return f"{self.name}/{self.backend}"

    async def open(self, server: Server) -> None:
        raise NotImplementedError

    async def create(self) -> str:
        raise NotImplementedError

    async def poll(self, task_id: str) -> Any:
        raise NotImplementedError

    async def run(self) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class Ours(Driver):
    async def open(self, server: Server) -> None:
        self.client = OurClient(base_url=server.url, api_token=server.token)

    async def create(self) -> str:
        return str((await self.client.tasks.create(ECHO))["id"])  # type: ignore[arg-type]

    async def poll(self, task_id: str) -> Any:
        return await self.client.tasks.get(task_id)

    async def run(self) -> Any:
        return await self.client.tasks.run(ECHO)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.client.aclose()


class Official(Driver):
    async def open(self, server: Server) -> None:
        self.client = OfficialClient({"base_url": server.url, "api_token": server.token})

    async def create(self) -> str:
        return str((await self.client.tasks.create(
            {"blockId": "demo::echo", "inputValues": ECHO["inputValues"]}))["task"]["id"])

    async def poll(self, task_id: str) -> Any:
        return await self.client.tasks.get(task_id)

    async def run(self) -> Any:
        return await self.client.tasks.run(
            {"blockId": "demo::echo", "inputValues": ECHO["inputValues"]})

    async def close(self) -> None:
        await self.client.close()


class Floor(Driver):
    def __init__(self, name: str, backend: str, kind: type[HttpxFloor] | type[H11Floor]) -> None:
        super().__init__(name, backend)
        self.kind = kind

    async def open(self, server: Server) -> None:
        self.floor = self.kind(server.url, server.token)

    async def create(self) -> str:
        return await self.floor.create("demo::echo", dict(ECHO["inputValues"]))  # type: ignore[call-overload]

    async def poll(self, task_id: str) -> Any:
        return await self.floor.get(task_id)

    async def run(self) -> Any:
        return await self.floor.run("demo::echo", dict(ECHO["inputValues"]), 0.05)  # type: ignore[call-overload]

    async def close(self) -> None:
        await self.floor.aclose()


def drivers() -> list[Driver]:
    return [
        Floor("h11 floor", "asyncio", H11Floor),
        Floor("h11 floor", "trio", H11Floor),
        Floor("httpx floor", "asyncio", HttpxFloor),
        Floor("httpx floor", "trio", HttpxFloor),
        Ours("ours", "asyncio"),
        Ours("ours", "trio"),
        Official("official", "asyncio"),
    ]


async def _batch(server: Server, count: int, op: Callable[[], Awaitable[Any]],
                 totals: dict[str, Any]) -> None:
    with Meter(server) as meter:
        for _ in range(count):
            await op()
    totals["cpu_ms"].append(meter.cpu / count * 1000)
    totals["wall_ms"].append(meter.wall / count * 1000)
    if meter.server_cpu is not None:
        totals["server_cpu_s"] += meter.server_cpu
    totals["ops"] += count


async def _requests_per_op(server: Server, op: Callable[[], Awaitable[Any]]) -> float:
    server.reset_stats()
    for _ in range(10):
        await op()
    return sum(server.stats()["requests"].values()) / 10


async def _init_cost(driver: Driver, server: Server) -> float:
    costs = []
    for _ in range(5):
        gc.collect()
        cpu0 = time.process_time()
        await driver.open(server)
        costs.append((time.process_time() - cpu0) * 1000)
        await driver.close()
    return median(costs)


async def session(group: list[Driver], server: Server, cycles: int, polls: int,
                  runs: int) -> dict[str, dict[str, Any]]:
    """One event loop: every driver of the group, batches interleaved cycle by cycle."""
    out: dict[str, dict[str, Any]] = {}
    ops: dict[str, dict[str, Callable[[], Awaitable[Any]]]] = {}
    for driver in group:
        init = await _init_cost(driver, server)
        await driver.open(server)
        task_id = await driver.create()
        ops[driver.label] = {"poll": partial(driver.poll, task_id), "run": driver.run}
        out[driver.label] = {"init_cpu_ms": init}
        for section, op in ops[driver.label].items():
            out[driver.label][section] = {
                "requests_per_op": await _requests_per_op(server, op),
                "cpu_ms": [], "wall_ms": [], "server_cpu_s": 0.0, "ops": 0}
            for _ in range(10):  # warm up
                await op()
    try:
        for cycle in range(cycles):
            order = group[cycle % len(group):] + group[:cycle % len(group)]
            for section, count in (("poll", polls), ("run", runs)):
                for driver in order:
                    gc.collect()
                    await _batch(server, count, ops[driver.label][section],
                                 out[driver.label][section])
    finally:
        for driver in group:
            await driver.close()
    return out


def main(argv: list[str] | None = None) -> Report:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=10, help="interleaved batches per variant")
    p.add_argument("--polls", type=int, default=100, help="status polls per batch")
    p.add_argument("--runs", type=int, default=20, help="runs per batch")
    p.add_argument("--rounds", type=int, default=1, help="asyncio then trio sessions, repeated")
    p.add_argument("--only", help="comma-separated variant names or labels (e.g. ours/asyncio)")
    args = p.parse_args(argv)
    if args.quick:
        args.cycles, args.polls, args.runs, args.rounds = 2, 20, 5, 1
    variants = drivers()
    if args.only:
        wanted = set(args.only.split(","))
        variants = [d for d in variants if d.label in wanted or d.name in wanted]
    report = Report(
        "Polling overhead (sequential, instant task)",
        _common.command(__file__, argv),
        {"cycles": args.cycles, "polls_per_batch": args.polls, "runs_per_batch": args.runs,
         "rounds": args.rounds},
    )
    results: dict[str, dict[str, Any]] = {}
    with _common.start_server(args) as server:
        report.notes.append(f"server: {_common.describe_server(server)}")
        for _ in range(args.rounds):
            for backend in ("asyncio", "trio"):
                group = [d for d in variants if d.backend == backend]
                if not group:
                    continue
                got = _common.run_on(backend, session, group, server, args.cycles, args.polls,
                                     args.runs)
                for label, result in got.items():
                    _merge(results, label, result)
                    print(f"{label}: poll {median(result['poll']['cpu_ms']):.3f} ms CPU, "
                          f"run {median(result['run']['cpu_ms']):.3f} ms CPU",
                          file=sys.stderr, flush=True)

    table = report.table(
        "Per operation: median over interleaved batches; client CPU = time.process_time of "
        "the client process, server CPU from /proc of the emulator process",
        ["variant", "poll CPU ms", "poll wall ms", "poll req/op", "poll srv CPU ms",
         "run CPU ms", "run wall ms", "run req/op", "run srv CPU ms", "client init CPU ms",
         "CPU vs httpx floor (poll / run)", "CPU vs official (poll / run)"],
    )
    summary: dict[str, dict[str, float | None]] = {}
    for label, result in results.items():
        row: dict[str, float | None] = {"init_cpu": median(result["init_cpu_ms"])}
        for section in ("poll", "run"):
            data = result[section]
            row[f"{section}_cpu"] = median(data["cpu_ms"])
            row[f"{section}_wall"] = median(data["wall_ms"])
            row[f"{section}_req"] = data["requests_per_op"]
            row[f"{section}_srv"] = (data["server_cpu_s"] / data["ops"] * 1000
                                     if server.pid is not None else None)
        summary[label] = row
    for label, row in summary.items():
        floor = summary.get(FLOOR_BY_BACKEND[label.split("/")[1]])
        official = summary.get("official/asyncio")
        for section in ("poll", "run"):
            if floor:
                row[f"{section}_vs_floor"] = ratio(row[f"{section}_cpu"], floor[f"{section}_cpu"])
            if official:
                row[f"{section}_vs_official"] = ratio(row[f"{section}_cpu"],
                                                      official[f"{section}_cpu"])
        table.add(
            label, row["poll_cpu"], row["poll_wall"], row["poll_req"], row["poll_srv"],
            row["run_cpu"], row["run_wall"], row["run_req"], row["run_srv"], row["init_cpu"],
            _pair(row.get("poll_vs_floor"), row.get("run_vs_floor")),
            _pair(row.get("poll_vs_official"), row.get("run_vs_official")),
        )
    report.raw = {"batches": results, "summary": summary}
    for backend in ("asyncio", "trio"):
        row = summary.get(f"ours/{backend}", {})
        if row.get("poll_vs_floor") is not None:
            worst = max(row["poll_vs_floor"] or 0, row["run_vs_floor"] or 0)
            report.goal(f"ours/{backend}: client CPU within 1.15x of the plain-httpx floor",
                        f"poll {row['poll_vs_floor']:.2f}x, run {row['run_vs_floor']:.2f}x",
                        worst <= 1.15)
        if row.get("poll_vs_official") is not None:
            worst = max(row["poll_vs_official"] or 0, row["run_vs_official"] or 0)
            report.goal(f"ours/{backend}: client CPU at most 0.8x the official client's",
                        f"poll {row['poll_vs_official']:.2f}x, run {row['run_vs_official']:.2f}x",
                        worst <= 0.8)
    report.notes.append(
        "Ratios: CPU per operation against the plain-httpx floor on the same event loop, and "
        "against the official client (asyncio only). "
        "'client init' is constructing and closing a client (httpx builds an SSL context "
        "per AsyncClient even for http:// URLs).")
    report.finish(args)
    return report


def _merge(results: dict[str, dict[str, Any]], label: str, result: dict[str, Any]) -> None:
    into = results.setdefault(label, {"init_cpu_ms": [], "poll": None, "run": None})
    into["init_cpu_ms"].append(result["init_cpu_ms"])
    for section in ("poll", "run"):
        if into[section] is None:
            into[section] = result[section]
        else:
            for key in ("cpu_ms", "wall_ms"):
                into[section][key] += result[section][key]
            for key in ("server_cpu_s", "ops"):
                into[section][key] += result[section][key]


def _pair(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a:.2f} / {b:.2f}"


if __name__ == "__main__":
    main()

"""Log-heavy task: bytes downloaded and client CPU for a task emitting many log lines.

    python benchmarks/bench_logs.py [--lines 10000] [--seconds 4] [--interval-ms 500] [--quick]

``demo::log-flood`` emits ``--lines`` lines over ``--seconds``. Both clients poll every
``--interval-ms`` (fixed) and follow the logs with ``on_log``; the Connect API has no
incremental log query, so following logs means downloading the whole list again on
every poll. The official client also downloads the whole list once more at the end of
``run``. Without ``on_log`` both fetch the logs once, at the end. Bytes are the
emulator's ``bytes_sent`` (response bodies) over the run; requests are its counters.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import _common
from _common import Meter, Report, Server, median
from oomol_connect_sdk import OomolConnectClient as OfficialClient

from oomol_connect_anyio import OomolConnectClient as OurClient

RunWith = Callable[[Server, dict[str, Any], dict[str, Any]], Awaitable[dict[str, Any]]]


def variant(run_with: RunWith, follow: bool) -> Callable[[Server, dict[str, Any]], Awaitable[int]]:
    """A benchmark body: fixed polling, ``on_log`` counting when ``follow``; returns logs seen."""

    async def run(server: Server, params: dict[str, Any]) -> int:
        seen = 0

        def on_log(log: Any) -> None:
            nonlocal seen
            seen += 1

        polling: dict[str, Any] = {"interval_ms": params["interval_ms"],
                                   "backoff_strategy": "fixed"}
        if follow:
            polling["on_log"] = on_log
        result = await run_with(server, params, polling)
        return seen if follow else len(result["logs"])

    return run


async def run_ours(
    server: Server, params: dict[str, Any], polling: dict[str, Any]
) -> dict[str, Any]:
    async with OurClient(base_url=server.url, api_token=server.token) as client:
        return dict(await client.tasks.run(params["request"], polling))  # type: ignore[arg-type]


async def run_official(
    server: Server, params: dict[str, Any], polling: dict[str, Any]
) -> dict[str, Any]:
    client = OfficialClient({"base_url": server.url, "api_token": server.token})
    request = {"blockId": params["request"]["manifest"],
               "inputValues": params["request"]["inputValues"]}
    try:
        return dict(await client.tasks.run(request, polling))
    finally:
        await client.close()


def ours(follow: bool) -> Callable[[Server, dict[str, Any]], Awaitable[int]]:
    return variant(run_ours, follow)


def official(follow: bool) -> Callable[[Server, dict[str, Any]], Awaitable[int]]:
    return variant(run_official, follow)


VARIANTS = [
    ("ours, on_log/asyncio", "asyncio", ours(True)),
    ("ours, on_log/trio", "trio", ours(True)),
    ("official, on_log/asyncio", "asyncio", official(True)),
    ("ours, logs at the end/asyncio", "asyncio", ours(False)),
    ("official, logs at the end/asyncio", "asyncio", official(False)),
]


async def _measure(fn: Callable[[Server, dict[str, Any]], Awaitable[int]], server: Server,
                   params: dict[str, Any]) -> dict[str, Any]:
    gc.collect()
    server.reset_stats()
    with Meter(server) as meter:
        logs = await fn(server, params)
    stats = server.stats()
    return {
        "logs_delivered": logs,
        "bytes": stats["bytes_sent"],
        "log_fetches": stats["requests"].get("GET /v1/tasks/{id}/logs", 0),
        "requests": sum(stats["requests"].values()),
        "client_cpu_s": meter.cpu,
        "wall_s": meter.wall,
        "server_cpu_s": meter.server_cpu,
    }


def main(argv: list[str] | None = None) -> Report:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--interval-ms", type=float, default=500)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args(argv)
    if args.quick:
        # Long enough beside a whole test run that on_log streams before the task ends.
        args.lines, args.seconds, args.interval_ms = 1000, 1.0, 50
    params = {
        "request": {"manifest": "demo::log-flood",
                    "inputValues": {"lines": args.lines, "seconds": args.seconds}},
        "interval_ms": args.interval_ms,
    }
    report = Report(
        "Log-heavy task (demo::log-flood)",
        _common.command(__file__, argv),
        {"lines": args.lines, "seconds": args.seconds, "interval_ms": args.interval_ms,
         "rounds": args.rounds},
    )
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in VARIANTS}
    with _common.start_server(args) as server:
        report.notes.append(f"server: {_common.describe_server(server)}")
        for _ in range(args.rounds):
            for label, backend, fn in VARIANTS:
                result = _common.run_on(backend, _measure, fn, server, params)
                results[label].append(result)
                print(f"{label}: {result}", file=sys.stderr, flush=True)

    def med(label: str, key: str) -> Any:
        values = [r[key] for r in results[label] if r[key] is not None]
        return median(values) if values else None

    table = report.table(
        f"{args.lines:,} log lines over {args.seconds:g} s, polling every "
        f"{args.interval_ms:g} ms; medians of {args.rounds} round(s)",
        ["variant", "logs delivered", "log fetches", "requests", "MB downloaded",
         "bytes vs official", "client CPU s", "CPU vs official", "wall s", "server CPU s"],
    )
    for label in results:
        official_label = ("official, on_log/asyncio" if "on_log" in label
                          else "official, logs at the end/asyncio")
        table.add(label, med(label, "logs_delivered"), med(label, "log_fetches"),
                  med(label, "requests"), med(label, "bytes") / 1e6,
                  _common.ratio(med(label, "bytes"), med(official_label, "bytes")),
                  med(label, "client_cpu_s"),
                  _common.ratio(med(label, "client_cpu_s"), med(official_label, "client_cpu_s")),
                  med(label, "wall_s"), med(label, "server_cpu_s"))
    report.raw = results
    report.notes.append(
        "Every on_log fetch downloads the whole list (the API has no incremental query); this "
        "client skips the official client's extra download at the end when the list it "
        "holds already ends with SessionFinished.")
    report.finish(args)
    return report


if __name__ == "__main__":
    main()

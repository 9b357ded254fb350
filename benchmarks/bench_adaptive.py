"""Adaptive polling: status polls per task and detection latency, against blind schedules.

    python benchmarks/bench_adaptive.py [--runs 240] [--warmup 80] [--concurrency 40]
                                        [--median 1.5] [--sigmas 0.3,0.1] [--seed 18] [--quick]

Each task is ``demo::sleep`` for a duration drawn from a seeded log-normal (median
``--median`` seconds, sigma each of ``--sigmas``); every schedule runs the very same
durations through ``run_many`` at concurrency ``--concurrency``:

* fixed 100 ms: ``{"interval_ms": 100, "backoff_strategy": "fixed"}``;
* default: no polling options (2 s, x1.5, capped at 10 s: the official client's);
* adaptive, cold: ``{"interval_ms": 100, "backoff_strategy": "adaptive"}`` on a fresh client
  (its first waits poll exponentially from 100 ms until 8 runs have completed);
* adaptive, warm: the same, measured after a warm-up batch of ``--warmup`` runs (other
  durations from the same distribution) on the same client.

Reported per schedule: status polls per task (from each run's ``WaitStats``, checked
against the emulator's count of ``GET /v1/tasks/{id}``), mean / p50 / p95 detection latency
(first observation of the terminal status minus the server's completion time, from
``WaitStats``) and the product of mean polls and mean latency. Every task must complete.
"""

from __future__ import annotations

import math
import random
import sys
from typing import Any

import _common
from _common import Report, Server, median, ratio

from oomol_connect_anyio import OomolConnectClient

FIXED = {"interval_ms": 100, "backoff_strategy": "fixed"}
ADAPTIVE = {"interval_ms": 100, "backoff_strategy": "adaptive"}
POLL_ROUTE = "GET /v1/tasks/{id}"


def draw(rng: random.Random, count: int, median_s: float, sigma: float) -> list[float]:
    """``count`` log-normal durations (seconds), rounded to the millisecond."""
    return [round(median_s * math.exp(rng.gauss(0.0, sigma)), 3) for _ in range(count)]


def requests(durations: list[float]) -> list[dict[str, Any]]:
    return [{"manifest": "demo::sleep", "inputValues": {"seconds": d}} for d in durations]


async def batch(client: OomolConnectClient, durations: list[float], polling: dict[str, Any] | None,
                concurrency: int) -> list[dict[str, Any]]:
    """Run every duration; return each run's ``WaitStats``."""
    results = await client.tasks.run_many(
        requests(durations),  # type: ignore[arg-type]
        max_concurrency=concurrency,
        polling_options=polling,  # type: ignore[arg-type]
    )
    if any(r["task"]["status"] != "completed" for r in results):
        raise RuntimeError("a run did not complete")
    return [dict(r["stats"]) for r in results]


async def measure(server: Server, durations: list[float], warmup: list[float] | None,
                  polling: dict[str, Any] | None, concurrency: int) -> dict[str, Any]:
    """One schedule on a fresh client: the optional warm-up, then the measured batch."""
    async with OomolConnectClient(base_url=server.url, api_token=server.token) as client:
        if warmup:
            await batch(client, warmup, polling, concurrency)
        server.reset_stats()
        stats = await batch(client, durations, polling, concurrency)
        counted = server.stats()
        model = client.polling_model.stats()
    polls = [s["status_polls"] for s in stats]
    latencies = sorted(float(s["detection_latency_ms"]) for s in stats)
    server_polls = counted["requests"].get(POLL_ROUTE, 0)
    mean_polls = sum(polls) / len(polls)
    mean_latency = sum(latencies) / len(latencies)
    return {
        "runs": len(stats),
        "polls_per_task": mean_polls,
        "server_polls_per_task": server_polls / len(stats),
        "mean_ms": mean_latency,
        "p50_ms": median(latencies),
        "p95_ms": latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)],
        "product_s": mean_polls * mean_latency / 1000,
        "left_running": sum(n for status, n in counted["tasks_by_status"].items()
                            if status not in ("completed", "failed", "stopped")),
        "model": model,
    }


SCHEDULES: list[tuple[str, dict[str, Any] | None, bool]] = [
    ("fixed 100 ms", FIXED, False),
    ("default (2 s, x1.5, cap 10 s)", None, False),
    ("adaptive, cold", ADAPTIVE, False),
    ("adaptive, warm", ADAPTIVE, True),
]


async def session(server: Server, sigmas: list[float], args: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for number, sigma in enumerate(sigmas):
        rng = random.Random(args.seed * 1000 + number)
        durations = draw(rng, args.runs, args.median, sigma)
        warmup = draw(rng, args.warmup, args.median, sigma)
        for name, polling, warm in SCHEDULES:
            result = await measure(server, durations, warmup if warm else None, polling,
                                   args.concurrency)
            out[f"{name}, sigma {sigma:g}"] = {"sigma": sigma, "schedule": name, **result}
            print(f"sigma {sigma:g} {name}: {result['polls_per_task']:.2f} polls/task, "
                  f"mean {result['mean_ms']:.0f} ms", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> Report:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=240, help="measured runs per schedule")
    p.add_argument("--warmup", type=int, default=80, help="warm-up runs of 'adaptive, warm'")
    p.add_argument("--concurrency", type=int, default=40)
    p.add_argument("--median", type=float, default=1.5, help="median duration, seconds")
    p.add_argument("--sigmas", default="0.3,0.1", help="log-normal sigmas, comma-separated")
    p.add_argument("--seed", type=int, default=18)
    p.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.warmup, args.concurrency, args.median = 40, 16, 20, 0.3
    sigmas = [float(s) for s in args.sigmas.split(",")]
    report = Report(
        "Adaptive polling (log-normal durations, run_many)",
        _common.command(__file__, argv),
        {"runs": args.runs, "warmup": args.warmup, "concurrency": args.concurrency,
         "median_s": args.median, "sigmas": sigmas, "seed": args.seed, "backend": args.backend},
    )
    with _common.start_server(args) as server:
        report.notes.append(f"server: {_common.describe_server(server)}")
        results = _common.run_on(args.backend, session, server, sigmas, args)
    table = report.table(
        "Per task, on the same durations for every schedule: status polls (WaitStats; the "
        "server's count agrees) and detection latency (server completion to first sight)",
        ["schedule", "sigma", "polls/task", "server polls/task", "mean ms", "p50 ms", "p95 ms",
         "polls x mean s", "vs fixed 100 ms", "left running"],
    )
    for result in results.values():
        fixed = results[f"fixed 100 ms, sigma {result['sigma']:g}"]
        result["vs_fixed"] = ratio(result["product_s"], fixed["product_s"])
        table.add(result["schedule"], result["sigma"], result["polls_per_task"],
                  result["server_polls_per_task"], result["mean_ms"], result["p50_ms"],
                  result["p95_ms"], result["product_s"], result["vs_fixed"],
                  result["left_running"])
    report.raw = {"results": results}
    limits = {0.3: 0.75, 0.1: 0.35}
    for sigma in sigmas:
        warm = results[f"adaptive, warm, sigma {sigma:g}"]
        default = results[f"default (2 s, x1.5, cap 10 s), sigma {sigma:g}"]
        if sigma in limits:
            report.goal(f"sigma {sigma:g}: adaptive (warm) polls x latency <= {limits[sigma]}x "
                        "fixed 100 ms's", f"{warm['vs_fixed']:.2f}x",
                        warm["vs_fixed"] is not None and warm["vs_fixed"] <= limits[sigma])
        share = ratio(warm["mean_ms"], default["mean_ms"])
        report.goal(f"sigma {sigma:g}: adaptive (warm) mean latency <= 0.12x the default's",
                    f"{warm['mean_ms']:.0f} ms vs {default['mean_ms']:.0f} ms "
                    f"({share or float('nan'):.3f}x)", share is not None and share <= 0.12)
    for sigma in sigmas:
        fixed = results[f"fixed 100 ms, sigma {sigma:g}"]
        report.notes.append(
            f"sigma {sigma:g}: fixed 100 ms polling would see about 50 ms on an idle machine, "
            f"{fixed['mean_ms']:.0f} ms here; the difference (the request's round trip and the "
            "event loop's lag under load, on the client and the server) is paid by every "
            "schedule, on top of the schedule's own latency.")
    report.notes.append(
        "Adaptive aims at the mean latency of fixed polling every interval_ms (half an "
        "interval) and places its polls by the square root of the learned hazard rate; "
        "'cold' includes the exponential waits until its first 8 completions (at sigma 0.1 "
        "the whole first wave ends within one exponential interval) and a first learned "
        "schedule built from the shortest runs. Detection latency includes the request's "
        "round trip and the server's millisecond stamps.")
    report.finish(args)
    return report


if __name__ == "__main__":
    main()

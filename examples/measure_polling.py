"""Measure what polling costs: the same batch under three polling settings.

Every run's ``stats`` (polls, requests, bytes, detection latency) and the
client's running totals (``client.metrics``) are read back and printed as a
table; nothing is timed from outside.
"""

from __future__ import annotations

import statistics

import anyio
from _connect import connect

from oomol_connect_anyio import PollingOptions, RunResult

SETTINGS: dict[str, PollingOptions] = {
    "fixed 20 ms": {"interval_ms": 20, "backoff_strategy": "fixed"},
    "fixed 100 ms": {"interval_ms": 100, "backoff_strategy": "fixed"},
    "exp 20 ms x2": {"interval_ms": 20, "backoff_factor": 2, "max_interval_ms": 400},
}
JOBS = [{"manifest": "demo::sleep", "inputValues": {"seconds": 0.3}} for _ in range(20)]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def row(name: str, results: list[RunResult], requests: int, wall: float) -> str:
    stats = [r["stats"] for r in results if "stats" in r]
    latency = [s["detection_latency_ms"] or 0.0 for s in stats]
    polls = statistics.mean(s["status_polls"] for s in stats)
    kib = sum(s["bytes_received"] for s in stats) / 1024 / len(stats)
    return (
        f"{name:<14} {polls:>10.1f} {requests / len(stats):>13.1f} {kib:>11.1f} "
        f"{percentile(latency, 0.5):>12.1f} {percentile(latency, 0.95):>12.1f} {wall:>8.2f}"
    )


async def main() -> None:
    print(
        f"{'polling':<14} {'polls/task':>10} {'requests/task':>13} {'KiB/task':>11} "
        f"{'detect p50 ms':>12} {'detect p95 ms':>12} {'wall s':>8}"
    )
    async with connect() as client:
        for name, polling in SETTINGS.items():
            before = client.metrics
            started = anyio.current_time()
            results = await client.tasks.run_many(JOBS, max_concurrency=20, polling_options=polling)
            wall = anyio.current_time() - started
            after = client.metrics
            requests = sum(sum(c.values()) for c in after["requests"].values()) - sum(
                sum(c.values()) for c in before["requests"].values()
            )
            print(row(name, results, requests, wall))


if __name__ == "__main__":
    anyio.run(main)

"""Scale: peak RSS and wall time for many instant tasks through ``run_many`` at concurrency 64.

    python benchmarks/bench_scale.py [--tasks 100000] [--concurrency 64] [--quick]

Each variant runs in a fresh worker process (peak RSS is ``resource.getrusage``'s
``ru_maxrss`` of that process, so variants cannot inflate each other's peak):

* ``run_many``: ``await client.tasks.run_many(requests, max_concurrency=64)``, which keeps
  every ``RunResult`` (task, logs, result, stats) until it returns, as its API promises;
* ``run_many_iter``: ``async with client.tasks.run_many_iter(...)``, outcomes consumed
  and dropped as they come (the streaming form, for batches that do not fit in memory);
* the official client: ``asyncio.gather`` of one ``run`` per task behind a
  ``Semaphore(64)``, every coroutine created up front, as its README suggests.

Requests are a lazy generator for the streaming form and a list otherwise.
The emulator (another process, not counted) keeps at most 1,000 finished tasks.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import _common
from _common import Report, Server, current_rss_mb, peak_rss_mb

ECHO = {"manifest": "demo::echo", "inputValues": {"text": "hello"}}
VARIANTS = {
    "ours run_many/asyncio": ("asyncio", "run_many"),
    "ours run_many/trio": ("trio", "run_many"),
    "ours run_many_iter/asyncio": ("asyncio", "run_many_iter"),
    "ours run_many_iter/trio": ("trio", "run_many_iter"),
    "official gather+Semaphore/asyncio": ("asyncio", "official"),
}


def _requests(count: int) -> Iterator[dict[str, Any]]:
    for _ in range(count):
        yield ECHO


class Progress:
    """Tasks done so far, and (done, RSS MB) samples taken by a thread every 0.2 s."""

    def __init__(self) -> None:
        self.done = 0
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append((self.done, current_rss_mb()))

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def slope_kb_per_task(self) -> float | None:
        """Least-squares RSS growth per task over the second half of the batch."""
        if not self.samples:
            return None
        half = self.samples[-1][0] / 2
        points = [(d, r) for d, r in self.samples if d >= half]
        if len(points) < 3 or points[-1][0] == points[0][0]:
            return None
        mean_d = sum(d for d, _ in points) / len(points)
        mean_r = sum(r for _, r in points) / len(points)
        var = sum((d - mean_d) ** 2 for d, _ in points)
        cov = sum((d - mean_d) * (r - mean_r) for d, r in points)
        return cov / var * 1024


PROGRESS = Progress()


async def _ours(url: str, token: str | None, mode: str, tasks: int, concurrency: int) -> int:
    from oomol_connect_anyio import OomolConnectClient

    async with OomolConnectClient(base_url=url, api_token=token) as client:
        if mode == "run_many":
            def count(index: int, outcome: Any) -> None:
                PROGRESS.done += 1

            results = await client.tasks.run_many(
                [ECHO] * tasks, max_concurrency=concurrency,  # type: ignore[list-item]
                on_result=count)
            return sum(r["task"]["status"] == "completed" for r in results)
        done = 0
        async with client.tasks.run_many_iter(
                _requests(tasks), max_concurrency=concurrency) as outcomes:  # type: ignore[arg-type]
            async for _, outcome in outcomes:
                done += outcome["task"]["status"] == "completed"
                PROGRESS.done += 1
        return done


async def _official(url: str, token: str | None, tasks: int, concurrency: int) -> int:
    from oomol_connect_sdk import OomolConnectClient

    client = OomolConnectClient({"base_url": url, "api_token": token})
    semaphore = asyncio.Semaphore(concurrency)
    request = {"blockId": "demo::echo", "inputValues": ECHO["inputValues"]}

    async def one() -> Any:
        async with semaphore:
            result = await client.tasks.run(request)
        PROGRESS.done += 1
        return result

    try:
        results = await asyncio.gather(*(one() for _ in range(tasks)))
    finally:
        await client.close()
    return sum(r["task"]["status"] == "completed" for r in results)


def worker(label: str, url: str, token: str | None, tasks: int, concurrency: int) -> None:
    """Run one variant in this (fresh) process and print its numbers as JSON."""
    import anyio

    backend, mode = VARIANTS[label]
    import httpx  # noqa: F401  (imported before the baseline, as every variant needs it)

    from oomol_connect_anyio import OomolConnectClient  # noqa: F401

    if mode == "official":
        import oomol_connect_sdk  # noqa: F401
    if backend == "trio":
        import trio  # noqa: F401
    gc.collect()
    baseline = current_rss_mb()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with PROGRESS:
        if mode == "official":
            done = asyncio.run(_official(url, token, tasks, concurrency))
        else:
            done = anyio.run(_ours, url, token, mode, tasks, concurrency, backend=backend)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(json.dumps({"completed": done, "wall_s": wall, "cpu_s": cpu,
                      "baseline_rss_mb": baseline, "peak_rss_mb": peak_rss_mb(),
                      "slope_kb_per_task": PROGRESS.slope_kb_per_task()}))


def _spawn(label: str, server: Server, tasks: int, concurrency: int) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--worker", label, "--base-url", server.url,
            "--tasks", str(tasks), "--concurrency", str(concurrency)]
    if server.token:
        argv += ["--token", server.token]
    server.reset_stats()
    cpu0 = server.cpu()
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    cpu1 = server.cpu()
    stats = server.stats()
    result["requests_per_task"] = sum(stats["requests"].values()) / max(1, tasks)
    result["server_cpu_s"] = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return result


def _projection(result: dict[str, Any], tasks: int) -> float:
    """Peak RSS at 100,000 tasks: measured, or extended along the second-half slope."""
    if tasks >= 100_000:
        return float(result["peak_rss_mb"])
    slope = max(0.0, result["slope_kb_per_task"] or 0.0)
    return float(result["peak_rss_mb"] + slope * (100_000 - tasks) / 1024)


def main(argv: list[str] | None = None) -> Report | None:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--only", help="comma-separated variant labels")
    p.add_argument("--worker", help=None)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.base_url, args.token, args.tasks, args.concurrency)
        return None
    labels = list(VARIANTS)
    if args.quick:  # 2,000 tasks, two variants: a smoke test, not a measurement
        args.tasks = 2_000
        labels = ["ours run_many/asyncio", "ours run_many_iter/asyncio"]
    if args.only:
        labels = [label for label in labels if label in args.only.split(",")]
    report = Report(
        "Scale (instant tasks through run_many, concurrency 64)",
        _common.command(__file__, argv),
        {"tasks": args.tasks, "concurrency": args.concurrency},
    )
    results: dict[str, dict[str, Any]] = {}
    with _common.start_server(args, max_finished=1_000) as server:
        report.notes.append(f"server: {_common.describe_server(server)}")
        for label in labels:
            results[label] = _spawn(label, server, args.tasks, args.concurrency)
            print(f"{label}: {results[label]}", file=sys.stderr, flush=True)
    table = report.table(
        f"{args.tasks:,} instant tasks (demo::echo), concurrency {args.concurrency}, "
        "each variant in a fresh process",
        ["variant", "peak RSS MB", "RSS growth MB", "KB/task (2nd half)",
         "projected peak MB @100k", "wall s", "tasks/s", "client CPU s", "CPU ms/task",
         "req/task", "server CPU s"],
    )
    for label, r in results.items():
        r["projected_100k_mb"] = _projection(r, args.tasks)
        table.add(label, r["peak_rss_mb"], r["peak_rss_mb"] - r["baseline_rss_mb"],
                  r["slope_kb_per_task"], r["projected_100k_mb"], r["wall_s"],
                  args.tasks / r["wall_s"], r["cpu_s"], r["cpu_s"] / args.tasks * 1000,
                  r["requests_per_task"], r["server_cpu_s"])
    for label in ("ours run_many/asyncio", "ours run_many_iter/asyncio"):
        if label in results:
            r = results[label]
            peak = r["peak_rss_mb"] if args.tasks >= 100_000 else r["projected_100k_mb"]
            report.goal(f"{label}: peak RSS < 150 MB for 100,000 tasks",
                        f"{r['peak_rss_mb']:.0f} MB for {args.tasks:,}"
                        + ("" if args.tasks >= 100_000 else
                           f", projected {peak:.0f} MB for 100,000"),
                        peak < 150)
    report.raw = results
    report.notes.append(
        "'RSS growth' = peak RSS minus the RSS after imports. 'KB/task' is the least-squares "
        "slope of RSS against tasks done over the second half of the batch (sampled every "
        "0.2 s); for fewer than 100,000 tasks the 100,000-task peak is projected along it. "
        "run_many keeps every RunResult until it returns (its API), run_many_iter none.")
    report.finish(args)
    return report


if __name__ == "__main__":
    main()

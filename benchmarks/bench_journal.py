"""What a journal costs: ``run_many_iter`` throughput with and without ``journal=``.

    python benchmarks/bench_journal.py [--tasks 2000] [--concurrency 64] [--rounds 3] [--quick]

The same batch of instant ``demo::echo`` runs against the emulator in its own process,
with and without a journal (three lines and one write each per run, fsyncs grouped),
interleaved round by round on each backend; the median of each is kept. The goal is a
throughput within 5% of the journal-free batch's.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
from _common import Report, Server, median, ratio

from oomol_connect_anyio import OomolConnectClient


async def batch(server: Server, tasks: int, concurrency: int, journal: Path | None) -> float:
    """Tasks per second of one batch; every outcome is checked."""
    requests = ({"manifest": "demo::echo", "inputValues": {"n": i}} for i in range(tasks))
    polling: Any = {"interval_ms": 20, "backoff_strategy": "fixed"}
    async with OomolConnectClient(base_url=server.url, api_token=server.token) as client:
        started = time.perf_counter()
        seen = 0
        async with client.tasks.run_many_iter(
            requests, max_concurrency=concurrency, polling_options=polling, journal=journal
        ) as outcomes:
            async for index, outcome in outcomes:
                assert outcome["result"] == {"n": index}, outcome
                seen += 1
        elapsed = time.perf_counter() - started
    assert seen == tasks
    return tasks / elapsed


async def session(server: Server, tasks: int, concurrency: int, folder: str) -> dict[str, float]:
    path = Path(folder) / f"batch-{os.getpid()}-{time.monotonic_ns()}.journal"
    await batch(server, min(tasks, 100), concurrency, None)  # warm up connections and caches
    plain = await batch(server, tasks, concurrency, None)
    journaled = await batch(server, tasks, concurrency, path)
    lines = len(path.read_bytes().splitlines())
    assert lines == 1 + 3 * tasks, lines  # the header, then intent, task, outcome per run
    path.unlink()
    return {"plain": plain, "journal": journaled}


def main(argv: list[str] | None = None) -> Report:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.rounds = 200, 1
    report = Report(
        "Journal overhead (run_many_iter of instant tasks)",
        _common.command(__file__, argv),
        {"tasks": args.tasks, "concurrency": args.concurrency, "rounds": args.rounds},
    )
    results: dict[str, dict[str, list[float]]] = {}
    with _common.start_server(args) as server, tempfile.TemporaryDirectory() as folder:
        report.notes.append(f"server: {_common.describe_server(server)}")
        for _ in range(args.rounds):
            for backend in ("asyncio", "trio"):
                got = _common.run_on(
                    backend, session, server, args.tasks, args.concurrency, folder
                )
                into = results.setdefault(backend, {"plain": [], "journal": []})
                for key, value in got.items():
                    into[key].append(value)
                print(f"{backend}: {got}", file=sys.stderr, flush=True)
    table = report.table(
        "Tasks per second, median of the rounds (same server, same run)",
        ["backend", "without journal", "with journal", "throughput ratio"],
    )
    for backend, runs in results.items():
        plain, journaled = median(runs["plain"]), median(runs["journal"])
        share = ratio(journaled, plain)
        table.add(backend, plain, journaled, share)
        report.goal(
            f"{backend}: a journal costs at most 5% of run_many_iter's throughput",
            "-" if share is None else f"{share:.3f}x",
            None if share is None else share >= 0.95,
        )
    report.raw = results
    report.notes.append(
        "Each run writes three journal lines (intent before the create, task id, outcome), "
        "each one write(2); fsyncs are grouped (every 50 ms or 100 lines).")
    report.finish(args)
    return report


if __name__ == "__main__":
    main()

"""What a journal costs: ``run_many_iter`` throughput with and without ``journal=``.

    python benchmarks/bench_journal.py [--tasks 2000] [--concurrency 64] [--rounds 4] [--quick]

The same batch of instant ``demo::echo`` runs against the emulator in its own process,
with and without a journal (three lines, one write(2) each, per run; fsyncs grouped),
two of each per round in ABBA order on each backend; the median of the rounds' ratios is
kept. The goal is a throughput within 5% of the journal-free batch's.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
from _common import Report, Server, median

from oomol_connect_anyio import Journal, OomolConnectClient


class TimedJournal(Journal):
    """A journal that times its own three calls per run, in place (microseconds, summed)."""

    spent: dict[str, float]

    def record_intent(self, index: int, digest: str, server: str | None = None) -> Any:
        started = time.perf_counter()
        try:
            return super().record_intent(index, digest, server)
        finally:
            self._spent("intent", started)

    def record_task(self, index: int, task_id: str, server: str | None = None) -> None:
        started = time.perf_counter()
        super().record_task(index, task_id, server)
        self._spent("task", started)

    def record_outcome(self, index: int, outcome: Any) -> None:
        started = time.perf_counter()
        super().record_outcome(index, outcome)
        self._spent("outcome", started)

    def _spent(self, kind: str, started: float) -> None:
        spent = self.__dict__.setdefault("spent", {})
        spent[kind] = spent.get(kind, 0.0) + (time.perf_counter() - started) * 1e6


async def batch(
    server: Server, tasks: int, concurrency: int, journal: Path | Journal | None
) -> tuple[float, float]:
    """Tasks per second of one batch, and the client's CPU microseconds per run (every
    thread of this process); every outcome is checked."""
    requests = ({"manifest": "demo::echo", "inputValues": {"n": i}} for i in range(tasks))
    polling: Any = {"interval_ms": 20, "backoff_strategy": "fixed"}
    async with OomolConnectClient(base_url=server.url, api_token=server.token) as client:
        started, cpu = time.perf_counter(), time.process_time()
        seen = 0
        async with client.tasks.run_many_iter(
            requests, max_concurrency=concurrency, polling_options=polling, journal=journal
        ) as outcomes:
            async for index, outcome in outcomes:
                assert outcome["result"] == {"n": index}, outcome
                seen += 1
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert seen == tasks
    return tasks / elapsed, cpu / tasks * 1e6


async def session(
    server: Server, tasks: int, concurrency: int, folder: str, journal_first: bool, timed: bool
) -> dict[str, list[float]]:
    """Two batches of each kind, in the order ABBA (or BAAB): drift over the session
    weighs on both kinds alike. ``timed``: then one more, timing the journal's calls."""
    await batch(server, min(tasks, 100), concurrency, None)  # warm up connections and caches
    order = ["journal", "plain", "plain", "journal"] if journal_first else [
        "plain", "journal", "journal", "plain"]
    got: dict[str, list[float]] = {"plain": [], "journal": [], "plain cpu": [], "journal cpu": []}
    for kind in order:
        path = Path(folder) / f"batch-{os.getpid()}-{time.monotonic_ns()}.journal"
        journal = path if kind == "journal" else None
        rate, cpu = await batch(server, tasks, concurrency, journal)
        got[kind].append(rate)
        got[f"{kind} cpu"].append(cpu)
        if kind == "journal":
            lines = len(path.read_bytes().splitlines())
            assert lines == 1 + 3 * tasks, lines  # the header, then intent, task, outcome per run
            path.unlink()
    if timed:
        path = Path(folder) / f"timed-{os.getpid()}.journal"
        async with TimedJournal.open(path) as timed_journal:
            await batch(server, tasks, concurrency, timed_journal)
        got.update({kind: [spent / tasks] for kind, spent in timed_journal.spent.items()})
        path.unlink()
    return got


def main(argv: list[str] | None = None) -> Report:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.rounds = 50, 1
    report = Report(
        "Journal overhead (run_many_iter of instant tasks)",
        _common.command(__file__, argv),
        {"tasks": args.tasks, "concurrency": args.concurrency, "rounds": args.rounds},
    )
    results: dict[str, dict[str, list[float]]] = {}
    # A bounded server: one that kept every task would slow down batch after batch.
    with _common.start_server(args, max_finished=1_000) as server, \
            tempfile.TemporaryDirectory() as folder:
        report.notes.append(f"server: {_common.describe_server(server)}")
        for round_ in range(args.rounds):
            for backend in ("asyncio", "trio"):
                got = _common.run_on(
                    backend, session, server, args.tasks, args.concurrency, folder,
                    round_ % 2 == 1, round_ == 0,
                )
                into = results.setdefault(backend, {"ratio": []})
                for key, values in got.items():
                    into.setdefault(key, []).extend(values)
                into["ratio"].append(sum(got["journal"]) / sum(got["plain"]))
                print(f"{backend}: {got}", file=sys.stderr, flush=True)
    table = report.table(
        "Tasks per second and client CPU per run, medians of the batches; throughput ratio, "
        "median of the rounds' (same server, same run)",
        ["backend", "without journal", "with journal", "throughput ratio",
         "CPU µs/run without", "CPU µs/run with"],
    )
    for backend, runs in results.items():
        plain, journaled = median(runs["plain"]), median(runs["journal"])
        share = median(runs["ratio"])
        table.add(backend, plain, journaled, share, median(runs["plain cpu"]),
                  median(runs["journal cpu"]))
        report.goal(
            f"{backend}: a journal costs at most 5% of run_many_iter's throughput",
            f"{share:.3f}x",
            share >= 0.95,
        )
        if len(runs["ratio"]) >= 4:  # how far one round's ratio strays: the noise to weigh
            low, _, high = statistics.quantiles(runs["ratio"], n=4)
            report.notes.append(
                f"{backend}: rounds' ratios from {min(runs['ratio']):.3f}x to "
                f"{max(runs['ratio']):.3f}x, the middle half {low:.3f}x-{high:.3f}x"
            )
    lines = report.table(
        "The journal's own calls per run, timed in place (one extra journaled batch per "
        "backend): microseconds, and their share of a plain run's client CPU",
        ["backend", "intent", "task", "outcome", "all three", "share"],
    )
    for backend, runs in results.items():
        calls = [runs[kind][0] for kind in ("intent", "task", "outcome")]
        lines.add(backend, *calls, sum(calls), sum(calls) / median(runs["plain cpu"]))
    report.raw = results
    report.notes.append(
        "Each run writes three journal lines (intent before the create, task id, outcome), "
        "each one write(2); a thread of the journal's own fsyncs every half second. Each "
        "round runs two batches of each kind, ABBA or BAAB; its ratio is the journal's two "
        "batches' throughput over the two plain ones'.")
    report.finish(args)
    return report


if __name__ == "__main__":
    main()

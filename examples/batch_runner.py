"""Run a batch of tasks from JSON lines, a bounded number at a time; write outcomes as JSON lines.

    python examples/batch_runner.py                      # 20 generated demo jobs
    python examples/batch_runner.py jobs.jsonl -c 4 -o outcomes.jsonl
    python examples/batch_runner.py - < jobs.jsonl        # read stdin

Each input line is a create request: {"manifest": "demo::upper", "inputValues": {"text": "hi"}}.
Each output line, written as its run ends, is what ``oomol-connect run-many`` writes:
{"index", "ok": true, "task_id", "result"} or {"index", "ok": false, "error", "error_type",
"task_id" (when a task was created)}; "index" counts the jobs (the non-blank lines) from 0, and
each line is compact JSON, as the CLI's. Every job runs; the exit status is 3 when any of them
failed, as the CLI's. (Unlike the CLI, which refuses a jobs file with a bad line before running
anything, a bad line here is that job's failure.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any, TextIO, cast

import anyio
from _connect import POLLING, connect

from oomol_connect_anyio import CreateTaskRequest


def demo_jobs(count: int) -> list[str]:
    """Mostly quick jobs, one slower, and every seventh one failing on purpose."""
    jobs: list[dict[str, Any]] = []
    for i in range(count):
        if i % 7 == 6:
            jobs.append({"manifest": "demo::fail", "inputValues": {"message": f"job {i} failed"}})
        elif i % 5 == 4:
            jobs.append({"manifest": "demo::sleep", "inputValues": {"seconds": 0.2}})
        else:
            jobs.append({"manifest": "demo::upper", "inputValues": {"text": f"job {i}"}})
    return [json.dumps(job) for job in jobs]


def failure(
    index: int, error: str, error_type: str, task_id: str | None = None
) -> dict[str, Any]:
    """A failed job's outcome line; ``task_id`` when its task was created."""
    line = {"index": index, "ok": False, "error": error, "error_type": error_type}
    return line if task_id is None else {**line, "task_id": task_id}


def outcome_line(outcome: dict[str, Any]) -> str:
    """One compact JSON line, as the CLI writes it."""
    return json.dumps(outcome, separators=(",", ":"), ensure_ascii=False, default=str)


def parse(lines: Iterable[str]) -> tuple[list[tuple[int, CreateTaskRequest]], list[dict[str, Any]]]:
    """The (job index, request) pairs to run, and the outcomes of unreadable lines."""
    requests: list[tuple[int, CreateTaskRequest]] = []
    unreadable: list[dict[str, Any]] = []
    jobs = (line for line in lines if line.strip())  # blank lines are no jobs, as in the CLI
    for index, line in enumerate(jobs):
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            unreadable.append(failure(index, f"invalid JSON: {exc}", "ValueError"))
            continue
        if isinstance(request, dict):
            requests.append((index, cast(CreateTaskRequest, request)))  # run_many checks the rest
        else:
            unreadable.append(failure(index, "not a JSON object", "ValueError"))
    return requests, unreadable


async def run_batch(lines: list[str], concurrency: int, out: TextIO) -> int:
    """Run every line; write one outcome line per input line; return how many failed."""
    requests, outcomes = parse(lines)
    for outcome in outcomes:
        print(outcome_line(outcome), file=out, flush=True)
    failed = len(outcomes)

    def write(position: int, outcome: Any) -> None:
        nonlocal failed
        index = requests[position][0]
        if isinstance(outcome, Exception):
            failed += 1
            record = failure(
                index, str(outcome), type(outcome).__name__, getattr(outcome, "task_id", None)
            )
        else:
            record = {
                "index": index,
                "ok": True,
                "task_id": outcome["task_id"],
                "result": outcome["result"],
            }
        print(outcome_line(record), file=out, flush=True)

    async with connect() as client:
        # A generator (not a list): a malformed request fails alone instead of the whole batch.
        await client.tasks.run_many(
            (request for _, request in requests),
            max_concurrency=concurrency,
            polling_options=POLLING,
            return_exceptions=True,  # every job runs; a failure is that job's outcome
            on_result=write,  # called as each run ends
        )
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", nargs="?", help="JSON lines of create requests ('-': stdin)")
    parser.add_argument("-c", "--concurrency", type=int, default=8, help="runs at once (8)")
    parser.add_argument("-o", "--output", help="write outcomes here instead of stdout")
    parser.add_argument("-n", "--jobs", type=int, default=20, help="demo jobs without input (20)")
    args = parser.parse_args()

    if args.input is None:
        lines = demo_jobs(args.jobs)
    elif args.input == "-":
        lines = sys.stdin.readlines()
    else:
        with open(args.input, encoding="utf-8") as file:
            lines = file.readlines()

    started = time.monotonic()
    with ExitStack() as stack:
        out = (
            stack.enter_context(open(args.output, "w", encoding="utf-8"))
            if args.output
            else sys.stdout
        )
        failed = anyio.run(run_batch, lines, args.concurrency, out)
    total = sum(1 for line in lines if line.strip())
    print(
        f"{total} jobs: {total - failed} ok, {failed} failed in {time.monotonic() - started:.2f} s "
        f"(concurrency {args.concurrency})",
        file=sys.stderr,
    )
    sys.exit(3 if failed else 0)


if __name__ == "__main__":
    main()

"""``run-many``: a JSONL batch, bounded, its outcomes written as JSON lines as they complete."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio import AsyncFile

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

from .. import RunResult, Task, WaitStats
from ._errors import Exit, UsageError, primary_error
from ._options import open_client, polling_options
from ._progress import BatchBar
from ._render import Output, dumps, make_table
from ._run import failure_fields


@dataclass
class Summary:
    """Counts and timing of one batch."""

    total: int
    output: str
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    aborted: str | None = None
    began: float = field(default_factory=time.monotonic)
    polls: list[int] = field(default_factory=list)
    detection_ms: list[float] = field(default_factory=list)

    def add_stats(self, stats: WaitStats) -> None:
        """Keep what polling cost for one successful run."""
        self.polls.append(stats["status_polls"])
        if stats["detection_latency_ms"] is not None:
            self.detection_ms.append(stats["detection_latency_ms"])

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def document(self) -> dict[str, Any]:
        wall = time.monotonic() - self.began
        done = self.ok + self.failed
        document: dict[str, Any] = {
            "ok": not self.failed and self.aborted is None,
            "total": self.total,
            "done": done,
            "succeeded": self.ok,
            "failed": self.failed,
            "errors": dict(self.errors),
            "wall_s": round(wall, 3),
            "per_second": round(done / wall, 3) if wall > 0 else None,
            "polls_per_task": round(statistics.mean(self.polls), 2) if self.polls else None,
            "detection_ms_p50": _percentile(self.detection_ms, 0.50),
            "detection_ms_p95": _percentile(self.detection_ms, 0.95),
            "output": self.output,
        }
        if self.aborted is not None:
            document["aborted"] = self.aborted
        return document


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1)


def outcome_line(index: int, outcome: RunResult | Exception) -> dict[str, Any]:
    """The JSON line of one job's outcome."""
    if isinstance(outcome, Exception):
        return {"index": index, **failure_fields(outcome)}
    return {"index": index, "ok": True, "task_id": outcome["task_id"], "result": outcome["result"]}


class _Stdout:
    """stdout as an outcome sink, looked up at each write: while the progress bar is live, rich
    redirects ``sys.stdout`` so that lines land above the bar instead of glued onto it."""

    async def write(self, text: str) -> None:
        sys.stdout.write(text)

    async def flush(self) -> None:
        sys.stdout.flush()


@asynccontextmanager
async def _sink(path: str | None) -> AsyncIterator[AsyncFile[str] | _Stdout]:
    """``-o`` opened for writing, or stdout (left open)."""
    if path is None:
        yield _Stdout()
        return
    try:
        file = await anyio.open_file(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    async with file:
        yield file


class _Recorder:
    """Writes each outcome as a JSON line, and counts it in the summary and the bar."""

    def __init__(self, sink: AsyncFile[str] | _Stdout, summary: Summary, bar: BatchBar) -> None:
        self._sink = sink
        self._summary = summary
        self._bar = bar
        self._index_of: dict[str, int] = {}

    def started(self, index: int, task: Task) -> None:
        """``on_progress`` of the batch: remember which job each task belongs to."""
        self._index_of[task.get("id", "")] = index
        self._bar.started(index, task)

    async def record(self, index: int, outcome: RunResult | Exception) -> None:
        line = outcome_line(index, outcome)
        with anyio.CancelScope(shield=True):  # an outcome received is an outcome written
            await self._sink.write(dumps(line, indent=None) + "\n")
            await self._sink.flush()
        if line["ok"]:
            self._summary.ok += 1
            if not isinstance(outcome, Exception) and "stats" in outcome:
                self._summary.add_stats(outcome["stats"])
        else:
            self._summary.errors[line["error_type"]] += 1
        self._bar.finished(index, line["ok"])

    async def record_abort(self, error: Exception) -> None:
        """``--fail-fast``: write the failures that ended the batch, when their job is known."""
        self._summary.aborted = str(primary_error(error))
        failures = error.exceptions if isinstance(error, ExceptionGroup) else (error,)
        for failure in failures:
            index = self._index_of.get(getattr(failure, "task_id", None) or "")
            if index is not None:
                await self.record(index, failure)


async def run_many(args: argparse.Namespace, out: Output) -> int:
    jobs = args.jobs.requests
    summary = Summary(total=len(jobs), output=args.output or "stdout")
    bar = BatchBar(out, len(jobs))
    async with open_client(args) as client, _sink(args.output) as sink:
        recorder = _Recorder(sink, summary, bar)
        try:
            batch = client.tasks.run_many_iter(
                jobs,
                max_concurrency=args.concurrency,
                polling_options=polling_options(args, on_progress=recorder.started),
                return_exceptions=not args.fail_fast,
            )
        except (TypeError, ValueError) as exc:  # jobs_file checked each line: not expected
            raise UsageError(f"{args.jobs.path}: {exc}") from None
        try:
            with bar:
                async with batch as outcomes:
                    async for index, outcome in outcomes:
                        await recorder.record(index, outcome)
        except Exception as exc:
            await recorder.record_abort(exc)
            raise
        except BaseException:
            summary.aborted = "interrupted"
            raise
        finally:
            _report(out, summary, stdout=args.output is not None)
    if not summary.failed:
        return Exit.OK
    only_timeouts = set(summary.errors) == {"TimeoutError"}
    return Exit.TIMED_OUT if only_timeouts else Exit.FAILED


def _latency(document: dict[str, Any]) -> str:
    p50, p95 = document["detection_ms_p50"], document["detection_ms_p95"]
    return "-" if p50 is None else f"p50 {p50} ms, p95 {p95} ms"


def _report(out: Output, summary: Summary, *, stdout: bool) -> None:
    """The summary: on stdout when the outcomes went to a file, else on stderr."""
    document = summary.document()
    if out.json_mode:
        out.json(document, stderr=not stdout)
        return
    rows = [
        ("jobs", f"{document['done']} of {document['total']} done"),
        ("succeeded", str(document["succeeded"])),
        ("failed", ", ".join(f"{n} {kind}" for kind, n in summary.errors.items()) or "0"),
        ("wall time", f"{document['wall_s']:.2f} s"),
        ("throughput", f"{document['per_second'] or 0:.2f} tasks/s"),
        ("status polls per task", str(document["polls_per_task"] or "-")),
        ("completion seen after", _latency(document)),
        ("outcomes", document["output"]),
    ]
    if summary.aborted is not None:
        rows.append(("aborted", summary.aborted))
    out.table(make_table("run-many summary", None, rows), stderr=not stdout)

"""``run-many``: a JSONL batch, bounded, its outcomes written as JSON lines as they complete."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from anyio import AsyncFile

from .. import (
    Journal,
    JournalError,
    JournalMismatchError,
    RunResult,
    ServerPool,
    Task,
    WaitStats,
)
from ..resources.tasks import Tasks
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
    servers: dict[str, Counter[str]] = field(default_factory=dict)
    """Per server (a batch over several): how many of its runs succeeded and failed."""
    replayed: int = 0
    """Outcomes a resume reads back from the journal: done, but not in the throughput."""

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
            "replayed": self.replayed,
            "per_second": round((done - self.replayed) / wall, 3) if wall > 0 else None,
            "polls_per_task": round(statistics.mean(self.polls), 2) if self.polls else None,
            "detection_ms_p50": _percentile(self.detection_ms, 0.50),
            "detection_ms_p95": _percentile(self.detection_ms, 0.95),
            "output": self.output,
        }
        if self.servers:
            document["servers"] = {
                url: {"succeeded": counts["ok"], "failed": counts["failed"]}
                for url, counts in self.servers.items()
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
    """The JSON line of one job's outcome (``server`` in a batch over several)."""
    if isinstance(outcome, Exception):
        line = {"index": index, **failure_fields(outcome)}
        server = getattr(outcome, "server", None)
    else:
        line = {"index": index, "ok": True, "task_id": outcome["task_id"],
                "result": outcome["result"]}
        server = outcome.get("server")
    if server is not None:
        line["server"] = server
    return line


class _Stdout:
    """stdout as an outcome sink, looked up at each write: while the progress bar is live, rich
    redirects ``sys.stdout`` so that lines land above the bar instead of glued onto it."""

    async def write(self, text: str) -> None:
        sys.stdout.write(text)

    async def flush(self) -> None:
        sys.stdout.flush()


Sink = AsyncFile[str] | _Stdout


@asynccontextmanager
async def _journal(path: str | None) -> AsyncIterator[Journal | None]:
    """The batch's journal (``--journal``), opened before ``-o`` is touched: a journal in
    use by another process refuses this one before anything is rewritten or sent."""
    if path is None:
        yield None
        return
    stack = AsyncExitStack()
    try:
        journal = await stack.enter_async_context(Journal.open(path))
    except JournalError as exc:  # not a journal, or in use elsewhere: nothing ran
        raise UsageError(str(exc)) from None
    async with stack:
        yield journal


def replayed(journal: Journal | None, jobs: range, *, retry_failed: bool) -> set[int]:
    """The batch's jobs (its own indexes) a resume returns from the journal, with no
    request."""
    if journal is None:
        return set()
    return {
        index
        for index, entry in journal.entries.items()
        if index < len(jobs) and entry.outcome is not None
        and (entry.outcome.get("ok") or not retry_failed)
    }


def failures_on_record(journal: Journal | None, jobs: range) -> set[int]:
    """The jobs (by their index in the jobs file) whose failure the journal holds: a resume
    returns it again. Any other failure line of ``-o`` (the server could not be reached
    before any task existed, say) is dropped on resume, since that job runs again."""
    if journal is None:
        return set()
    return {
        jobs[index]
        for index, entry in journal.entries.items()
        if index < len(jobs) and entry.outcome is not None and not entry.outcome.get("ok")
    }


@asynccontextmanager
async def _sink(
    path: str | None, *, resume: bool, retry_failed: bool, recorded_failures: set[int]
) -> AsyncIterator[tuple[Sink, set[int]]]:
    """``-o`` opened for writing (appending, with ``--resume``), or stdout (left open); and
    the job indexes it already holds, whose outcomes are not written again. On resume its
    failure lines are dropped first unless the journal holds that failure (all of them with
    ``--retry-failed``): those jobs run again."""
    if path is None:
        yield _Stdout(), set()
        return
    keep = set() if retry_failed else recorded_failures
    try:
        written = await anyio.to_thread.run_sync(_repair, path, keep) if resume else set()
        file = await anyio.open_file(path, "a" if resume else "x", encoding="utf-8")
    except FileExistsError:
        raise UsageError(
            f"{path} exists: add --resume to append to it, or name another file"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    async with file:
        yield file, written


def _repair(path: str, keep_failures: set[int]) -> set[int]:
    """Cut a torn last line off an outcome file (the writer died mid-line), drop its failure
    lines but those of ``keep_failures``, and return the indexes of the outcomes it keeps."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return set()
    kept: list[bytes] = []
    written = set()
    for line in data[: data.rfind(b"\n") + 1].splitlines(keepends=True):
        try:
            outcome = json.loads(line)
            index, ok = outcome.get("index"), outcome.get("ok")
        except (ValueError, AttributeError):
            kept.append(line)
            continue
        if ok is False and index not in keep_failures:
            continue
        kept.append(line)
        if isinstance(index, int):
            written.add(index)
    repaired = b"".join(kept)
    if repaired != data:  # written whole to a new file, then renamed over the old one
        temporary = f"{path}.repairing"
        with open(temporary, "wb") as file:
            file.write(repaired)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    return written


def check_files(args: argparse.Namespace) -> None:
    """No silent overwrite, ever: refuse a risky set of files before anything is touched."""
    jobs = None if args.jobs.path == "-" else args.jobs.path
    if args.retry_failed and not args.resume:
        raise UsageError("--retry-failed goes with --resume")
    if args.resume and not args.journal:
        raise UsageError("--resume needs the --journal of the batch to go on with")
    named = [("-o", args.output), ("--journal", args.journal)]
    for flag, path in named:
        if path is not None and jobs is not None and _same_file(path, jobs):
            raise UsageError(f"{flag} {path} is the jobs file itself")
    if args.output and args.journal and _same_file(args.output, args.journal):
        raise UsageError("-o and --journal name the same file")
    # --resume with no journal yet starts the batch (a retried pod's first run), but an -o
    # file is written only after its journal exists: with -o there and no journal, the
    # journal's path is mistyped, and a new batch would run every job again.
    if args.resume and args.output and os.path.lexists(args.output) and not (
        os.path.lexists(args.journal)
    ):
        raise UsageError(
            f"journal {args.journal} does not exist, but {args.output} does: "
            "is that the journal of its batch?"
        )
    for flag, path in named:
        folder = os.path.dirname(path or "") or "."
        if path is not None and not os.path.isdir(folder):  # before the journal is created
            raise UsageError(f"{flag} {path}: no such directory {folder}")
    if args.journal and not args.resume and os.path.lexists(args.journal):
        raise UsageError(
            f"journal {args.journal} exists: add --resume to go on with its batch, "
            "or name another journal"
        )
    if args.output and not args.resume and os.path.lexists(args.output):
        raise UsageError(
            f"{args.output} exists: add --resume to append to it, or name another file"
        )


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


class _Recorder:
    """Writes each outcome as a JSON line, and counts it in the summary and the bar.

    The batch counts its own jobs from 0; ``jobs[k]`` is the index in the jobs file of its
    job ``k`` (a shard runs every Nth job of the file).
    """

    def __init__(
        self,
        sink: Sink,
        summary: Summary,
        bar: BatchBar,
        jobs: range,
        written: set[int],
        replayed: set[int],
    ) -> None:
        self._replayed = replayed
        self._sink = sink
        self._written = written
        self._summary = summary
        self._bar = bar
        self._jobs = jobs

    async def record_journaled(self, journal: Journal | None, *, with_server: bool) -> None:
        """Write the outcomes the journal holds and ``-o`` does not: runs the batch's last
        look found finished as it stopped them, after the consumer had left (``--fail-fast``)."""
        if journal is None:
            return
        for job, index in enumerate(self._jobs):
            if index not in self._written:
                outcome = journal.recorded(job, with_server=with_server)
                if outcome is not None:
                    await self.record(job, outcome)

    def started(self, job: int, task: Task) -> None:
        """``on_progress`` of the batch: remember which job each task belongs to."""
        self._bar.started(self._jobs[job], task)

    async def record(self, job: int, outcome: RunResult | Exception) -> None:
        index = self._jobs[job]
        line = outcome_line(index, outcome)
        if index not in self._written:  # a resumed batch writes each job's line once
            with anyio.CancelScope(shield=True):  # an outcome received is an outcome written
                await self._sink.write(dumps(line, indent=None) + "\n")
                await self._sink.flush()
            self._written.add(index)
        if job in self._replayed:
            self._summary.replayed += 1
        if line["ok"]:
            self._summary.ok += 1
            if not isinstance(outcome, Exception) and "stats" in outcome:
                self._summary.add_stats(outcome["stats"])
        else:
            self._summary.errors[line["error_type"]] += 1
        if "server" in line:
            self._summary.servers.setdefault(line["server"], Counter())[
                "ok" if line["ok"] else "failed"
            ] += 1
        self._bar.finished(index, line["ok"], line.get("server"))

@asynccontextmanager
async def _servers(args: argparse.Namespace) -> AsyncIterator[Tasks | ServerPool]:
    """What runs the batch: the one server's client, or a pool of several (``-c`` each)."""
    if len(args.base_urls) <= 1:
        async with open_client(args) as client:
            yield client.tasks
        return
    clients = [open_client(args, url) for url in args.base_urls]
    async with ServerPool(clients, max_concurrency_per_server=args.concurrency) as pool:
        yield pool


async def run_many(args: argparse.Namespace, out: Output) -> int:
    check_files(args)
    index, count = args.shard or (0, 1)
    picked = range(index, len(args.jobs.requests), count)  # every job without --shard
    jobs = [args.jobs.requests[i] for i in picked]
    summary = Summary(total=len(jobs), output=args.output or "stdout")
    bar = BatchBar(out, len(jobs))
    async with (
        _servers(args) as servers,
        _journal(args.journal) as journal,
        _sink(
            args.output, resume=args.resume, retry_failed=args.retry_failed,
            recorded_failures=failures_on_record(journal, picked),
        ) as (sink, written),
    ):
        recorder = _Recorder(sink, summary, bar, picked, written,
                             replayed(journal, picked, retry_failed=args.retry_failed))
        refused = False
        first_failure: Exception | None = None
        try:
            batch = servers.run_many_iter(
                jobs,
                max_concurrency=args.concurrency if len(args.base_urls) <= 1 else None,
                polling_options=polling_options(args, on_progress=recorder.started),
                return_exceptions=True,  # --fail-fast stops at the first failure itself
                journal=journal,
                retry_failed=args.retry_failed,
            )
        except (TypeError, ValueError) as exc:  # jobs_file checked each line: not expected
            raise UsageError(f"{args.jobs.path}: {exc}") from None
        try:
            with bar:
                async with batch as outcomes:
                    async for index, outcome in outcomes:
                        await recorder.record(index, outcome)
                        if args.fail_fast and isinstance(outcome, Exception):
                            first_failure = outcome
                            # What has finished already is written before the rest stops.
                            for ready in _ready(outcomes):
                                await recorder.record(*ready)
                            break
            if first_failure is not None:
                await recorder.record_journaled(journal, with_server=len(args.base_urls) > 1)
                summary.aborted = str(first_failure)
        except JournalMismatchError as exc:  # the jobs changed: nothing ran
            refused = True
            if exc.index >= len(picked):  # fewer jobs than the journal has seen
                raise UsageError(
                    f"{args.jobs.path} has fewer jobs than journal {args.journal} recorded"
                    + (" for this --shard" if args.shard else "")
                    + "; resume with the same jobs, or start a new journal"
                ) from None
            raise UsageError(
                f"{_job_named(args, picked[exc.index])} differs from the job journal "
                f"{args.journal} recorded; resume with the same jobs"
                + (" and --shard" if args.shard else "") + ", or start a new journal"
            ) from None
        except JournalError as exc:  # not ours, or in use: nothing ran
            refused = True
            raise UsageError(str(exc)) from None
        except BaseException as exc:  # an interrupt, or an error that ended the batch
            cause = primary_error(exc)
            summary.aborted = str(cause) if isinstance(cause, Exception) else "interrupted"
            if isinstance(cause, JournalMismatchError) and cause.index < len(picked):
                reason = str(cause).removeprefix(f"request {cause.index}: ")
                summary.aborted = f"{_job_named(args, picked[cause.index])}: {reason}"
                raise UsageError(summary.aborted) from None
            raise
        finally:
            if not refused:
                _report(out, summary, stdout=args.output is not None)
        if first_failure is not None:
            raise first_failure  # reported as the CLI reports an error: one line, its exit code
    if not summary.failed:
        return Exit.OK
    only_timeouts = set(summary.errors) == {"TimeoutError"}
    return Exit.TIMED_OUT if only_timeouts else Exit.FAILED


def _job_named(args: argparse.Namespace, job: int) -> str:
    """Job ``job`` (its index in the jobs file) as its user finds it there, by line."""
    return f"{args.jobs.path} line {args.jobs.lines[job]} (job {job})"


def _ready(outcomes: Any) -> list[tuple[int, RunResult | Exception]]:
    """The outcomes already handed over and waiting to be taken."""
    ready = []
    while True:
        try:
            ready.append(outcomes.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return ready


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
        ("throughput", f"{document['per_second'] or 0:.2f} tasks/s"
                       + (f" ({summary.replayed} from the journal not counted)"
                          if summary.replayed else "")),
        ("status polls per task", str(document["polls_per_task"] or "-")),
        ("completion seen after", _latency(document)),
        ("outcomes", document["output"]),
    ]
    for url, counts in document.get("servers", {}).items():
        rows.append((url, f"{counts['succeeded']} succeeded, {counts['failed']} failed"))
    if summary.aborted is not None:
        rows.append(("aborted", summary.aborted))
    out.table(make_table("run-many summary", None, rows), stderr=not stdout)

"""``demo``: the embedded emulator, a small concurrent batch, and a summary table."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import anyio

from .. import OomolConnectClient, PollingOptions, TaskError, TimeoutError
from ._emulator import emulator_extra
from ._errors import Exit
from ._progress import TaskBoard, TaskRow
from ._render import Output, compact, log_error, make_table


@dataclass(frozen=True)
class DemoJob:
    """One demo task and the status the server should end up reporting."""

    manifest: str
    inputs: dict[str, Any]
    expect: str
    timeout: float | None = None
    files: tuple[tuple[str, bytes], ...] = ()


JOBS = (
    DemoJob("demo::echo", {"text": "hello", "n": 3}, "completed"),
    DemoJob("demo::upper", {"text": "structured concurrency"}, "completed"),
    DemoJob("demo::progress", {"steps": 5, "seconds": 1.0}, "completed"),
    DemoJob("demo::count-bytes", {}, "completed", files=(("hello.txt", b"hello, world\n"),)),
    DemoJob("demo::fail", {"message": "this block fails on purpose"}, "failed"),
    DemoJob("demo::sleep", {"seconds": 60}, "stopped", timeout=1.0),
)
POLL_INTERVAL_MS = 100


@dataclass
class DemoOutcome:
    """How one demo task went, and what the server says about it afterwards."""

    job: DemoJob
    status: str = "not started"
    server_status: str | None = None
    task_id: str | None = None
    duration: float = 0.0
    result: Any = None
    error: str | None = None

    @property
    def as_expected(self) -> bool:
        return self.server_status == self.job.expect

    def shown_status(self) -> str:
        if self.status == "timed out" and self.server_status == "stopped":
            return "timed out, stopped on server"
        return self.status

    def document(self) -> dict[str, Any]:
        return {
            "manifest": self.job.manifest,
            "task_id": self.task_id,
            "status": self.status,
            "server_status": self.server_status,
            "expected": self.job.expect,
            "duration_s": round(self.duration, 3),
            "result": self.result,
            "error": self.error,
        }


async def _run_job(client: OomolConnectClient, row: TaskRow, outcome: DemoOutcome) -> None:
    job = outcome.job
    options: PollingOptions = {
        "interval_ms": POLL_INTERVAL_MS,
        "backoff_strategy": "fixed",
        "timeout_ms": None if job.timeout is None else job.timeout * 1000,
        "on_progress": row.on_progress,
        "on_log": row.on_log,
    }
    try:
        if job.files:
            result = await client.tasks.run_with_files(
                job.manifest, job.inputs, list(job.files), options
            )
        else:
            result = await client.tasks.run(
                {"manifest": job.manifest, "inputValues": job.inputs}, options
            )
    except TaskError as exc:
        outcome.status = outcome.server_status = row.status
        reasons = (log_error(log) for log in reversed(exc.logs))
        outcome.error = next((reason for reason in reasons if reason), str(exc))
    except TimeoutError as exc:
        row.finish("timed out")
        outcome.status, outcome.error = "timed out", f"no result within {job.timeout:g} s"
        outcome.server_status = (await client.tasks.get(exc.task_id)).get("status")
    else:
        outcome.status = outcome.server_status = result["task"].get("status", "?")
        outcome.result = result["result"]
    finally:
        row.finish()
        outcome.task_id, outcome.duration = row.task_id, row.elapsed


async def demo(args: argparse.Namespace, out: Output) -> int:
    with emulator_extra():
        from ..emulator import Emulator, serve_emulator

    began = time.monotonic()
    outcomes = [DemoOutcome(job) for job in JOBS]
    async with serve_emulator(Emulator(), host="127.0.0.1", port=0) as url:
        out.note(f"Emulator at {url}: running {len(JOBS)} demo tasks concurrently")
        board = TaskBoard(out)
        # api_token="": the emulator must not receive the user's $OOMOL_CONNECT_TOKEN.
        async with OomolConnectClient(base_url=url, api_token="") as client:
            with board:
                async with anyio.create_task_group() as group:
                    for outcome in outcomes:
                        group.start_soon(_run_job, client, board.add(outcome.job.manifest), outcome)
    wall = time.monotonic() - began
    _report(out, outcomes, url, wall)
    unexpected = [o.job.manifest for o in outcomes if not o.as_expected]
    if unexpected:
        out.error(f"demo tasks that did not end as expected: {', '.join(unexpected)}")
        return Exit.UNEXPECTED
    return Exit.OK


def _report(out: Output, outcomes: list[DemoOutcome], url: str, wall: float) -> None:
    if out.json_mode:
        out.json({
            "ok": all(o.as_expected for o in outcomes),
            "emulator": url,
            "wall_s": round(wall, 3),
            "as_expected": all(o.as_expected for o in outcomes),
            "tasks": [o.document() for o in outcomes],
        })
        return
    rows = [
        (
            o.job.manifest,
            o.shown_status(),
            f"{o.duration:.2f} s",
            compact(o.error) if o.error else compact(o.result),
        )
        for o in outcomes
    ]
    title = f"Demo: {len(outcomes)} tasks in {wall:.2f} s"
    out.table(make_table(title, ["manifest", "status", "duration", "result or error"], rows))

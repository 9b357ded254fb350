"""Progress while tasks run, on stderr: live displays at a terminal, plain lines otherwise.

In ``--json`` mode only the tasks' own log lines are shown (they are output
of the run, not decoration); status and progress are left out.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Task as BarTask
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from .. import Task, TaskLog
from ._render import Output

_MARKS = {"completed": ("✓", "green"), "success": ("✓", "green"), "failed": ("✗", "red")}
_OTHER_END = ("■", "yellow")
ENDED = frozenset({"completed", "success", "failed", "stopped", "timed out"})


class _Display:
    """A context manager around an optional rich live display."""

    _live: Live | Progress | None = None

    def __enter__(self) -> None:
        if self._live is not None:
            self._live.start()

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()


class TaskRow:
    """One watched task; its ``on_progress``/``on_log`` are polling callbacks."""

    def __init__(self, board: TaskBoard, label: str) -> None:
        self.label = label
        self.status = "starting"
        self.task_id: str | None = None
        self.progress: float | None = None
        self.started = time.monotonic()
        self.ended: float | None = None
        self._board = board
        self.spinner = Spinner("dots")

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def on_progress(self, task: Task) -> None:
        if self.task_id is None:
            self.task_id = task.get("id")
            self._board.line(self, f"created task {self.task_id}")
        self._set_status(str(task.get("status", "?")))

    def on_log(self, log: TaskLog) -> None:
        event: dict[str, Any] = log.get("event") or {}
        kind = log.get("type")
        progress = event.get("progress")
        if kind == "BlockProgress" and isinstance(progress, (int, float)):
            self.progress = float(progress)
            self._board.line(self, f"{self.progress:.0f}%")
        elif kind == "BlockLog":
            text = str(event.get("log", "")).rstrip("\n")
            self._board.log(self, text, stderr=event.get("stdio") == "stderr")

    def finish(self, status: str | None = None) -> None:
        """Stop the clock; ``status`` overrides the last one (``timed out`` is not a server's)."""
        if self.ended is None:
            self.ended = time.monotonic()
        if status is not None:
            self._set_status(status)

    def _set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self._board.line(self, status)


class TaskBoard(_Display):
    """Tasks being watched: a live table at a terminal, else one line per change."""

    def __init__(self, out: Output) -> None:
        self._out = out
        self._rows: list[TaskRow] = []
        if out.interactive:
            self._live = Live(
                get_renderable=self._render, console=out.stderr, refresh_per_second=10
            )

    def add(self, label: str) -> TaskRow:
        row = TaskRow(self, label)
        self._rows.append(row)
        return row

    def line(self, row: TaskRow, text: str) -> None:
        """A status or progress change: a plain line when there is no live table."""
        if self._live is None:
            self._out.note(f"{row.label}: {text}")

    def log(self, row: TaskRow, text: str, *, stderr: bool) -> None:
        """A task's log line, printed as it arrives (above the live table, if any)."""
        if self._out.quiet:
            return
        if self._live is None:
            self._out.line(f"{row.label} | {text}")
            return
        self._out.stderr.print(
            Text.assemble((f"{row.label} │ ", "dim"), (text, "red" if stderr else ""))
        )

    def _render(self) -> Table:
        table = Table.grid(padding=(0, 2))
        for row in self._rows:
            if row.status in ENDED:
                mark, style = _MARKS.get(row.status, _OTHER_END)
                state: Spinner | Text = Text(mark, style=style)
            else:
                state = row.spinner
            progress = "" if row.progress is None else f"{row.progress:3.0f}%"
            table.add_row(
                state, row.label, row.status, progress, f"{row.elapsed:5.1f} s",
                Text((row.task_id or "")[:8], style="dim"),
            )
        return table


class _RateColumn(ProgressColumn):
    """Completed tasks per second."""

    def render(self, task: BarTask) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f}/s", style="cyan")


class BatchBar(_Display):
    """run-many's progress: done / failed / running, rate and ETA."""

    PLAIN_EVERY = 1.0

    def __init__(self, out: Output, total: int) -> None:
        self._out = out
        self.total = total
        self.done = 0
        self.failed = 0
        self._running: set[int] = set()
        self._servers: Counter[str] = Counter()  # finished runs per server, over several
        self._began = time.monotonic()
        self._said = self._began
        if out.interactive:
            self._live = Progress(
                SpinnerColumn(),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(
                    "[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/] "
                    "[cyan]{task.fields[running]} running[/]{task.fields[servers]}"
                ),
                _RateColumn(),
                TimeRemainingColumn(),
                console=out.stderr,
                # Outcome lines for a terminal are printed above the bar; piped, they bypass it.
                redirect_stdout=out.stdout.is_terminal,
            )
            self._bar = self._live.add_task(
                "run-many", total=total, ok=0, failed=0, running=0, servers=""
            )

    @property
    def running(self) -> int:
        return len(self._running)

    def started(self, index: int, task: Task) -> None:
        """``on_progress`` of run_many: the job's task exists on the server."""
        if task.get("status") not in ENDED:
            self._running.add(index)
            self._update()

    def finished(self, index: int, ok: bool, server: str | None = None) -> None:
        """A job's outcome is in (``server``: where it ran, in a batch over several)."""
        self._running.discard(index)
        self.done += 1
        self.failed += not ok
        if server is not None:
            self._servers[server] += 1
        self._update()

    def _per_server(self) -> str:
        """`` | host:port N, ...``: the runs finished on each server, when there are several."""
        if not self._servers:
            return ""
        counts = (f"{httpx.URL(url).netloc.decode()} {n}" for url, n in self._servers.items())
        return " | " + ", ".join(counts)

    def _update(self) -> None:
        if isinstance(self._live, Progress):
            self._live.update(
                self._bar, completed=self.done, ok=self.done - self.failed,
                failed=self.failed, running=self.running, servers=self._per_server(),
            )
            return
        now = time.monotonic()
        if now - self._said >= self.PLAIN_EVERY or self.done == self.total:
            self._said = now
            rate = self.done / max(now - self._began, 1e-9)
            self._out.note(
                f"run-many: {self.done}/{self.total} done, {self.failed} failed, "
                f"{self.running} running, {rate:.1f}/s{self._per_server()}"
            )

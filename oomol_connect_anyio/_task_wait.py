"""Waiting for one task: status polls, log delivery, stats, and remote stop on abandon."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

from ._adaptive import adapt, record_completion, task_key
from ._concurrency import call, deadline, single_error
from ._errors import TaskFailedError, TaskStoppedError, TimeoutError
from ._logs import error_text, has_session_finished
from ._metrics import RequestTally, current_tally
from ._options import Polling
from ._polling import poll_until
from ._types import Task, TaskLog, WaitStats

if TYPE_CHECKING:
    from .resources.tasks import Tasks

TERMINAL = frozenset({"completed", "failed", "stopped"})
_DRAIN_INTERVAL = 0.05


@dataclass(frozen=True)
class TaskProgress:
    """A status poll's result, as yielded by ``tasks.watch``."""

    task: Task


@dataclass(frozen=True)
class TaskLogEvent:
    """One new log line, as yielded by ``tasks.watch`` (each exactly once, by id)."""

    log: TaskLog


TaskEvent = TaskProgress | TaskLogEvent
Emit = Callable[[TaskEvent], Awaitable[None]]


class TaskDict(dict[str, Any]):
    """A ``Task`` as returned by the waits: a plain dict plus a ``stats`` attribute."""

    stats: WaitStats | None = None


def get_wait_stats(task: object) -> WaitStats | None:
    """The ``WaitStats`` of a task returned by a wait, or ``None``."""
    return task.stats if isinstance(task, TaskDict) else None


class TaskWait:
    """One wait for one task; ``logs`` holds every log seen, in id order.

    ``created`` is the create answer, when this client created the task: if it is already
    terminal, no status poll is needed.
    """

    def __init__(
        self,
        tasks: Tasks,
        task_id: str,
        polling: Polling,
        *,
        emit: Emit | None = None,
        started: float | None = None,
        created: Task | None = None,
    ) -> None:
        self._tasks = tasks
        self._created = created
        self.task_id = task_id
        # Adaptive polling: the delays come from what the client learned (None otherwise).
        self._polling, self._schedule = adapt(
            tasks.polling_model, polling, started if created is not None else None
        )
        self._emit = emit
        self._follow_logs = emit is not None or polling.on_log is not None
        self.logs: list[TaskLog] = []
        self.last_task: Task | None = None
        self._pending_logs: list[TaskLog] = []
        self._tally = RequestTally()
        self._status_polls = 0
        self._log_fetches = 0
        self._started = time.monotonic() if started is None else started
        self._running_at: float | None = None
        self._seen_at_ms: float | None = None

    @classmethod
    def after_create(
        cls, tasks: Tasks, created: Task, polling: Polling, started: float
    ) -> TaskWait:
        """The wait for a task this client just created (``created`` is the answer)."""
        return cls(tasks, created["id"], polling, started=started, created=created)

    @property
    def terminal(self) -> bool:
        return self.last_task is not None and self.last_task.get("status") in TERMINAL

    async def wait(self, *, raise_on_failure: bool = True, collect_logs: bool = False) -> TaskDict:
        """Poll to a terminal status; stop the remote task if abandoned and asked to.

        The logs are drained at the end when followed, when ``collect_logs`` is
        set, or when a failure must be explained.
        """
        token = current_tally.set(self._tally)
        try:
            with deadline(self._polling.timeout, self._timeout_error):
                known = None if self._created is None else self._observe(self._created)
                task = await poll_until(
                    self._fetch, _is_terminal, self._polling, self._report, known
                )
                failed = raise_on_failure and task.get("status") != "completed"
                if self._follow_logs or collect_logs or failed:
                    await self.drain_logs()
            if failed:
                self._raise_for_status(task)
        except BaseException:
            if self._polling.stop_on_cancel and not self.terminal:
                await self._tasks.stop_quietly(self.task_id)
            raise
        finally:
            current_tally.reset(token)
        result = TaskDict(task)
        result.stats = self.stats()
        return result

    async def drain_logs(self) -> None:
        """Fetch the logs; refetch until ``SessionFinished`` or the grace period passes."""
        if has_session_finished(self.logs):
            return
        await self._fetch_logs()
        await self._deliver_logs()
        with anyio.move_on_after(self._polling.log_grace):
            while not has_session_finished(self.logs):
                await anyio.sleep(_DRAIN_INTERVAL)
                await self._fetch_logs()
                await self._deliver_logs()

    async def _fetch(self) -> Task:
        if not self._follow_logs:
            return await self._fetch_task()
        with single_error():
            async with anyio.create_task_group() as group:
                group.start_soon(self._fetch_logs)
                task = await self._fetch_task()
        return task

    async def _fetch_task(self) -> Task:
        task = await self._tasks.get(self.task_id)
        self._status_polls += 1
        return self._observe(task)

    def _observe(self, task: Task) -> Task:
        """Note when ``task`` (a poll or create answer) was first seen running and ended."""
        status = task.get("status")
        if self._schedule is not None:
            self._schedule.observe(task_key(task), task.get("created_at"))
        if self._running_at is None and status not in ("created", "pending"):
            self._running_at = time.monotonic()
        if status in TERMINAL and self._seen_at_ms is None:
            self._seen_at_ms = time.time() * 1000
            if status == "completed":  # the client learns from every run it sees complete
                record_completion(
                    self._tasks.polling_model,
                    task_key(task), task.get("created_at"), task.get("updated_at"),
                )
        return task

    async def _fetch_logs(self) -> None:
        logs = await self._tasks.get_logs(self.task_id)
        self._log_fetches += 1
        last = self.logs[-1]["id"] if self.logs else None
        fresh = [log for log in logs if last is None or log.get("id", 0) > last]
        fresh.sort(key=lambda log: log.get("id", 0))
        self.logs.extend(fresh)
        self._pending_logs.extend(fresh)

    async def _deliver_logs(self) -> None:
        pending, self._pending_logs = self._pending_logs, []
        for log in pending:
            if self._polling.on_log is not None:
                await call(self._polling.on_log, log)
            if self._emit is not None:
                await self._emit(TaskLogEvent(log))

    async def _report(self, task: Task) -> None:
        self.last_task = task
        await self._deliver_logs()
        if self._polling.on_progress is not None:
            await call(self._polling.on_progress, task)
        if self._emit is not None:
            await self._emit(TaskProgress(task))

    def _raise_for_status(self, task: Task) -> NoReturn:
        reason = error_text(self.logs)
        manifest = task.get("manifest_path") or "?"
        if task.get("status") == "stopped":
            raise TaskStoppedError(
                f"task {self.task_id} ({manifest}) was stopped"
                + (f": {reason}" if reason else ""),
                task_id=self.task_id, task=task, logs=self.logs, reason=reason,
            )
        raise TaskFailedError(
            f"task {self.task_id} ({manifest}) failed: {reason or 'no error text in its logs'}",
            task_id=self.task_id, task=task, logs=self.logs, reason=reason,
        )

    def _timeout_error(self) -> TimeoutError:
        status = self.last_task.get("status") if self.last_task else "unknown"
        return TimeoutError(
            f"task {self.task_id} did not finish within {self._polling.timeout:g} s "
            f"(last status: {status})",
            task_id=self.task_id, task=self.last_task,
        )

    def stats(self) -> WaitStats:
        """What this wait cost so far."""
        detection = None
        if self._seen_at_ms is not None and self.last_task is not None:
            updated = self.last_task.get("updated_at")
            if isinstance(updated, (int, float)):
                detection = max(0.0, self._seen_at_ms - updated)
        running = self._running_at
        return {
            "status_polls": self._status_polls,
            "log_fetches": self._log_fetches,
            "retries": self._tally.retries,
            "requests": self._tally.requests,
            "bytes_received": self._tally.bytes_received,
            "time_to_running_ms": None if running is None else (running - self._started) * 1000,
            "detection_latency_ms": detection,
            "wall_ms": (time.monotonic() - self._started) * 1000,
        }


def _is_terminal(task: Task) -> bool:
    return task.get("status") in TERMINAL

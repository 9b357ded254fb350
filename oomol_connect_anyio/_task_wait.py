"""Waiting for one task: status polls, log delivery, stats, and remote stop on abandon."""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol, cast

import anyio

from ._adaptive import PollingModel, adapt, record_completion, task_key
from ._concurrency import STOP_DEADLINE, call, logger, single_error
from ._errors import TaskFailedError, TaskStoppedError, TimeoutError
from ._logs import error_text, has_session_finished
from ._metrics import RequestTally, current_tally
from ._options import Polling
from ._polling import AnswerCheck, MissedPolls, poll_until
from ._types import BackoffStrategy, Task, TaskLog, WaitStats

TERMINAL = frozenset({"completed", "failed", "stopped"})
STATUSES = TERMINAL | {"created", "pending", "running"}
_STARTED = TERMINAL | {"running"}
# The trailing-log drain downloads the whole log list each time: a few refetches at most.
_MAX_LOG_REFETCHES = 4


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


class TaskSource(Protocol):
    """What a wait needs: the task's status and logs, a stop when it is abandoned, and the
    client's model of run durations (which adaptive waits poll by and every wait feeds)."""

    polling_model: PollingModel

    async def get(self, task_id: str) -> Task: ...

    async def get_logs(self, task_id: str) -> list[TaskLog]: ...

    async def stop_abandoned(self, task_id: str) -> bool: ...


_RECENT_STATS: OrderedDict[str, WaitStats] = OrderedDict()
_RECENT_STATS_KEPT = 4096


def _remember_stats(task_id: str, stats: WaitStats) -> None:
    _RECENT_STATS[task_id] = stats
    _RECENT_STATS.move_to_end(task_id)
    while len(_RECENT_STATS) > _RECENT_STATS_KEPT:
        _RECENT_STATS.popitem(last=False)


def get_wait_stats(task: object) -> WaitStats | None:
    """The ``WaitStats`` of the latest wait for ``task`` (a task dict, any copy of it, or
    its id), or ``None`` if none of the last few thousand waits was for it."""
    task_id = task.get("id") if isinstance(task, dict) else task
    return _RECENT_STATS.get(task_id) if isinstance(task_id, str) else None


class TaskWait:
    """One wait for one task; ``logs`` holds every log seen, in id order.

    ``created`` is the create answer, when this client created the task: if it is already
    terminal, no status poll is needed.
    """

    def __init__(
        self,
        tasks: TaskSource,
        task_id: str,
        polling: Polling,
        *,
        emit: Emit | None = None,
        started: float | None = None,
        created: Task | None = None,
        last_look: bool = False,
        adopted: bool = False,
    ) -> None:
        self._tasks = tasks
        self._created = created
        self._last_look = last_look
        self._asking = False  # a status poll is in flight, or was cut
        self.task_id = task_id
        self.stopped = False
        """Whether this wait, abandoned, stopped its task (the server said so)."""
        # Adaptive polling: the delays come from what the client learned (None otherwise).
        # A task this wait's caller created began after ``started``; an adopted one (made by
        # an earlier process) may be far older, which only its ``created_at`` tells.
        earliest = started if created is not None and not adopted else None
        self._polling, self._schedule = adapt(tasks.polling_model, polling, earliest)
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
        # One outage budget for status polls and log fetches: any answered poll resets it,
        # so log fetches failing beside answered status polls never end the wait.
        self._misses = MissedPolls(polling.poll_error_budget)
        self._check = AnswerCheck("task", task_id, STATUSES)

    @classmethod
    def after_create(
        cls,
        tasks: TaskSource,
        created: Task,
        polling: Polling,
        started: float,
        *,
        last_look: bool = False,
        adopted: bool = False,
    ) -> TaskWait:
        """The wait for a task this client just created (``created`` is the answer), or
        ``adopted``: found on the server, made by an interrupted earlier attempt.

        With ``last_look``, a wait abandoned unfinished checks the task once more before
        stopping it: one that has finished meanwhile is left as it is, in ``last_task``.
        """
        return cls(
            tasks, created["id"], polling, started=started, created=created, last_look=last_look,
            adopted=adopted,
        )

    @property
    def terminal(self) -> bool:
        return self.last_task is not None and self.last_task.get("status") in TERMINAL

    async def wait(self, *, raise_on_failure: bool = True, collect_logs: bool = False) -> Task:
        """Poll to a terminal status; stop the remote task if abandoned and asked to.

        The logs are drained at the end when followed, when ``collect_logs`` is
        set, or when a failure must be explained. ``timeout_ms`` bounds the wait for the
        terminal status only: the drain after it has its own bound, ``log_grace_ms``.
        """
        token = current_tally.set(self._tally)
        try:
            task = await self._poll_to_terminal()
            failed = raise_on_failure and task.get("status") != "completed"
            if self._follow_logs or collect_logs or failed:
                await self.drain_logs()
            if failed:
                self._raise_for_status(task)
        except BaseException:
            if self._polling.stop_on_cancel and not await self._finished_after_all():
                self.stopped = await self._tasks.stop_abandoned(self.task_id)
            raise
        finally:
            current_tally.reset(token)
        _remember_stats(self.task_id, self.stats())
        return cast(Task, dict(task))  # the caller's own copy, not the last poll's answer

    async def _poll_to_terminal(self) -> Task:
        """Poll until the task is terminal, within ``timeout_ms``.

        At a deadline that comes between two polls the task is looked at once more: it may
        have finished unseen since the last one, and it is then reported as finished, not as
        timed out (and stopped for nothing).
        """
        known = None if self._created is None else self._observe(self._created)
        timeout = self._polling.timeout
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            return await poll_until(
                self._fetch, _is_terminal, self._polling, self._report, known, self._misses
            )
        # A poll cut by the deadline was that look already, and a server that slow would
        # hold another one up to the stop's bound (nor does the stop after it look again).
        if self._asking:
            self._last_look = False
            raise self._timeout_error()
        if not await self._look_once_more(shield=False):  # the caller may still cancel it
            raise self._timeout_error()
        task = cast(Task, self.last_task)  # what the look saw, already given to on_progress
        if self._emit is not None:
            await self._emit(TaskProgress(task))
        return task

    async def _finished_after_all(self) -> bool:
        """Whether the task is known to be terminal, after one more look if asked for one."""
        if self.terminal or not self._last_look:
            return self.terminal
        return await self._look_once_more()

    async def _look_once_more(self, *, shield: bool = True) -> bool:
        """One more status check; whether the task is terminal.

        The look is bounded like a stop, shielded when it decides a cleanup (a stop or
        not), and raises nothing but a cancellation it is not shielded from.
        """
        self._last_look = False  # one look is enough: a stop may follow at once
        with anyio.CancelScope(shield=shield), anyio.move_on_after(STOP_DEADLINE):
            try:
                task = await self._tasks.get(self.task_id)
                self._status_polls += 1
                self._check(task)
                self.last_task = self._observe(task)
                if self._polling.on_progress is not None:  # what it saw, as every poll
                    await call(self._polling.on_progress, task)
            except Exception as exc:
                logger.debug("a last look at task %s failed: %s", self.task_id, exc)
        return self.terminal

    async def drain_logs(self) -> None:
        """Fetch the logs; refetch until ``SessionFinished`` or the grace period passes.

        The first fetch rides out transient failures as a status poll does (the result is
        in the logs). The refetches, for logs that trail the terminal status, are few, on an
        interval that doubles, all within ``log_grace_ms``; a cancellation ends them at once.
        """
        if has_session_finished(self.logs):
            return
        polling, misses = self._polling, self._misses
        await poll_until(self._fetch_logs, _always, polling, self._deliver, None, misses)
        downloads = self._log_fetches

        def finished(_: int) -> bool:
            refetched = self._log_fetches - downloads
            return has_session_finished(self.logs) or refetched >= _MAX_LOG_REFETCHES

        refetches = dataclasses.replace(
            polling,
            interval=polling.log_grace / 2**_MAX_LOG_REFETCHES,
            max_interval=polling.log_grace,
            strategy=BackoffStrategy.EXPONENTIAL,
            factor=2.0,
        )
        with anyio.move_on_after(polling.log_grace):
            await poll_until(self._fetch_logs, finished, refetches, self._deliver, 0, misses)

    async def _fetch(self) -> Task:
        self._asking = True  # and left so when a cancellation cuts the poll
        try:
            if not self._follow_logs:
                task = await self._fetch_task()
            else:
                with single_error():
                    async with anyio.create_task_group() as group:
                        group.start_soon(self._poll_logs)
                        task = await self._fetch_task()
        except Exception:
            self._asking = False
            raise
        self._asking = False
        return task

    async def _poll_logs(self) -> None:
        """The log fetch beside a status poll: a transient failure is a missed poll too."""
        await self._misses.attempt(self._fetch_logs)

    async def _fetch_task(self) -> Task:
        task = await self._tasks.get(self.task_id)
        self._status_polls += 1
        self._check(task)
        return self._observe(task)

    def _observe(self, task: Task) -> Task:
        """Note when ``task`` (a poll or create answer) was first seen running and ended."""
        status = task.get("status")
        if self._schedule is not None:
            self._schedule.observe(task_key(task), task.get("created_at"))
        if self._running_at is None and status in _STARTED:
            self._running_at = time.monotonic()
        if status in TERMINAL and self._seen_at_ms is None:
            self._seen_at_ms = time.time() * 1000
            if status == "completed":  # the client learns from every run it sees complete
                record_completion(
                    self._tasks.polling_model,
                    task_key(task), task.get("created_at"), task.get("updated_at"),
                )
        return task

    async def _fetch_logs(self) -> int:
        """Fetch the whole log list; keep the new entries; return how many there were."""
        logs = await self._tasks.get_logs(self.task_id)
        self._log_fetches += 1
        last = self.logs[-1]["id"] if self.logs else None
        fresh = [log for log in logs if last is None or log.get("id", 0) > last]
        fresh.sort(key=lambda log: log.get("id", 0))
        self.logs.extend(fresh)
        self._pending_logs.extend(fresh)
        return len(fresh)

    async def _deliver(self, _: int) -> None:
        await self._deliver_logs()

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
            "missed_polls": self._misses.count,
            "retries": self._tally.retries,
            "requests": self._tally.requests,
            "bytes_received": self._tally.bytes_received,
            "time_to_running_ms": None if running is None else (running - self._started) * 1000,
            "detection_latency_ms": detection,
            "wall_ms": (time.monotonic() - self._started) * 1000,
        }


def _is_terminal(task: Task) -> bool:
    return task.get("status") in TERMINAL


def _always(_: object) -> bool:
    return True

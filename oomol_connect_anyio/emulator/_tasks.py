"""Tasks whose status and logs are read lazily from the clock and a precomputed timeline."""

from __future__ import annotations

import uuid
from array import array
from bisect import bisect_right
from collections import Counter
from operator import itemgetter
from typing import Any

from ._blocks import Entry, Target, evaluate
from ._clock import Clock
from ._inputs import NodeInputs
from ._multipart import UploadedFile

TERMINAL = frozenset({"completed", "failed", "stopped"})
PROJECT_ID = "oomol-connect-emulator"
_offset_of = itemgetter(0)


class Task:
    """One task: created until `start`, running until `start + end`, then completed | failed.

    `created_at` and `ended_at` are readings of the emulator's monotonic clock.
    """

    __slots__ = (
        "_clock",
        "created_at",
        "end",
        "entries",
        "failed",
        "files",
        "id",
        "input_values",
        "manifest",
        "rendered",
        "start",
        "stop_requested",
        "stopped_at",
        "target",
    )

    def __init__(
        self,
        manifest: str,
        target: Target,
        input_values: NodeInputs,
        files: list[UploadedFile],
        clock: Clock,
        queue_delay: float,
        trail: float,
    ) -> None:
        timeline = evaluate(target, input_values, files, trail)
        self.id = str(uuid.uuid4())
        self.manifest = manifest
        self.target = target
        self.input_values = input_values
        self.files = files
        self.created_at = clock.now()
        self.start = self.created_at + queue_delay
        self.end = timeline.end
        self.failed = timeline.failed
        self.entries = timeline.entries
        self.stopped_at: float | None = None
        self.stop_requested = False
        self.rendered: list[bytes] | None = None
        self._clock = clock

    @property
    def status(self) -> str:
        """The status now."""
        return self.status_at(self._clock.now())

    @property
    def ended_at(self) -> float | None:
        """When the task turned terminal, or None while it has not."""
        end = self.end_time()
        return end if end <= self._clock.now() else None

    def end_time(self) -> float:
        """When the task turns (or turned) terminal; infinite for a never-ending one."""
        return self.stopped_at if self.stopped_at is not None else self.start + self.end

    def status_at(self, now: float) -> str:
        """The status at a reading of the clock."""
        if self.stopped_at is not None:
            return "stopped"
        if now < self.start:
            return "created"
        if now < self.start + self.end:
            return "running"
        return "failed" if self.failed else "completed"

    def visible_count(self, now: float) -> int:
        """How many log entries have happened by `now`."""
        return bisect_right(self.entries, now - self.start, key=_offset_of)

    def stop(self, now: float, trail: float) -> None:
        """Stop a non-terminal task: drop its future events and end its session."""
        self.stop_requested = True
        if self.status_at(now) in TERMINAL:
            return
        self.stopped_at = now
        offset = now - self.start
        del self.entries[self.visible_count(now) :]
        stop: Entry = (offset + trail, "SessionFinished", None, {"error": "stopped by user"})
        self.entries.append(stop)

    def to_json(self, now: float) -> dict[str, Any]:
        """The snake_case Task of the API."""
        status = self.status_at(now)
        if status == "created":
            updated = self.created_at
        elif status == "running":
            updated = self.start
        else:
            updated = self.end_time()
        return {
            "id": self.id,
            "status": status,
            "project_id": PROJECT_ID,
            "manifest_path": self.target.path,
            "inputValues": self.input_values,
            "created_at": self._clock.ms(self.created_at),
            "updated_at": self._clock.ms(updated),
        }


class TaskStore:
    """All retained tasks, in creation order, with a bound on finished ones."""

    def __init__(
        self, clock: Clock, queue_delay: float, log_trail: float, max_finished: int | None
    ) -> None:
        self.tasks: dict[str, Task] = {}
        self.clock = clock
        self.queue_delay = queue_delay
        self.log_trail = log_trail
        self._max_finished = max_finished
        self._evicted_spans: tuple[array[float], array[float]] = (array("d"), array("d"))
        self._evicted_statuses: Counter[str] = Counter()

    def create(
        self, manifest: str, target: Target, input_values: NodeInputs, files: list[UploadedFile]
    ) -> Task:
        """Evaluate the target's block now and record the new task."""
        task = Task(
            manifest, target, input_values, files, self.clock, self.queue_delay, self.log_trail
        )
        self.tasks[task.id] = task
        self._evict()
        return task

    def stop(self, task: Task) -> None:
        """Stop a task (a terminal one stays as it is)."""
        task.stop(self.clock.now(), self.log_trail)

    def by_status(self) -> dict[str, int]:
        """How many tasks (evicted ones included) are in each status now."""
        now = self.clock.now()
        counts = Counter(task.status_at(now) for task in self.tasks.values())
        counts.update(self._evicted_statuses)
        return dict(counts)

    def active_count(self) -> int:
        """How many retained tasks are not terminal now."""
        now = self.clock.now()
        return sum(1 for task in self.tasks.values() if task.status_at(now) not in TERMINAL)

    def peak_active(self, since: float) -> int:
        """The most tasks that were non-terminal at once, from `since` on."""
        events: list[tuple[float, int]] = []
        starts, ends = self._evicted_spans
        spans = [
            *zip(starts, ends, strict=True),
            *((t.created_at, t.end_time()) for t in self.tasks.values()),
        ]
        for created, ended in spans:
            if ended > since:
                events.append((max(created, since), 1))
                events.append((ended, -1))
        events.sort()
        active = peak = 0
        for _, delta in events:
            active += delta
            peak = max(peak, active)
        return peak

    def _evict(self) -> None:
        if self._max_finished is None or len(self.tasks) <= self._max_finished:
            return
        now = self.clock.now()
        excess = len(self.tasks) - self._max_finished
        victims = []
        for task in self.tasks.values():
            if task.status_at(now) in TERMINAL:
                victims.append(task)
                if len(victims) == excess:
                    break
        starts, ends = self._evicted_spans
        for task in victims:
            del self.tasks[task.id]
            starts.append(task.created_at)
            ends.append(task.end_time())
            self._evicted_statuses[task.status_at(now)] += 1

"""`EmulatorState`: the state and configuration the routes and the ASGI app work on."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

from ._blocks import BlockFunction
from ._catalogue import Package, make_block
from ._clock import Clock
from ._demo import INSTALLABLE, demo_catalogue
from ._faults import FaultInjector
from ._installs import Installs
from ._stats import Stats
from ._tasks import Task, TaskStore

AuthMode = Literal["none", "raw", "raw-or-bearer"]
EnvelopeMode = Literal["current", "bare"]


class EmulatorState:
    """Tasks, installs, catalogue, faults and counters of one emulated server.

    `auth` defaults to "raw" when a token is given and "none" otherwise. Task lifecycles
    are read from the clock on each request; nothing runs in the background.
    """

    def __init__(
        self,
        token: str | None = None,
        auth: AuthMode | None = None,
        envelope: EnvelopeMode = "current",
        queue_delay: float = 0.0,
        log_trail: float = 0.0,
        install_duration: float = 0.05,
        seed: int | None = None,
        max_finished_tasks: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        mode = auth or ("none" if token is None else "raw")
        if mode not in ("none", "raw", "raw-or-bearer"):
            raise ValueError(f"unknown auth mode {mode!r}")
        if mode != "none" and token is None:
            raise ValueError(f"auth mode {mode!r} needs a token")
        if envelope not in ("current", "bare"):
            raise ValueError(f"unknown envelope {envelope!r}")
        if min(queue_delay, log_trail, install_duration) < 0:
            raise ValueError("durations must not be negative")
        if max_finished_tasks is not None and max_finished_tasks < 0:
            raise ValueError("max_finished_tasks must not be negative")
        self.token = token
        self.auth: AuthMode = mode
        self.envelope: EnvelopeMode = envelope
        self.clock = Clock(clock)
        self.faults = FaultInjector(seed, self.clock.now)
        self.catalogue = demo_catalogue()
        self.installs = Installs(self.clock, install_duration, self.catalogue, INSTALLABLE)
        self.store = TaskStore(self.clock, queue_delay, log_trail, max_finished_tasks)
        self.counters = Stats(self.clock.now())

    @property
    def log_trail(self) -> float:
        """Seconds the closing logs (BlockFinished, SessionFinished) lag the terminal status
        of tasks created from now on."""
        return self.store.log_trail

    @log_trail.setter
    def log_trail(self, seconds: float) -> None:
        if not seconds >= 0:
            raise ValueError("log_trail must not be negative")
        self.store.log_trail = seconds

    @property
    def tasks(self) -> Mapping[str, Task]:
        """The retained tasks by id (read-only, creation order)."""
        return MappingProxyType(self.store.tasks)

    def task_status(self, task_id: str) -> str:
        """The status of a task now."""
        return self.store.tasks[task_id].status

    def register_block(
        self,
        block_id: str,
        fn: BlockFunction,
        *,
        description: str = "",
        inputs: Sequence[Mapping[str, Any]] = (),
        version: str = "1.0.0",
    ) -> None:
        """Install a block `package::name` that runs `fn(ctx: BlockContext) -> dict | None`."""
        package, sep, name = block_id.partition("::")
        if not (package and sep and name):
            raise ValueError(f"block id {block_id!r} is not 'package::name'")
        block = make_block(package, version, name, fn, description, tuple(inputs))
        self.catalogue.packages.setdefault(package, Package(package, version))
        self.catalogue.add_block(block)

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset, plus task counts by status and `peak_active`."""
        return {
            **self.counters.snapshot(),
            "tasks_by_status": self.store.by_status(),
            "peak_active": self.peak_active(),
        }

    def reset_stats(self) -> None:
        """Zero the counters; `peak_active` then only considers later activity."""
        self.counters.reset(self.clock.now())

    def peak_active(self) -> int:
        """The most tasks that were non-terminal at once since the last reset."""
        return self.store.peak_active(self.counters.since)

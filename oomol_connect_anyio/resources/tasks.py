"""``client.tasks``: create, inspect, stop and wait for tasks (a facade over the lifecycle)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from .._adaptive import PollingModel
from .._concurrency import single_error
from .._lifecycle import Lifecycle
from .._multipart import Files
from .._options import parse_polling
from .._run_many import BatchMethods
from .._task_api import TaskEndpoints
from .._task_wait import TaskEvent, TaskWait
from .._transport import Transport
from .._types import (
    CreateTaskRequest,
    ListTasksResponse,
    PollingOptions,
    RunResult,
    Task,
    TaskInputValues,
    TaskLog,
)

if TYPE_CHECKING:
    pass

Logs = list[TaskLog]


class Tasks(BatchMethods):
    def __init__(self, transport: Transport, lifecycle: Lifecycle | None = None) -> None:
        self._lifecycle = lifecycle or Lifecycle(TaskEndpoints(transport))
        self._api = self._lifecycle.api

    def _batch_placement(self) -> Lifecycle:
        return self._lifecycle

    @property
    def polling_model(self) -> PollingModel:
        """What the client learned of run durations (shared with ``client.polling_model``)."""
        return self._lifecycle.polling_model

    async def list(self) -> ListTasksResponse:
        """``GET /v1/tasks``."""
        return await self._api.list()

    async def create(self, request: CreateTaskRequest) -> Task:
        """``POST /v1/tasks`` with ``manifest`` (or ``blockId``) and ``inputValues``.

        A create whose answer was lost is reconciled (see the README, "Reliability").
        """
        return await self._lifecycle.create(self._lifecycle.json_call(request))

    async def create_with_files(
        self,
        manifest: str,
        input_values: TaskInputValues | None = None,
        files: Files | None = None,
    ) -> Task:
        """``POST /v1/tasks`` as multipart: ``manifest``, ``inputValues`` and ``files`` parts.

        Files are checked before the request and streamed from a worker thread.
        """
        return await self._lifecycle.create(
            self._lifecycle.multipart_call(manifest, input_values, files)
        )

    async def get(self, task_id: str) -> Task:
        """``GET /v1/tasks/{id}`` (wrapped or bare answers)."""
        return await self._api.get(task_id)

    async def stop(
        self, task_id: str, *, retry: bool = True, request_timeout: float | None = None
    ) -> Task:
        """``POST /v1/tasks/{id}/stop``; ``retry=False`` makes a single attempt and
        ``request_timeout`` overrides the client's per-request timeout."""
        if request_timeout is not None and (
            isinstance(request_timeout, bool)
            or not isinstance(request_timeout, (int, float))
            or not 0 < request_timeout < math.inf
        ):
            raise ValueError(
                f"request_timeout must be a positive number of seconds or None, "
                f"not {request_timeout!r}"
            )
        return await self._api.stop(task_id, retry=retry, request_timeout=request_timeout)

    async def get_logs(self, task_id: str) -> Logs:
        """``GET /v1/tasks/{id}/logs``: the whole list, ascending ``id``."""
        return await self._api.get_logs(task_id)

    async def wait_for_completion(
        self, task_id: str, polling_options: PollingOptions | None = None
    ) -> Task:
        """Poll until the task ends; raise ``TaskFailedError``, ``TaskStoppedError`` or a timeout.

        ``stop_on_cancel`` defaults to False here: the task is the caller's.
        ``get_wait_stats(task)`` then tells what the wait cost.
        """
        polling = parse_polling(cast("Mapping[str, Any]", polling_options), stop_on_cancel=False)
        return await TaskWait(self._lifecycle, task_id, polling).wait()

    async def create_and_wait(
        self, request: CreateTaskRequest, polling_options: PollingOptions | None = None
    ) -> Task:
        """``create`` then ``wait_for_completion``; the task is stopped if abandoned."""
        polling = parse_polling(cast("Mapping[str, Any]", polling_options), stop_on_cancel=True)
        call = self._lifecycle.json_call(request)
        return (await self._lifecycle.run(call, polling, collect_logs=False))["task"]

    async def run(
        self, request: CreateTaskRequest, polling_options: PollingOptions | None = None
    ) -> RunResult:
        """Create, wait, and return the task, its logs and its result (``RunResult``)."""
        polling = parse_polling(cast("Mapping[str, Any]", polling_options), stop_on_cancel=True)
        return await self._lifecycle.run(self._lifecycle.json_call(request), polling)

    async def run_with_files(
        self,
        manifest: str,
        input_values: TaskInputValues | None = None,
        files: Files | None = None,
        polling_options: PollingOptions | None = None,
    ) -> RunResult:
        """``create_with_files``, then as ``run``."""
        polling = parse_polling(cast("Mapping[str, Any]", polling_options), stop_on_cancel=True)
        call = self._lifecycle.multipart_call(manifest, input_values, files)
        return await self._lifecycle.run(call, polling)

    @asynccontextmanager
    async def watch(
        self, task_id: str, polling_options: PollingOptions | None = None
    ) -> AsyncIterator[MemoryObjectReceiveStream[TaskEvent]]:
        """Iterate a task's ``TaskProgress`` and ``TaskLogEvent`` items, in order.

        Polling runs in a task group owned by this context: leaving the block
        (or breaking out of the loop) stops it. The iteration ends after the
        terminal status; a failed task is reported as an event, not raised.
        """
        polling = parse_polling(cast("Mapping[str, Any]", polling_options), stop_on_cancel=False)
        send, receive = anyio.create_memory_object_stream[TaskEvent]()
        waiter = TaskWait(self._lifecycle, task_id, polling, emit=send.send)

        async def produce() -> None:
            async with send:
                await waiter.wait(raise_on_failure=False)

        with single_error():
            async with anyio.create_task_group() as group, receive:
                group.start_soon(produce)
                yield receive
                group.cancel_scope.cancel()

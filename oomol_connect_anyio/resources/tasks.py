"""``client.tasks``: create, inspect, stop and wait for tasks (a facade over the lifecycle)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from .._adaptive import PollingModel
from .._concurrency import single_error
from .._lifecycle import Lifecycle
from .._multipart import Files
from .._options import parse_polling
from .._run_many import (
    BatchOptions,
    OnResult,
    OutcomeList,
    OutcomeStream,
    Requests,
    ResultList,
    ResultStream,
    RunMany,
)
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
    from typing_extensions import Unpack

Logs = list[TaskLog]


class Tasks:
    def __init__(self, transport: Transport, lifecycle: Lifecycle | None = None) -> None:
        self._lifecycle = lifecycle or Lifecycle(TaskEndpoints(transport))
        self._api = self._lifecycle.api

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

    @overload
    async def run_many(
        self,
        requests: Requests,
        *,
        return_exceptions: Literal[False] = False,
        on_result: OnResult | None = None,
        **options: Unpack[BatchOptions],
    ) -> ResultList: ...

    @overload
    async def run_many(
        self,
        requests: Requests,
        *,
        return_exceptions: bool,
        on_result: OnResult | None = None,
        **options: Unpack[BatchOptions],
    ) -> OutcomeList: ...

    async def run_many(
        self,
        requests: Requests,
        *,
        return_exceptions: bool = False,
        on_result: OnResult | None = None,
        **options: Unpack[BatchOptions],
    ) -> OutcomeList | ResultList:
        """``run`` every request, at most ``max_concurrency`` (default 8) at a time.

        ``requests`` is any iterable or async iterable, pulled lazily; a list or
        tuple is validated whole first. ``limiter`` (an ``anyio.CapacityLimiter``)
        replaces ``max_concurrency`` and may be shared by several calls.
        ``polling_options`` apply to every run; its ``on_progress``/``on_log`` are
        called as ``callback(index, item)``. ``on_result(index, outcome)`` (plain
        or async) is called, one at a time, as each run ends; an error it raises
        stops the batch and propagates. ``max_per_second`` spaces task creations.
        A 429 (or an error with ``Retry-After``) to any request of the batch pauses
        its new creates for that long; ``adaptive_concurrency=True`` also narrows the
        batch's window of runs on 429/503 and widens it back, within [1, limit].

        Returns the outcomes in input order. By default the first failure cancels
        the other runs, stops their remote tasks, and is raised as an
        ``ExceptionGroup`` of the real errors: catch it with
        ``except* TaskFailedError`` (3.11+) or ``with exceptiongroup.catch({...})``
        (3.10); each error carries a note naming its request. With
        ``return_exceptions=True`` every request runs and a failed one's item is
        its exception. A cancellation (or a timeout) around the call stops every
        remote task it created (unless ``stop_on_cancel`` is set to False).
        """
        batch = RunMany(self._lifecycle, requests, return_exceptions=return_exceptions, **options)
        return await batch.collect(on_result)

    @overload
    def run_many_iter(
        self,
        requests: Requests,
        *,
        return_exceptions: Literal[False] = False,
        **options: Unpack[BatchOptions],
    ) -> ResultStream: ...

    @overload
    def run_many_iter(
        self, requests: Requests, *, return_exceptions: bool, **options: Unpack[BatchOptions]
    ) -> OutcomeStream: ...

    def run_many_iter(
        self,
        requests: Requests,
        *,
        return_exceptions: bool = False,
        **options: Unpack[BatchOptions],
    ) -> OutcomeStream | ResultStream:
        """As ``run_many``, as a context manager yielding ``(index, outcome)`` as runs end::

            async with client.tasks.run_many_iter(requests) as outcomes:
                async for index, outcome in outcomes:
                    ...

        A context manager, not an async generator: the runs live in a task
        group, which must be entered and left by the same task, and an async
        generator's cleanup may run in another task, late, or never. Leaving
        the block (``break``, an error, a cancellation) cancels the runs still
        going and stops their remote tasks before it exits. Arguments are
        checked here, before the block. A finished run's outcome waits to be
        taken, holding a slot of the batch (not the limiter's token), so a slow
        consumer slows the batch.
        """
        return RunMany(
            self._lifecycle, requests, return_exceptions=return_exceptions, **options
        ).open()

"""``client.tasks``: create, inspect, stop and wait for tasks."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal, cast, overload

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream

from .._adaptive import PollingModel
from .._concurrency import logger, shielded, single_error
from .._inputs import build_create_payload, normalize_input_values, validate_manifest
from .._logs import extract_result
from .._multipart import Files, MultipartBody, prepare_files
from .._options import parse_polling
from .._responses import list_of_objects, logs_with_ids, object_with_id
from .._run_many import (
    AnyPollingOptions,
    OnResult,
    OutcomeList,
    OutcomeStream,
    Requests,
    ResultList,
    ResultStream,
    RunMany,
)
from .._task_wait import TaskDict, TaskEvent, TaskWait
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

Logs = list[TaskLog]


class Tasks:
    def __init__(self, transport: Transport, polling_model: PollingModel | None = None) -> None:
        self._transport = transport
        self.polling_model = PollingModel() if polling_model is None else polling_model

    async def list(self) -> ListTasksResponse:
        """``GET /v1/tasks``."""
        body = await self._transport.request("GET", "/v1/tasks")
        return {"tasks": cast("list[Task]", list_of_objects(body, "tasks"))}

    async def create(self, request: CreateTaskRequest) -> Task:
        """``POST /v1/tasks`` with ``manifest`` (or ``blockId``) and ``inputValues``."""
        payload = build_create_payload(request)
        body = await self._transport.request(
            "POST", "/v1/tasks", json_body=payload, idempotent=False
        )
        return cast(Task, object_with_id(body, "task"))

    async def create_with_files(
        self,
        manifest: str,
        input_values: TaskInputValues | None = None,
        files: Files | None = None,
    ) -> Task:
        """``POST /v1/tasks`` as multipart: ``manifest``, ``inputValues`` and ``files`` parts.

        Files are checked before the request and streamed from a worker thread.
        """
        fields = {
            "manifest": validate_manifest(manifest),
            "inputValues": json.dumps(normalize_input_values(input_values)),
        }
        body = MultipartBody(fields, prepare_files(files))
        answer = await self._transport.request(
            "POST", "/v1/tasks", multipart=body, idempotent=False
        )
        return cast(Task, object_with_id(answer, "task"))

    async def get(self, task_id: str) -> Task:
        """``GET /v1/tasks/{id}`` (wrapped or bare answers)."""
        body = await self._transport.request("GET", "/v1/tasks/{id}", task_id)
        return cast(Task, object_with_id(body, "task"))

    async def stop(
        self, task_id: str, *, retry: bool = True, request_timeout: float | None = None
    ) -> Task:
        """``POST /v1/tasks/{id}/stop``; ``retry=False`` makes a single attempt and
        ``request_timeout`` overrides the client's per-request timeout."""
        body = await self._transport.request(
            "POST", "/v1/tasks/{id}/stop", task_id, retry=retry, request_timeout=request_timeout
        )
        self._transport.metrics.stops_sent += 1
        return cast(Task, object_with_id(body, "task"))

    async def get_logs(self, task_id: str) -> Logs:
        """``GET /v1/tasks/{id}/logs``: the whole list, ascending ``id``."""
        body = await self._transport.request("GET", "/v1/tasks/{id}/logs", task_id)
        return cast("list[TaskLog]", logs_with_ids(body))

    async def wait_for_completion(
        self, task_id: str, polling_options: PollingOptions | None = None
    ) -> Task:
        """Poll until the task ends; raise ``TaskFailedError``, ``TaskStoppedError`` or a timeout.

        ``stop_on_cancel`` defaults to False here: the task is the caller's.
        """
        polling = parse_polling(cast("Mapping[str, Any]", polling_options), stop_on_cancel=False)
        return cast(Task, await TaskWait(self, task_id, polling).wait())

    async def create_and_wait(
        self, request: CreateTaskRequest, polling_options: PollingOptions | None = None
    ) -> Task:
        """``create`` then ``wait_for_completion``; the task is stopped if abandoned."""
        polling = parse_polling(cast("Mapping[str, Any]", polling_options), stop_on_cancel=True)
        started = time.monotonic()
        task = await self._create_owned(lambda: self.create(request))
        return cast(Task, await self._tracked(TaskWait.after_create(self, task, polling, started)))

    async def run(
        self, request: CreateTaskRequest, polling_options: PollingOptions | None = None
    ) -> RunResult:
        """Create, wait, and return the task, its logs and its result (``RunResult``)."""
        polling = parse_polling(cast("Mapping[str, Any]", polling_options), stop_on_cancel=True)
        started = time.monotonic()
        task = await self._create_owned(lambda: self.create(request))
        return await self._run(TaskWait.after_create(self, task, polling, started))

    async def run_with_files(
        self,
        manifest: str,
        input_values: TaskInputValues | None = None,
        files: Files | None = None,
        polling_options: PollingOptions | None = None,
    ) -> RunResult:
        """``create_with_files``, then as ``run``."""
        polling = parse_polling(cast("Mapping[str, Any]", polling_options), stop_on_cancel=True)
        started = time.monotonic()
        task = await self._create_owned(
            lambda: self.create_with_files(manifest, input_values, files)
        )
        return await self._run(TaskWait.after_create(self, task, polling, started))

    async def _create_owned(
        self,
        create: Callable[[], Awaitable[Task]],
        shields: set[anyio.CancelScope] | None = None,
    ) -> Task:
        """Create a task this client will own, so that a cancellation cannot lose it.

        The create request runs shielded (so at most for the request ``timeout``);
        a cancellation that arrived meanwhile then stops the new task and goes
        on. A batch passes ``shields`` to cut the shield short when it aborts.
        """
        shield = anyio.CancelScope(shield=True)
        if shields is not None:
            shields.add(shield)
        try:
            with shield:
                task = await create()
        finally:
            if shields is not None:
                shields.discard(shield)
        if shield.cancelled_caught:
            logger.warning("gave up creating a task after a cancellation; it may exist")
            await anyio.lowlevel.checkpoint()  # re-raise the cancellation
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            await self.stop_quietly(task["id"])
            raise
        return task

    async def _tracked(self, waiter: TaskWait, *, collect_logs: bool = False) -> TaskDict:
        metrics = self._transport.metrics
        metrics.in_flight_runs += 1
        try:
            return await waiter.wait(collect_logs=collect_logs)
        finally:
            metrics.in_flight_runs -= 1

    async def _run(self, waiter: TaskWait) -> RunResult:
        task = await self._tracked(waiter, collect_logs=True)
        return {
            "task_id": waiter.task_id,
            "task": cast(Task, task),
            "logs": waiter.logs,
            "result": extract_result(waiter.logs),
            "stats": waiter.stats(),
        }

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
        waiter = TaskWait(self, task_id, polling, emit=send.send)

        async def produce() -> None:
            async with send:
                await waiter.wait(raise_on_failure=False)

        with single_error():
            async with anyio.create_task_group() as group, receive:
                group.start_soon(produce)
                yield receive
                group.cancel_scope.cancel()

    async def stop_quietly(self, task_id: str) -> bool:
        """Stop a task from cleanup code: one attempt, shielded, bounded, never raising."""
        async def stop(seconds: float) -> None:
            await self.stop(task_id, retry=False, request_timeout=seconds)

        return await shielded(stop, f"stopping task {task_id}")

    @overload
    async def run_many(
        self,
        requests: Requests,
        *,
        max_concurrency: int | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        polling_options: AnyPollingOptions | None = None,
        return_exceptions: Literal[False] = False,
        on_result: OnResult | None = None,
        max_per_second: float | None = None,
    ) -> ResultList: ...

    @overload
    async def run_many(
        self,
        requests: Requests,
        *,
        max_concurrency: int | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        polling_options: AnyPollingOptions | None = None,
        return_exceptions: bool,
        on_result: OnResult | None = None,
        max_per_second: float | None = None,
    ) -> OutcomeList: ...

    async def run_many(
        self,
        requests: Requests,
        *,
        max_concurrency: int | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        polling_options: AnyPollingOptions | None = None,
        return_exceptions: bool = False,
        on_result: OnResult | None = None,
        max_per_second: float | None = None,
    ) -> OutcomeList | ResultList:
        """``run`` every request, at most ``max_concurrency`` (default 8) at a time.

        ``requests`` is any iterable or async iterable, pulled lazily; a list or
        tuple is validated whole first. ``limiter`` (an ``anyio.CapacityLimiter``)
        replaces ``max_concurrency`` and may be shared by several calls.
        ``polling_options`` apply to every run; its ``on_progress``/``on_log`` are
        called as ``callback(index, item)``. ``on_result(index, outcome)`` (plain
        or async) is called, one at a time, as each run ends; an error it raises
        stops the batch and propagates. ``max_per_second`` spaces task creations.

        Returns the outcomes in input order. By default the first failure cancels
        the other runs, stops their remote tasks, and is raised as an
        ``ExceptionGroup`` of the real errors: catch it with
        ``except* TaskFailedError`` (3.11+) or ``with exceptiongroup.catch({...})``
        (3.10); each error carries a note naming its request. With
        ``return_exceptions=True`` every request runs and a failed one's item is
        its exception. A cancellation (or a timeout) around the call stops every
        remote task it created (unless ``stop_on_cancel`` is set to False).
        """
        batch = RunMany(
            self,
            requests,
            max_concurrency=max_concurrency,
            limiter=limiter,
            polling_options=polling_options,
            return_exceptions=return_exceptions,
            max_per_second=max_per_second,
        )
        return await batch.collect(on_result)

    @overload
    def run_many_iter(
        self,
        requests: Requests,
        *,
        max_concurrency: int | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        polling_options: AnyPollingOptions | None = None,
        return_exceptions: Literal[False] = False,
        max_per_second: float | None = None,
    ) -> ResultStream: ...

    @overload
    def run_many_iter(
        self,
        requests: Requests,
        *,
        max_concurrency: int | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        polling_options: AnyPollingOptions | None = None,
        return_exceptions: bool,
        max_per_second: float | None = None,
    ) -> OutcomeStream: ...

    def run_many_iter(
        self,
        requests: Requests,
        *,
        max_concurrency: int | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        polling_options: AnyPollingOptions | None = None,
        return_exceptions: bool = False,
        max_per_second: float | None = None,
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
            self,
            requests,
            max_concurrency=max_concurrency,
            limiter=limiter,
            polling_options=polling_options,
            return_exceptions=return_exceptions,
            max_per_second=max_per_second,
        ).open()

"""The task routes of the Connect API, one method each, with their answers checked."""

from __future__ import annotations

import builtins
from typing import cast

from ._encoding import JsonBytes
from ._multipart import MultipartBody
from ._responses import list_of_objects, logs_with_ids, object_with_id
from ._transport import Transport
from ._types import ListTasksResponse, Task, TaskLog


class TaskEndpoints:
    """``/v1/tasks`` and its sub-routes over one transport; no policy beyond the transport's."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @property
    def max_retries(self) -> int:
        """How many times the client retries a request (what bounds a create's re-sends too)."""
        return self.transport.retry.max_retries

    async def list(self) -> ListTasksResponse:
        body = await self.transport.request("GET", "/v1/tasks")
        return {"tasks": cast("list[Task]", list_of_objects(body, "tasks"))}

    async def create(self, payload: dict[str, object] | JsonBytes, *, retry: bool = True) -> Task:
        body = await self.transport.request(
            "POST", "/v1/tasks", json_body=payload, idempotent=False, retry=retry
        )
        return cast(Task, object_with_id(body, "task"))

    async def create_multipart(self, body: MultipartBody, *, retry: bool = True) -> Task:
        answer = await self.transport.request(
            "POST", "/v1/tasks", multipart=body, idempotent=False, retry=retry
        )
        return cast(Task, object_with_id(answer, "task"))

    async def get(self, task_id: str) -> Task:
        body = await self.transport.request("GET", "/v1/tasks/{id}", task_id)
        return cast(Task, object_with_id(body, "task"))

    async def stop(
        self, task_id: str, *, retry: bool = True, request_timeout: float | None = None
    ) -> Task:
        body = await self.transport.request(
            "POST", "/v1/tasks/{id}/stop", task_id, retry=retry, request_timeout=request_timeout
        )
        self.transport.metrics.stops_sent += 1
        return cast(Task, object_with_id(body, "task"))

    async def get_logs(self, task_id: str) -> builtins.list[TaskLog]:
        body = await self.transport.request("GET", "/v1/tasks/{id}/logs", task_id)
        return cast("list[TaskLog]", logs_with_ids(body))

"""``client.packages``: installed packages and install tasks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from .._adaptive import PollingModel, adapt, install_key, record_completion
from .._concurrency import call, deadline
from .._errors import InstallFailedError, InvalidResponseError, TimeoutError
from .._options import Polling, parse_polling
from .._polling import AnswerCheck, poll_until
from .._responses import list_of_objects, object_with_id
from .._transport import Transport
from .._types import (
    InstallTask,
    ListInstallTasksResponse,
    ListPackagesResponse,
    Package,
    PollingOptions,
)

_TERMINAL = frozenset({"success", "failed"})
_STATUSES = _TERMINAL | {"pending", "running"}


class Packages:
    def __init__(self, transport: Transport, polling_model: PollingModel | None = None) -> None:
        self._transport = transport
        self._polling_model = PollingModel() if polling_model is None else polling_model

    async def list(self) -> ListPackagesResponse:
        """``GET /packages``."""
        body = await self._transport.request("GET", "/packages")
        return {"packages": cast("list[Package]", list_of_objects(body, "packages"))}

    async def install(self, name: str, version: str | None = None) -> InstallTask:
        """``POST /packages/install``; fetches the install task once if only its id comes back."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"package name must be a non-empty string, not {name!r}")
        if version is not None and (not isinstance(version, str) or not version.strip()):
            raise ValueError(f"package version must be a non-empty string or None, not {version!r}")
        payload = {"name": name} if version is None else {"name": name, "version": version}
        body = await self._transport.request(
            "POST", "/packages/install", json_body=payload, idempotent=False
        )
        task_id = body.get("taskId") if isinstance(body, dict) else None
        if isinstance(task_id, str) and task_id and "task" not in body:
            return await self.get_install_task(task_id)
        if isinstance(body, dict) and ("task" in body or "id" in body):
            return cast(InstallTask, object_with_id(body, "task"))
        raise InvalidResponseError(200, "unexpected response: no install task id", body)

    async def list_install_tasks(self) -> ListInstallTasksResponse:
        """``GET /packages/install``."""
        body = await self._transport.request("GET", "/packages/install")
        return {"tasks": cast("list[InstallTask]", list_of_objects(body, "tasks"))}

    async def get_install_task(self, task_id: str) -> InstallTask:
        """``GET /packages/install/{id}``."""
        body = await self._transport.request("GET", "/packages/install/{id}", task_id)
        return cast(InstallTask, object_with_id(body, "task"))

    async def wait_for_install_completion(
        self, task_id: str, polling_options: PollingOptions | None = None
    ) -> InstallTask:
        """Poll an install task until ``success``; raise ``InstallFailedError`` on ``failed``."""
        polling = parse_polling(cast("Mapping[str, Any]", polling_options), stop_on_cancel=False)
        return await self._wait(task_id, polling)

    async def install_and_wait(
        self,
        name: str,
        version: str | None = None,
        polling_options: PollingOptions | None = None,
    ) -> InstallTask:
        """``install`` then ``wait_for_install_completion``."""
        polling = parse_polling(cast("Mapping[str, Any]", polling_options), stop_on_cancel=False)
        task = await self.install(name, version)
        return await self._wait(task["id"], polling, known=task)

    async def _wait(
        self, task_id: str, polling: Polling, known: InstallTask | None = None
    ) -> InstallTask:
        """Poll to a terminal status; ``known`` (the install answer) stands in for the first
        poll. Transient failures are missed polls, as in task waits."""
        last: list[InstallTask] = []
        check = AnswerCheck("install task", task_id, _STATUSES)

        async def fetch() -> InstallTask:
            task = await self.get_install_task(task_id)
            check(task)
            return task
        model = self._polling_model
        polling, schedule = adapt(model, polling, None)  # adaptive polling, when asked

        async def report(task: InstallTask) -> None:
            if schedule is not None:
                schedule.observe(install_key(task), task.get("createdAt"))
            if task.get("status") == "success":  # the wait's last report: learn from it
                record_completion(model, install_key(task), task.get("createdAt"),
                                  task.get("updatedAt"))
            last[:] = [task]
            if polling.on_progress is not None:
                await call(polling.on_progress, task)

        def expired() -> TimeoutError:
            status = last[0].get("status") if last else "unknown"
            return TimeoutError(
                f"install task {task_id} did not finish within {polling.timeout:g} s "
                f"(last status: {status})",
                task_id=task_id, task=last[0] if last else None,
            )

        with deadline(polling.timeout, expired):
            task = await poll_until(
                fetch,
                lambda t: t.get("status") in _TERMINAL,
                polling,
                report,
                known,
            )
        return _check(task)


def _check(task: InstallTask) -> InstallTask:
    if task.get("status") == "failed":
        error = task.get("error") or "no error text"
        raise InstallFailedError(
            f"install task {task.get('id')} for {task.get('name', '?')!r} failed: {error}",
            task_id=str(task.get("id")), task=task, error=task.get("error"),
        )
    return task

"""What this command has created on the server, so that an abrupt end can name what may still run.

The client's request hooks and the polling callbacks feed it; it never raises (a hook that raised
could leave a created task behind).
"""

from __future__ import annotations

from urllib.parse import unquote

from .. import RequestEvent, ResponseEvent, Task

CREATE_ROUTES = frozenset({"POST /v1/tasks", "POST /packages/install"})
STOP_ROUTE = "POST /v1/tasks/{id}/stop"
TERMINAL = frozenset({"completed", "failed", "stopped", "success"})


class Ledger:
    """Tasks this command created, and which of them are known to have ended or been stopped."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self.stopped: list[str] = []
        self._ended: set[str] = set()
        self._creates_in_flight = 0

    def on_request(self, event: RequestEvent) -> None:
        if event.route in CREATE_ROUTES:
            self._creates_in_flight += 1

    def on_response(self, event: ResponseEvent) -> None:
        if event.route in CREATE_ROUTES:
            self._creates_in_flight = max(0, self._creates_in_flight - 1)
        elif event.route == STOP_ROUTE and event.status is not None and event.status < 300:
            task_id = unquote(event.url.rsplit("/", 2)[-2])
            if task_id in self.created and task_id not in self._ended:
                self.stopped.append(task_id)
            self._ended.add(task_id)

    def seen(self, task: Task) -> None:
        """A polling ``on_progress`` report: the task exists, maybe it has ended."""
        task_id = task.get("id")
        if not isinstance(task_id, str) or not task_id:
            return
        if task_id not in self.created:
            self.created.append(task_id)
        if task.get("status") in TERMINAL:
            self._ended.add(task_id)

    @property
    def may_run(self) -> list[str]:
        """Created tasks not known to have ended or been stopped."""
        return [task_id for task_id in self.created if task_id not in self._ended]

    @property
    def creating(self) -> bool:
        """A create was sent and its answer has not arrived: its task may exist."""
        return self._creates_in_flight > 0

    def outcome(self) -> str | None:
        """After a cancel: what was stopped and what may still run; ``None`` if nothing was made."""
        parts = []
        if self.stopped:
            parts.append(f"stopped on the server: {', '.join(self.stopped)}")
        if self.may_run:
            parts.append(f"these tasks may still run: {', '.join(self.may_run)}")
        if self.creating:
            parts.append(
                "a task whose creation was not answered may exist "
                "(find it with 'oomol-connect tasks list --status running')"
            )
        if not parts and self.created:
            parts.append("the tasks it created had ended")
        return "; ".join(parts) or None

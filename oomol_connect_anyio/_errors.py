"""The exception hierarchy. Nothing here ever holds the API token."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._types import InstallTask, Task


class OomolConnectError(Exception):
    """Base class of every error raised by this library.

    ``task_id`` names the task the error is about when there is one: a run that fails after
    its task was created (a failed task, a timeout, a server that went away) says which.
    ``server`` names the server (its base URL) of a failed run in a ``ServerPool``'s batch.
    """

    task_id: str | None = None
    server: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ApiError(OomolConnectError):
    """The server answered with an error status (or an unusable body).

    ``retry_after`` is the answer's ``Retry-After`` in seconds (``None`` without one): how
    long the server asked the client to wait before trying again.
    """

    def __init__(
        self,
        status: int,
        message: str,
        body: Any = None,
        request_method: str = "",
        url: str = "",
        *,
        retry_after: float | None = None,
    ) -> None:
        where = f" ({request_method} {url})" if request_method else ""
        super().__init__(f"HTTP {status}: {message}{where}")
        self.status = status
        self.detail = message
        self.body = body
        self.request_method = request_method
        self.url = url
        self.retry_after = retry_after


class BadRequestError(ApiError):
    """400 or 422: the server rejected the request's content."""


class AuthenticationError(ApiError):
    """401 or 403: the token is missing, wrong, or not allowed."""


class NotFoundError(ApiError):
    """404: no such route, task, package or install task."""


class RateLimitError(ApiError):
    """429: too many requests (after the retries were used up)."""


class ServerError(ApiError):
    """5xx: the server or a proxy in front of it failed."""


class InvalidResponseError(ApiError):
    """A success status whose body is not what the API promises."""


class ConnectionError(OomolConnectError, builtins.ConnectionError):
    """The request failed below HTTP: refused, reset, dropped, or timed out.

    ``may_have_reached_server`` is true when a non-idempotent request (task
    creation, package install) may have been processed before the failure.
    """

    def __init__(
        self,
        message: str,
        *,
        request_method: str = "",
        url: str = "",
        may_have_reached_server: bool = False,
    ) -> None:
        OomolConnectError.__init__(self, message)
        self.request_method = request_method
        self.url = url
        self.may_have_reached_server = may_have_reached_server


class RequestTimeoutError(ConnectionError):
    """One HTTP request exceeded the client's per-request ``timeout``."""


class TimeoutError(OomolConnectError, builtins.TimeoutError):
    """A wait (``timeout_ms``) ran out before the task or install ended."""

    task_id: str

    def __init__(
        self,
        message: str,
        *,
        task_id: str,
        task: Task | InstallTask | None = None,
    ) -> None:
        OomolConnectError.__init__(self, message)
        self.task_id = task_id
        self.task = task


class TaskError(OomolConnectError):
    """Base of the errors that report how a task ended.

    ``reason`` is the error text found in the task's logs (``None`` if none).
    """

    task_id: str

    def __init__(
        self,
        message: str,
        *,
        task_id: str,
        task: Task | None = None,
        logs: list[Any] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.task = task
        self.logs = logs if logs is not None else []
        self.reason = reason


class TaskFailedError(TaskError):
    """The task ended ``failed``; the message carries the error text of its logs."""


class TaskStoppedError(TaskError):
    """The task ended ``stopped``."""


class InstallFailedError(OomolConnectError):
    """A package install task ended ``failed``; ``error`` is the server's reason."""

    def __init__(
        self,
        message: str,
        *,
        task_id: str,
        task: InstallTask | None = None,
        error: str | None = None,
    ) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.task = task
        self.error = error


_STATUS_CLASSES: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    422: BadRequestError,
    429: RateLimitError,
}


def error_class_for_status(status: int) -> type[ApiError]:
    """The most specific ``ApiError`` subclass for an HTTP status."""
    if status >= 500:
        return ServerError
    return _STATUS_CLASSES.get(status, ApiError)


class HookError(OomolConnectError):
    """An ``on_request`` or ``on_response`` hook raised; the hook's exception is ``__cause__``.

    ``body`` is the decoded JSON of the answer the hook was shown when it was a success
    (``None`` otherwise): after a create, it carries the created task, so the task can be
    found and stopped.
    """

    def __init__(self, message: str, *, body: Any = None) -> None:
        super().__init__(message)
        self.body = body


class UploadError(OomolConnectError):
    """A file being uploaded could not be read; the request was not retried."""


class UploadChangedError(UploadError):
    """A file grew or shrank while it was being uploaded; the request was not retried."""


_TRANSIENT_STATUSES = frozenset({502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (raised after the transport's own retries) may pass by itself.

    A connection error (a read timeout included), a 429, or a 502/503/504 from a proxy or
    an overloaded server says nothing about the task; anything else (a 4xx, a 500, a body
    that is not what the API promises) will not get better by asking again.
    """
    if isinstance(exc, ConnectionError):
        return True
    if isinstance(exc, RateLimitError):
        return True
    return isinstance(exc, ServerError) and exc.status in _TRANSIENT_STATUSES

"""Small anyio helpers shared by the waits and run_many."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio

from ._log import logger as logger  # the package logger, re-exported

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

T = TypeVar("T")

STOP_DEADLINE = 3.0
"""Seconds the exchange of a shielded remote stop may take (waiting for a free
connection behind other requests does not count), and what a batch that aborts
gives creates in flight."""


async def call(callback: Callable[..., Any], *args: Any) -> None:
    """Call a plain or coroutine function and await its result if it is awaitable."""
    result = callback(*args)
    if inspect.isawaitable(result):
        await result


@contextmanager
def single_error() -> Iterator[None]:
    """Re-raise a task group's error bare instead of in an ``ExceptionGroup``.

    When concurrent requests of one operation fail together (a status poll and
    a log fetch to a server that went away) the first error is raised; the
    others are logged at DEBUG.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        errors = group.exceptions
        if any(isinstance(e, BaseExceptionGroup) or not isinstance(e, Exception) for e in errors):
            raise
        for other in errors[1:]:
            logger.debug("also failed at the same time: %r", other)
        error = errors[0]
        raise error from error.__cause__


@contextmanager
def deadline(timeout: float | None, expired: Callable[[], BaseException]) -> Iterator[None]:
    """One monotonic deadline around a block; raises ``expired()`` when it fires.

    The deadline cancels whatever is in flight (a request, a sleep) at once; an
    outer cancellation passes through untouched.
    """
    if timeout is None:
        yield
        return
    with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
        yield
    if scope.cancelled_caught:
        raise expired()


async def shielded(action: Callable[[float], Awaitable[Any]], what: str) -> bool:
    """Run cleanup that must happen even under cancellation; ``action(STOP_DEADLINE)``
    bounds its own request.

    Its failure is logged, never raised, so it cannot mask the original error.
    """
    with anyio.CancelScope(shield=True):
        try:
            await action(STOP_DEADLINE)
        except Exception as exc:
            logger.warning("%s failed: %s", what, exc)
            return False
    return True

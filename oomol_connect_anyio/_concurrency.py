"""Small anyio helpers shared by the waits and run_many."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio

from ._log import logger as logger  # the package logger, re-exported

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

T = TypeVar("T")

STOP_DEADLINE = 3.0
"""Seconds a cleanup stop keeps trying: its first exchange may take that long (waiting
for a free connection behind other requests does not count), and transient failures are
retried until that long after the first one. Also what a batch that aborts gives creates
in flight when the client is not open."""


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
        interrupt = _interrupt_in(group)
        if interrupt is not None:
            raise interrupt from interrupt.__cause__
        errors = group.exceptions
        if any(isinstance(e, BaseExceptionGroup) or not isinstance(e, Exception) for e in errors):
            raise
        for other in errors[1:]:
            logger.debug("also failed at the same time: %r", other)
        error = errors[0]
        raise error from error.__cause__


def _interrupt_in(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """A ``KeyboardInterrupt`` or ``SystemExit`` in ``group`` (nested ones too), if any:
    raised bare so that ``except KeyboardInterrupt`` and ``sys.exit(3)`` work."""
    matched, _ = group.split((KeyboardInterrupt, SystemExit))
    found: BaseException | None = matched
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


def add_note(error: BaseException, note: str) -> None:
    """``error.add_note(note)``, on 3.10 too (shown by the exceptiongroup backport)."""
    if sys.version_info >= (3, 11):
        error.add_note(note)
    else:
        error.__notes__ = [*getattr(error, "__notes__", ()), note]  # type: ignore[attr-defined]


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

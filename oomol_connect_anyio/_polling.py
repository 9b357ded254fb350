"""The one polling engine, shared by task waits and install waits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from ._options import Polling

T = TypeVar("T")


async def poll_until(
    fetch: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    polling: Polling,
    report: Callable[[T], Awaitable[None]],
    known: T | None = None,
) -> T:
    """Fetch, report, and sleep on ``polling``'s schedule until ``done(state)``.

    ``known`` is a state already in hand (a create answer): it stands in for the first
    fetch, so a task that is done when created costs no fetch at all.
    """
    delays = polling.intervals()
    while True:
        if known is None:
            state = await fetch()
        else:
            state, known = known, None
        await report(state)
        if done(state):
            return state
        await polling.sleep(next(delays))  # drawn after the poll: a learned delay needs "now"

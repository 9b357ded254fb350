"""The one polling engine, shared by task waits and install waits."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from ._concurrency import logger
from ._errors import InvalidResponseError, is_transient
from ._options import Polling

T = TypeVar("T")


@dataclass(frozen=True)
class Missed:
    """A poll that failed transiently; ``error`` is what it raised."""

    error: Exception


class MissedPolls:
    """The transient failures of one wait's polls, held against its outage budget.

    A poll that still fails after the transport's own retries is *missed* when its error is
    transient: the wait goes on. Only failures that have lasted ``budget`` seconds since the
    last answer (or any error that is not transient) end it.
    """

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.count = 0
        self._since: float | None = None

    def answered(self) -> None:
        """A poll got its answer: the outage, if any, is over."""
        self._since = None

    def tolerate(self, exc: BaseException, started: float) -> bool:
        """Count a failed poll begun at ``started`` (anyio time); False if it must end the wait."""
        if not is_transient(exc):
            return False
        if self._since is None:
            self._since = started
        if anyio.current_time() - self._since >= self.budget:
            return False
        self.count += 1
        logger.debug("missed poll %d (polling on): %s", self.count, exc)
        return True

    async def attempt(self, fetch: Callable[[], Awaitable[T]]) -> T | Missed:
        """``await fetch()``, or ``Missed`` if it failed transiently within the budget."""
        started = anyio.current_time()
        try:
            value = await fetch()
        except Exception as exc:
            if not self.tolerate(exc, started):
                raise
            return Missed(exc)
        self.answered()
        return value

    def next_delay(self, exc: BaseException, scheduled: float) -> float:
        """The sleep after a missed poll: the schedule's, or a longer ``Retry-After``."""
        hint = getattr(exc, "retry_after", None)
        if isinstance(hint, bool) or not isinstance(hint, (int, float)) or not math.isfinite(hint):
            return scheduled
        # Sleeping past the budget would only turn the next failure into the last one.
        return max(scheduled, min(float(hint), self.budget))


async def poll_until(
    fetch: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    polling: Polling,
    report: Callable[[T], Awaitable[None]],
    known: T | None = None,
    misses: MissedPolls | None = None,
) -> T:
    """Fetch, report, and sleep on ``polling``'s schedule until ``done(state)``.

    ``known`` is a state already in hand (a create answer): it stands in for the first
    fetch, so a task that is done when created costs no fetch at all. A fetch failing
    transiently is a missed poll (counted in ``misses``): the schedule goes on until the
    failures outlast ``polling.poll_error_budget``; then the last error is raised.
    """
    if misses is None:
        misses = MissedPolls(polling.poll_error_budget)
    delays = polling.intervals()
    while True:
        if known is None:
            state = await misses.attempt(fetch)
            if isinstance(state, Missed):
                delay = next(delays)
                await polling.sleep(delay)  # the schedule's part, which learning may cut short
                extra = misses.next_delay(state.error, delay) - delay
                if extra > 0:  # a longer Retry-After is waited out whole
                    await anyio.sleep(extra)
                continue
        else:
            state, known = known, None
        await report(state)
        if done(state):
            return state
        # Drawn after the poll: a learned delay depends on the time since creation.
        await polling.sleep(next(delays))


class AnswerCheck:
    """Names what is wrong with a poll answer, before it is believed.

    An answer about another object (another id) is an ``InvalidResponseError``; a status
    outside ``statuses`` is treated as not terminal and logged at WARNING, once per wait.
    """

    def __init__(self, what: str, object_id: str, statuses: frozenset[str]) -> None:
        self._what = what
        self._id = object_id
        self._statuses = statuses
        self._warned = False

    def __call__(self, answer: Mapping[str, Any]) -> None:
        answer_id = answer.get("id")
        if answer_id != self._id:
            raise InvalidResponseError(
                200,
                f"unexpected response: asked for {self._what} {self._id!r}, "
                f"got one with id {answer_id!r}",
                dict(answer),
            )
        status = answer.get("status")
        if status not in self._statuses and not self._warned:
            self._warned = True
            logger.warning(
                "%s %s has an unknown status %r: treated as not finished",
                self._what, self._id, status,
            )

"""``tasks.run_many``: many runs, bounded, in one task group, stopped together on failure."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, cast, overload

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._concurrency import STOP_DEADLINE, add_note, call, single_error
from ._durable import DurableRuns
from ._errors import OomolConnectError
from ._inputs import build_create_payload
from ._journal import Journal, JournalError
from ._lifecycle import Lifecycle
from ._options import parse_polling
from ._pressure import BatchPressure, current_pressure
from ._types import (
    CreateTaskRequest,
    PollingOptions,
    PollingSchedule,
    RunResult,
    Task,
    TaskLog,
)

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

if TYPE_CHECKING:
    from typing_extensions import Unpack


class BatchPollingOptions(PollingSchedule, total=False):
    """``PollingOptions`` for ``run_many``: the callbacks also receive the request's index."""

    on_progress: Callable[[int, Task], Awaitable[None] | None] | None
    on_log: Callable[[int, TaskLog], Awaitable[None] | None] | None


AnyPollingOptions = BatchPollingOptions | PollingOptions
"""What ``run_many`` accepts; either way its callbacks are called with the index first."""


class BatchOptions(TypedDict, total=False):
    """The keyword arguments ``run_many`` and ``run_many_iter`` share (see ``run_many``)."""

    max_concurrency: int | None
    limiter: anyio.CapacityLimiter | None
    polling_options: AnyPollingOptions | None
    max_per_second: float | None
    journal: str | os.PathLike[str] | Journal | None
    retry_failed: bool
    adaptive_concurrency: bool


Outcome = RunResult | Exception
"""A run's result, or (with ``return_exceptions=True``) the exception it ended with."""
Requests = Iterable[CreateTaskRequest] | AsyncIterable[CreateTaskRequest]
OnResult = Callable[[int, Any], Any]
Outcomes = MemoryObjectReceiveStream[tuple[int, Outcome]]
Sender = MemoryObjectSendStream[tuple[int, Outcome]]
# The return types of Tasks.run_many(_iter), named here: the name `list` is shadowed in Tasks.
ResultList = list[RunResult]
OutcomeList = list[Outcome]
ResultStream = AbstractAsyncContextManager[MemoryObjectReceiveStream[tuple[int, RunResult]]]
OutcomeStream = AbstractAsyncContextManager[Outcomes]

DEFAULT_CONCURRENCY = 8
_END = object()


class Placement(Protocol):
    """Which server each run of a batch goes to: one client's, or a ``ServerPool``'s."""

    @property
    def lifecycles(self) -> Sequence[Lifecycle]:
        """Every server's lifecycle (the first one's retry policy paces the batch)."""

    @property
    def names_servers(self) -> bool:
        """Whether outcomes say which server ran them (``RunResult["server"]``)."""

    @property
    def default_concurrency(self) -> int:
        """A batch's limit when it sets none."""

    @property
    def max_moves(self) -> int:
        """How often a run's create that made nothing may go to another server."""

    async def acquire(self, token: object, pinned: str | None, budget: float) -> Lifecycle:
        """A server for one run (``pinned``: the base URL it must run on), holding its
        place there for ``token``; ``budget``: how long to wait when every server is down."""

    def release(self, token: object, lifecycle: Lifecycle) -> None:
        """The run holding ``token`` on ``lifecycle``'s server has ended."""

    def failed(self, lifecycle: Lifecycle, error: Exception) -> bool:
        """Take a run's failure into account; ``True`` when its create made nothing and
        it may be sent to another server."""


class OneServer:
    """The placement of one client's batches: every run on its server."""

    names_servers = False
    default_concurrency = DEFAULT_CONCURRENCY
    max_moves = 0

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycles = (lifecycle,)

    async def acquire(self, token: object, pinned: str | None, budget: float) -> Lifecycle:
        return self.lifecycles[0]

    def release(self, token: object, lifecycle: Lifecycle) -> None:
        pass

    def failed(self, lifecycle: Lifecycle, error: Exception) -> bool:
        return False


class RunMany:
    """One batch: a feeder pulls requests lazily and starts one run per free slot.

    Two bounds, both taken per request by the feeder before the run starts:
    ``slots`` (this batch's own, sized like the limiter) covers a request from
    the moment it is pulled until its outcome is handed over, so at most that
    many requests, runs and undelivered outcomes exist at once; ``limiter``
    (possibly shared) covers only creation through completion, so a batch
    whose consumer is slow never holds a shared token it cannot use.
    """

    def __init__(
        self,
        placement: Lifecycle | Placement,
        requests: Requests,
        *,
        return_exceptions: bool,
        max_concurrency: int | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        polling_options: AnyPollingOptions | None = None,
        max_per_second: float | None = None,
        journal: str | os.PathLike[str] | Journal | None = None,
        retry_failed: bool = False,
        adaptive_concurrency: bool = False,
    ) -> None:
        self._placement = OneServer(placement) if isinstance(placement, Lifecycle) else placement
        self._journal_arg = _check_journal(journal)
        if not isinstance(retry_failed, bool):
            raise TypeError(f"retry_failed must be a bool, not {retry_failed!r}")
        if retry_failed and journal is None:
            raise ValueError("retry_failed needs a journal: it re-runs the failures one recorded")
        self._retry_failed = retry_failed
        self._durable: DurableRuns | None = None
        self._source, self._close_source = _open_source(requests)
        self._sequence = requests if isinstance(requests, Sequence) else None
        self._limiter_arg = _check_limits(
            max_concurrency, limiter, self._placement.default_concurrency
        )
        self._polling = parse_polling(
            cast("Mapping[str, Any]", polling_options), stop_on_cancel=True
        )
        if not isinstance(return_exceptions, bool):
            raise TypeError(f"return_exceptions must be a bool, not {return_exceptions!r}")
        self._return_exceptions = return_exceptions
        if not isinstance(adaptive_concurrency, bool):
            raise TypeError(
                f"adaptive_concurrency must be a bool, not {adaptive_concurrency!r}"
            )
        self._adaptive = adaptive_concurrency
        self._interval = None if max_per_second is None else 1 / _check_rate(max_per_second)
        self._next_slot = -math.inf
        self._errors: list[Exception] = []
        self._shields: set[anyio.CancelScope] = set()  # creates in flight
        self._group: TaskGroup | None = None
        # made in open(), inside the event loop
        self._limiter: anyio.CapacityLimiter
        self._slots: anyio.CapacityLimiter
        self._pressure: BatchPressure

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Outcomes]:
        """Run the batch while the block is open; yield the ``(index, outcome)`` stream.

        Leaving the block early (``break``, an error, a cancellation) cancels
        the runs still going; each one stops its remote task before the block exits.
        """
        limit = self._limiter_arg
        self._limiter = anyio.CapacityLimiter(limit) if isinstance(limit, int) else limit
        self._slots = anyio.CapacityLimiter(self._limiter.total_tokens)
        retry = self._placement.lifecycles[0].api.transport.retry
        self._pressure = BatchPressure(
            retry, self._limiter.total_tokens, adaptive=self._adaptive
        )
        try:
            async with AsyncExitStack() as stack:
                journal = self._journal_arg
                if journal is not None and not isinstance(journal, Journal):
                    journal = await stack.enter_async_context(Journal.open(journal))
                if journal is not None:
                    self._durable = DurableRuns(
                        self._placement.lifecycles, journal, retry_failed=self._retry_failed
                    )
                    self._check_sequence()
                async with self._batch() as outcomes:
                    yield outcomes
        finally:
            await self._close_source()

    def _check_sequence(self) -> None:
        """Refuse changed requests before anything runs, when they are all known up front
        (only the ones the journal has seen can differ)."""
        assert self._durable is not None
        if self._sequence is not None:
            self._durable.check_all(self._sequence)

    @asynccontextmanager
    async def _batch(self) -> AsyncIterator[Outcomes]:
        send, receive = anyio.create_memory_object_stream[tuple[int, Outcome]]()
        with single_error():
            async with anyio.create_task_group() as group:
                self._group = group
                group.start_soon(self._feed, group, send)
                try:
                    yield receive
                finally:
                    self._abort()
                    receive.close()
        if self._errors:
            count = len(self._errors)
            raise ExceptionGroup(
                f"run_many stopped on {count} error{'s' if count > 1 else ''}", self._errors
            )

    async def collect(self, on_result: OnResult | None) -> list[Outcome]:
        """Run the batch and return the outcomes in input order."""
        outcomes: dict[int, Outcome] = {}
        async with self.open() as stream:
            async for index, outcome in stream:
                outcomes[index] = outcome
                if on_result is not None:
                    await call(on_result, index, outcome)
        return [outcomes[index] for index in range(len(outcomes))]

    async def _feed(self, group: TaskGroup, send: Sender) -> None:
        """Pull a request only once a slot is free, then start its run once the limiter,
        the batch's pause and its window allow.

        The runs started here inherit this task's context, which carries the batch's
        pressure to every request they make (the creates in the service group too).
        """
        current_pressure.set(self._pressure)
        async with send:
            try:
                index = 0
                while True:
                    token = object()  # one borrower per run, as one task holds many
                    await self._slots.acquire_on_behalf_of(token)
                    request = await self._source()
                    if request is _END:
                        return
                    try:
                        build_create_payload(request)
                    except (TypeError, ValueError) as exc:  # a bad item is that item's outcome
                        await self._finish(index, type(exc)(f"request {index}: {exc}"), token, send)
                    else:
                        if self._durable is not None and self._sequence is None:
                            self._durable.check(index, request)  # a changed one ends the batch
                        await self._admit(token)
                        group.start_soon(self._run, index, request, token, send.clone())
                    index += 1
            except Exception as exc:  # the input itself failed: nothing more can run
                self._fail(exc)

    async def _admit(self, token: object) -> None:
        """Take a place in the batch's window, the limiter's token and the pace's slot,
        then wait out any pause (one reported meanwhile too); undo all on a failure."""
        await self._pressure.admit()
        try:
            await self._limiter.acquire_on_behalf_of(token)
            try:
                await self._pace()
                await self._pressure.resumed()
            except BaseException:
                self._limiter.release_on_behalf_of(token)
                raise
        except BaseException:
            self._pressure.release()
            raise

    async def _run(
        self, index: int, request: CreateTaskRequest, token: object, send: Sender
    ) -> None:
        async with send:
            try:
                outcome: Outcome = await self._run_one(index, request, token)
            except Exception as exc:
                outcome = exc
            finally:
                self._limiter.release_on_behalf_of(token)
                self._pressure.release()
            await self._finish(index, outcome, token, send)

    async def _run_one(self, index: int, request: CreateTaskRequest, token: object) -> RunResult:
        """Run one request on the server the placement gives it; a create that made
        nothing on a failing server goes to another one."""
        polling = dataclasses.replace(
            self._polling,
            on_progress=_with_index(self._polling.on_progress, index),
            on_log=_with_index(self._polling.on_log, index),
        )
        durable, placement = self._durable, self._placement
        if durable is not None:
            recorded = durable.recorded(index, request, with_server=placement.names_servers)
            if recorded is not None:
                return recorded
        pinned = None if durable is None else durable.pinned(index)
        moves = 0  # bounded: servers that refuse creates yet answer their probes
        while True:
            lifecycle = await placement.acquire(token, pinned, polling.poll_error_budget)
            may_move = pinned is None and moves < placement.max_moves
            try:
                if durable is not None:
                    result = await durable.run(
                        index, request, polling, lifecycle, self._shields,
                        may_move=may_move, moved=moves > 0,
                    )
                else:
                    call = dataclasses.replace(lifecycle.json_call(request), movable=may_move)
                    result = await lifecycle.run(call, polling, self._shields)
            except Exception as exc:
                if placement.failed(lifecycle, exc) and may_move:
                    moves += 1
                    continue
                if placement.names_servers:
                    _name_server(exc, lifecycle)
                raise
            finally:
                placement.release(token, lifecycle)
            if placement.names_servers:
                result["server"] = lifecycle.api.transport.base_url
            return result

    async def _finish(self, index: int, outcome: Outcome, token: object, send: Sender) -> None:
        """Hand an outcome over (or fail fast), then free the request's slot."""
        # A journal that cannot be written ends the batch whatever ``return_exceptions``
        # says: the runs after it could no longer be resumed.
        if isinstance(outcome, Exception) and (
            not self._return_exceptions or isinstance(outcome, JournalError)
        ):
            add_note(outcome, f"(request {index} of run_many)")
            self._fail(outcome)
            return
        try:
            await send.send((index, outcome))
        except anyio.BrokenResourceError:  # the consumer closed the stream: abandon
            self._abort()
            return
        self._slots.release_on_behalf_of(token)

    async def _pace(self) -> None:
        if self._interval is None:
            return
        now = anyio.current_time()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self._interval
        await anyio.sleep(slot - now)

    def _fail(self, error: Exception) -> None:
        self._errors.append(error)
        self._abort()

    def _abort(self) -> None:
        """Cancel every run; a create in flight gets ``STOP_DEADLINE`` to return its id."""
        deadline = anyio.current_time() + STOP_DEADLINE
        for shield in self._shields:
            shield.deadline = min(shield.deadline, deadline)
        if self._group is not None:
            self._group.cancel_scope.cancel()


class BatchMethods:
    """``run_many`` and ``run_many_iter``, for a client's tasks and for a ``ServerPool``:
    the one thing that differs is where the runs go (``_batch_placement``)."""

    def _batch_placement(self) -> Lifecycle | Placement:
        raise NotImplementedError

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
        its exception (but a ``JournalError`` still ends the batch). A cancellation (or a
        timeout) around the call stops every remote task it created (unless
        ``stop_on_cancel`` is set to False).
        """
        batch = RunMany(
            self._batch_placement(), requests, return_exceptions=return_exceptions, **options
        )
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
            self._batch_placement(), requests, return_exceptions=return_exceptions, **options
        ).open()


def _name_server(error: Exception, lifecycle: Lifecycle) -> None:
    server = lifecycle.api.transport.base_url
    if isinstance(error, OomolConnectError):
        error.server = server
    add_note(error, f"(on server {server})")


def _with_index(callback: Callable[[Any], Any] | None, index: int) -> Callable[[Any], Any] | None:
    if callback is None:
        return None

    async def with_index(item: Any) -> None:
        await call(callback, index, item)

    return with_index


def _check_limits(
    max_concurrency: int | None, limiter: anyio.CapacityLimiter | None, default: int
) -> int | anyio.CapacityLimiter:
    if limiter is not None:
        if max_concurrency is not None:
            raise ValueError("pass either max_concurrency or limiter, not both")
        if not isinstance(limiter, anyio.CapacityLimiter):
            raise TypeError(f"limiter must be an anyio.CapacityLimiter, not {limiter!r}")
        return limiter
    if max_concurrency is None:
        return default
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
        raise TypeError(f"max_concurrency must be an int, not {max_concurrency!r}")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, not {max_concurrency}")
    return max_concurrency


def _check_rate(rate: object) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise TypeError(f"max_per_second must be a number, not {rate!r}")
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"max_per_second must be a finite number > 0, not {rate!r}")
    return float(rate)


def _open_source(requests: object) -> tuple[Callable[[], Any], Callable[[], Awaitable[None]]]:
    """A function returning the next request (awaitable) or ``_END``, and one closing the
    input when the batch ends (a generator left part-way is closed now, not by the GC).

    A sequence is validated whole before anything starts; any other input is
    pulled lazily and each bad item becomes that item's error.
    """
    if isinstance(requests, (str, bytes, Mapping)):
        raise TypeError(
            "requests must be an iterable of requests (dicts), "
            f"not a single {type(requests).__name__}"
        )
    if isinstance(requests, AsyncIterable):
        iterator = aiter(requests)

        async def next_async() -> object:
            try:
                return await anext(iterator)
            except StopAsyncIteration:
                return _END

        async def close_async() -> None:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

        return next_async, close_async
    if not isinstance(requests, Iterable):
        raise TypeError(f"requests must be an iterable, not {type(requests).__name__}")
    if isinstance(requests, Sequence):
        for index, request in enumerate(requests):
            try:
                build_create_payload(request)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"requests[{index}]: {exc}") from None
    items = iter(requests)

    async def next_sync() -> object:
        return next(items, _END)

    async def close_sync() -> None:
        close = getattr(items, "close", None)
        if close is not None:
            close()

    return next_sync, close_sync


def _check_journal(journal: object) -> str | os.PathLike[str] | Journal | None:
    if journal is None or isinstance(journal, (str, os.PathLike, Journal)):
        if journal == "":
            raise ValueError("journal must name a file, not ''")
        return journal
    raise TypeError(f"journal must be a path or a Journal, not {type(journal).__name__}")

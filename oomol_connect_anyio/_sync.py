"""``SyncOomolConnectClient``: a blocking facade over ``OomolConnectClient``.

For scripts and notebooks. One event loop (asyncio or trio) runs in a daemon
thread and owns one async client, created and closed inside that loop; every
blocking method hands its coroutine to that loop through an anyio
``BlockingPortal``. Any number of threads may call at once: their calls run
concurrently in the loop and share the client's connection pool.

Design: each blocking resource (``SyncTasks``...) lists its methods, one line
each: ``run = _blocking(Tasks.run)``. ``_blocking`` is typed with the async
method's ``ParamSpec`` and return type, so mypy and IDEs see
``client.tasks.run(request, polling_options=None) -> RunResult``, overloads
included (``run_many``'s ``return_exceptions``), and ``help()`` shows the
async method's docstring and parameters. A ``__getattr__`` proxy would lose
the signatures; hand-written wrappers would repeat every one of them.
``_iterating`` does the same for the methods used as ``async with ... as
stream`` (``watch``, ``run_many_iter``), which become ``with ... as
iterator`` here.

The loop runs in a daemon thread rather than through ``start_blocking_portal``,
whose worker thread is joined at interpreter exit: a client left unclosed
would hang the program on exit.

Interrupting a blocking call (Ctrl-C) cancels it inside the loop and waits for
its cleanup, so a ``run`` stops its remote task before ``KeyboardInterrupt``
reaches the caller. ``close()`` cancels calls still in flight the same way.

Callbacks given in ``polling_options`` (``on_progress``, ``on_log``) and
``run_many``'s ``on_result`` run in the loop's thread: keep them short, and do
not call this client from them.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from functools import partial, wraps
from types import TracebackType
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from ._client import OomolConnectClient
from ._metrics import MetricsSnapshot
from .resources.blocks import Blocks
from .resources.flows import Flows
from .resources.packages import Packages
from .resources.tasks import Tasks

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class _Loop:
    """The loop thread, its portal and its client; ``call`` is the one way in."""

    def __init__(
        self,
        factory: Callable[[], OomolConnectClient],
        backend: str,
        backend_options: Mapping[str, Any] | None,
    ) -> None:
        ready: Future[tuple[BlockingPortal, OomolConnectClient]] = Future()
        self._thread = threading.Thread(
            target=self._main,
            args=(factory, backend, backend_options, ready),
            name="oomol-connect-sync",
            daemon=True,
        )
        self._thread.start()
        self._portal, self.client = ready.result()
        self._lock = threading.Lock()
        self.closed = False

    @staticmethod
    def _main(
        factory: Callable[[], OomolConnectClient],
        backend: str,
        backend_options: Mapping[str, Any] | None,
        ready: Future[tuple[BlockingPortal, OomolConnectClient]],
    ) -> None:
        async def serve() -> None:
            async with factory() as client, BlockingPortal() as portal:
                ready.set_result((portal, client))
                await portal.sleep_until_stopped()

        try:
            anyio.run(serve, backend=backend, backend_options=dict(backend_options or {}))
        except BaseException as exc:
            if ready.done():
                raise
            ready.set_exception(exc)

    def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` in the loop and return its result.

        If the wait is interrupted (``KeyboardInterrupt``), the call is
        cancelled in the loop and its cleanup awaited before re-raising.
        """
        if self.closed:
            raise RuntimeError("this SyncOomolConnectClient is closed")
        finished = threading.Event()

        async def run() -> T:
            try:
                return await fn(*args, **kwargs)
            finally:
                finished.set()

        future = self._portal.start_task_soon(run)
        try:
            return future.result()
        except BaseException:
            if future.cancel():  # still running: cancel it and let it clean up
                finished.wait()
            raise

    @contextmanager
    def iterate(
        self, manager: AbstractAsyncContextManager[AsyncIterator[T]]
    ) -> Iterator[Iterator[T]]:
        """Enter ``manager`` in the loop; yield a blocking iterator over what it yields."""
        blocking = self._portal.wrap_async_context_manager(manager)
        stream = blocking.__enter__()
        try:
            yield self._items(stream)
        finally:
            # Leave it as if the block ended normally: an exception such as
            # KeyboardInterrupt must not be thrown into the event loop.
            blocking.__exit__(None, None, None)

    def _items(self, stream: AsyncIterator[T]) -> Iterator[T]:
        while True:
            try:
                yield self.call(anext, stream)
            except StopAsyncIteration:
                return

    def metrics(self) -> MetricsSnapshot:
        """Read the counters in the loop's thread, where they change."""
        if self.closed:
            return self.client.metrics
        return self._portal.call(lambda: self.client.metrics)

    def close(self) -> None:
        """Cancel calls in flight, close the client in its loop, end the thread."""
        with self._lock:
            if self.closed:
                return
            self._portal.call(partial(self._portal.stop, cancel_remaining=True))
            self.closed = True
            self._thread.join()


class _Resource(Generic[R]):
    def __init__(self, loop: _Loop, resource: R) -> None:
        self._loop = loop
        self._resource = resource


def _blocking(
    method: Callable[Concatenate[R, P], Awaitable[T]],
) -> Callable[Concatenate[_Resource[R], P], T]:
    """A resource's coroutine method, as a blocking method returning its result."""

    @wraps(method)
    def blocking(self: _Resource[R], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._loop.call(method, self._resource, *args, **kwargs)

    return blocking


def _iterating(
    method: Callable[Concatenate[R, P], AbstractAsyncContextManager[AsyncIterator[T]]],
) -> Callable[Concatenate[_Resource[R], P], AbstractContextManager[Iterator[T]]]:
    """A method used as ``async with ... as stream``, as ``with ... as iterator``."""

    @wraps(method)
    def iterating(
        self: _Resource[R], /, *args: P.args, **kwargs: P.kwargs
    ) -> AbstractContextManager[Iterator[T]]:
        return self._loop.iterate(method(self._resource, *args, **kwargs))

    return iterating


class SyncTasks(_Resource[Tasks]):
    """Blocking ``client.tasks``: the same methods, each returning its result."""

    list = _blocking(Tasks.list)
    create = _blocking(Tasks.create)
    create_with_files = _blocking(Tasks.create_with_files)
    get = _blocking(Tasks.get)
    stop = _blocking(Tasks.stop)
    get_logs = _blocking(Tasks.get_logs)
    wait_for_completion = _blocking(Tasks.wait_for_completion)
    create_and_wait = _blocking(Tasks.create_and_wait)
    run = _blocking(Tasks.run)
    run_with_files = _blocking(Tasks.run_with_files)
    run_many = _blocking(Tasks.run_many)
    watch = _iterating(Tasks.watch)
    run_many_iter = _iterating(Tasks.run_many_iter)


class SyncFlows(_Resource[Flows]):
    """Blocking ``client.flows``."""

    list = _blocking(Flows.list)


class SyncBlocks(_Resource[Blocks]):
    """Blocking ``client.blocks``."""

    list = _blocking(Blocks.list)


class SyncPackages(_Resource[Packages]):
    """Blocking ``client.packages``."""

    list = _blocking(Packages.list)
    install = _blocking(Packages.install)
    list_install_tasks = _blocking(Packages.list_install_tasks)
    get_install_task = _blocking(Packages.get_install_task)
    wait_for_install_completion = _blocking(Packages.wait_for_install_completion)
    install_and_wait = _blocking(Packages.install_and_wait)


def _takes_the_async_clients_arguments(init: Callable[P, None]) -> Callable[P, None]:
    """Give ``init`` (``*args, <own keywords>, **kwargs``) the signature of
    ``OomolConnectClient.__init__`` followed by its own keywords: ``help()``, IDEs and
    ``inspect`` show every argument, and a new client argument needs no change here."""
    client = inspect.signature(OomolConnectClient.__init__)
    own = [
        parameter for parameter in inspect.signature(init).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    init.__signature__ = client.replace(  # type: ignore[attr-defined]
        parameters=[*client.parameters.values(), *own]
    )
    return init


class SyncOomolConnectClient:
    """A blocking client for one Oomol Connect server; use it with ``with`` or ``close()`` it.

    Takes the arguments of ``OomolConnectClient`` (the same signature, derived from it),
    plus the ``backend`` (``"asyncio"`` or ``"trio"``) and its ``backend_options`` for
    ``anyio.run``. Hooks (``on_request``/``on_response``) run in the loop's thread.
    """

    @_takes_the_async_clients_arguments
    def __init__(
        self,
        *args: Any,
        backend: Literal["asyncio", "trio"] = "asyncio",
        backend_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # Bad arguments fail here, in the caller's thread, as the async client's would.
        inspect.signature(OomolConnectClient).bind(*args, **kwargs)
        factory = partial(OomolConnectClient, *args, **kwargs)
        self._loop = loop = _Loop(factory, backend, backend_options)
        self.backend = backend
        self.tasks = SyncTasks(loop, loop.client.tasks)
        self.flows = SyncFlows(loop, loop.client.flows)
        self.blocks = SyncBlocks(loop, loop.client.blocks)
        self.packages = SyncPackages(loop, loop.client.packages)

    @property
    def base_url(self) -> str:
        return self._loop.client.base_url

    @property
    def metrics(self) -> MetricsSnapshot:
        """A snapshot of the client's running totals (see ``OomolConnectClient.metrics``)."""
        return self._loop.metrics()

    @property
    def closed(self) -> bool:
        return self._loop.closed

    def close(self) -> None:
        """Cancel calls still in flight (stopping their tasks), close the client; idempotent."""
        self._loop.close()

    def __enter__(self) -> SyncOomolConnectClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<SyncOomolConnectClient {self.base_url!r} backend={self.backend!r}{state}>"

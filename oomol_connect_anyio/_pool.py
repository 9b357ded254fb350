"""``ServerPool``: one batch spread over several Connect servers.

A task id belongs to the server that made it, so a load balancer in front of several
servers breaks every status poll; the pool does the balancing in the client instead. Each
create goes to the healthy server with the most free places; everything else a run does
(polls, logs, the stop of an abandoned task) stays with the client of the server that made
its task. A server whose create fails in a way that made nothing (refused, cut before it
was sent, 502/503/504 not taken), or whose run fails with a transient error once its
outage budget is spent, is drained: it gets no new creates until a probe, repeated with
backoff, finds it answering again. The create that found it down goes to another server.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType

import anyio
from anyio.abc import TaskGroup

from ._client import OomolConnectClient
from ._concurrency import logger
from ._errors import ApiError, ConnectionError, OomolConnectError, is_transient
from ._lifecycle import Lifecycle
from ._reconcile import never_created
from ._run_many import DEFAULT_CONCURRENCY, BatchMethods

PROBE_BACKOFF = (0.2, 5.0)
"""First and largest delay (seconds) between probes of a drained server."""


@dataclass(eq=False)
class _Server:
    client: OomolConnectClient
    lifecycle: Lifecycle
    places: anyio.CapacityLimiter
    healthy: bool = True
    placed: int = 0
    """Runs placed here so far: ties between equally free servers go to the least used."""
    last_error: BaseException | None = field(default=None, repr=False)


class ServerPool(BatchMethods):
    """Several ``OomolConnectClient``s, one per server, run as one: use ``async with``.

    ``pool.run_many`` / ``pool.run_many_iter`` keep the ``tasks.run_many`` contract (order,
    fail-fast or ``return_exceptions``, callbacks with the index, ``journal``), and each
    outcome names its server (``RunResult["server"]``, ``error.server``). At most
    ``max_concurrency_per_server`` runs are on one server at a time, across every batch
    of the pool; a batch's ``max_concurrency`` (default: all the places) bounds it as a
    whole. The pool enters its clients and closes them when it ends.
    """

    names_servers = True

    def __init__(
        self,
        clients: Sequence[OomolConnectClient],
        *,
        max_concurrency_per_server: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if isinstance(clients, OomolConnectClient) or not isinstance(clients, Sequence):
            raise TypeError("clients must be a list of OomolConnectClient, one per server")
        if not clients:
            raise ValueError("a ServerPool needs at least one client")
        seen: set[str] = set()
        for client in clients:
            if not isinstance(client, OomolConnectClient):
                raise TypeError(f"clients must be OomolConnectClient, not {client!r}")
            if client.base_url in seen:
                raise ValueError(f"two clients of the pool have the base URL {client.base_url!r}")
            seen.add(client.base_url)
        per_server = max_concurrency_per_server
        if isinstance(per_server, bool) or not isinstance(per_server, int):
            raise TypeError(f"max_concurrency_per_server must be an int, not {per_server!r}")
        if per_server < 1:
            raise ValueError(f"max_concurrency_per_server must be >= 1, not {per_server}")
        self.clients = tuple(clients)
        self.max_concurrency_per_server = per_server
        self._servers: list[_Server] = []
        self._by_url: dict[str, _Server] = {}
        self._by_lifecycle: dict[Lifecycle, _Server] = {}
        self._group: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._changed: anyio.Event | None = None
        self._all_down_since: float | None = None

    # -- what a user sees -------------------------------------------------------------------

    @property
    def servers(self) -> list[str]:
        """The base URLs of the pool's servers, in the order given."""
        return [client.base_url for client in self.clients]

    @property
    def healthy(self) -> list[str]:
        """The servers taking new creates now (all of them until one was drained)."""
        if not self._servers:
            return self.servers
        return [s.client.base_url for s in self._servers if s.healthy]

    async def __aenter__(self) -> ServerPool:
        if self._stack is not None:
            raise RuntimeError("this ServerPool is already open")
        async with AsyncExitStack() as stack:
            for client in self.clients:
                await stack.enter_async_context(client)
            group = anyio.create_task_group()
            await group.__aenter__()
            self._stack, self._group = stack.pop_all(), group
        self._changed = anyio.Event()
        self._servers = [
            _Server(c, c._lifecycle, anyio.CapacityLimiter(self.max_concurrency_per_server))
            for c in self.clients
        ]
        self._by_url = {s.client.base_url: s for s in self._servers}
        self._by_lifecycle = {s.lifecycle: s for s in self._servers}
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, stack = self._group, self._stack
        self._group = self._stack = None
        if group is not None:
            group.cancel_scope.cancel()  # the probes
            await group.__aexit__(None, None, None)
        if stack is not None:
            await stack.aclose()

    def __repr__(self) -> str:
        return f"<ServerPool servers={self.servers!r}>"

    # -- the placement its batches use ------------------------------------------------------

    def _batch_placement(self) -> ServerPool:
        if self._group is None:
            raise RuntimeError("use the ServerPool with 'async with' before running batches")
        return self

    @property
    def default_concurrency(self) -> int:
        return self.max_concurrency_per_server * len(self.clients)

    @property
    def max_moves(self) -> int:
        return len(self.clients)  # once per server: see README, "More than one server"

    @property
    def lifecycles(self) -> list[Lifecycle]:
        return [server.lifecycle for server in self._servers]

    async def acquire(self, token: object, pinned: str | None, budget: float) -> Lifecycle:
        """A place on the healthy server with the most free places (``pinned``: on that
        server, healthy or not: its task is there). With every server drained, wait for
        one to come back, at most ``budget`` seconds after the last one went down."""
        while True:
            server = self._choose(pinned)
            if server is not None:
                server.places.acquire_on_behalf_of_nowait(token)
                server.placed += 1
                return server.lifecycle
            assert self._changed is not None
            changed = self._changed
            if pinned is None and self._all_down_since is not None:
                left = self._all_down_since + budget - anyio.current_time()
                if left <= 0:
                    raise self._all_down(budget)
                with anyio.move_on_after(left):
                    await changed.wait()
            else:
                await changed.wait()

    def release(self, token: object, lifecycle: Lifecycle) -> None:
        self._by_lifecycle[lifecycle].places.release_on_behalf_of(token)
        self._notify()

    def failed(self, lifecycle: Lifecycle, error: Exception) -> bool:
        """Drain a server that failed a run for its own reasons; ``True`` when the run's
        create made nothing there, so it may go to another server."""
        server = self._by_lifecycle[lifecycle]
        if never_created(error):
            self._drain(server, error)
            return True
        if is_transient(error):  # an outage outlasted the run's budget
            self._drain(server, error)
        return False

    def _choose(self, pinned: str | None) -> _Server | None:
        if pinned is not None:
            server = self._by_url.get(pinned)
            if server is None:
                raise ValueError(
                    f"the journal has this request's task on {pinned}, which is not a server "
                    f"of this pool ({', '.join(self.servers)})"
                )
            return server if server.places.available_tokens >= 1 else None
        free = [s for s in self._servers if s.healthy and s.places.available_tokens >= 1]
        if not free:
            return None
        return max(free, key=lambda s: (s.places.available_tokens, -s.placed))

    def _drain(self, server: _Server, error: BaseException) -> None:
        server.last_error = error
        if not server.healthy or self._group is None:
            return
        server.healthy = False
        logger.warning(
            "server %s drained (no new creates until it answers again): %s",
            server.client.base_url, error,
        )
        if not any(s.healthy for s in self._servers):
            self._all_down_since = anyio.current_time()
        self._group.start_soon(self._probe, server)
        self._notify()

    async def _probe(self, server: _Server) -> None:
        """Ask a drained server something cheap, with backoff, until it answers."""
        delay = PROBE_BACKOFF[0]
        while True:
            await anyio.sleep(random.uniform(delay / 2, delay))
            try:
                await server.client.packages.list()
            except ApiError as exc:  # a 4xx (a server without that route) is an answer too
                if exc.status >= 500 or is_transient(exc):
                    server.last_error = exc
                    delay = min(delay * 2, PROBE_BACKOFF[1])
                    continue
            except OomolConnectError as exc:  # not reached; or a hook's error: still down
                server.last_error = exc
                delay = min(delay * 2, PROBE_BACKOFF[1])
                continue
            server.healthy = True
            self._all_down_since = None
            logger.info("server %s answers again: back in the pool", server.client.base_url)
            self._notify()
            return

    def _all_down(self, budget: float) -> ConnectionError:
        errors = "; ".join(f"{s.client.base_url}: {s.last_error}" for s in self._servers)
        return ConnectionError(f"no server of the pool has answered for {budget:g} s ({errors})")

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = anyio.Event()

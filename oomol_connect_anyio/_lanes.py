"""``LanePool``: keep-alive connections ("lanes"), one httpcore connection each, in place of
httpx's connection pool.

Like httpcore's pool it decides synchronously, with no ``await`` between deciding and
updating its state, which connection a request gets and which connections must go; it
closes those afterwards, shielded, outside the decision. A connection being closed has
already left the pool's books: it is neither idle nor counted toward a limit.
"""

from __future__ import annotations

import math
import ssl
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager

import anyio
import h11
import httpcore
import httpx

from ._log import logger

ConnectionFactory = Callable[[httpcore.Origin], httpcore.AsyncConnectionInterface]
_OriginKey = tuple[bytes, bytes, int]

DEFAULT_LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=100, keepalive_expiry=5.0
)
"""Every connection a burst opened stays warm between polls (a fan-out polls in waves)."""

# httpcore and httpx name their request errors alike; each maps to its namesake.
_ERROR_NAMES = (
    "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout", "TimeoutException",
    "ConnectError", "ReadError", "WriteError", "NetworkError",
    "RemoteProtocolError", "LocalProtocolError", "ProtocolError",
    "UnsupportedProtocol", "ProxyError",
)
_HTTPX_ERROR: dict[type[Exception], type[httpx.TransportError]] = {
    getattr(httpcore, name): getattr(httpx, name) for name in _ERROR_NAMES
}
# httpcore lets h11's own error through while it sends a request body.
_HTTPX_ERROR[h11.LocalProtocolError] = httpx.LocalProtocolError


@contextmanager
def _httpx_errors(request: httpx.Request) -> Iterator[None]:
    """Re-raise httpcore's errors as httpx's, as httpx's own transport does."""
    try:
        yield
    except Exception as exc:
        for kind in type(exc).__mro__:
            mapped = _HTTPX_ERROR.get(kind)
            if mapped is not None:
                raise mapped(str(exc), request=request) from exc
        raise


def check_limits(limits: object) -> httpx.Limits:
    """``limits`` if it is an ``httpx.Limits`` the pool can honour, else a clear error."""
    if not isinstance(limits, httpx.Limits):
        raise TypeError(f"limits must be an httpx.Limits, not {type(limits).__name__}")
    if limits.max_connections is not None and limits.max_connections < 1:
        raise ValueError(f"limits.max_connections must be >= 1, not {limits.max_connections}")
    idle = limits.max_keepalive_connections
    if idle is not None and idle < 0:
        raise ValueError(f"limits.max_keepalive_connections must be >= 0, not {idle}")
    expiry = limits.keepalive_expiry
    if expiry is not None and not (math.isfinite(expiry) and expiry >= 0):
        raise ValueError(f"limits.keepalive_expiry must be finite and >= 0, not {expiry}")
    return limits


class _Lane:
    """One keep-alive connection to one origin, used by one request at a time."""

    __slots__ = ("connection", "idle_since", "key", "origin")

    def __init__(self, origin: httpcore.Origin, connection: httpcore.AsyncConnectionInterface):
        self.origin = origin
        self.key = _key(origin)
        self.connection = connection
        self.idle_since = 0.0

    @property
    def reusable(self) -> bool:
        """Idle, open, and not closed by the server while it waited."""
        return self.connection.is_idle() and not self.connection.has_expired()


class LanePool(httpx.AsyncBaseTransport):
    """Sends each request on an idle lane of its origin, within ``limits``.

    httpcore's pool re-examines every connection it holds, and every queued request, on each
    request and each response close: a poll through it costs about twice a poll on a bare
    connection, and more under concurrency. Lanes keep that work constant: idle lanes wait in
    a stack per origin, the most recently used on top, so a sequential caller reuses one warm
    connection. At most ``max_connections`` requests are in flight and as many connections
    open (an idle lane of another origin is closed to make room); further requests wait,
    first come first served, for at most the request's ``pool`` timeout. At most
    ``max_keepalive_connections`` idle lanes are kept (the oldest go first); lanes idle for
    longer than ``keepalive_expiry``, or closed by the server, are closed when the next
    request comes.
    """

    def __init__(
        self,
        *,
        limits: httpx.Limits = DEFAULT_LIMITS,
        ssl_context: ssl.SSLContext | None = None,
        connection_factory: ConnectionFactory | None = None,
    ) -> None:
        check_limits(limits)
        expiry = limits.keepalive_expiry
        self._keepalive_expiry = math.inf if expiry is None else expiry
        self._new_connection = connection_factory or (
            lambda origin: httpcore.AsyncHTTPConnection(
                origin, ssl_context=ssl_context, keepalive_expiry=expiry
            )
        )
        self._max_open = limits.max_connections
        idle = limits.max_keepalive_connections
        self._max_idle = math.inf if idle is None else idle
        self._slots = (
            None if self._max_open is None
            else anyio.Semaphore(self._max_open, fast_acquire=True)
        )
        self._closed = False
        self._lanes: set[_Lane] = set()  # open and counted: carrying a request, or idle
        self._idle: dict[_OriginKey, deque[_Lane]] = {}  # most recent on the right
        self._idle_count = 0

    @property
    def open_lanes(self) -> int:
        """How many lanes (connections, at most) are open now."""
        return len(self._lanes)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("cannot send a request: the transport has been closed")
        assert isinstance(request.stream, AsyncIterable)
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        await self._wait_for_a_slot(request)
        try:
            lane, doomed = self._assign(core_request.url.origin)
        except BaseException:
            self._release_slot()
            raise
        try:
            if doomed:
                await _close_all(doomed)
            with _httpx_errors(request):
                response = await lane.connection.handle_async_request(core_request)
            assert isinstance(response.stream, AsyncIterable)
        except BaseException:
            await self._give_back(lane)
            raise
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_LaneStream(response.stream, request, lambda: self._give_back(lane)),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close every lane; a request still in flight closes its own when it ends."""
        self._closed = True
        lanes, self._lanes = self._lanes, set()
        self._idle.clear()
        self._idle_count = 0
        await _close_all(lanes)

    async def _wait_for_a_slot(self, request: httpx.Request) -> None:
        if self._slots is None:
            return
        try:
            self._slots.acquire_nowait()  # the common case costs no cancel scope
        except anyio.WouldBlock:
            pass
        else:
            return
        timeouts = request.extensions.get("timeout", {})
        with anyio.move_on_after(timeouts.get("pool")) as scope:
            await self._slots.acquire()
        if scope.cancelled_caught:
            raise httpx.PoolTimeout("no connection was free in time", request=request)

    def _release_slot(self) -> None:
        if self._slots is not None:
            self._slots.release()

    def _assign(self, origin: httpcore.Origin) -> tuple[_Lane, list[_Lane]]:
        """The lane for a request to ``origin`` and the lanes to close, decided at once.

        Stale idle lanes go; then the origin's most recent reusable idle lane is taken, else
        a new lane opens, first closing the oldest idle lane of another origin when
        ``max_connections`` are open (a slot is held, so one of them must be idle).
        """
        doomed: list[_Lane] = []
        if self._idle_count:
            cutoff = time.monotonic() - self._keepalive_expiry
            for stack in self._idle.values():
                while stack and stack[0].idle_since < cutoff:
                    doomed.append(self._drop(stack.popleft()))
            queue = self._idle.get(_key(origin))
            while queue:
                lane = queue.pop()
                self._idle_count -= 1
                if lane.reusable:
                    return lane, doomed
                self._lanes.discard(lane)
                doomed.append(lane)
        if self._max_open is not None and len(self._lanes) >= self._max_open:
            oldest = self._oldest_idle()
            if oldest is not None:
                doomed.append(self._drop(self._idle[oldest.key].popleft()))
        lane = _Lane(origin, self._new_connection(origin))
        self._lanes.add(lane)
        return lane, doomed

    def _return(self, lane: _Lane) -> list[_Lane]:
        """Free the lane's slot; keep its connection if it can carry another request (and
        fewer than ``max_keepalive_connections`` wait). The lanes to close."""
        self._release_slot()
        connection = lane.connection
        if lane not in self._lanes:  # left over from aclose()
            return [lane]
        if not connection.is_idle() or connection.is_closed():  # closed, or cut short
            self._lanes.discard(lane)
            return [lane]
        lane.idle_since = time.monotonic()
        self._idle.setdefault(lane.key, deque()).append(lane)
        self._idle_count += 1
        doomed = []
        while self._idle_count > self._max_idle:
            oldest = self._oldest_idle()
            assert oldest is not None
            doomed.append(self._drop(self._idle[oldest.key].popleft()))
        return doomed

    async def _give_back(self, lane: _Lane) -> None:
        doomed = self._return(lane)
        if doomed:
            await _close_all(doomed)

    def _drop(self, lane: _Lane) -> _Lane:
        """Take an idle lane (already out of its queue) off the books."""
        self._idle_count -= 1
        self._lanes.discard(lane)
        return lane

    def _oldest_idle(self) -> _Lane | None:
        heads = [queue[0] for queue in self._idle.values() if queue]
        return min(heads, key=lambda lane: lane.idle_since) if heads else None


async def _close_all(lanes: Iterable[_Lane]) -> None:
    """Close connections already off the books, shielded; a failure to close is no news."""
    with anyio.CancelScope(shield=True):
        for lane in lanes:
            try:
                await lane.connection.aclose()
            except Exception as exc:
                logger.debug("closing a connection failed: %r", exc)


class _LaneStream(httpx.AsyncByteStream):
    """A response body that maps httpcore's errors and hands its lane back once, when closed."""

    def __init__(
        self,
        stream: AsyncIterable[bytes],
        request: httpx.Request,
        release: Callable[[], Awaitable[None]],
    ) -> None:
        self._stream = stream
        self._request = request
        self._release: Callable[[], Awaitable[None]] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors(self._request):
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        try:
            close = getattr(self._stream, "aclose", None)
            if close is not None:
                await close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                await release()


def _key(origin: httpcore.Origin) -> _OriginKey:
    """``httpcore.Origin`` is not hashable: its parts are."""
    return (origin.scheme, origin.host, origin.port)

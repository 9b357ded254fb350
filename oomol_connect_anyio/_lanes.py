"""Keep-alive lanes: one httpcore connection each, in place of httpx's connection pool."""

from __future__ import annotations

import ssl
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager

import anyio
import httpcore
import httpx

ConnectionFactory = Callable[[httpcore.Origin], httpcore.AsyncConnectionInterface]
_OriginKey = tuple[bytes, bytes, int]

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


class _Lane:
    """One keep-alive connection to one origin, used by one request at a time."""

    __slots__ = ("connection", "idle_since", "origin")

    def __init__(self, origin: httpcore.Origin, connection: httpcore.AsyncConnectionInterface):
        self.origin = origin
        self.connection = connection
        self.idle_since = 0.0

    @property
    def reusable(self) -> bool:
        """Idle, open, and not closed by the server while it waited."""
        return self.connection.is_idle() and not self.connection.has_expired()


class LaneTransport(httpx.AsyncBaseTransport):
    """Sends each request on an idle lane (one connection) of its origin, up to ``max_lanes``.

    httpcore's pool re-examines every connection it holds, and every queued request, on each
    request and each response close, and takes a lock and a shielded scope for each: a poll
    through it costs about twice a poll on a bare connection, and more under concurrency.
    Lanes keep that work constant: idle lanes wait in a stack per origin, the most recently
    used on top, so a sequential caller reuses one warm connection and a burst opens at most
    ``max_lanes`` (open connections never exceed it); requests beyond that wait, first come
    first served, for a lane to be free (for at most the request's ``pool`` timeout). Lanes
    idle for longer than ``keepalive_expiry``, or closed by the server, are closed when the
    next request comes.
    """

    def __init__(
        self,
        *,
        max_lanes: int,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        connection_factory: ConnectionFactory | None = None,
    ) -> None:
        if max_lanes < 1:
            raise ValueError(f"max_lanes must be >= 1, not {max_lanes}")
        self._keepalive_expiry = keepalive_expiry
        self._new_connection = connection_factory or (
            lambda origin: httpcore.AsyncHTTPConnection(
                origin, ssl_context=ssl_context, keepalive_expiry=keepalive_expiry
            )
        )
        self._max_lanes = max_lanes
        self._free = anyio.Semaphore(max_lanes, fast_acquire=True)
        self._closed = False
        self._lanes: set[_Lane] = set()
        self._idle: dict[_OriginKey, deque[_Lane]] = {}  # most recent on the right

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
        await self._wait_for_a_lane(request)
        try:
            lane = await self._take(core_request.url.origin)
        except BaseException:
            self._free.release()
            raise
        try:
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
        with anyio.CancelScope(shield=True):
            for lane in lanes:
                await lane.connection.aclose()

    async def _wait_for_a_lane(self, request: httpx.Request) -> None:
        try:
            self._free.acquire_nowait()  # the common case costs no cancel scope
        except anyio.WouldBlock:
            pass
        else:
            return
        timeouts = request.extensions.get("timeout", {})
        with anyio.move_on_after(timeouts.get("pool")) as scope:
            await self._free.acquire()
        if scope.cancelled_caught:
            raise httpx.PoolTimeout("no connection was free in time", request=request)

    async def _take(self, origin: httpcore.Origin) -> _Lane:
        """The origin's most recent reusable idle lane, else a new one; closes stale lanes,
        and an idle lane of another origin when ``max_lanes`` are open."""
        await self._close_stale_lanes()
        idle = self._idle.get(_key(origin))
        while idle:
            lane = idle.pop()
            if lane.reusable:
                return lane
            await self._close(lane)
        if len(self._lanes) >= self._max_lanes:  # every other open lane is idle elsewhere
            oldest = min((q for q in self._idle.values() if q), key=lambda q: q[0].idle_since)
            await self._close(oldest.popleft())
        lane = _Lane(origin, self._new_connection(origin))
        self._lanes.add(lane)
        return lane

    async def _give_back(self, lane: _Lane) -> None:
        """Free the lane's place; keep its connection only if it can carry another request."""
        self._free.release()
        connection = lane.connection
        if lane in self._lanes and connection.is_idle() and not connection.is_closed():
            lane.idle_since = time.monotonic()
            self._idle.setdefault(_key(lane.origin), deque()).append(lane)
        else:  # closed by httpcore, cut short, or left over from aclose()
            await self._close(lane)

    async def _close_stale_lanes(self) -> None:
        cutoff = time.monotonic() - self._keepalive_expiry
        stale = []
        for idle in self._idle.values():
            while idle and idle[0].idle_since < cutoff:
                stale.append(idle.popleft())
        for lane in stale:  # closed once collected: closing lets other requests run
            await self._close(lane)

    async def _close(self, lane: _Lane) -> None:
        self._lanes.discard(lane)
        with anyio.CancelScope(shield=True):
            await lane.connection.aclose()


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

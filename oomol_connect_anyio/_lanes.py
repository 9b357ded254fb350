"""Keep-alive lanes: many one-connection httpx pools in place of one large pool."""

from __future__ import annotations

import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

import anyio
import httpx

LaneFactory = Callable[[], httpx.AsyncBaseTransport]


class _Lane:
    """One keep-alive connection: an httpx transport limited to a single connection."""

    __slots__ = ("active", "idle_since", "transport")

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport
        self.active = 0
        self.idle_since = 0.0


class LaneTransport(httpx.AsyncBaseTransport):
    """Sends each request on an idle lane (one connection), opening lanes up to a limit.

    httpcore's pool re-examines every connection it holds, and asks each idle socket whether
    it is readable, on every request and every response close, so a poll through a pool of
    100 connections costs two to three times a sequential one. Lanes keep that work constant:
    this class only keeps a stack of idle lanes, the most recently used on top, so a
    sequential caller reuses one warm connection and a burst opens at most ``max_lanes``.
    Lanes idle for longer than ``keepalive_expiry`` are closed when the next request comes.
    When every lane is busy a request shares the least busy one (httpx queues it there).
    """

    def __init__(
        self,
        *,
        max_lanes: int,
        keepalive_expiry: float = 5.0,
        verify: ssl.SSLContext | bool = True,
        lane_factory: LaneFactory | None = None,
    ) -> None:
        if max_lanes < 1:
            raise ValueError(f"max_lanes must be >= 1, not {max_lanes}")
        self._max_lanes = max_lanes
        self._keepalive_expiry = keepalive_expiry
        self._new_transport = lane_factory or _one_connection_transport(verify, keepalive_expiry)
        self._lanes: set[_Lane] = set()
        self._idle: deque[_Lane] = deque()  # oldest on the left, most recent on the right

    @property
    def open_lanes(self) -> int:
        """How many lanes (connections, at most) are open now."""
        return len(self._lanes)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._close_stale_lanes()
        lane = self._take()
        try:
            response = await lane.transport.handle_async_request(request)
        except BaseException:
            self._give_back(lane)
            raise
        if response.is_closed:  # its body was read by the lane's transport already
            self._give_back(lane)
            return response
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _LaneStream(response.stream, lambda: self._give_back(lane))
        return response

    async def aclose(self) -> None:
        lanes, self._lanes = self._lanes, set()
        self._idle.clear()
        with anyio.CancelScope(shield=True):
            for lane in lanes:
                await lane.transport.aclose()

    def _take(self) -> _Lane:
        if self._idle:
            lane = self._idle.pop()
        elif len(self._lanes) < self._max_lanes:
            lane = _Lane(self._new_transport())
            self._lanes.add(lane)
        else:
            lane = min(self._lanes, key=lambda candidate: candidate.active)
        lane.active += 1
        return lane

    def _give_back(self, lane: _Lane) -> None:
        lane.active -= 1
        if lane.active == 0 and lane in self._lanes:
            lane.idle_since = time.monotonic()
            self._idle.append(lane)

    async def _close_stale_lanes(self) -> None:
        cutoff = time.monotonic() - self._keepalive_expiry
        while self._idle and self._idle[0].idle_since < cutoff:
            lane = self._idle.popleft()
            self._lanes.remove(lane)
            with anyio.CancelScope(shield=True):
                await lane.transport.aclose()


class _LaneStream(httpx.AsyncByteStream):
    """A response body that hands its lane back once, when closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


def _one_connection_transport(
    verify: ssl.SSLContext | bool, keepalive_expiry: float
) -> LaneFactory:
    limits = httpx.Limits(
        max_connections=1, max_keepalive_connections=1, keepalive_expiry=keepalive_expiry
    )
    return lambda: httpx.AsyncHTTPTransport(verify=verify, limits=limits)

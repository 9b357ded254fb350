"""A prototype lean HTTP/1.1 transport for httpx: h11 over anyio streams (not the default).

``LeanTransport`` is an ``httpx.AsyncBaseTransport`` that replaces httpcore for the
short JSON exchanges of a Connect client::

    from lean_transport import LeanTransport
    client = OomolConnectClient(base_url=..., api_token=..., transport=LeanTransport())

What it keeps from httpcore: keep-alive pooling per origin (``max_connections``,
``max_keepalive_connections``, ``keepalive_expiry``), an idle connection is checked for
a server-side close before reuse, the four httpx timeouts (connect, read, write, pool)
mapped to the httpx exceptions, TLS (a verified context made lazily, once per
transport, only when an ``https`` URL is used), request bodies streamed from any
``httpx`` stream, responses streamed when large or chunked, a connection closed when a
request is cancelled mid-way. What it drops: HTTP/2, proxies, ``Expect: 100-continue``,
the trace extensions and the per-request ``AsyncLock`` / state machine of httpcore.

Small responses (``Content-Length`` up to ``eager_limit``) are read whole before
returning, which frees the connection at once and spares an async generator per
request; anything else is streamed, and the connection returns to the pool when the
response is closed.
"""

from __future__ import annotations

import math
import select
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import h11
import httpx

_Origin = tuple[bytes, str, int]
_READ_SIZE = 64 * 1024


class _Connection:
    __slots__ = ("conn", "idle_since", "origin", "sock", "stream")

    def __init__(self, origin: _Origin, stream: anyio.abc.ByteStream) -> None:
        self.origin = origin
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=256 * 1024)
        self.idle_since = 0.0
        # Looked up once: anyio builds its attribute mapping anew on every lookup.
        self.sock = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)

    def reusable(self, now: float, expiry: float | None) -> bool:
        """Idle, not expired, and not closed (nor sent anything) by the server meanwhile."""
        if expiry is not None and now - self.idle_since > expiry:
            return False
        if self.sock is None:
            return True
        try:
            return not select.select([self.sock], [], [], 0)[0]
        except (OSError, ValueError):
            return False


class _ResponseStream(httpx.AsyncByteStream):
    """A streamed response body; closing it hands the connection back."""

    def __init__(self, exchange: _Exchange) -> None:
        self._exchange: _Exchange | None = exchange
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        exchange = self._exchange
        if exchange is None:
            raise httpx.StreamClosed
        try:
            while True:
                event = await exchange.next_chunk()
                if type(event) is h11.Data:
                    yield bytes(event.data)
                elif type(event) is h11.EndOfMessage:
                    self._done = True
                    return
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            await exchange.transport._release(exchange.connection, reuse=self._done)


class _Exchange:
    """One request/response on one connection, under one cancel scope.

    The scope's deadline is moved before each wait (write, then each read): one timer
    per wait instead of one ``fail_after`` scope per socket operation.
    """

    __slots__ = ("connection", "phase", "read_timeout", "request", "scope", "transport",
                 "write_timeout")

    def __init__(self, transport: LeanTransport, connection: _Connection,
                 request: httpx.Request, timeouts: dict[str, float | None]) -> None:
        self.transport = transport
        self.connection = connection
        self.request = request
        self.read_timeout = timeouts.get("read")
        self.write_timeout = timeouts.get("write")
        self.scope = anyio.CancelScope()
        self.phase = "write"

    def timeout_error(self) -> httpx.TimeoutException:
        if self.phase == "write":
            return httpx.WriteTimeout("timed out sending the request", request=self.request)
        return httpx.ReadTimeout("timed out reading the response", request=self.request)

    async def perform(self) -> httpx.Response:
        with self.scope:
            return await self.run()
        raise self.timeout_error()

    async def next_chunk(self) -> Any:
        """The next body event of a streamed response, with a fresh read deadline."""
        self.scope = scope = anyio.CancelScope()
        with scope:
            return await self.next_event()
        raise self.timeout_error()

    def _wait_at_most(self, seconds: float | None) -> None:
        self.scope.deadline = math.inf if seconds is None else anyio.current_time() + seconds

    async def run(self) -> httpx.Response:
        request, connection = self.request, self.connection
        conn = connection.conn
        data = conn.send(h11.Request(method=request.method.encode(),
                                     target=request.url.raw_path, headers=request.headers.raw))
        stream = request.stream
        self._wait_at_most(self.write_timeout)
        if isinstance(stream, httpx.ByteStream):  # the common case: a body already in memory
            body = b"".join(stream)  # type: ignore[arg-type]
            if body:
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
            await self._send(data)
        else:
            await self._send(data)
            async for chunk in stream:  # type: ignore[union-attr]
                if chunk:
                    self._wait_at_most(self.write_timeout)
                    await self._send(conn.send(h11.Data(data=chunk)))
            await self._send(conn.send(h11.EndOfMessage()))
        self.phase = "read"
        event = await self.next_event()
        while type(event) is h11.InformationalResponse:
            event = await self.next_event()
        if type(event) is not h11.Response:
            raise httpx.RemoteProtocolError(f"unexpected {event!r}", request=request)
        extensions = {"http_version": b"HTTP/1.1", "reason_phrase": bytes(event.reason)}
        headers = event.headers.raw_items()
        length = _content_length(event.headers)
        if length is not None and length <= self.transport._eager_limit:
            chunks: list[bytes] = []
            while True:
                body_event = await self.next_event()
                if type(body_event) is h11.Data:
                    chunks.append(bytes(body_event.data))
                elif type(body_event) is h11.EndOfMessage:
                    break
            await self.transport._release(connection, reuse=True)
            return httpx.Response(event.status_code, headers=headers, content=b"".join(chunks),
                                  extensions=extensions)
        return httpx.Response(event.status_code, headers=headers,
                              stream=_ResponseStream(self), extensions=extensions)

    async def _send(self, data: bytes) -> None:
        try:
            await self.connection.stream.send(data)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=self.request) from exc

    async def next_event(self) -> Any:
        conn = self.connection.conn
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc), request=self.request) from exc
            if event is not h11.NEED_DATA:
                if type(event) is h11.ConnectionClosed:
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response.", request=self.request)
                return event
            self._wait_at_most(self.read_timeout)
            try:
                data = await self.connection.stream.receive(_READ_SIZE)
            except anyio.EndOfStream:
                data = b""
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__,
                                      request=self.request) from exc
            if not data and conn.their_state is h11.SEND_RESPONSE:
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response.", request=self.request)
            conn.receive_data(data)


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over h11 and anyio (asyncio or trio) with keep-alive pooling."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        max_connections: int | None = 100,
        max_keepalive_connections: int | None = 20,
        keepalive_expiry: float | None = 5.0,
        eager_limit: int = 1024 * 1024,
    ) -> None:
        self._verify = verify
        self._ssl_context = verify if isinstance(verify, ssl.SSLContext) else None
        self._max_connections = max_connections
        self._max_keepalive = max_keepalive_connections
        self._expiry = keepalive_expiry
        self._eager_limit = eager_limit
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._idle_count = 0
        self._open = 0
        self._waiters: deque[anyio.Event] = deque()
        self._closed = False

    # ------------------------------------------------------------------ httpx API

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}",
                                            request=request)
        origin: _Origin = (scheme, url.host, url.port or (443 if scheme == b"https" else 80))
        timeouts = request.extensions.get("timeout") or {}
        connection = await self._acquire(origin, request, timeouts)
        try:
            return await _Exchange(self, connection, request, timeouts).perform()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._release(connection, reuse=False)
            raise

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                self._open -= 1
                await anyio.aclose_forcefully(connection.stream)
        self._idle_count = 0

    # ------------------------------------------------------------------ the pool

    async def _acquire(self, origin: _Origin, request: httpx.Request,
                       timeouts: dict[str, float | None]) -> _Connection:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.reusable(now, self._expiry):
                return connection
            await self._discard(connection)
        if self._max_connections is not None and self._open >= self._max_connections:
            try:
                with anyio.fail_after(timeouts.get("pool")):
                    while self._open >= self._max_connections:
                        if self._idle_count and await self._evict_idle():
                            continue
                        event = anyio.Event()
                        self._waiters.append(event)
                        try:
                            await event.wait()
                        finally:
                            if event in self._waiters:
                                self._waiters.remove(event)
                        idle = self._idle.get(origin)
                        if idle:
                            connection = idle.pop()
                            self._idle_count -= 1
                            if connection.reusable(time.monotonic(), self._expiry):
                                return connection
                            await self._discard(connection)
            except TimeoutError:
                raise httpx.PoolTimeout("no connection available in time",
                                        request=request) from None
        self._open += 1
        try:
            stream = await self._connect(origin, request, timeouts.get("connect"))
        except BaseException:
            self._open -= 1
            self._wake()
            raise
        return _Connection(origin, stream)

    async def _connect(self, origin: _Origin, request: httpx.Request,
                       seconds: float | None) -> anyio.abc.ByteStream:
        scheme, host, port = origin
        context = None
        if scheme == b"https":
            context = self._ssl_context
            if context is None:
                context = self._ssl_context = httpx.create_ssl_context(verify=self._verify)
        try:
            with anyio.fail_after(seconds):
                if context is None:
                    return await anyio.connect_tcp(host, port)
                return await anyio.connect_tcp(host, port, ssl_context=context,
                                               tls_hostname=host, tls_standard_compatible=False)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}",
                                       request=request) from None
        except (OSError, ssl.SSLError, anyio.BrokenResourceError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc

    async def _release(self, connection: _Connection, *, reuse: bool) -> None:
        conn = connection.conn
        if (reuse and not self._closed and conn.our_state is h11.DONE
                and conn.their_state is h11.DONE
                and (self._max_keepalive is None or self._idle_count < self._max_keepalive)):
            conn.start_next_cycle()
            connection.idle_since = time.monotonic()
            self._idle.setdefault(connection.origin, []).append(connection)
            self._idle_count += 1
            self._wake()
            return
        await self._discard(connection)

    async def _discard(self, connection: _Connection) -> None:
        self._open -= 1
        self._wake()
        await anyio.aclose_forcefully(connection.stream)

    async def _evict_idle(self) -> bool:
        """Close the oldest idle connection of any origin to make room; False if none."""
        oldest: _Connection | None = None
        for connections in self._idle.values():
            if connections and (oldest is None or connections[0].idle_since < oldest.idle_since):
                oldest = connections[0]
        if oldest is None:
            return False
        self._idle[oldest.origin].remove(oldest)
        self._idle_count -= 1
        await self._discard(oldest)
        return True

    def _wake(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

"""The one way a request reaches the server: ``RequestSender``.

It builds each ``httpx.Request`` itself, gives the token and the caller's headers (Cookie
included) to the configured origin only, follows redirects with one set of rules, and reads
the answer whole (decompressed, up to a size cap), over one ``httpx.AsyncBaseTransport``:
the lane pool, a caller's transport, a proxy router, or a caller's ``httpx.AsyncClient``
wrapped in ``ClientTransport`` (so it obeys the same rules).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from ._decoding import read_body
from ._replies import Reply, TakenThenLost

Origin = tuple[str, str, int | None]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 20
_BODY_HEADERS = ("Content-Length", "Content-Type", "Transfer-Encoding")


def origin_of(url: httpx.URL) -> Origin:
    """Scheme, host and port: what must match for credentials to be sent."""
    return (url.scheme, url.host, url.port)


class ClientTransport(httpx.AsyncBaseTransport):
    """A caller's ``httpx.AsyncClient`` as a transport: its proxies, TLS, event hooks and
    mounts apply, redirects are left to ``RequestSender``; the client is never closed here.

    Without an ``api_token`` the client's own ``auth`` (if any) is used, for the configured
    origin only.
    """

    def __init__(self, client: httpx.AsyncClient, origin: Origin, *, client_auth: bool) -> None:
        self._client = client
        self._origin = origin
        self._client_auth = client_auth

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        own_auth = self._client_auth and origin_of(request.url) == self._origin
        auth: Any = httpx.USE_CLIENT_DEFAULT if own_auth else None
        try:
            return await self._client.send(
                request, auth=auth, follow_redirects=False, stream=True
            )
        except httpx.InvalidURL as exc:
            # httpx prepares the next request of a redirect even when it does not follow it.
            raise httpx.UnsupportedProtocol(
                f"a redirect to an unusable URL (its scheme or form): {exc}", request=request
            ) from None

    async def aclose(self) -> None:
        """The caller's client stays open."""


class RequestSender:
    """Sends requests over ``transport`` and returns their answers read whole.

    ``origin_headers`` go to the configured origin, with the token; any other origin a
    redirect leads to gets ``foreign_headers`` only. Redirects are followed as httpx does
    (at most 20; 301 on a POST, 302 and 303 turn into a body-less GET; 307 and 308 resend
    the body). An answer larger than ``max_response_bytes`` once decompressed raises
    ``InvalidResponseError`` as soon as the limit is passed.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        origin: Origin,
        token: str | None,
        origin_headers: httpx.Headers,
        foreign_headers: httpx.Headers,
        max_response_bytes: int,
    ) -> None:
        self._transport = transport
        self._origin = origin
        self._origin_headers = origin_headers.copy()
        if token is not None:
            self._origin_headers["Authorization"] = token
        self._foreign_headers = foreign_headers
        self._max_bytes = max_response_bytes

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def send(
        self,
        method: str,
        url: str,
        headers: httpx.Headers | None,
        content: Any,
        timeout: httpx.Timeout,
    ) -> Reply:
        """One exchange, redirects included; ``headers`` are the request's own (its body's
        type and length), added to whichever set the target's origin gets."""
        extensions = {"timeout": timeout.as_dict()}
        target = _parsed(url)
        redirects = 0
        taken: str | None = None  # the request a redirect turned into a GET: the server took it
        while True:
            request = _request(
                method, target, self._headers_for(target, headers), content, extensions
            )
            try:
                response = await self._transport.handle_async_request(request)
                response.request = request
                body = await read_body(response, self._max_bytes, method, str(target))
            except httpx.RequestError as exc:
                if taken is None:
                    raise
                raise TakenThenLost(f"{taken}; then: {exc}", request=request) from exc
            location = response.headers.get("Location")
            if response.status_code not in REDIRECT_STATUSES or location is None:
                if taken is not None and response.status_code >= 400:
                    raise TakenThenLost(f"{taken}; then: HTTP {response.status_code}",
                                        request=request)
                return Reply(response.status_code, response.headers, body)
            if redirects == MAX_REDIRECTS:
                raise httpx.TooManyRedirects(
                    f"more than {MAX_REDIRECTS} redirects", request=request
                )
            redirects += 1
            target = _redirect_target(request, location)
            if _turns_into_get(method, response.status_code):
                if method != "GET" and taken is None:
                    taken = f"the {method} was taken and redirected (HTTP {response.status_code})"
                method, content, headers = "GET", None, _without_body_headers(headers)

    def _headers_for(self, url: httpx.URL, own: httpx.Headers | None) -> httpx.Headers:
        """The one place deciding which headers, the token among them, go where."""
        base = self._origin_headers if origin_of(url) == self._origin else self._foreign_headers
        if not own:
            return base  # httpx.Request copies it
        headers = base.copy()
        headers.update(own)
        return headers

class _Bytes(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body in memory, handed out in one chunk by a plain iterator.

    httpx's own stream for ``content=bytes`` hands it out from an async generator, which a
    send cut short (a cancellation mid-write) leaves to the garbage collector: a
    ``ResourceWarning`` on trio. An iterator object has nothing to finish.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __iter__(self) -> Iterator[bytes]:
        return iter((self._data,))

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Once(self._data)


class _Once:
    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        if self._data is None:
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data


def _request(
    method: str, url: httpx.URL, headers: httpx.Headers, content: Any, extensions: Any
) -> httpx.Request:
    """The request; a body in memory goes out as one chunk (``_Bytes``), a streamed body
    (an ``httpx.AsyncByteStream``) as the stream it is.

    Given as ``content=``, httpx would wrap either in an async generator of its own, which a
    failed send abandons to the garbage collector (a ``ResourceWarning`` on trio); a streamed
    body hands out streams that its ``aclose()`` closes after each attempt.
    """
    streamed = isinstance(content, httpx.AsyncByteStream)
    request = httpx.Request(
        method, url, headers=headers, content=None if streamed else content, extensions=extensions
    )
    if isinstance(content, bytes) and content:
        request.stream = _Bytes(content)  # the same bytes, framed and read as httpx did
    elif streamed:
        request.stream = content
        if "Content-Length" not in headers:  # httpx framed it as an empty body: stream it
            request.headers.pop("Content-Length", None)
            request.headers["Transfer-Encoding"] = "chunked"
    return request


def _without_body_headers(headers: httpx.Headers | None) -> httpx.Headers | None:
    if not headers:
        return headers
    headers = headers.copy()
    for name in _BODY_HEADERS:
        headers.pop(name, None)
    return headers


@functools.lru_cache(maxsize=256)
def _parsed(url: str) -> httpx.URL:
    """Parsing costs a twentieth of a keep-alive request; a wait polls one URL again and
    again (``httpx.URL`` is immutable)."""
    return httpx.URL(url)


def _redirect_target(request: httpx.Request, location: str) -> httpx.URL:
    try:
        target = request.url.join(location)
    except httpx.InvalidURL as exc:
        raise httpx.RemoteProtocolError(
            f"invalid Location header in a redirect: {exc}", request=request
        ) from None
    if target.scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(
            f"a redirect to an unsupported URL scheme: {target.scheme!r}", request=request
        )
    return target


def _turns_into_get(method: str, status: int) -> bool:
    if method == "HEAD":
        return False
    return status in (302, 303) or (status == 301 and method == "POST")

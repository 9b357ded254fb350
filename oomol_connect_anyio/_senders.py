"""How one request reaches the server: straight onto a transport, or through an httpx client.

Both senders return the response read whole and closed, after following redirects; the token
goes only to the configured origin, on the first request and on every redirect alike.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import httpx

Origin = tuple[str, str, int | None]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 20
_BODY_HEADERS = ("Content-Length", "Content-Type", "Transfer-Encoding")


def origin_of(url: httpx.URL) -> Origin:
    return (url.scheme, url.host, url.port)


class Sender(Protocol):
    async def send(
        self, method: str, url: str, headers: httpx.Headers, content: Any, timeout: httpx.Timeout
    ) -> httpx.Response: ...

    async def aclose(self) -> None: ...


class TokenAuth(httpx.Auth):
    """Adds the raw token, and only to requests for the configured origin."""

    def __init__(self, token: str, origin: Origin) -> None:
        self._token = token
        self._origin = origin

    def auth_flow(self, request: httpx.Request) -> Any:
        if origin_of(request.url) == self._origin:
            request.headers["Authorization"] = self._token
        yield request

    def __repr__(self) -> str:
        return "<token redacted>"


class ClientSender:
    """Through an ``httpx.AsyncClient``: the caller's (left open), or one of ours that routes
    through the proxies set in the environment."""

    def __init__(
        self, client: httpx.AsyncClient, token: str | None, origin: Origin, *, owned: bool
    ) -> None:
        self._client = client
        # Without a token the caller's own http_client auth (if any) applies.
        self._auth: Any = TokenAuth(token, origin) if token else httpx.USE_CLIENT_DEFAULT
        self._owned = owned

    async def send(
        self, method: str, url: str, headers: httpx.Headers, content: Any, timeout: httpx.Timeout
    ) -> httpx.Response:
        return await self._client.request(
            method, url, content=content, headers=headers, auth=self._auth, timeout=timeout
        )

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()


class TransportSender:
    """Straight onto an ``httpx`` transport (closed with the client).

    ``httpx.AsyncClient`` spends about a quarter of a keep-alive request's CPU on work this
    client has no use for: merging URLs, headers and cookies, running the cookie jar and an
    auth flow on every request. This sender builds the ``httpx.Request`` itself and follows
    redirects as httpx does (at most 20; 301 on a POST, 302 and 303 turn into a body-less
    GET; 307 and 308 resend the body).
    """

    def __init__(self, transport: httpx.AsyncBaseTransport, token: str | None, origin: Origin):
        self._transport = transport
        self._token = token
        self._origin = origin

    async def send(
        self, method: str, url: str, headers: httpx.Headers, content: Any, timeout: httpx.Timeout
    ) -> httpx.Response:
        extensions = {"timeout": timeout.as_dict()}
        target = _parsed(url)
        redirects = 0
        while True:
            request = httpx.Request(
                method, target, headers=self._headers_for(target, headers), content=content,
                extensions=extensions,
            )
            response = await self._exchange(request)
            location = response.headers.get("Location")
            if response.status_code not in REDIRECT_STATUSES or location is None:
                return response
            if redirects == MAX_REDIRECTS:
                raise httpx.TooManyRedirects(
                    f"more than {MAX_REDIRECTS} redirects", request=request
                )
            redirects += 1
            target = _redirect_target(request, location)
            if _turns_into_get(method, response.status_code):
                method, content = "GET", None
                headers = headers.copy()
                for name in _BODY_HEADERS:
                    headers.pop(name, None)

    async def aclose(self) -> None:
        await self._transport.aclose()

    def _headers_for(self, url: httpx.URL, headers: httpx.Headers) -> httpx.Headers:
        """The token goes to the configured origin only, and so does a caller's Cookie."""
        if origin_of(url) != self._origin:
            if "Cookie" not in headers:
                return headers
            headers = headers.copy()
            del headers["Cookie"]
            return headers
        if self._token is None:
            return headers
        headers = headers.copy()
        headers["Authorization"] = self._token
        return headers

    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response


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

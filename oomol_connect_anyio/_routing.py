"""Which ``httpx.AsyncBaseTransport`` carries the client's requests.

The lane pool, unless the environment sets a proxy (``HTTP_PROXY``, ``HTTPS_PROXY``,
``ALL_PROXY``): then ``ProxyRouter`` sends the URLs a proxy applies to (``proxy_bypass``
consulted, so ``NO_PROXY`` is honoured) through httpx's proxy transport and every other URL
on the lanes. ``NO_PROXY`` alone sets no proxy and keeps every request on the lanes.
"""

from __future__ import annotations

import functools
import ssl
import urllib.request

import httpx

from ._lanes import LanePool


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """One verifying SSL context for every client: building one costs tens of ms."""
    return httpx.create_ssl_context()


def environment_proxies() -> dict[str, str]:
    """Proxy URL by scheme (``"all"`` for any) as the environment sets them."""
    return {
        scheme: url for scheme, url in urllib.request.getproxies().items()
        if scheme != "no" and url
    }


def default_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    lanes = LanePool(limits=limits, ssl_context=default_ssl_context())
    proxies = environment_proxies()
    return ProxyRouter(lanes, proxies, limits) if proxies else lanes


class ProxyRouter(httpx.AsyncBaseTransport):
    """Each request through the proxy set for its URL's scheme, or straight on ``direct``."""

    def __init__(
        self, direct: httpx.AsyncBaseTransport, proxies: dict[str, str], limits: httpx.Limits
    ) -> None:
        self._direct = direct
        self._by_scheme: dict[str, httpx.AsyncBaseTransport] = {}
        for scheme in ("http", "https"):
            proxy = proxies.get(scheme) or proxies.get("all")
            if proxy is not None:
                self._by_scheme[scheme] = _proxy_transport(scheme, proxy, limits)
        self._routes: dict[tuple[str, str], httpx.AsyncBaseTransport] = {}

    def route(self, url: httpx.URL) -> httpx.AsyncBaseTransport:
        """The transport for ``url`` (remembered per scheme and host)."""
        key = (url.scheme, url.host)
        transport = self._routes.get(key)
        if transport is None:
            through = self._by_scheme.get(url.scheme)
            bypass = through is None or bool(urllib.request.proxy_bypass(url.host))
            transport = self._direct if bypass or through is None else through
            self._routes[key] = transport
        return transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.route(request.url).handle_async_request(request)

    async def aclose(self) -> None:
        await self._direct.aclose()
        for transport in set(self._by_scheme.values()):
            await transport.aclose()


def _proxy_transport(scheme: str, proxy: str, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    try:
        return httpx.AsyncHTTPTransport(
            proxy=proxy, verify=default_ssl_context(), limits=limits
        )
    except (ValueError, ImportError, httpx.InvalidURL) as exc:
        # The proxy URL may carry credentials: name the variable, not its value.
        raise ValueError(
            f"the {scheme} proxy set in the environment cannot be used: {type(exc).__name__}"
        ) from None

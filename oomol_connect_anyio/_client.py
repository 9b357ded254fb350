"""``OomolConnectClient``: configuration, the transport, and the resources."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import httpx

from ._adaptive import PollingModel
from ._metrics import MetricsSnapshot, RequestEvent, ResponseEvent
from ._transport import RetryPolicy, Transport
from ._types import ClientOptions
from .resources.blocks import Blocks
from .resources.flows import Flows
from .resources.packages import Packages
from .resources.tasks import Tasks

DEFAULT_BASE_URL = "http://localhost:3000/api"
ENV_BASE_URL = "OOMOL_CONNECT_BASE_URL"
ENV_TOKEN = "OOMOL_CONNECT_TOKEN"


def _check_base_url(base_url: object) -> str:
    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be a string, not {type(base_url).__name__}")
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"base_url {base_url!r} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(
            f"base_url {base_url!r} needs an http:// or https:// scheme and a host, "
            f"e.g. {DEFAULT_BASE_URL!r}"
        )
    # httpx percent-escapes a host it cannot use ("exa mple" -> "exa%20mple").
    if "%" in url.host or any(char.isspace() for char in base_url):
        raise ValueError(f"base_url {base_url!r} has an invalid host or whitespace")
    if url.port is not None and not 0 < url.port < 65536:
        raise ValueError(f"base_url {base_url!r} has an invalid port")
    if url.query or url.fragment or "?" in base_url or "#" in base_url:
        raise ValueError(f"base_url {base_url!r} must not carry a query or fragment")
    if url.userinfo:
        raise ValueError(
            "base_url must not carry credentials (user:password@); "
            "pass the token as api_token"
        )
    return base_url


def _check_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
    return httpx.Timeout(timeout)


def _check_hook(hook: Callable[[Any], Any] | None, name: str) -> Callable[[Any], Any] | None:
    if hook is not None and not callable(hook):
        raise TypeError(f"{name} must be callable, not {type(hook).__name__}")
    return hook


class OomolConnectClient:
    """An async client for one Oomol Connect server; use it with ``async with``.

    Arguments left out are read from ``OOMOL_CONNECT_BASE_URL`` and
    ``OOMOL_CONNECT_TOKEN``. Pass ``http_client`` (never closed here) or
    ``transport`` to bring your own proxies, TLS or test transport.
    ``on_request``/``on_response`` (plain or async) see every HTTP attempt,
    never its headers: a place for tracing and metrics.
    """

    def __init__(
        self,
        options: ClientOptions | None = None,
        *,
        base_url: str | None = None,
        api_token: str | None = None,
        default_headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout | None = 30.0,
        max_retries: int = 2,
        retry_delay: float = 0.5,
        max_retry_delay: float = 8.0,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        on_request: Callable[[RequestEvent], Any] | None = None,
        on_response: Callable[[ResponseEvent], Any] | None = None,
    ) -> None:
        if options is not None:
            if not isinstance(options, Mapping):
                raise TypeError("options must be a dict like the official client's")
            base_url = base_url if base_url is not None else options.get("base_url")
            api_token = api_token if api_token is not None else options.get("api_token")
            default_headers = default_headers or options.get("default_headers")
            timeout = options.get("timeout", timeout)
        if http_client is not None and transport is not None:
            raise ValueError("pass either http_client or transport, not both")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int):
            raise TypeError(f"max_retries must be an int, not {max_retries!r}")
        base_url = _check_base_url(base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL)
        token = api_token if api_token is not None else os.environ.get(ENV_TOKEN)
        if token is not None and not isinstance(token, str):
            raise TypeError("api_token must be a string")
        headers = dict(default_headers or {})
        if any(key.lower() == "authorization" for key in headers):
            raise ValueError("pass the token as api_token, not in default_headers")
        self._transport = Transport(
            base_url=base_url,
            token=token or None,
            headers=headers,
            timeout=_check_timeout(timeout),
            retry=RetryPolicy(max_retries, retry_delay, max_retry_delay),
            http_client=http_client,
            transport=transport,
            on_request=_check_hook(on_request, "on_request"),
            on_response=_check_hook(on_response, "on_response"),
        )
        self._polling_model = PollingModel(base_url)  # shared by every wait of this client
        self.tasks = Tasks(self._transport, self._polling_model)
        self.flows = Flows(self._transport)
        self.blocks = Blocks(self._transport)
        self.packages = Packages(self._transport, self._polling_model)

    @property
    def base_url(self) -> str:
        return self._transport.base_url

    @property
    def metrics(self) -> MetricsSnapshot:
        """A snapshot of this client's running totals (requests, retries, bytes, stops)."""
        return self._transport.metrics.snapshot()

    @property
    def polling_model(self) -> PollingModel:
        """What this client learned of run durations (``backoff_strategy: "adaptive"``)."""
        return self._polling_model

    async def aclose(self) -> None:
        """Close the connection pool (a caller-supplied ``http_client`` is left open)."""
        await self._transport.aclose()

    close = aclose

    async def __aenter__(self) -> OomolConnectClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<OomolConnectClient base_url={self.base_url!r}>"

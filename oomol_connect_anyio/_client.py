"""``OomolConnectClient``: configuration, the transport, and the resources."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import httpx

from ._adaptive import PollingModel
from ._lanes import DEFAULT_LIMITS, check_limits
from ._lifecycle import Lifecycle
from ._metrics import MetricsSnapshot, RequestEvent, ResponseEvent
from ._task_api import TaskEndpoints
from ._transport import DEFAULT_MAX_RESPONSE_BYTES, RetryPolicy, Transport
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


def _check_token(token: object) -> str | None:
    """The token without surrounding whitespace (a file's trailing newline), or ``None``.

    Refused when it holds a control or non-ASCII character: it could not travel in an HTTP
    header, and h11 would quote it in its error. The message never contains the token.
    """
    if token is None:
        return None
    if not isinstance(token, str):
        raise TypeError(f"api_token must be a string, not {type(token).__name__}")
    token = token.strip()
    if not token.isascii() or any(not 32 <= ord(char) < 127 for char in token):
        raise ValueError(
            "api_token contains a control or non-ASCII character; an HTTP header cannot "
            "carry it (check how the token was read or pasted)"
        )
    return token or None


def _check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's default headers, refused (naming the header, not its value) when one
    could not be sent."""
    checked = dict(headers or {})
    for name, value in checked.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("default_headers must map header names to string values")
        if not name or not name.isascii() or any(not 33 <= ord(c) < 127 or c == ":" for c in name):
            raise ValueError(f"default_headers: {name!r} is not a valid header name")
        if not value.isascii() or any(not 32 <= ord(c) < 127 and c != "\t" for c in value):
            raise ValueError(
                f"default_headers: the value of {name!r} contains a control or non-ASCII "
                "character"
            )
        if value != value.strip(" \t"):  # HTTP/1.1 refuses it when sending, quoting the value
            raise ValueError(
                f"default_headers: the value of {name!r} starts or ends with a space or tab"
            )
        if name.lower() == "authorization":
            raise ValueError("pass the token as api_token, not in default_headers")
    return checked


def _check_max_response_bytes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_response_bytes must be an int, not {value!r}")
    if value < 1:
        raise ValueError(f"max_response_bytes must be >= 1, not {value}")
    return value


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
    ``OOMOL_CONNECT_TOKEN``; the token is stripped of surrounding whitespace. Pass
    ``http_client`` (never closed here) or ``transport`` to bring your own proxies, TLS or
    test transport; either obeys the same token, header and redirect rules as the default.
    ``limits`` (an ``httpx.Limits``) bounds the connection pool: ``max_connections``
    requests in flight, ``max_keepalive_connections`` idle connections kept for
    ``keepalive_expiry`` seconds. An answer larger than ``max_response_bytes`` once
    decompressed raises ``InvalidResponseError``. ``on_request``/``on_response`` (plain or
    async) see every HTTP attempt, never its headers: a place for tracing and metrics;
    what they raise becomes a ``HookError``.
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
        limits: httpx.Limits = DEFAULT_LIMITS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
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
        token = _check_token(api_token if api_token is not None else os.environ.get(ENV_TOKEN))
        headers = _check_headers(default_headers)
        self._transport = Transport(
            base_url=base_url,
            token=token,
            headers=headers,
            timeout=_check_timeout(timeout),
            retry=RetryPolicy(max_retries, retry_delay, max_retry_delay),
            http_client=http_client,
            transport=transport,
            on_request=_check_hook(on_request, "on_request"),
            on_response=_check_hook(on_response, "on_response"),
            limits=check_limits(limits),
            max_response_bytes=_check_max_response_bytes(max_response_bytes),
        )
        self._polling_model = PollingModel(base_url)  # shared by every wait of this client
        self._lifecycle = Lifecycle(TaskEndpoints(self._transport), self._polling_model)
        self.tasks = Tasks(self._transport, self._lifecycle)
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
        """Cancel the runs in flight and send their stops (bounded), then close the
        connection pool (a caller-supplied ``http_client`` is left open).

        Call it from the task that entered the client (``async with`` does).
        """
        await self._lifecycle.close()
        await self._transport.aclose()

    close = aclose

    async def __aenter__(self) -> OomolConnectClient:
        """Open the client's service task group, where creates and the stops of
        abandoned tasks run beyond the reach of a caller's cancellation."""
        await self._lifecycle.open()
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

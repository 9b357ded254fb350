"""The one layer that talks HTTP: URLs, auth, encoding, retries and error mapping."""

from __future__ import annotations

import email.utils
import functools
import json
import logging
import math
import random
import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from ._concurrency import call
from ._errors import (
    ApiError,
    ConnectionError,
    InvalidResponseError,
    RequestTimeoutError,
    error_class_for_status,
)
from ._lanes import LaneTransport
from ._metrics import ClientMetrics, RequestEvent, ResponseEvent, current_tally
from ._multipart import MultipartBody
from ._senders import ClientSender, Origin, Sender, TransportSender, origin_of
from ._version import __version__

logger = logging.getLogger("oomol_connect_anyio")

MAX_CONNECTIONS = 100
RETRY_STATUSES = frozenset({429, 502, 503, 504})
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """How idempotent requests are retried: exponential backoff with full jitter."""

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {self.max_retries}")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays must be >= 0")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        if retry_after is not None and 0 <= retry_after <= self.max_retry_after:
            return retry_after
        return random.uniform(0, min(self.max_delay, self.initial_delay * 2**attempt))


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "nan", "inf" and negative numbers are not delta-seconds: ignore them.
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def encode_path_param(value: str) -> str:
    """Percent-encode an id for one path segment (``/``, ``%`` and dot segments too)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"an id must be a non-empty string, not {value!r}")
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """One verifying SSL context for every client: httpx builds one per client (~30 ms)."""
    return httpx.create_ssl_context()


def _sender(
    http_client: httpx.AsyncClient | None,
    transport: httpx.AsyncBaseTransport | None,
    token: str | None,
    origin: Origin,
) -> Sender:
    """The caller's client or transport, else keep-alive lanes.

    With a proxy configured in the environment an httpx client is used, as httpx is the one
    that routes through proxies.
    """
    if http_client is not None:
        return ClientSender(http_client, token, origin, owned=False)
    if transport is not None:
        return TransportSender(transport, token, origin)
    if urllib.request.getproxies():
        client = httpx.AsyncClient(
            verify=_default_ssl_context(),
            follow_redirects=True,
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=20),
        )
        return ClientSender(client, token, origin, owned=True)
    lanes = LaneTransport(max_lanes=MAX_CONNECTIONS, ssl_context=_default_ssl_context())
    return TransportSender(lanes, token, origin)


class Transport:
    """Sends requests to one Connect server and returns decoded JSON bodies."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str | None,
        headers: Mapping[str, str],
        timeout: httpx.Timeout,
        retry: RetryPolicy,
        http_client: httpx.AsyncClient | None,
        transport: httpx.AsyncBaseTransport | None,
        on_request: Callable[[RequestEvent], Any] | None = None,
        on_response: Callable[[ResponseEvent], Any] | None = None,
    ) -> None:
        self._on_request = on_request
        self._on_response = on_response
        self.base_url = base_url.rstrip("/")
        # httpx.Headers merges case-insensitively: a caller's "content-type" default
        # must be replaced by the request's own, not sent as a second header.
        self._headers = httpx.Headers(
            {
                "Accept": "application/json",
                "Accept-Encoding": "gzip, deflate",
                "User-Agent": f"oomol-connect-anyio/{__version__}",
            }
        )
        self._headers.update(headers)
        self._timeout = timeout
        self.retry = retry
        self.metrics = ClientMetrics()
        self._sender = _sender(http_client, transport, token, origin_of(httpx.URL(base_url)))

    async def aclose(self) -> None:
        """Close the HTTP client or transport, unless the caller owns the client."""
        await self._sender.aclose()

    def url(self, route: str, params: tuple[str, ...]) -> str:
        path = route.format(id=encode_path_param(params[0])) if params else route
        return self.base_url + path

    async def request(
        self,
        method: str,
        route: str,
        *params: str,
        json_body: Any = None,
        multipart: MultipartBody | None = None,
        idempotent: bool = True,
        retry: bool = True,
        request_timeout: float | None = None,
    ) -> Any:
        """Send one request (with retries) and return its decoded JSON body.

        ``route`` is a template such as ``"/v1/tasks/{id}"``; the id in
        ``params`` fills it, percent-encoded. Non-idempotent requests are retried only when they
        provably never reached the server.
        """
        url = self.url(route, params)
        retries = self.retry.max_retries if retry else 0
        # A request_timeout bounds the exchange; waiting for a free connection does not count.
        limits = (
            self._timeout
            if request_timeout is None
            else httpx.Timeout(request_timeout, pool=None)
        )
        headers, content = self._encode(json_body, multipart)
        label = f"{method} {route}"
        attempt = 0
        while True:
            if self._on_request is not None:
                await call(self._on_request, RequestEvent(method, label, url, attempt))
            started = time.monotonic()
            try:
                response = await self._sender.send(method, url, headers, content, limits)
            except httpx.RequestError as exc:
                await self._responded(label, url, attempt, started, None, exc)
                # TransportError is worth a retry; TooManyRedirects and DecodingError
                # (also RequestErrors) are not, but must not escape as httpx errors.
                transient = isinstance(exc, httpx.TransportError)
                never_sent = isinstance(exc, _NEVER_SENT)
                if transient and attempt < retries and (idempotent or never_sent):
                    await self._before_retry(label, url, attempt, None, repr(exc))
                    attempt += 1
                    continue
                may_have_reached = not idempotent and not never_sent
                raise _connection_error(exc, method, url, may_have_reached) from exc
            self._count(label, response)
            await self._responded(label, url, attempt, started, response, None)
            status = response.status_code
            if idempotent and status in RETRY_STATUSES and attempt < retries:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                await self._before_retry(label, url, attempt, retry_after, f"HTTP {status}")
                attempt += 1
                continue
            return _decode(response, method, url)

    def _encode(
        self, json_body: Any, multipart: MultipartBody | None
    ) -> tuple[httpx.Headers, Any]:
        headers = self._headers.copy()
        if multipart is not None:
            headers.update(multipart.headers)
            return headers, multipart
        if json_body is None:
            return headers, None
        try:
            content = json.dumps(json_body, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(f"request body is not JSON-serialisable: {exc}") from None
        headers["Content-Type"] = "application/json"
        return headers, content

    async def _responded(
        self,
        label: str,
        url: str,
        attempt: int,
        started: float,
        response: httpx.Response | None,
        error: Exception | None,
    ) -> None:
        if self._on_response is None:
            return
        method = label.partition(" ")[0]
        event = ResponseEvent(
            method,
            label,
            url,
            attempt,
            status=None if response is None else response.status_code,
            error=None if error is None else type(error).__name__,
            elapsed=time.monotonic() - started,
            bytes=0 if response is None else len(response.content),
        )
        await call(self._on_response, event)

    async def _before_retry(
        self, label: str, url: str, attempt: int, retry_after: float | None, reason: str
    ) -> None:
        delay = self.retry.delay(attempt, retry_after)
        self.metrics.retries += 1
        tally = current_tally.get()
        if tally is not None:
            tally.retries += 1
        logger.debug(
            "retrying %s (%s) in %.3fs, retry %d of %d: %s",
            label, url, delay, attempt + 1, self.retry.max_retries, reason,
        )
        await anyio.sleep(delay)

    def _count(self, label: str, response: httpx.Response) -> None:
        size = len(response.content)
        metrics = self.metrics
        metrics.requests[(label, f"{response.status_code // 100}xx")] += 1
        metrics.bytes_received += size
        tally = current_tally.get()
        if tally is not None:
            tally.requests += 1
            tally.bytes_received += size


def _connection_error(
    exc: httpx.RequestError, method: str, url: str, may_have_reached: bool
) -> ConnectionError:
    kind = RequestTimeoutError if isinstance(exc, httpx.TimeoutException) else ConnectionError
    reason = str(exc) or type(exc).__name__
    message = f"{method} {url} failed: {reason}"
    if may_have_reached:
        message += (
            "; the request may have reached the server before the connection was lost, so "
            "the task may already exist and the request was not retried (look for it with "
            "client.tasks.list() or client.packages.list_install_tasks() before trying again)"
        )
    return kind(message, request_method=method, url=url, may_have_reached_server=may_have_reached)


def _decode(response: httpx.Response, method: str, url: str) -> Any:
    status = response.status_code
    raw = response.content
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError):
        body = raw.decode("utf-8", "replace")
        if status < 400:
            raise InvalidResponseError(
                status, f"response body is not valid JSON: {body[:200]!r}", body, method, url
            ) from None
    if status >= 400:
        message = _error_message(body) or response.reason_phrase or "error"
        raise error_class_for_status(status)(status, message, body, method, url)
    if isinstance(body, dict) and body.get("success") is False:
        message = _error_message(body) or "the server reported failure"
        raise ApiError(status, message, body, method, url)
    return body


def _error_message(body: Any) -> str:
    """The error text of a body: ``message``, then ``error`` (string or object), then text."""
    if isinstance(body, dict):
        for key in ("message", "error"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str) and value.strip():
                return value.strip()
        return ""
    if isinstance(body, str):
        return body.strip()[:500]
    return ""

"""``Transport``: the API layer over HTTP: one call, its retries, hooks, metrics and decoding.

How each piece is done lives in its own module: the request's URL and body in
``_encoding``, when to retry in ``_retry``, what an answer or a failure means in
``_replies``, how a request reaches the server in ``_senders`` (over ``_routing``'s choice of
transport: ``_lanes`` by default).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import httpx

from ._concurrency import call
from ._encoding import default_headers, encode_body, encode_path_param
from ._errors import HookError
from ._lanes import DEFAULT_LIMITS
from ._log import logger
from ._metrics import ClientMetrics, RequestEvent, ResponseEvent, current_tally
from ._multipart import MultipartBody
from ._pressure import report_answer
from ._replies import Reply, connection_error, decode, is_transient, never_sent, parse_json
from ._retry import RETRY_STATUSES, RetryPolicy, parse_retry_after
from ._routing import default_transport
from ._senders import ClientTransport, RequestSender, origin_of

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "RetryPolicy", "Transport", "parse_retry_after"]


def _carrier(
    http_client: httpx.AsyncClient | None,
    transport: httpx.AsyncBaseTransport | None,
    limits: httpx.Limits,
    token: str | None,
    origin: tuple[str, str, int | None],
) -> httpx.AsyncBaseTransport:
    """The caller's client or transport, else the lanes (through proxies set in the
    environment, for the URLs they apply to)."""
    if http_client is not None:
        return ClientTransport(http_client, origin, client_auth=token is None)
    if transport is not None:
        return transport
    return default_transport(limits)


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
        limits: httpx.Limits = DEFAULT_LIMITS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._on_request = on_request
        self._on_response = on_response
        self.base_url = base_url.rstrip("/")
        origin = origin_of(httpx.URL(base_url))
        foreign = default_headers()
        # httpx.Headers merges case-insensitively: a caller's "user-agent" replaces ours.
        # A caller's http_client's own headers count as the caller's (ours win over its
        # defaults); all of them go to the configured origin only.
        own = httpx.Headers(http_client.headers if http_client is not None else None)
        own.update(foreign)
        own.update(headers)
        self._timeout = timeout
        self.retry = retry
        self.metrics = ClientMetrics()
        self._sender = RequestSender(
            _carrier(http_client, transport, limits, token, origin),
            origin=origin,
            token=token,
            origin_headers=own,
            foreign_headers=foreign,
            max_response_bytes=max_response_bytes,
        )

    async def aclose(self) -> None:
        """Close the transport (a caller's ``http_client`` stays open)."""
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

        ``route`` is a template such as ``"/v1/tasks/{id}"``; the id in ``params`` fills it,
        percent-encoded. Non-idempotent requests are retried only when the server certainly
        did not take them: the connection never opened, or the answer was a 429 or carried
        ``Retry-After``. A failure to send the request as built is never retried.
        """
        url = self.url(route, params)
        retries = self.retry.max_retries if retry else 0
        # A request_timeout bounds the exchange; waiting for a free connection does not count.
        limits = (
            self._timeout
            if request_timeout is None
            else httpx.Timeout(request_timeout, pool=None)
        )
        headers, content = encode_body(json_body, multipart)
        label = f"{method} {route}"
        attempt = 0
        while True:
            if self._on_request is not None:
                event = RequestEvent(method, label, url, attempt)
                await self._hook("on_request", self._on_request, event, label, None)
            started = time.monotonic()
            failure: httpx.RequestError | None = None
            try:
                reply = await self._sender.send(method, url, headers, content, limits)
            except httpx.RequestError as exc:
                failure = exc
            finally:
                if multipart is not None:  # its files close now, whatever happened
                    await multipart.aclose()
            if failure is not None:
                await self._responded(label, url, attempt, started, None, failure)
                sent = not never_sent(failure)
                if is_transient(failure) and attempt < retries and (idempotent or not sent):
                    await self._before_retry(label, url, attempt, None, repr(failure))
                    attempt += 1
                    continue
                error = connection_error(failure, method, url, sent and not idempotent)
                raise error from failure
            self._count(label, reply)
            report_answer(label, reply, started)  # to the batch, if any
            await self._responded(label, url, attempt, started, reply, None)
            status = reply.status
            if status in RETRY_STATUSES and attempt < retries:
                retry_after = reply.retry_after
                if self.retry.retries_answer(status, retry_after, idempotent):
                    await self._before_retry(label, url, attempt, retry_after, f"HTTP {status}")
                    attempt += 1
                    continue
            return decode(reply, method, url)

    async def _hook(
        self,
        name: str,
        hook: Callable[[Any], Any],
        event: RequestEvent | ResponseEvent,
        label: str,
        reply: Reply | None,
    ) -> None:
        """Run a hook; what it raises becomes a ``HookError`` carrying a success's body."""
        try:
            await call(hook, event)
        except Exception as exc:
            body = None
            if reply is not None and 200 <= reply.status < 300:
                try:
                    body = parse_json(reply)
                except ValueError:
                    body = None
            answered = "" if reply is None else f" after HTTP {reply.status}"
            raise HookError(
                f"the {name} hook raised {type(exc).__name__} for {label}{answered}",
                body=body,
            ) from exc

    async def _responded(
        self,
        label: str,
        url: str,
        attempt: int,
        started: float,
        reply: Reply | None,
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
            status=None if reply is None else reply.status,
            error=None if error is None else type(error).__name__,
            elapsed=time.monotonic() - started,
            bytes=0 if reply is None else len(reply.content),
        )
        await self._hook("on_response", self._on_response, event, label, reply)

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

    def _count(self, label: str, reply: Reply) -> None:
        size = len(reply.content)
        metrics = self.metrics
        metrics.requests[(label, f"{reply.status // 100}xx")] += 1
        metrics.bytes_received += size
        tally = current_tally.get()
        if tally is not None:
            tally.requests += 1
            tally.bytes_received += size

"""What a request's outcome means to the caller: a decoded JSON body, or a library error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from ._errors import (
    ApiError,
    ConnectionError,
    InvalidResponseError,
    RequestTimeoutError,
    error_class_for_status,
)
from ._retry import parse_retry_after

# Failures that happen before the request leaves this process: sending it again changes
# nothing, and it cannot have reached the server.
_LOCAL = (httpx.LocalProtocolError, httpx.UnsupportedProtocol)
# Failures after which the server certainly did not see the request.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, *_LOCAL)


class TakenThenLost(httpx.TransportError):
    """The server took the request and redirected it as a GET (301/302/303), then the GET
    failed: whatever the GET met, the request itself reached the server, so it is never
    sent again blindly (a create is looked up instead)."""


@dataclass(slots=True)  # built once per request: no frozen-dataclass setattr cost
class Reply:
    """An answer read whole (and decompressed): what the sender hands back."""

    status: int
    headers: httpx.Headers
    content: bytes

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("Retry-After"))


def is_transient(exc: httpx.RequestError) -> bool:
    """Worth another attempt: the network or the server failed, not this request."""
    return isinstance(exc, httpx.TransportError) and not isinstance(exc, _LOCAL)


def never_sent(exc: httpx.RequestError) -> bool:
    return isinstance(exc, _NEVER_SENT)


def connection_error(
    exc: httpx.RequestError, method: str, url: str, may_have_reached: bool
) -> ConnectionError:
    """The library's error for a request that got no answer."""
    kind = RequestTimeoutError if isinstance(exc, httpx.TimeoutException) else ConnectionError
    if isinstance(exc, httpx.LocalProtocolError):
        # h11's message quotes the offending header, which may be a credential.
        reason = "the request breaks HTTP/1.1's rules (an invalid header name or value?)"
    else:
        reason = str(exc) or type(exc).__name__
    message = f"{method} {url} failed: {reason}"
    if may_have_reached:
        message += (
            "; the request may have reached the server before the connection was lost, so "
            "the task may already exist and the request was not retried (look for it with "
            "client.tasks.list() or client.packages.list_install_tasks() before trying again)"
        )
    return kind(message, request_method=method, url=url, may_have_reached_server=may_have_reached)


def parse_json(reply: Reply) -> Any:
    """The body's JSON (``None`` when empty); raises ``ValueError`` when it is not JSON."""
    raw = reply.content
    try:
        return json.loads(raw) if raw.strip() else None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def decode(reply: Reply, method: str, url: str) -> Any:
    """The body of a success; the matching ``ApiError`` for an error status or a
    ``{"success": false}`` body."""
    status = reply.status
    try:
        body = parse_json(reply)
    except ValueError:
        body = reply.content.decode("utf-8", "replace")
        if status < 400:
            raise InvalidResponseError(
                status, f"response body is not valid JSON: {body[:200]!r}", body, method, url
            ) from None
    if status >= 400:
        message = error_message(body) or httpx.codes.get_reason_phrase(status) or "error"
        raise error_class_for_status(status)(
            status, message, body, method, url, retry_after=reply.retry_after
        )
    if isinstance(body, dict) and body.get("success") is False:
        message = error_message(body) or "the server reported failure"
        raise ApiError(status, message, body, method, url)
    return body


def error_message(body: Any) -> str:
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

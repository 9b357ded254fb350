"""Minimal ASGI plumbing: request bodies, JSON responses and HTTP errors."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_BODY_LIMIT = 16 * 1024 * 1024


class HTTPError(Exception):
    """Ends a request with an error status and a `{"success": false, "message"}` body."""

    def __init__(self, status: int, message: str, headers: Headers | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


@dataclass(slots=True)
class Request:
    """A routed request: its route template and the decoded path id, if any."""

    method: str
    route: str | None
    param: str | None
    headers: Headers
    receive: Receive

    def header(self, name: bytes) -> bytes | None:
        """The first value of a (lower-case) header name."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@dataclass(slots=True)
class Response:
    """A complete response, sent in one body message."""

    status: int
    body: bytes
    headers: Headers = field(default_factory=list)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_ENCODER = json.JSONEncoder(separators=(",", ":"))
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def dumps(obj: Any) -> bytes:
    """Compact JSON encoding."""
    return _ENCODER.encode(obj).encode()


def json_response(obj: Any, status: int = 200) -> Response:
    """A JSON response."""
    return Response(status, dumps(obj))


def error_response(error: HTTPError) -> Response:
    """The JSON body of an error."""
    return Response(
        error.status, dumps({"success": False, "message": error.message}), error.headers
    )


async def iter_body(receive: Receive) -> AsyncGenerator[bytes, None]:
    """Yield the chunks of a request body as they arrive."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def read_body(receive: Receive) -> bytes:
    """The whole request body, refusing more than `JSON_BODY_LIMIT` bytes."""
    chunks: list[bytes] = []
    size = 0
    async with aclosing(iter_body(receive)) as body:
        async for chunk in body:
            size += len(chunk)
            if size > JSON_BODY_LIMIT:
                raise HTTPError(413, f"request body larger than {JSON_BODY_LIMIT} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


def parse_json(data: bytes | str, what: str = "body") -> Any:
    """Strict UTF-8 JSON parsing (no NaN/Infinity); any failure is a 400."""
    try:
        return _DECODER.decode(data.decode() if isinstance(data, bytes) else data)
    except (ValueError, RecursionError) as exc:
        raise HTTPError(400, f"invalid JSON {what}: {exc}") from None


async def send_response(send: Send, response: Response) -> None:
    """Send a response with its content type and length."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(response.body)).encode()),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})

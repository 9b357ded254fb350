"""Shared utilities of the respx-based foundation tests (not a test module)."""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import respx
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from oomol_connect_anyio import OomolConnectClient

BASE = "http://connect.test/api"
TOKEN = "tok-5ecret-Zq81x"


_SSL_CONTEXT = None


def fast_transport() -> httpx.AsyncHTTPTransport:
    """httpx's real transport (which respx intercepts), sharing one SSL context.

    Building an SSL context costs ~50 ms, far more than a mocked request.
    """
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = httpx.create_ssl_context()
    return httpx.AsyncHTTPTransport(verify=_SSL_CONTEXT)


@functools.cache
def gzip_bomb() -> bytes:
    """Half a megabyte of gzip that inflates to 512 MiB of zeros: compressed once per
    session, a mebibyte at a time (no 512 MiB buffer)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # a gzip stream
    zeros = bytes(1 << 20)
    return b"".join([compressor.compress(zeros) for _ in range(512)]) + compressor.flush()


def make_client(**kwargs: Any) -> OomolConnectClient:
    """A client for ``BASE`` with the test token and near-zero retry delays."""
    if "http_client" not in kwargs:
        kwargs.setdefault("transport", fast_transport())
    kwargs.setdefault("base_url", BASE)
    kwargs.setdefault("api_token", TOKEN)
    kwargs.setdefault("retry_delay", 0.001)
    kwargs.setdefault("max_retry_delay", 0.001)
    return OomolConnectClient(**kwargs)


def mock_api(base_url: str = BASE) -> respx.MockRouter:
    """A respx router for ``base_url`` that does not insist every route is called."""
    return respx.mock(base_url=base_url, assert_all_called=False)


def task(task_id: str = "t-1", status: str = "created", **extra: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "status": status,
        "project_id": "p",
        "manifest_path": "/m",
        "created_at": 1,
        "updated_at": 2,
        **extra,
    }


def install_task(task_id: str = "i-1", status: str = "pending", **extra: Any) -> dict[str, Any]:
    return {"id": task_id, "name": "pkg", "status": status, "createdAt": 1, "updatedAt": 2, **extra}


def json_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


def assert_no_token(*texts: object) -> None:
    for text in texts:
        assert TOKEN not in str(text)


@dataclass
class Part:
    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)

    @property
    def disposition(self) -> dict[str, str]:
        kind, options = parse_options_header(self.headers.get("content-disposition", ""))
        assert kind == b"form-data"
        return {key.decode(): value.decode() for key, value in options.items()}

    @property
    def name(self) -> str:
        return self.disposition["name"]

    @property
    def filename(self) -> str | None:
        return self.disposition.get("filename")

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


class MultipartReader:
    """Parses a ``multipart/form-data`` body incrementally with ``python_multipart``."""

    def __init__(self, content_type: str) -> None:
        kind, options = parse_options_header(content_type)
        assert kind == b"multipart/form-data", content_type
        boundary = options.get(b"boundary")
        assert boundary, f"no boundary in {content_type!r}"
        self.parts: list[Part] = []
        self.ended = False
        self._field = bytearray()
        self._value = bytearray()

        def begin() -> None:
            self.parts.append(Part())

        def data(buf: bytes, start: int, end: int) -> None:
            self.parts[-1].data += buf[start:end]

        def header_field(buf: bytes, start: int, end: int) -> None:
            self._field += buf[start:end]

        def header_value(buf: bytes, start: int, end: int) -> None:
            self._value += buf[start:end]

        def header_end() -> None:
            # latin-1 keeps the raw bytes; ``disposition`` decodes them as UTF-8
            name = self._field.decode("latin-1").lower()
            self.parts[-1].headers[name] = self._value.decode("latin-1")
            self._field.clear()
            self._value.clear()

        def end() -> None:
            self.ended = True

        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": begin,
                "on_part_data": data,
                "on_header_field": header_field,
                "on_header_value": header_value,
                "on_header_end": header_end,
                "on_end": end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        self._parser.write(chunk)

    def finish(self) -> list[Part]:
        self._parser.finalize()
        assert self.ended, "the multipart body has no closing boundary"
        return self.parts


def parse_multipart(request: httpx.Request) -> list[Part]:
    """The parts of a captured (already read) multipart request."""
    reader = MultipartReader(request.headers["content-type"])
    reader.feed(request.content)
    return reader.finish()


@dataclass
class Received:
    """One request as a ``StreamingTransport`` saw it, chunk by chunk."""

    request: httpx.Request
    chunk_sizes: list[int]
    parts: list[Part] | None


Handler = Callable[[Received], Awaitable[httpx.Response] | httpx.Response]


class StreamingTransport(httpx.AsyncBaseTransport):
    """A transport that consumes the request body as a stream, never joining it.

    Multipart bodies are parsed as they arrive; ``handler`` then answers.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.received: list[Received] = []
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content_type = request.headers.get("content-type", "")
        reader = MultipartReader(content_type) if content_type.startswith("multipart/") else None
        sizes: list[int] = []
        assert isinstance(request.stream, httpx.AsyncByteStream)
        async for chunk in request.stream:
            sizes.append(len(chunk))
            if reader is not None:
                reader.feed(chunk)
        received = Received(request, sizes, reader.finish() if reader else None)
        self.received.append(received)
        response = self.handler(received)
        if not isinstance(response, httpx.Response):
            response = await response
        return response

    async def aclose(self) -> None:
        self.closed = True


def our_running_tasks() -> list[str]:
    """Live anyio tasks running the client's code (its emulator excluded).

    A task started by a task group runs anyio's wrapper coroutine, so follow each task's
    chain of awaited coroutines and look at every frame, not just the outermost one.
    """
    ours = []
    for info in anyio.get_running_tasks():
        coro: Any = info.coro
        while coro is not None:
            code = getattr(coro, "cr_code", None) or getattr(coro, "ag_code", None)
            filename = getattr(code, "co_filename", "")
            if "oomol_connect_anyio" in filename and "emulator" not in filename:
                ours.append(f"{info.name}: {code.co_name}")
                break
            coro = getattr(coro, "cr_await", None)
    return ours


async def settled(client: OomolConnectClient) -> None:
    """Wait until the client's service group has sent the creates and stops in flight
    (a cancelled call returns at once; the stop of the task it abandoned follows)."""
    await client._lifecycle.settled()


@asynccontextmanager
async def served(emulator: Any, **options: Any) -> AsyncIterator[OomolConnectClient]:
    """An emulator over loopback, and an open client of it with near-zero retry delays."""
    from oomol_connect_anyio.emulator import serve_emulator

    async with (
        serve_emulator(emulator, host="127.0.0.1", port=0) as url,
        OomolConnectClient(base_url=url, retry_delay=0.001, **options) as client,
    ):
        yield client


class HeldCreates:
    """Wraps an emulator's app (create it before serving the emulator): a create is read
    whole, then held until ``release``.

    ``arrived`` is set once the server holds the whole create request (so that what it
    does next cannot depend on how far the client got), ``handled`` once the emulator has
    handled it (created the task, or not).
    """

    def __init__(self, emulator: Any) -> None:
        self._app = emulator.app
        self.arrived = anyio.Event()
        self.release = anyio.Event()
        self.handled = anyio.Event()
        emulator.app = self  # served (by serve_emulator) in place of the emulator's app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) != ("POST", "/api/v1/tasks"):
            await self._app(scope, receive, send)
            return
        messages = [await receive()]
        while messages[-1]["type"] == "http.request" and messages[-1].get("more_body"):
            messages.append(await receive())
        self.arrived.set()
        await self.release.wait()

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        try:
            await self._app(scope, replay, send)
        finally:
            self.handled.set()

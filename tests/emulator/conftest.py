"""Fixtures of the emulator tests: socket-free clients and a manual clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from oomol_connect_anyio._senders import _Bytes
from oomol_connect_anyio.emulator import Emulator


class ManualClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.time = 1000.0

    def __call__(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def client_for() -> ClientFactory:
    """Build an httpx client talking to `emu.app` in-process (base URL ends in /api)."""

    def make(emu: Emulator, token: str | None = None, prefix: str = "/api") -> httpx.AsyncClient:
        headers = {"Authorization": token} if token is not None else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=emu.app),
            base_url=f"http://emulator{prefix}",
            headers=headers,
        )

    return make


# A body sent as one chunk by a plain iterator, as the client sends its own: httpx's byte
# stream is an async generator, which `httpx.ASGITransport` never closes when the app answers
# before reading the body (a ResourceWarning on trio).
OneChunk = _Bytes


PostBytes = Callable[[httpx.AsyncClient, str, bytes, dict[str, str]], Awaitable[httpx.Response]]


@pytest.fixture
def post_bytes() -> PostBytes:
    """POST raw bytes (with their Content-Length) as a `OneChunk` body."""

    async def post(
        client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        request = client.build_request(
            "POST", url, headers={**headers, "Content-Length": str(len(body))}
        )
        request.stream = OneChunk(body)
        return await client.send(request)

    return post

"""Shared fixtures: every async test runs on asyncio and trio.

``emulator`` is a fresh in-memory Connect emulator; ``emulator_url`` serves it
over real loopback sockets; ``client`` is a client bound to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from oomol_connect_anyio import OomolConnectClient

if TYPE_CHECKING:
    from oomol_connect_anyio.emulator import Emulator

@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def emulator() -> Emulator:
    from oomol_connect_anyio.emulator import Emulator

    return Emulator()


@pytest.fixture
async def emulator_url(emulator: Emulator, anyio_backend: str) -> AsyncIterator[str]:
    from oomol_connect_anyio.emulator import serve_emulator

    async with serve_emulator(emulator, host="127.0.0.1", port=0) as url:
        yield url


@pytest.fixture
async def client(emulator_url: str) -> AsyncIterator[OomolConnectClient]:
    async with OomolConnectClient(base_url=emulator_url, retry_delay=0.001) as client:
        yield client

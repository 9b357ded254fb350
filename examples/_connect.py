"""Shared by the examples: a client for your server, or for an embedded emulator.

Set ``OOMOL_CONNECT_BASE_URL`` (and ``OOMOL_CONNECT_TOKEN`` if your server
needs one) to run the examples against a real server; they use the demo
blocks (``demo::upper``...), so point them at your own blocks there. Without
it, each example starts the package's emulator on a free loopback port.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from anyio.from_thread import start_blocking_portal

from oomol_connect_anyio import OomolConnectClient, PollingOptions

# The demo blocks finish in milliseconds: poll from 50 ms, backing off to 1 s.
# (The default starts at 2 s, like the official clients.)
POLLING: PollingOptions = {"interval_ms": 50, "max_interval_ms": 1000}


@asynccontextmanager
async def server_url() -> AsyncIterator[str]:
    """``OOMOL_CONNECT_BASE_URL``, or the URL of an emulator served until the block exits."""
    configured = os.environ.get("OOMOL_CONNECT_BASE_URL")
    if configured:
        yield configured
        return
    from oomol_connect_anyio.emulator import serve_emulator

    async with serve_emulator(host="127.0.0.1", port=0) as url:
        print(f"(OOMOL_CONNECT_BASE_URL is not set: using an emulator at {url})", file=sys.stderr)
        yield url


@asynccontextmanager
async def connect(**options: Any) -> AsyncIterator[OomolConnectClient]:
    """``async with connect() as client:``; the token comes from ``OOMOL_CONNECT_TOKEN``."""
    async with server_url() as url, OomolConnectClient(base_url=url, **options) as client:
        yield client


@contextmanager
def sync_server_url() -> Iterator[str]:
    """``server_url`` for blocking code: an emulator runs in a background thread."""
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(server_url()) as url:
        yield url

"""Correctness checks of the prototype ``LeanTransport``, on asyncio and trio.

    python benchmarks/check_lean_transport.py

Runs this client over ``LeanTransport`` against the in-process emulator (hypercorn,
fault injection): keep-alive reuse, JSON and streamed multipart uploads, streamed
(non-eager) responses, read timeouts, dropped connections and retries, a request
cancelled mid-flight (its connection is discarded), the pool limit and ``PoolTimeout``,
and a server-side idle close detected before reuse. Exits non-zero on failure.
"""

from __future__ import annotations

import io
import sys

import anyio
import anyio.abc
import httpx
from lean_transport import LeanTransport

from oomol_connect_anyio import OomolConnectClient, RequestTimeoutError
from oomol_connect_anyio.emulator import Emulator, FaultRule, serve_emulator

ECHO = {"manifest": "demo::echo", "inputValues": {"text": "hi"}}


async def check_basics(url: str) -> None:
    transport = LeanTransport()
    async with OomolConnectClient(base_url=url, transport=transport) as client:
        for _ in range(20):
            result = await client.tasks.run(ECHO)  # type: ignore[arg-type]
            assert result["result"] == {"text": "hi"}, result
        assert transport._open == 1, f"keep-alive: {transport._open} connections for 60 requests"
        upload = await client.tasks.run_with_files(
            "demo::count-bytes", {}, [("a.bin", io.BytesIO(b"x" * 300_000))]
        )
        assert upload["result"]["total"] == 300_000, upload["result"]
        blocks = await client.blocks.list()
        assert blocks["blocks"], blocks


async def check_streamed_response(url: str) -> None:
    transport = LeanTransport(eager_limit=0)  # every response streamed
    async with OomolConnectClient(base_url=url, transport=transport) as client:
        result = await client.tasks.run(
            {"manifest": "demo::log-flood", "inputValues": {"lines": 2000, "seconds": 0.01}},
            {"interval_ms": 20},
        )
        assert len(result["logs"]) > 2000, len(result["logs"])
        assert transport._open == 1, transport._open


async def check_read_timeout_and_retry(emu: Emulator, url: str) -> None:
    emu.faults.add(FaultRule(route="GET /v1/blocks", hang=5.0))
    transport = LeanTransport()
    async with OomolConnectClient(base_url=url, transport=transport, timeout=0.2,
                                  max_retries=1, retry_delay=0.01) as client:
        with anyio.fail_after(3):
            try:
                await client.blocks.list()
            except RequestTimeoutError:
                pass
            else:
                raise AssertionError("no timeout")
        assert transport._open == 0, "a timed-out connection must be discarded"
        await client.tasks.run(ECHO)  # type: ignore[arg-type]
    emu.faults.clear()
    emu.faults.add(FaultRule(route="GET /v1/tasks/{id}", drop_rate=0.5))
    async with OomolConnectClient(base_url=url, transport=LeanTransport(), max_retries=8,
                                  retry_delay=0.001) as client:
        for _ in range(20):
            await client.tasks.run(ECHO)  # type: ignore[arg-type]
    emu.faults.clear()


async def check_cancel_mid_request(emu: Emulator, url: str) -> None:
    emu.faults.add(FaultRule(route="GET /v1/flows", hang=5.0))
    transport = LeanTransport()
    async with OomolConnectClient(base_url=url, transport=transport) as client:
        await client.blocks.list()
        assert transport._open == 1
        with anyio.move_on_after(0.1):
            await client.flows.list()
        assert transport._open == 0, "a cancelled request's connection must be closed"
        await client.blocks.list()
    emu.faults.clear()


async def check_pool_limit(emu: Emulator, url: str) -> None:
    emu.faults.add(FaultRule(route="GET /v1/blocks", latency=(0.05, 0.05)))
    transport = LeanTransport(max_connections=2, max_keepalive_connections=2)
    async with OomolConnectClient(base_url=url, transport=transport) as client:
        peak = 0

        async def one() -> None:
            nonlocal peak
            await client.blocks.list()
            peak = max(peak, transport._open)

        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(one)
        assert peak <= 2, peak
    tight = LeanTransport(max_connections=1)
    errors: list[BaseException] = []

    async def get(http: httpx.AsyncClient) -> None:
        try:
            await http.get(url + "/v1/blocks")
        except httpx.PoolTimeout as exc:
            errors.append(exc)

    timeout = httpx.Timeout(5, pool=0.02)
    async with httpx.AsyncClient(transport=tight, timeout=timeout) as http, \
            anyio.create_task_group() as group:
        for _ in range(2):
            group.start_soon(get, http)
    assert len(errors) == 1, errors
    emu.faults.clear()


async def check_idle_close(url: str) -> None:
    transport = LeanTransport(keepalive_expiry=0.05)
    async with httpx.AsyncClient(transport=transport) as http:
        await http.get(url + "/v1/blocks")
        await anyio.sleep(0.1)  # expired: a new connection, the old one closed
        await http.get(url + "/v1/blocks")
        assert transport._open == 1, transport._open
    # A server that answers once per connection, then closes it without saying so.
    served = 0

    async def handle(stream: anyio.abc.SocketStream) -> None:
        nonlocal served
        async with stream:
            await stream.receive()
            served += 1
            await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await anyio.sleep(0.01)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        transport = LeanTransport()
        async with httpx.AsyncClient(transport=transport) as http:
            for _ in range(3):
                response = await http.get(f"http://127.0.0.1:{port}/")
                assert response.text == "ok", response.text
                await anyio.sleep(0.05)  # the server closes the idle connection meanwhile
        assert served == 3, served
        group.cancel_scope.cancel()


async def main() -> None:
    emu = Emulator()
    async with serve_emulator(emu, host="127.0.0.1", port=0) as url:
        await check_basics(url)
        await check_streamed_response(url)
        await check_read_timeout_and_retry(emu, url)
        await check_cancel_mid_request(emu, url)
        await check_pool_limit(emu, url)
        await check_idle_close(url)


if __name__ == "__main__":
    for backend in ("asyncio", "trio"):
        anyio.run(main, backend=backend)
        print(f"LeanTransport checks passed on {backend}")
    sys.exit(0)

"""serve_emulator over real loopback sockets, under asyncio and trio."""

from __future__ import annotations

import socket

import anyio
import httpx
import pytest

from oomol_connect_anyio.emulator import Emulator, serve_emulator

pytestmark = pytest.mark.anyio


async def test_serves_every_prefix():
    emu = Emulator(token="tok", queue_delay=0.01)
    async with serve_emulator(emu) as url:
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/api")
        root = url.removesuffix("/api")
        async with httpx.AsyncClient(headers={"Authorization": "tok"}) as client:
            created = await client.post(
                f"{url}/v1/tasks", json={"manifest": "demo::echo", "inputValues": {"a": 1}}
            )
            assert created.status_code == 200
            task_id = created.json()["task"]["id"]
            assert (await client.get(f"{root}/v1/tasks/{task_id}")).json()["task"]["id"] == task_id
            await anyio.sleep(0.02)
            logs = (await client.get(f"{url}/v1/tasks/{task_id}/logs")).json()["logs"]
            assert logs[-2]["event"]["result"] == {"a": 1}
            stats = (await client.get(f"{root}/__emulator/stats")).json()
            assert stats["tasks_created"] == 1
            assert (
                await client.get(f"{url}/v1/blocks", headers={"Authorization": "x"})
            ).status_code == 401


async def test_default_emulator_and_port_release():
    async with serve_emulator() as url:
        port = int(url.split(":")[2].split("/")[0])
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{url}/v1/flows")).status_code == 200
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind(("127.0.0.1", port))  # the port is free again
    probe.close()


async def test_explicit_port_and_two_servers():
    async with serve_emulator() as first:
        port = int(first.split(":")[2].split("/")[0])
        with pytest.raises(OSError, match="in use"):
            async with serve_emulator(port=port):
                pass
    async with serve_emulator(port=port) as again:
        assert again == first


async def test_stops_when_the_body_raises_or_is_cancelled():
    emu = Emulator()
    with pytest.raises(KeyError):
        async with serve_emulator(emu):
            raise KeyError("boom")
    with anyio.move_on_after(0.05) as scope:
        async with serve_emulator(emu):
            await anyio.sleep(10)
    assert scope.cancelled_caught


async def test_shutdown_with_a_hung_request_is_quick():
    from oomol_connect_anyio.emulator import FaultRule

    emu = Emulator()
    emu.faults.add(FaultRule(route="GET /v1/tasks", hang=30))
    with anyio.fail_after(10):  # far below the 30 s hang: the request was cancelled
        async with serve_emulator(emu) as url, httpx.AsyncClient(timeout=0.05) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"{url}/v1/tasks")


async def test_many_concurrent_requests():
    emu = Emulator()
    async with serve_emulator(emu) as url, httpx.AsyncClient(base_url=url) as client:
        statuses = []

        async def create() -> None:
            response = await client.post("/v1/tasks", json={"manifest": "demo::echo"})
            statuses.append(response.status_code)

        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(create)
    assert statuses == [200] * 20
    assert len(emu.tasks) == 20

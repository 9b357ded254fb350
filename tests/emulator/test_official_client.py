"""The published Python SDK (oomol-connect-sdk 1.0.3) against the emulator, over a socket.

The SDK runs on asyncio only. Where it is correct it must work; where it is buggy (see
the shared API notes) the failure is asserted explicitly.
"""

from __future__ import annotations

import io

import pytest
from oomol_connect_sdk import ApiError, OomolConnectClient

from oomol_connect_anyio.emulator import Emulator, serve_emulator

pytestmark = pytest.mark.anyio
FAST = {"interval_ms": 5, "max_interval_ms": 20}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_run_get_logs_and_list():
    emu = Emulator(token="tok", queue_delay=0.01)
    async with (
        serve_emulator(emu) as url,
        OomolConnectClient({"base_url": url, "api_token": "tok"}) as client,
    ):
        run = await client.tasks.run(
            {"blockId": "demo::echo", "inputValues": {"text": "hi", "n": 2}}, FAST
        )
        assert run["result"] == {"text": "hi", "n": 2}
        assert run["task"]["status"] == "completed"
        task = await client.tasks.get(run["task_id"])
        assert task["id"] == run["task_id"]
        logs = await client.tasks.get_logs(run["task_id"])
        assert [log["id"] for log in logs] == [1, 2, 3, 4]
        listed = await client.tasks.list()
        assert [t["id"] for t in listed["tasks"]] == [run["task_id"]]
        flow = await client.tasks.run(
            {"blockId": "demo-flow", "inputValues": {"text": "flow"}}, FAST
        )
        assert flow["result"] == {"text": "FLOW"}
    assert emu.tasks[run["task_id"]].manifest == "demo::echo"


async def test_sdk_stop_and_failure():
    from oomol_connect_sdk import TaskFailedError

    async with serve_emulator(Emulator()) as url, OomolConnectClient({"base_url": url}) as client:
        created = await client.tasks.create(
            {"blockId": "demo::sleep", "inputValues": {"seconds": 60}}
        )
        stopped = await client.tasks.stop(created["task"]["id"])
        assert stopped["task"]["status"] == "stopped"  # the SDK returns the envelope
        with pytest.raises(TaskFailedError):
            await client.tasks.run({"blockId": "demo::fail", "inputValues": {}}, FAST)


async def test_blocks_list_version_filtering():
    async with serve_emulator(Emulator()) as url, OomolConnectClient({"base_url": url}) as client:
        every = (await client.blocks.list(include_all_versions=True))["blocks"]
        versions = {(b["blockId"], b["version"]) for b in every}
        assert ("demo::echo", "0.9.0") in versions
        # The SDK only parses `/<x.y.z>/` paths: `demo-1.0.0` blocks get "unknown"...
        assert ("demo::echo", "unknown") in versions
        latest = (await client.blocks.list())["blocks"]
    # ...so its "latest version" filter keeps the old 0.9.0 echo and drops demo 1.0.0.
    assert [(b["blockId"], b["version"]) for b in latest] == [("demo::echo", "0.9.0")]


async def test_create_with_files_is_broken():
    emu = Emulator()
    async with serve_emulator(emu) as url, OomolConnectClient({"base_url": url}) as client:
        upload = io.BytesIO(b"payload")
        upload.name = "payload.bin"
        with pytest.raises(ApiError) as caught:
            await client.tasks.create_with_files("demo::count-bytes", {"a": 1}, upload)
    # The client-level `Content-Type: application/json` wins over the multipart one.
    assert caught.value.status in (400, 415)
    assert "multipart/form-data" in caught.value.message
    assert len(emu.tasks) == 0


async def test_install_and_wait_crashes_on_task_id():
    emu = Emulator(install_duration=0.01)
    async with serve_emulator(emu) as url, OomolConnectClient({"base_url": url}) as client:
        with pytest.raises(KeyError, match="'id'"):
            await client.packages.install_and_wait("text-tools", None, FAST)
        installs = await client.packages.list_install_tasks()
        assert installs["tasks"][0]["name"] == "text-tools"
        task = await client.packages.get_install_task(installs["tasks"][0]["id"])
        assert task["success"] is True  # the SDK does not unwrap {"success", "task"} either

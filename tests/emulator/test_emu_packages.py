"""Package installs: pending -> running -> success | failed, and what they install."""

from __future__ import annotations

import pytest

from oomol_connect_anyio.emulator import Emulator

pytestmark = pytest.mark.anyio


async def _install(client, body):
    response = await client.post("/packages/install", json=body)
    assert response.status_code == 200
    assert set(response.json()) == {"success", "taskId"}
    return response.json()["taskId"]


async def _install_task(client, task_id):
    body = (await client.get(f"/packages/install/{task_id}")).json()
    assert body["success"] is True
    return body["task"]


async def test_install_success(client_for, clock):
    emu = Emulator(install_duration=1.0, clock=clock)
    async with client_for(emu) as client:
        task_id = await _install(client, {"name": "text-tools"})
        pending = await _install_task(client, task_id)
        assert pending["status"] == "pending"
        assert pending["createdAt"] == pending["updatedAt"]
        assert (
            await client.post("/v1/tasks", json={"manifest": "text-tools::reverse"})
        ).status_code == 400
        clock.advance(0.5)
        running = await _install_task(client, task_id)
        assert running["status"] == "running"
        assert running["updatedAt"] == running["createdAt"] + 500
        blocks = (await client.get("/v1/blocks")).json()["blocks"]
        assert "text-tools" not in {b["package"] for b in blocks}
        clock.advance(0.5)
        done = await _install_task(client, task_id)
        assert done == {
            "id": task_id,
            "name": "text-tools",
            "status": "success",
            "version": "0.2.0",
            "packagePath": "/oomol/packages/text-tools-0.2.0",
            "dependencies": [],
            "createdAt": pending["createdAt"],
            "updatedAt": pending["createdAt"] + 1000,
        }
        packages = (await client.get("/packages")).json()["packages"]
        assert ("text-tools", "0.2.0") in [(p["name"], p["version"]) for p in packages]
        blocks = (await client.get("/v1/blocks")).json()["blocks"]
        assert {b["name"] for b in blocks if b["package"] == "text-tools"} == {
            "reverse",
            "word-count",
        }
        run = await client.post(
            "/v1/tasks", json={"manifest": "text-tools::reverse", "inputValues": {"text": "abc"}}
        )
        logs = (await client.get(f"/v1/tasks/{run.json()['task']['id']}/logs")).json()["logs"]
        assert logs[-2]["event"]["result"] == {"text": "cba"}
        listed = (await client.get("/packages/install")).json()
        assert listed["success"] is True
        assert [t["id"] for t in listed["tasks"]] == [task_id]


async def test_install_runs_a_block_right_away_once_done(client_for, clock):
    emu = Emulator(install_duration=0.2, clock=clock)
    async with client_for(emu) as client:
        await _install(client, {"name": "image-tools", "version": "1.1.0"})
        clock.advance(0.2)
        response = await client.post("/v1/tasks", json={"manifest": "image-tools::thumbnail"})
        assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"name": "nope"}, "package 'nope' not found"),
        ({"name": "text-tools", "version": "9.9.9"}, "package 'text-tools@9.9.9' not found"),
    ],
)
async def test_install_failure(client_for, clock, body, error):
    emu = Emulator(clock=clock)
    async with client_for(emu) as client:
        task_id = await _install(client, body)
        assert (await _install_task(client, task_id))["status"] == "pending"
        clock.advance(1)
        failed = await _install_task(client, task_id)
        assert failed["status"] == "failed"
        assert failed["error"] == error
        assert "packagePath" not in failed
        packages = (await client.get("/packages")).json()["packages"]
        assert [p["name"] for p in packages] == ["demo"]


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": 3}, {"name": "text-tools", "version": 1}, [], "text-tools"],
)
async def test_install_bad_requests(client_for, body):
    async with client_for(Emulator()) as client:
        response = await client.post("/packages/install", json=body)
        assert response.status_code == 400
        assert response.json()["success"] is False


async def test_unknown_install_task(client_for):
    async with client_for(Emulator()) as client:
        response = await client.get("/packages/install/nope")
        assert response.status_code == 404
        assert response.json() == {"success": False, "message": "install task 'nope' not found"}


async def test_reinstalling_demo_succeeds(client_for, clock):
    async with client_for(Emulator(clock=clock)) as client:
        task_id = await _install(client, {"name": "demo"})
        clock.advance(1)
        assert (await _install_task(client, task_id))["status"] == "success"

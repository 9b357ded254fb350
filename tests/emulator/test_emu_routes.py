"""Every Connect route over httpx.ASGITransport, in both envelopes."""

from __future__ import annotations

import pytest

from oomol_connect_anyio.emulator import Emulator

pytestmark = pytest.mark.anyio

ECHO = {
    "manifest": "demo::echo",
    "inputValues": [{"nodeId": "_", "inputs": [{"handle": "a", "value": 1}]}],
}


async def test_current_envelope(client_for):
    emu = Emulator()
    async with client_for(emu) as client:
        created = (await client.post("/v1/tasks", json=ECHO)).json()
        assert set(created) == {"task", "userID", "success"}
        task = created["task"]
        assert set(task) == {
            "id",
            "status",
            "project_id",
            "manifest_path",
            "inputValues",
            "created_at",
            "updated_at",
        }
        assert task["inputValues"] == ECHO["inputValues"]
        got = (await client.get(f"/v1/tasks/{task['id']}")).json()
        assert got == {"task": task, "success": True}
        stopped = (await client.post(f"/v1/tasks/{task['id']}/stop")).json()
        assert stopped["success"] is True
        assert stopped["task"]["id"] == task["id"]
        logs = (await client.get(f"/v1/tasks/{task['id']}/logs")).json()
        assert logs["success"] is True
        assert [log["id"] for log in logs["logs"]] == [1, 2, 3, 4]
        listed = (await client.get("/v1/tasks")).json()
        assert [t["id"] for t in listed["tasks"]] == [task["id"]]


async def test_bare_envelope(client_for):
    emu = Emulator(envelope="bare")
    async with client_for(emu) as client:
        created = (await client.post("/v1/tasks", json=ECHO)).json()
        assert set(created) == {"task"}
        task_id = created["task"]["id"]
        got = (await client.get(f"/v1/tasks/{task_id}")).json()
        assert got["id"] == task_id
        assert got["status"] == "completed"
        stopped = (await client.post(f"/v1/tasks/{task_id}/stop")).json()
        assert stopped["id"] == task_id
        logs = (await client.get(f"/v1/tasks/{task_id}/logs")).json()
        assert set(logs) == {"logs"}
        install = (await client.post("/packages/install", json={"name": "text-tools"})).json()
        assert set(install) == {"success", "taskId"}


@pytest.mark.parametrize("prefix", ["", "/api"])
async def test_both_prefixes(client_for, prefix):
    async with client_for(Emulator(), prefix=prefix) as client:
        assert (await client.get("/v1/blocks")).status_code == 200
        assert (await client.get("/packages")).status_code == 200
        assert (await client.get("/__emulator/stats")).status_code == 200


async def test_catalogue_routes(client_for):
    async with client_for(Emulator()) as client:
        blocks = (await client.get("/v1/blocks")).json()["blocks"]
        paths = {b["path"] for b in blocks}
        assert "/oomol/packages/demo-1.0.0/blocks/echo" in paths
        assert "/oomol/packages/demo/0.9.0/blocks/echo" in paths
        names = {b["name"] for b in blocks if b["package"] == "demo"}
        assert names >= {"echo", "sleep", "fail", "progress", "upper", "count-bytes", "log-flood"}
        assert all({"package", "name", "path", "description", "inputs"} <= set(b) for b in blocks)
        flows = (await client.get("/v1/flows")).json()["flows"]
        assert flows[0]["name"] == "demo-flow"
        assert flows[0]["inputs"][0]["nodeId"] == "upper"
        assert flows[0]["inputs"][0]["inputs"][0]["handle"] == "text"
        packages = (await client.get("/packages")).json()["packages"]
        assert [(p["name"], p["version"]) for p in packages] == [("demo", "1.0.0")]


@pytest.mark.parametrize(
    ("field", "target"),
    [("manifest", "demo::upper"), ("blockId", "demo::upper"), ("flowName", "demo-flow")],
)
async def test_create_accepts_each_target_field(client_for, field, target):
    emu = Emulator()
    async with client_for(emu) as client:
        response = await client.post(
            "/v1/tasks", json={field: target, "inputValues": {"text": "x"}}
        )
        assert response.status_code == 200
        task = emu.tasks[response.json()["task"]["id"]]
        assert task.manifest == target
        assert task.status in {"running", "completed"}


@pytest.mark.parametrize(
    "values",
    [
        {"text": "hi"},
        [{"handle": "text", "value": "hi"}],
        [{"nodeId": "_", "inputs": [{"handle": "text", "value": "hi"}]}],
    ],
)
async def test_input_forms_are_normalised(client_for, values):
    emu = Emulator()
    async with client_for(emu) as client:
        body = (
            await client.post("/v1/tasks", json={"manifest": "demo::upper", "inputValues": values})
        ).json()
        assert body["task"]["inputValues"] == [
            {"nodeId": "_", "inputs": [{"handle": "text", "value": "hi"}]}
        ]
        logs = (await client.get(f"/v1/tasks/{body['task']['id']}/logs")).json()["logs"]
        assert logs[-2]["event"]["result"] == {"text": "HI"}


async def test_empty_inputs(client_for):
    emu = Emulator()
    async with client_for(emu) as client:
        empty_object = await client.post(
            "/v1/tasks", json={"manifest": "demo::echo", "inputValues": {}}
        )
        assert empty_object.json()["task"]["inputValues"] == [{"nodeId": "_", "inputs": []}]
        missing = await client.post("/v1/tasks", json={"manifest": "demo::echo"})
        assert missing.json()["task"]["inputValues"] == []


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"manifest": "nope"}, 400, "unknown manifest 'nope'"),
        ({"inputValues": {}}, 400, "missing manifest"),
        ({"manifest": 3}, 400, "missing manifest"),
        (
            {"manifest": "demo::echo", "inputValues": 3},
            400,
            "inputValues must be a list or an object",
        ),
        ({"manifest": "demo::echo", "inputValues": "x"}, 400, "inputValues must be"),
        ({"manifest": "demo::echo", "inputValues": [1]}, 400, "string handle"),
        ({"manifest": "demo::echo", "inputValues": [{"nodeId": 1, "inputs": []}]}, 400, "nodeId"),
    ],
)
async def test_bad_create_bodies(client_for, body, status, message):
    async with client_for(Emulator()) as client:
        response = await client.post("/v1/tasks", json=body)
        assert response.status_code == status
        assert response.json()["success"] is False
        assert message in response.json()["message"]


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'{"manifest": NaN}', "application/json", 400),
        (b"", "application/json", 400),
        (b"\xff\xfe\x00", "application/json", 400),
        (b"a=b", "application/x-www-form-urlencoded", 415),
        (b"hello", "text/plain", 415),
    ],
)
async def test_bad_payloads(client_for, content, content_type, status):
    async with client_for(Emulator()) as client:
        response = await client.post(
            "/v1/tasks", content=content, headers={"Content-Type": content_type}
        )
        assert response.status_code == status
        assert response.json()["success"] is False


async def test_oversized_json_body(client_for, post_bytes):
    async with client_for(Emulator()) as client:
        big = b'{"manifest": "demo::echo", "x": "' + b"a" * (16 * 1024 * 1024) + b'"}'
        # the emulator answers 413 before reading the whole body
        response = await post_bytes(client, "/v1/tasks", big, {"Content-Type": "application/json"})
        assert response.status_code == 413
        assert response.json()["success"] is False


async def test_unknown_routes_and_methods(client_for):
    async with client_for(Emulator()) as client:
        missing = await client.get("/v2/nothing")
        assert missing.status_code == 404
        assert missing.json() == {"success": False, "message": "not found"}
        wrong = await client.delete("/v1/tasks")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "GET, POST"
        assert (await client.get("/v1/tasks/x/stop")).status_code == 405
        assert (await client.get("/v1/tasks/x/other")).status_code == 404


@pytest.mark.parametrize("task_id", ["../x", "a b", "%", "a/b", "é", "{id}"])
async def test_percent_encoded_ids_are_decoded(client_for, task_id):
    from urllib.parse import quote

    async with client_for(Emulator()) as client:
        for path in (
            f"/v1/tasks/{quote(task_id, safe='')}",
            f"/v1/tasks/{quote(task_id, safe='')}/logs",
        ):
            response = await client.get(path)
            assert response.status_code == 404
            assert response.json()["message"] == f"task '{task_id}' not found"
        stop = await client.post(f"/v1/tasks/{quote(task_id, safe='')}/stop")
        assert stop.status_code == 404
        install = await client.get(f"/packages/install/{quote(task_id, safe='')}")
        assert install.status_code == 404


async def test_internal_routes(client_for):
    emu = Emulator(token="secret")
    async with client_for(emu, token="secret") as client:
        await client.post(
            "/v1/tasks", json={"manifest": "demo::sleep", "inputValues": {"seconds": 60}}
        )
        task_id = next(iter(emu.tasks))
        await client.post(f"/v1/tasks/{task_id}/stop")
    async with client_for(emu) as anonymous:
        table = (await anonymous.get("/__emulator/tasks")).json()["tasks"]
        assert table == [
            {"id": task_id, "status": "stopped", "manifest": "demo::sleep", "stop_requested": True}
        ]
        stats = (await anonymous.get("/__emulator/stats")).json()
        assert stats["tasks_created"] == 1
        assert stats["stops"] == 1
        assert (await anonymous.post("/__emulator/reset-stats")).json() == {"success": True}
        assert (await anonymous.get("/__emulator/stats")).json()["requests"] == {}
        assert (await anonymous.post("/__emulator/stats")).status_code == 405

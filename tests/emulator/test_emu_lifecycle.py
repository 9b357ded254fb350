"""Task lifecycles read from the clock: statuses, logs, stop, log trail, flows."""

from __future__ import annotations

import anyio
import pytest

from oomol_connect_anyio.emulator import Emulator

pytestmark = pytest.mark.anyio


async def _create(client, manifest, values=None):
    response = await client.post(
        "/v1/tasks", json={"manifest": manifest, "inputValues": values or {}}
    )
    assert response.status_code == 200, response.text
    return response.json()["task"]


async def _logs(client, task_id):
    return (await client.get(f"/v1/tasks/{task_id}/logs")).json()["logs"]


async def _status(client, task_id):
    return (await client.get(f"/v1/tasks/{task_id}")).json()["task"]["status"]


async def test_created_running_completed(client_for, clock):
    emu = Emulator(queue_delay=1.0, clock=clock)
    async with client_for(emu) as client:
        task = await _create(client, "demo::sleep", {"seconds": 2})
        assert task["status"] == "created"
        assert task["updated_at"] == task["created_at"]
        assert await _logs(client, task["id"]) == []
        clock.advance(1.0)
        running = (await client.get(f"/v1/tasks/{task['id']}")).json()["task"]
        assert running["status"] == "running"
        assert running["updated_at"] == task["created_at"] + 1000
        assert [log["type"] for log in await _logs(client, task["id"])] == [
            "SessionStarted",
            "BlockStarted",
        ]
        clock.advance(1.999)
        assert await _status(client, task["id"]) == "running"
        clock.advance(0.001)
        done = (await client.get(f"/v1/tasks/{task['id']}")).json()["task"]
        assert done["status"] == "completed"
        assert done["updated_at"] == task["created_at"] + 3000
        logs = await _logs(client, task["id"])
        assert [log["type"] for log in logs] == [
            "SessionStarted",
            "BlockStarted",
            "BlockFinished",
            "SessionFinished",
        ]
        assert logs[2]["event"]["result"] == {"slept": 2.0}
        assert emu.tasks[task["id"]].ended_at == clock.time


async def test_log_shape_and_ids(client_for, clock):
    emu = Emulator(clock=clock)
    async with client_for(emu) as client:
        task = await _create(client, "demo::progress", {"steps": 4, "seconds": 0.4})
        seen = []
        for _ in range(5):
            logs = await _logs(client, task["id"])
            assert logs[: len(seen)] == seen  # rendered once, stable
            seen = logs
            clock.advance(0.1)
        ids = [log["id"] for log in seen]
        assert ids == list(range(1, len(ids) + 1))
        progress = [log["event"]["progress"] for log in seen if log["type"] == "BlockProgress"]
        assert progress == [25.0, 50.0, 75.0, 100.0]
        for log in seen:
            assert set(log) == {
                "id",
                "project_name",
                "session_id",
                "node_id",
                "manifest_path",
                "type",
                "event",
                "created_at",
            }
            assert log["session_id"] == task["id"]
            assert log["manifest_path"] == "/oomol/packages/demo-1.0.0/blocks/progress"
        block_events = [log["event"] for log in seen if log["type"].startswith("Block")]
        assert all(e["stacks"] == [] and e["job_id"] and e["session_id"] for e in block_events)
        created = [log["created_at"] for log in seen]
        assert created == sorted(created)


async def test_stop(client_for, clock):
    emu = Emulator(clock=clock)
    async with client_for(emu) as client:
        task = await _create(client, "demo::sleep", {"seconds": 1e12})
        clock.advance(5)
        assert await _status(client, task["id"]) == "running"
        stopped = (await client.post(f"/v1/tasks/{task['id']}/stop")).json()["task"]
        assert stopped["status"] == "stopped"
        assert stopped["updated_at"] == task["created_at"] + 5000
        logs = await _logs(client, task["id"])
        assert [log["type"] for log in logs] == [
            "SessionStarted",
            "BlockStarted",
            "SessionFinished",
        ]
        assert logs[-1]["event"]["error"] == "stopped by user"
        clock.advance(1e13)
        assert await _status(client, task["id"]) == "stopped"
        assert len(await _logs(client, task["id"])) == 3
        assert emu.tasks[task["id"]].stop_requested


async def test_stop_while_queued(client_for, clock):
    emu = Emulator(queue_delay=10, clock=clock)
    async with client_for(emu) as client:
        task = await _create(client, "demo::echo")
        clock.advance(1)
        await client.post(f"/v1/tasks/{task['id']}/stop")
        clock.advance(20)
        assert await _status(client, task["id"]) == "stopped"
        assert [log["type"] for log in await _logs(client, task["id"])] == ["SessionFinished"]


@pytest.mark.parametrize(
    ("manifest", "status"), [("demo::echo", "completed"), ("demo::fail", "failed")]
)
async def test_terminal_stays_terminal(client_for, clock, manifest, status):
    emu = Emulator(clock=clock)
    async with client_for(emu) as client:
        task = await _create(client, manifest)
        logs = await _logs(client, task["id"])
        response = await client.post(f"/v1/tasks/{task['id']}/stop")
        assert response.json()["task"]["status"] == status
        assert response.json()["task"]["updated_at"] == task["updated_at"]
        assert await _logs(client, task["id"]) == logs
        assert emu.tasks[task["id"]].stop_requested
        assert emu.stats()["stops"] == 1


async def test_failed_task_explains_itself(client_for, clock):
    async with client_for(Emulator(clock=clock)) as client:
        task = await _create(client, "demo::fail", {"message": "boom"})
        assert task["status"] == "failed"
        logs = await _logs(client, task["id"])
        assert [log["type"] for log in logs] == [
            "SessionStarted",
            "BlockStarted",
            "BlockLog",
            "BlockFinished",
            "SessionFinished",
        ]
        assert logs[2]["event"]["stdio"] == "stderr"
        assert logs[3]["event"]["error"] == "boom"
        assert "result" not in logs[3]["event"]
        assert logs[4]["event"]["error"] == "boom"
        default = await _create(client, "demo::fail")
        assert (await _logs(client, default["id"]))[-1]["event"]["error"] == "demo failure"


@pytest.mark.parametrize(
    ("manifest", "values", "error"),
    [
        ("demo::upper", {}, "input 'text' must be a string"),
        ("demo::upper", {"text": 3}, "input 'text' must be a string"),
        ("demo::sleep", {"seconds": "soon"}, "input 'seconds' must be a number"),
        ("demo::sleep", {"seconds": -1}, "cannot sleep -1.0 seconds"),
        ("demo::log-flood", {"lines": 10**9}, "input 'lines' must be between"),
    ],
)
async def test_bad_inputs_fail_the_task(client_for, manifest, values, error):
    async with client_for(Emulator()) as client:
        task = await _create(client, manifest, values)
        assert task["status"] == "failed"
        assert error in (await _logs(client, task["id"]))[-1]["event"]["error"]


async def test_log_trail(client_for, clock):
    emu = Emulator(log_trail=0.5, clock=clock)
    async with client_for(emu) as client:
        task = await _create(client, "demo::sleep", {"seconds": 1})
        clock.advance(1)
        assert await _status(client, task["id"]) == "completed"
        assert [log["type"] for log in await _logs(client, task["id"])] == [
            "SessionStarted",
            "BlockStarted",
        ]
        clock.advance(0.5)
        logs = await _logs(client, task["id"])
        assert [log["type"] for log in logs][2:] == ["BlockFinished", "SessionFinished"]
        assert logs[2]["created_at"] - logs[1]["created_at"] == 1500
        stopped = await _create(client, "demo::sleep", {"seconds": 10})
        await client.post(f"/v1/tasks/{stopped['id']}/stop")
        assert len(await _logs(client, stopped["id"])) == 2
        clock.advance(0.5)
        assert (await _logs(client, stopped["id"]))[-1]["type"] == "SessionFinished"


async def test_flow_root_and_inner_block_finished(client_for, clock):
    async with client_for(Emulator(clock=clock)) as client:
        values = [{"nodeId": "upper", "inputs": [{"handle": "text", "value": "shout"}]}]
        task = await _create(client, "demo-flow", values)
        assert task["manifest_path"] == "/oomol/flows/demo-flow/flow.oo.yaml"
        clock.advance(1)
        logs = await _logs(client, task["id"])
        types = [log["type"] for log in logs]
        assert types[:3] == ["SessionStarted", "FlowStarted", "FlowNodesWillRun"]
        assert types[-3:] == ["BlockFinished", "FlowFinished", "SessionFinished"]
        finished = [log for log in logs if log["type"] == "BlockFinished"]
        inner, root = finished[:-1], finished[-1]
        assert len(inner) == 2
        assert all(log["event"]["stacks"] and "result" not in log["event"] for log in inner)
        assert {log["node_id"] for log in inner} == {"upper", "echo"}
        stack = inner[0]["event"]["stacks"][0]
        assert stack == {
            "flow_job_id": task["id"],
            "flow": task["manifest_path"],
            "node_id": "upper",
        }
        assert root["event"]["stacks"] == []
        assert root["event"]["result"] == {"text": "SHOUT"}


async def test_flow_failure_inside_a_node(client_for, clock):
    async with client_for(Emulator(clock=clock)) as client:
        task = await _create(client, "demo-flow", {"text": 1})
        clock.advance(1)
        assert await _status(client, task["id"]) == "failed"
        logs = await _logs(client, task["id"])
        inner = [log for log in logs if log["type"] == "BlockFinished" and log["event"]["stacks"]]
        assert "must be a string" in inner[0]["event"]["error"]
        assert "must be a string" in logs[-1]["event"]["error"]
        assert logs[-2]["type"] == "FlowFinished"


async def test_list_newest_first(client_for):
    async with client_for(Emulator()) as client:
        ids = [(await _create(client, "demo::echo", {"n": n}))["id"] for n in range(3)]
        listed = (await client.get("/v1/tasks")).json()["tasks"]
        assert [task["id"] for task in listed] == ids[::-1]


async def test_peak_active_and_tasks_by_status(client_for, clock):
    emu = Emulator(clock=clock)
    async with client_for(emu) as client:
        for seconds in (1, 2, 3):
            await _create(client, "demo::sleep", {"seconds": seconds})
        clock.advance(1.5)
        await _create(client, "demo::sleep", {"seconds": 1})
        assert emu.peak_active() == 3
        await _create(client, "demo::fail")
        clock.advance(10)
        await _create(client, "demo::sleep", {"seconds": 100})
        stats = emu.stats()
        assert stats["tasks_by_status"] == {"completed": 4, "failed": 1, "running": 1}
        assert stats["peak_active"] == 3
        emu.reset_stats()
        assert emu.peak_active() == 1


async def test_max_finished_tasks_bounds_memory(client_for, clock):
    emu = Emulator(max_finished_tasks=3, clock=clock)
    async with client_for(emu) as client:
        never = await _create(client, "demo::sleep", {"seconds": 1e9})
        ids = [(await _create(client, "demo::echo"))["id"] for _ in range(6)]
        assert list(emu.tasks) == [never["id"], *ids[-2:]]
        assert (await client.get(f"/v1/tasks/{ids[0]}")).status_code == 404
        assert emu.stats()["tasks_by_status"] == {"running": 1, "completed": 6}
        assert emu.peak_active() == 1  # zero-length echo runs never overlap


async def test_real_clock_lifecycle(client_for):
    emu = Emulator(queue_delay=0.02)
    async with client_for(emu) as client:
        task = await _create(client, "demo::sleep", {"seconds": 0.03})
        # the answer's status is read at creation; a later read may already be past the queue
        assert task["status"] == "created"
        await anyio.sleep(0.025)
        assert emu.task_status(task["id"]) in {"running", "completed"}
        await anyio.sleep(0.05)
        assert await _status(client, task["id"]) == "completed"
        assert emu.tasks[task["id"]].ended_at is not None


async def test_register_block(client_for, clock):
    emu = Emulator(clock=clock)

    def double(ctx):
        ctx.log("doubling")
        ctx.sleep(0.5)
        ctx.output("x", ctx.inputs["x"] * 2)
        return {"x": ctx.inputs["x"] * 2, "nodes": len(ctx.node_inputs), "files": len(ctx.files)}

    emu.register_block(
        "mypkg::double", double, description="2x", inputs=[{"handle": "x"}], version="2.1.0"
    )
    with pytest.raises(ValueError, match="package::name"):
        emu.register_block("nope", double)
    async with client_for(emu) as client:
        blocks = (await client.get("/v1/blocks")).json()["blocks"]
        mine = [b for b in blocks if b["package"] == "mypkg"]
        assert mine == [
            {
                "package": "mypkg",
                "name": "double",
                "path": "/oomol/packages/mypkg-2.1.0/blocks/double",
                "description": "2x",
                "inputs": [{"handle": "x"}],
            }
        ]
        packages = (await client.get("/packages")).json()["packages"]
        assert ("mypkg", "2.1.0") in [(p["name"], p["version"]) for p in packages]
        task = await _create(client, "mypkg::double", {"x": 21})
        assert task["status"] == "running"
        clock.advance(0.5)
        logs = await _logs(client, task["id"])
        assert [log["type"] for log in logs] == [
            "SessionStarted",
            "BlockStarted",
            "BlockLog",
            "BlockOutput",
            "BlockFinished",
            "SessionFinished",
        ]
        assert logs[-2]["event"]["result"] == {"x": 42, "nodes": 1, "files": 0}


async def test_block_returning_a_non_dict_fails(client_for):
    emu = Emulator()
    emu.register_block("mypkg::bad", lambda ctx: [1])
    emu.register_block("mypkg::none", lambda ctx: None)
    async with client_for(emu) as client:
        bad = await _create(client, "mypkg::bad")
        assert "expected a dict" in (await _logs(client, bad["id"]))[-1]["event"]["error"]
        none = await _create(client, "mypkg::none")
        assert none["status"] == "completed"
        assert "result" not in (await _logs(client, none["id"]))[-2]["event"]

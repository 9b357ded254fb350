"""Fault injection: seeded errors, 429s, latency, hangs and dropped connections."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from oomol_connect_anyio.emulator import DroppedConnection, Emulator, FaultRule, serve_emulator

pytestmark = pytest.mark.anyio


async def _statuses(client, n, path="/v1/tasks"):
    return [(await client.get(path)).status_code for _ in range(n)]


async def test_seeded_error_rate_is_deterministic(client_for):
    runs = []
    for _ in range(2):
        emu = Emulator(seed=7)
        emu.faults.add(FaultRule(route="GET /v1/tasks", error_rate=0.3, error_statuses=(500, 503)))
        async with client_for(emu) as client:
            runs.append(await _statuses(client, 200))
            assert (await client.get("/v1/blocks")).status_code == 200
        errors = sum(status != 200 for status in runs[-1])
        assert set(runs[-1]) <= {200, 500, 503}
        assert 35 <= errors <= 85
        stats = emu.stats()
        assert stats["faults"] == {"GET /v1/tasks": {"error": errors}}
        assert stats["statuses"]["GET /v1/tasks"].get("200") == 200 - errors
    assert runs[0] == runs[1]


async def test_error_body(client_for):
    emu = Emulator()
    emu.faults.add(FaultRule(route="*", error_rate=1.0, error_statuses=(502,)))
    async with client_for(emu) as client:
        response = await client.get("/v1/blocks")
        assert response.status_code == 502
        assert response.json() == {"success": False, "message": "injected fault: HTTP 502"}
        assert (await client.get("/__emulator/stats")).status_code == 200


async def test_rate_limit_every_nth(client_for):
    emu = Emulator()
    emu.faults.add(FaultRule(route="GET /v1/tasks/{id}", rate_limit_every=3, retry_after=0.25))
    async with client_for(emu) as client:
        responses = [await client.get("/v1/tasks/x") for _ in range(9)]
    assert [r.status_code for r in responses] == [404, 404, 429] * 3
    assert responses[2].headers["retry-after"] == "0.25"
    assert responses[2].json()["success"] is False
    assert emu.stats()["faults"] == {"GET /v1/tasks/{id}": {"rate_limited": 3}}
    emu.faults.clear()
    assert emu.faults.rules == ()


async def test_latency_and_hang(client_for):
    emu = Emulator(seed=1)
    emu.faults.add(FaultRule(route="GET /v1/flows", latency=(0.01, 0.02)))
    emu.faults.add(FaultRule(route="GET /v1/flows", hang=0.03))
    async with client_for(emu) as client:
        start = time.perf_counter()
        assert (await client.get("/v1/flows")).status_code == 200
        assert time.perf_counter() - start >= 0.04
        with anyio.fail_after(5):  # only a guard: the faults counted below tell
            assert (await client.get("/v1/blocks")).status_code == 200
    assert emu.stats()["faults"] == {"GET /v1/flows": {"delayed": 1}}


async def test_drop_over_asgi_transport(client_for):
    emu = Emulator()
    emu.faults.add(FaultRule(route="GET /v1/tasks", drop_rate=1.0))
    async with client_for(emu) as client:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.get("/v1/tasks")
    assert isinstance(caught.value, DroppedConnection)
    assert emu.stats()["statuses"] == {"GET /v1/tasks": {"dropped": 1}}


async def test_drop_after_accept_creates_the_task(client_for):
    emu = Emulator()
    emu.faults.add(FaultRule(route="POST /v1/tasks", drop_rate=1.0, drop_after_accept=True))
    async with client_for(emu) as client:
        with pytest.raises(httpx.TransportError):
            await client.post("/v1/tasks", json={"manifest": "demo::echo"})
    assert len(emu.tasks) == 1
    stats = emu.stats()
    assert stats["tasks_created"] == 1
    assert stats["faults"] == {"POST /v1/tasks": {"dropped_after_accept": 1}}


async def test_drop_over_a_real_socket():
    emu = Emulator(seed=3)
    emu.faults.add(FaultRule(route="GET /v1/tasks", drop_rate=0.5))
    emu.faults.add(FaultRule(route="POST /v1/tasks", drop_rate=1.0, drop_after_accept=True))
    async with serve_emulator(emu) as url, httpx.AsyncClient(base_url=url) as client:
        outcomes = []
        for _ in range(20):
            try:
                outcomes.append((await client.get("/v1/tasks")).status_code)
            except httpx.RemoteProtocolError as exc:
                outcomes.append(str(exc))
        dropped = "peer closed connection without sending complete message body"
        assert {200} < set(outcomes) <= {200, f"{dropped} (received 0 bytes, expected 64)"}
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/v1/tasks", json={"manifest": "demo::echo"})
        assert len(emu.tasks) == 1
        emu.faults.clear()
        assert (await client.get("/v1/tasks")).status_code == 200


async def test_faults_skip_emulator_routes(client_for):
    emu = Emulator()
    emu.faults.add(FaultRule(route="*", error_rate=1.0, drop_rate=1.0, hang=10))
    async with client_for(emu) as client:
        with anyio.fail_after(5):  # only a guard: a 10 s hang would be a fault applied
            assert (await client.get("/__emulator/stats")).status_code == 200
            assert (await client.get("/__emulator/tasks")).status_code == 200
            assert emu.stats()["faults"] == {}  # (reset-stats would clear them)
            assert (await client.post("/__emulator/reset-stats")).status_code == 200


def test_rule_validation():
    with pytest.raises(ValueError, match="error_rate"):
        FaultRule(error_rate=1.5)
    with pytest.raises(ValueError, match="error_statuses"):
        FaultRule(error_statuses=(200,))
    with pytest.raises(ValueError, match="rate_limit_every"):
        FaultRule(rate_limit_every=0)
    with pytest.raises(ValueError, match="latency"):
        FaultRule(latency=(0.2, 0.1))
    with pytest.raises(ValueError, match="negative"):
        FaultRule(hang=-1)


async def test_stats_counters(client_for):
    emu = Emulator()
    async with client_for(emu) as client:
        created = await client.post("/v1/tasks", json={"manifest": "demo::echo"})
        await client.get(f"/v1/tasks/{created.json()['task']['id']}")
        await client.get("/v1/tasks/missing")
        await client.get("/nowhere")
        stats = emu.stats()
    assert stats["requests"] == {"POST /v1/tasks": 1, "GET /v1/tasks/{id}": 2, "UNMATCHED": 1}
    assert stats["statuses"] == {
        "POST /v1/tasks": {"200": 1},
        "GET /v1/tasks/{id}": {"200": 1, "404": 1},
        "UNMATCHED": {"404": 1},
    }
    assert stats["tasks_created"] == 1
    assert stats["bytes_sent"] > 0
    assert stats["tasks_by_status"] == {"completed": 1}


async def test_an_outage_window_on_the_emulator_clock(client_for, clock):
    emu = Emulator(clock=clock)
    emu.faults.add(FaultRule.outage(2.0, start=1.0))
    async with client_for(emu) as client:
        before = await _statuses(client, 2)
        clock.advance(1.0)
        during = [(await client.get(p)).status_code for p in ("/v1/tasks", "/v1/blocks")]
        during.append((await client.post("/v1/tasks", json={"manifest": "demo::echo"})).status_code)
        clock.advance(1.999)
        during += await _statuses(client, 1, "/packages")
        clock.advance(0.001)
        after = await _statuses(client, 2)
    assert before == [200, 200]
    assert during == [503, 503, 503, 503]
    assert after == [200, 200]
    assert emu.stats()["tasks_created"] == 0


async def test_route_patterns_target_gets_the_create_and_the_stop(client_for):
    emu = Emulator()
    emu.faults.add(FaultRule(route="GET *", error_rate=1.0, error_statuses=(502,)))
    emu.faults.add(FaultRule(route="POST /v1/tasks/{id}/stop", rate_limit_every=1, retry_after=2))
    async with client_for(emu) as client:
        created = await client.post(
            "/v1/tasks", json={"manifest": "demo::sleep", "inputValues": {"seconds": 60}}
        )
        task_id = created.json()["task"]["id"]
        assert (await client.get(f"/v1/tasks/{task_id}")).status_code == 502
        assert (await client.get("/packages")).status_code == 502
        stop = await client.post(f"/v1/tasks/{task_id}/stop")
    assert created.status_code == 200
    assert stop.status_code == 429
    assert stop.headers["retry-after"] == "2"
    assert emu.task_status(task_id) == "running"  # a 429 takes nothing


async def test_a_create_answered_429_creates_nothing(client_for):
    emu = Emulator()
    emu.faults.add(FaultRule(route="POST /v1/tasks", rate_limit_every=1, retry_after=0.5))
    async with client_for(emu) as client:
        response = await client.post("/v1/tasks", json={"manifest": "demo::echo"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "0.5"
    assert emu.stats()["tasks_created"] == 0


async def test_errors_after_accept_act_then_fail(client_for):
    emu = Emulator()
    emu.faults.add(
        FaultRule(
            route="POST *", error_rate=1.0, error_statuses=(504,), error_after_accept=True,
            error_retry_after=3,
        )
    )
    async with client_for(emu) as client:
        created = await client.post(
            "/v1/tasks", json={"manifest": "demo::sleep", "inputValues": {"seconds": 60}}
        )
        [task_id] = emu.tasks
        stop = await client.post(f"/v1/tasks/{task_id}/stop")
    assert created.status_code == stop.status_code == 504
    assert created.headers["retry-after"] == "3"
    assert emu.task_status(task_id) == "stopped"
    assert emu.stats()["faults"]["POST /v1/tasks"] == {"error_after_accept": 1}


async def test_a_stop_dropped_after_accept_still_stops(client_for):
    emu = Emulator()
    emu.faults.add(
        FaultRule(route="POST /v1/tasks/{id}/stop", drop_rate=1.0, drop_after_accept=True)
    )
    async with client_for(emu) as client:
        created = await client.post(
            "/v1/tasks", json={"manifest": "demo::sleep", "inputValues": {"seconds": 60}}
        )
        task_id = created.json()["task"]["id"]
        with pytest.raises(httpx.TransportError):
            await client.post(f"/v1/tasks/{task_id}/stop")
    assert emu.task_status(task_id) == "stopped"


async def test_trailing_final_logs(client_for, clock):
    emu = Emulator(clock=clock)
    emu.log_trail = 0.4
    async with client_for(emu) as client:
        created = await client.post("/v1/tasks", json={"manifest": "demo::echo"})
        task = created.json()["task"]
        path = f"/v1/tasks/{task['id']}/logs"
        types = [log["type"] for log in (await client.get(path)).json()["logs"]]
        clock.advance(0.41)
        later = [log["type"] for log in (await client.get(path)).json()["logs"]]
    assert task["status"] == "completed"
    assert "BlockFinished" not in types
    assert "SessionFinished" not in types
    assert later[-2:] == ["BlockFinished", "SessionFinished"]
    with pytest.raises(ValueError, match="log_trail"):
        emu.log_trail = -1


async def test_faults_and_log_trail_over_the_control_routes(client_for, clock):
    emu = Emulator(clock=clock)
    rule = {"route": "GET /v1/tasks", "error_rate": 1.0, "error_statuses": [503], "duration": 5}
    async with client_for(emu) as client:
        added = await client.post("/__emulator/faults", json=[rule])
        assert added.json() == {"success": True, "rules": 1}
        assert (await client.get("/v1/tasks")).status_code == 503
        listed = (await client.get("/__emulator/faults")).json()["rules"]
        assert listed == [FaultRule.from_json(rule).to_json()]
        clock.advance(5)
        assert (await client.get("/v1/tasks")).status_code == 200
        bad = await client.post("/__emulator/faults", json={"route": "*", "error_rate": 2})
        assert bad.status_code == 400
        unknown = await client.post("/__emulator/faults", json={"rute": "*"})
        assert unknown.status_code == 400
        assert "rute" in unknown.json()["message"]
        assert (await client.delete("/__emulator/faults")).json() == {"success": True, "rules": 0}
        assert emu.faults.rules == ()
        trail = await client.post("/__emulator/log-trail", json={"seconds": 0.25})
        assert trail.json() == {"success": True, "log_trail": 0.25}
        assert (await client.post("/__emulator/log-trail", json={"seconds": -1})).status_code == 400
    assert emu.log_trail == 0.25


def test_window_validation():
    with pytest.raises(ValueError, match="negative"):
        FaultRule(start=-1)
    with pytest.raises(ValueError, match="negative"):
        FaultRule.outage(-2)
    with pytest.raises(TypeError):
        FaultRule.from_json(["*"])

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
        with anyio.fail_after(1):
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
        with anyio.fail_after(1):
            assert (await client.get("/__emulator/stats")).status_code == 200
            assert (await client.get("/__emulator/tasks")).status_code == 200
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

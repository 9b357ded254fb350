"""Polling telemetry: per-wait stats, client metrics and request hooks, checked
against the emulator's own request counters."""

from __future__ import annotations

from typing import Any

import pytest

from oomol_connect_anyio import OomolConnectClient, RequestEvent, ResponseEvent, get_wait_stats
from oomol_connect_anyio.emulator import Emulator, FaultRule

pytestmark = pytest.mark.anyio

FAST: Any = {"interval_ms": 10, "backoff_strategy": "fixed"}
TASK = "GET /v1/tasks/{id}"
LOGS = "GET /v1/tasks/{id}/logs"


def server_counts(emulator: Emulator) -> dict[str, int]:
    return dict(emulator.stats()["requests"])


async def test_run_stats_match_the_servers_counters(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    result = await client.tasks.run(
        {"manifest": "demo::progress", "inputValues": {"steps": 3, "seconds": 0.1}},
        {**FAST, "on_log": lambda log: None},
    )
    stats = result["stats"]
    counts = server_counts(emulator)
    assert stats["status_polls"] == counts[TASK]
    assert stats["log_fetches"] == counts[LOGS]
    assert stats["requests"] == counts[TASK] + counts[LOGS]
    assert stats["retries"] == 0
    assert stats["time_to_running_ms"] is not None
    assert stats["time_to_running_ms"] >= 0
    assert stats["detection_latency_ms"] is not None
    assert stats["detection_latency_ms"] >= 0
    assert stats["wall_ms"] >= stats["time_to_running_ms"]


async def test_bytes_received_match_what_the_server_sent(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    await client.tasks.run({"manifest": "demo::echo", "inputValues": {"x": "y" * 1000}}, FAST)
    assert client.metrics["bytes_received"] == emulator.stats()["bytes_sent"]


async def test_retries_are_counted_per_wait_and_per_client(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    task = await client.tasks.create({"manifest": "demo::sleep", "inputValues": {"seconds": 0.1}})
    emulator.faults.add(FaultRule(route=TASK, rate_limit_every=2, retry_after=0.001))
    # This GET takes the rule's first turn, so the wait's first poll is refused at any pace.
    await client.tasks.get(task["id"])
    done = await client.tasks.wait_for_completion(task["id"], FAST)
    stats = get_wait_stats(done)
    assert stats is not None
    statuses = emulator.stats()["statuses"][TASK]
    assert stats["retries"] == statuses["429"] > 0
    assert stats["status_polls"] == statuses["200"] - 1
    assert client.metrics["retries"] == stats["retries"]


async def test_client_metrics_by_route_and_status_class(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    await client.tasks.run({"manifest": "demo::echo", "inputValues": {}}, FAST)
    with pytest.raises(Exception):  # noqa: B017, PT011 - any error: only the counts matter
        await client.tasks.get("no-such-task")
    metrics = client.metrics
    server = emulator.stats()["statuses"]
    for route, by_status in server.items():
        expected: dict[str, int] = {}
        for status, count in by_status.items():
            expected[f"{status[0]}xx"] = expected.get(f"{status[0]}xx", 0) + count
        assert metrics["requests"][route] == expected
    assert metrics["requests"][TASK]["4xx"] == 1


async def test_in_flight_runs_and_stops_sent(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    seen: list[int] = []
    await client.tasks.run(
        {"manifest": "demo::sleep", "inputValues": {"seconds": 0.05}},
        {**FAST, "on_progress": lambda task: seen.append(client.metrics["in_flight_runs"])},
    )
    assert seen
    assert set(seen) == {1}
    assert client.metrics["in_flight_runs"] == 0
    task = await client.tasks.create({"manifest": "demo::sleep", "inputValues": {"seconds": 9}})
    await client.tasks.stop(task["id"])
    assert client.metrics["stops_sent"] == emulator.stats()["stops"] == 1


async def test_request_hooks_see_every_attempt_without_the_token(
    anyio_backend: str,
) -> None:
    from oomol_connect_anyio.emulator import serve_emulator

    emulator = Emulator(token="s3cret-token")
    # The first poll is refused whatever the machine's pace, and its retry is answered.
    emulator.faults.add(FaultRule(route=TASK, rate_limit_every=1, retry_after=0.001))
    requests: list[RequestEvent] = []
    responses: list[ResponseEvent] = []

    async def on_response(event: ResponseEvent) -> None:
        if event.status == 429:
            emulator.faults.clear()
        responses.append(event)

    async with serve_emulator(emulator, host="127.0.0.1", port=0) as url, OomolConnectClient(
        base_url=url,
        api_token="s3cret-token",
        retry_delay=0.001,
        on_request=requests.append,
        on_response=on_response,
    ) as client:
        await client.tasks.run(
            {"manifest": "demo::sleep", "inputValues": {"seconds": 0.1}}, FAST
        )
    counts = server_counts(emulator)
    assert len(requests) == len(responses) == sum(counts.values())
    assert [e.route for e in requests] == [e.route for e in responses]
    assert {e.route for e in responses} == set(counts)
    assert any(e.attempt > 0 and e.status == 200 for e in responses)
    assert all(e.elapsed >= 0 for e in responses)
    assert "s3cret-token" not in repr(requests) + repr(responses)

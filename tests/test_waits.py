"""Structured polling end to end against the emulator: waits, runs, watch, installs."""

from __future__ import annotations

import builtins
import sys
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from helpers import HeldCreates, our_running_tasks, served, settled

from oomol_connect_anyio import (
    InstallFailedError,
    OomolConnectClient,
    OomolConnectError,
    ServerError,
    TaskFailedError,
    TaskLogEvent,
    TaskProgress,
    TaskStoppedError,
    TimeoutError,
    get_wait_stats,
)
from oomol_connect_anyio.emulator import Emulator, FaultRule

pytestmark = pytest.mark.anyio

FAST: Any = {"interval_ms": 10, "backoff_strategy": "fixed"}
GUARD = 10  # seconds: a generous bound that only a hung wait would reach


def logs_requests(emulator: Emulator) -> int:
    return int(emulator.stats()["requests"].get("GET /v1/tasks/{id}/logs", 0))


async def test_run_returns_result_logs_and_stats(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    result = await client.tasks.run(
        {"manifest": "demo::echo", "inputValues": {"text": "hi", "n": 3}}, FAST
    )
    assert result["task"]["status"] == "completed"
    assert result["result"] == {"text": "hi", "n": 3}
    assert [log["id"] for log in result["logs"]] == sorted({log["id"] for log in result["logs"]})
    assert result["logs"][-1]["type"] == "SessionFinished"
    stats = result["stats"]
    assert stats["status_polls"] == 0  # the create answer was already terminal
    assert stats["detection_latency_ms"] is not None
    assert stats["log_fetches"] == 1  # nobody consumed logs during the wait: once, at the end
    assert logs_requests(emulator) == 1
    assert stats["requests"] == stats["status_polls"] + stats["log_fetches"]
    assert stats["requests"] == sum(emulator.stats()["requests"].values()) - 1  # minus the create


async def test_flow_result_is_the_root_block_finished(client: OomolConnectClient) -> None:
    result = await client.tasks.run({"manifest": "demo-flow", "inputValues": {"text": "abc"}}, FAST)
    inner = [
        log for log in result["logs"]
        if log["type"] == "BlockFinished" and log["event"].get("stacks")
    ]
    assert inner, "the flow should have an inner BlockFinished"
    assert result["result"] is not None
    assert result["result"] == next(
        log["event"]["result"] for log in result["logs"]
        if log["type"] == "BlockFinished" and not log["event"].get("stacks")
    )


async def test_failure_raises_task_failed_with_log_error_text(
    client: OomolConnectClient,
) -> None:
    with pytest.raises(TaskFailedError) as info:
        await client.tasks.run(
            {"manifest": "demo::fail", "inputValues": {"message": "disk on fire"}}, FAST
        )
    error = info.value
    assert "disk on fire" in str(error)
    assert error.task is not None
    assert error.task["status"] == "failed"
    assert error.task_id == error.task["id"]
    assert any(log["type"] == "SessionFinished" for log in error.logs)


async def test_stop_from_elsewhere_raises_task_stopped(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    task = await client.tasks.create({"manifest": "demo::sleep", "inputValues": {"seconds": 30}})

    async def stop_soon() -> None:
        await anyio.sleep(0.05)
        await client.tasks.stop(task["id"])

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as group:
            group.start_soon(stop_soon)
            with pytest.raises(TaskStoppedError) as info:
                await client.tasks.wait_for_completion(task["id"], FAST)
    assert info.value.task_id == task["id"]
    assert emulator.task_status(task["id"]) == "stopped"


async def test_timeout_raises_and_stops_the_remote_task(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    with anyio.fail_after(GUARD), pytest.raises(TimeoutError) as info:
        await client.tasks.run(
            {"manifest": "demo::sleep", "inputValues": {"seconds": 1000}},
            {**FAST, "timeout_ms": 100},
        )
    error = info.value
    assert isinstance(error, builtins.TimeoutError)
    assert isinstance(error, OomolConnectError)
    assert error.task is not None
    assert error.task["status"] == "running"
    assert emulator.task_status(error.task_id) == "stopped"
    assert client.metrics["stops_sent"] == 1


async def test_wait_for_completion_timeout_leaves_callers_task_running(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    task = await client.tasks.create({"manifest": "demo::sleep", "inputValues": {"seconds": 1000}})
    with pytest.raises(TimeoutError):
        await client.tasks.wait_for_completion(task["id"], {**FAST, "timeout_ms": 50})
    assert emulator.task_status(task["id"]) == "running"
    with pytest.raises(TimeoutError):
        await client.tasks.wait_for_completion(
            task["id"], {**FAST, "timeout_ms": 50, "stop_on_cancel": True}
        )
    assert emulator.task_status(task["id"]) == "stopped"


async def test_timeout_cancels_an_in_flight_request(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    task = await client.tasks.create({"manifest": "demo::sleep", "inputValues": {"seconds": 1000}})
    emulator.faults.add(FaultRule(route="GET /v1/tasks/{id}", hang=60.0))
    with anyio.fail_after(GUARD), pytest.raises(TimeoutError) as info:
        await client.tasks.wait_for_completion(task["id"], {**FAST, "timeout_ms": 200})
    assert info.value.task is None  # the only poll never answered
    # The deadline cut a poll in flight: no look after it, which would hang as long.
    assert emulator.stats()["requests"]["GET /v1/tasks/{id}"] == 1
    assert our_running_tasks() == []


async def test_a_task_finished_unseen_by_the_deadline_returns_its_result(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    """The next poll would come long after the deadline: the look at the deadline finds the
    task completed, and the run returns its result rather than a TimeoutError."""
    seen: list[str] = []
    with anyio.fail_after(GUARD):
        result = await client.tasks.run(
            {"manifest": "demo::sleep", "inputValues": {"seconds": 0.1}},
            {"interval_ms": 60_000, "backoff_strategy": "fixed", "timeout_ms": 1000,
             "on_progress": lambda task: seen.append(task["status"])},
        )
    assert result["result"] == {"slept": 0.1}
    assert seen[-1] == "completed"
    assert emulator.stats()["requests"]["GET /v1/tasks/{id}"] == 1  # the look, no poll
    assert result["stats"]["status_polls"] == 1  # the look counts as one
    assert client.metrics["stops_sent"] == 0


async def test_a_task_running_at_the_deadline_is_looked_at_once_then_stopped(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    with anyio.fail_after(GUARD), pytest.raises(TimeoutError) as info:
        await client.tasks.run(
            {"manifest": "demo::sleep", "inputValues": {"seconds": 1000}},
            {"interval_ms": 60_000, "backoff_strategy": "fixed", "timeout_ms": 100},
        )
    assert info.value.task is not None
    assert info.value.task["status"] == "running"  # as the look saw it
    assert emulator.stats()["requests"]["GET /v1/tasks/{id}"] == 1
    assert emulator.task_status(info.value.task_id) == "stopped"


async def test_outer_cancel_is_not_converted_and_stops_the_task(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    created: list[str] = []
    with anyio.fail_after(GUARD), anyio.CancelScope() as scope:

        def progress(task: Any) -> None:  # the task is running: cancel from outside the run
            created.append(task["id"])
            scope.cancel()

        await client.tasks.run(
            {"manifest": "demo::sleep", "inputValues": {"seconds": 1000}},
            {**FAST, "on_progress": progress},
        )
    assert scope.cancelled_caught
    assert created
    assert emulator.task_status(created[0]) == "stopped"
    assert our_running_tasks() == []


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_task_cancel_stops_the_remote_task(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    import asyncio

    seen = anyio.Event()
    ids: list[str] = []

    def progress(task: Any) -> None:
        ids.append(task["id"])
        seen.set()

    run = asyncio.ensure_future(
        client.tasks.run(
            {"manifest": "demo::sleep", "inputValues": {"seconds": 1000}},
            {**FAST, "on_progress": progress},
        )
    )
    await seen.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert emulator.task_status(ids[0]) == "stopped"


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_nursery_cancel_stops_the_remote_task(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    import trio

    ids: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            client.tasks.run,
            {"manifest": "demo::sleep", "inputValues": {"seconds": 1000}},
            {**FAST, "on_progress": lambda task: ids.append(task["id"])},
        )
        with trio.fail_after(GUARD):
            while not ids:  # noqa: ASYNC110 - polling a plain list filled by a callback
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert emulator.task_status(ids[0]) == "stopped"


async def test_callback_that_raises_ends_the_wait_and_stops_the_task(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    ids: list[str] = []

    async def progress(task: Any) -> None:
        ids.append(task["id"])
        if task["status"] == "running":
            raise ValueError("enough")

    with pytest.raises(ValueError, match="enough"):
        await client.tasks.run(
            {"manifest": "demo::sleep", "inputValues": {"seconds": 1000}},
            {**FAST, "on_progress": progress},
        )
    assert emulator.task_status(ids[0]) == "stopped"


async def test_async_and_sync_log_callbacks_get_each_log_once_in_order(
    client: OomolConnectClient,
) -> None:
    async_logs: list[int] = []
    sync_logs: list[int] = []
    progress: list[str] = []

    async def on_log(log: Any) -> None:
        await anyio.lowlevel.checkpoint()
        async_logs.append(log["id"])

    result = await client.tasks.run(
        {"manifest": "demo::progress", "inputValues": {"steps": 5, "seconds": 0.2}},
        {**FAST, "on_log": on_log, "on_progress": lambda t: progress.append(t["status"])},
    )
    all_ids = [log["id"] for log in result["logs"]]
    assert async_logs == all_ids == sorted(set(all_ids))
    assert progress[-1] == "completed"
    result2 = await client.tasks.run(
        {"manifest": "demo::progress", "inputValues": {"steps": 3, "seconds": 0.1}},
        {**FAST, "on_log": lambda log: sync_logs.append(log["id"])},
    )
    assert sync_logs == [log["id"] for log in result2["logs"]]


@pytest.mark.parametrize("trail", [0.0, 0.15])
async def test_logs_trailing_the_terminal_status_are_delivered_exactly_once(
    anyio_backend: str, trail: float
) -> None:
    from oomol_connect_anyio.emulator import serve_emulator

    emulator = Emulator(log_trail=trail)
    async with (
        serve_emulator(emulator, host="127.0.0.1", port=0) as url,
        OomolConnectClient(base_url=url) as client,
    ):
        seen: list[Any] = []
        result = await client.tasks.run(
            {"manifest": "demo::echo", "inputValues": {"x": 1}},
            {**FAST, "on_log": seen.append},
        )
        assert [log["id"] for log in seen] == [log["id"] for log in result["logs"]]
        assert seen[-1]["type"] == "SessionFinished"
        assert result["result"] == {"x": 1}
        stats = result["stats"]
        # The wait's own log fetches are reused: no extra download at the end.
        assert logs_requests(emulator) == stats["log_fetches"]


async def test_an_outage_longer_than_the_poll_error_budget_raises_the_last_error(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    task = await client.tasks.create({"manifest": "demo::sleep", "inputValues": {"seconds": 1000}})
    emulator.faults.add(
        FaultRule(route="GET /v1/tasks/{id}", error_rate=1.0, error_statuses=(503,))
    )
    options: Any = {**FAST, "stop_on_cancel": True, "poll_error_budget_ms": 200}
    with anyio.fail_after(GUARD), pytest.raises(ServerError) as info:
        await client.tasks.wait_for_completion(task["id"], options)
    assert info.value.status == 503
    # More than one request's 1 + max_retries attempts: the missed polls were ridden out.
    assert emulator.stats()["requests"]["GET /v1/tasks/{id}"] > 3
    assert emulator.task_status(task["id"]) == "stopped"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500])
async def test_an_error_that_is_not_transient_ends_the_wait_at_once(
    client: OomolConnectClient, emulator: Emulator, status: int
) -> None:
    task = await client.tasks.create({"manifest": "demo::sleep", "inputValues": {"seconds": 1000}})
    emulator.faults.add(
        FaultRule(route="GET /v1/tasks/{id}", error_rate=1.0, error_statuses=(status,))
    )
    with anyio.fail_after(GUARD), pytest.raises(OomolConnectError) as info:
        await client.tasks.wait_for_completion(task["id"], FAST)
    assert getattr(info.value, "status", None) == status
    assert emulator.stats()["requests"]["GET /v1/tasks/{id}"] == 1


async def test_create_and_wait_returns_task_with_stats_side_channel(
    client: OomolConnectClient,
) -> None:
    task = await client.tasks.create_and_wait(
        {"manifest": "demo::upper", "inputValues": {"text": "abc"}}, FAST
    )
    assert task["status"] == "completed"
    assert set(task) >= {"id", "status"}
    assert "stats" not in task
    stats = get_wait_stats(task)
    assert stats is not None
    assert stats["status_polls"] == 0  # the create answer was already terminal
    assert get_wait_stats(dict(task)) == stats == get_wait_stats(task["id"])  # by id
    assert get_wait_stats({"id": "x"}) is None


async def test_a_task_still_running_when_created_is_polled_after_one_interval(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    seen: list[str] = []
    result = await client.tasks.run(
        {"manifest": "demo::sleep", "inputValues": {"seconds": 0.05}},
        {**FAST, "on_progress": lambda task: seen.append(task["status"])},
    )
    assert result["task"]["status"] == "completed"
    polls = result["stats"]["status_polls"]
    assert polls >= 1
    assert emulator.stats()["requests"]["GET /v1/tasks/{id}"] == polls
    # The create answer stands in for the first poll: it is reported, then the wait sleeps.
    assert len(seen) == polls + 1
    assert seen[0] in ("created", "pending", "running")
    assert seen[-1] == "completed"


async def test_watch_yields_progress_and_logs_in_order(client: OomolConnectClient) -> None:
    task = await client.tasks.create(
        {"manifest": "demo::progress", "inputValues": {"steps": 4, "seconds": 0.1}}
    )
    events = []
    async with client.tasks.watch(task["id"], FAST) as stream:
        async for event in stream:
            events.append(event)
    log_ids = [e.log["id"] for e in events if isinstance(e, TaskLogEvent)]
    assert log_ids == sorted(set(log_ids))
    assert log_ids
    assert isinstance(events[-1], TaskProgress)
    assert events[-1].task["status"] == "completed"
    logs = await client.tasks.get_logs(task["id"])
    assert log_ids == [log["id"] for log in logs]


async def test_watch_reports_failure_as_an_event(client: OomolConnectClient) -> None:
    task = await client.tasks.create({"manifest": "demo::fail", "inputValues": {}})
    async with client.tasks.watch(task["id"], FAST) as stream:
        statuses = [e.task["status"] async for e in stream if isinstance(e, TaskProgress)]
    assert statuses[-1] == "failed"


async def test_watch_early_break_stops_polling(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    task = await client.tasks.create({"manifest": "demo::sleep", "inputValues": {"seconds": 1000}})
    async with client.tasks.watch(task["id"], FAST) as stream:
        async for event in stream:
            assert our_running_tasks(), "the poller should be visible while it runs"
            if isinstance(event, TaskProgress):
                break
    assert our_running_tasks() == []
    before = emulator.stats()["requests"].get("GET /v1/tasks/{id}", 0)
    await anyio.sleep(0.1)
    assert emulator.stats()["requests"].get("GET /v1/tasks/{id}", 0) == before
    assert emulator.task_status(task["id"]) == "running"  # a watcher never stops the task


async def test_install_and_wait_success_and_failure(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    statuses: list[str] = []
    install = await client.packages.install_and_wait(
        "text-tools",
        polling_options={**FAST, "on_progress": lambda t: statuses.append(t["status"])},
    )
    assert install["status"] == "success"
    assert statuses[-1] == "success"
    # The emulator answers the install with an id only, so install() fetches the task once;
    # that answer is reported first and stands in for the first poll of the wait.
    fetches = emulator.stats()["requests"].get("GET /packages/install/{id}", 0)
    assert len(statuses) == fetches
    names = [p["name"] for p in (await client.packages.list())["packages"]]
    assert "text-tools" in names
    with pytest.raises(InstallFailedError) as info:
        await client.packages.install_and_wait("no-such-package", polling_options=FAST)
    assert info.value.error
    assert "no-such-package" in info.value.error
    assert info.value.task is not None
    assert info.value.task["status"] == "failed"


async def test_install_wait_timeout(client: OomolConnectClient) -> None:
    install = await client.packages.install("text-tools")
    with pytest.raises(TimeoutError) as info:
        await client.packages.wait_for_install_completion(
            install["id"], {**FAST, "timeout_ms": 1}
        )
    assert info.value.task_id == install["id"]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"interval_ms": 0}, ValueError),
        ({"interval_ms": -5}, ValueError),
        ({"interval_ms": "fast"}, TypeError),
        ({"timeout_ms": 0}, ValueError),
        ({"backoff_factor": 0.5}, ValueError),
        ({"backoff_strategy": "linear"}, ValueError),
        ({"on_log": "print"}, TypeError),
        ({"stop_on_cancel": "yes"}, TypeError),
        ({"intervall_ms": 10}, ValueError),
        ({"poll_error_budget_ms": 0}, ValueError),
        ({"poll_error_budget_ms": float("inf")}, ValueError),
        ({"poll_error_budget_ms": "1m"}, TypeError),
    ],
)
async def test_bad_polling_options_fail_before_any_request(
    client: OomolConnectClient, emulator: Emulator, options: dict[str, Any], error: type
) -> None:
    with pytest.raises(error):
        await client.tasks.run({"manifest": "demo::echo"}, options)  # type: ignore[arg-type]
    assert emulator.stats()["tasks_created"] == 0


async def test_no_task_outlives_a_completed_wait(client: OomolConnectClient) -> None:
    await client.tasks.run(
        {"manifest": "demo::progress", "inputValues": {"steps": 2, "seconds": 0.05}},
        {**FAST, "on_log": lambda log: None},
    )
    assert our_running_tasks() == []


if sys.version_info >= (3, 11):  # pragma: no cover - trivial alias check
    def test_timeout_error_is_catchable_as_builtin() -> None:
        assert issubclass(TimeoutError, builtins.TimeoutError)


async def test_cancel_while_the_create_is_in_flight_stops_the_new_task(
    anyio_backend: str,
) -> None:
    emulator = Emulator()
    held = HeldCreates(emulator)  # the server holds the create until released
    async with served(emulator) as client:
        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as group:

                async def run() -> None:
                    await client.tasks.run(
                        {"manifest": "demo::sleep", "inputValues": {"seconds": 1000}}, FAST
                    )

                group.start_soon(run)
                await held.arrived.wait()
                group.cancel_scope.cancel()  # a call that waited for the create would hang
            assert emulator.stats()["tasks_created"] == 0
            held.release.set()
            await settled(client)  # the create answers; the client then stops its task
    assert emulator.stats()["tasks_created"] == 1
    assert emulator.stats()["tasks_by_status"] == {"stopped": 1}


async def test_the_stop_after_abandon_gives_up_at_its_deadline_and_never_masks_the_error(
    client: OomolConnectClient,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from oomol_connect_anyio import _concurrency

    monkeypatch.setattr(_concurrency, "STOP_DEADLINE", 0.3)  # 3 s, shortened
    emulator.faults.add(
        FaultRule(route="POST /v1/tasks/{id}/stop", error_rate=1.0, error_statuses=(503,))
    )
    with pytest.raises(TimeoutError):
        await client.tasks.run(
            {"manifest": "demo::sleep", "inputValues": {"seconds": 1000}},
            {**FAST, "timeout_ms": 50},
        )
    assert emulator.stats()["requests"]["POST /v1/tasks/{id}/stop"] > 1  # it kept trying
    assert emulator.stats()["tasks_by_status"] == {"running": 1}
    gave_up = [r for r in caplog.records if "stopping task" in r.getMessage()]
    assert len(gave_up) == 1
    assert gave_up[0].levelname == "WARNING"


async def test_the_stop_after_abandon_rides_out_a_burst_of_503(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    emulator.faults.add(
        FaultRule(route="POST /v1/tasks/{id}/stop", error_rate=1.0, error_statuses=(503,))
    )

    async def end_the_burst() -> None:
        while emulator.stats()["requests"].get("POST /v1/tasks/{id}/stop", 0) < 3:  # noqa: ASYNC110
            await anyio.sleep(0.005)
        emulator.faults.clear()

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as group:
            group.start_soon(end_the_burst)
            with pytest.raises(TimeoutError):
                await client.tasks.run(
                    {"manifest": "demo::sleep", "inputValues": {"seconds": 1000}},
                    {**FAST, "timeout_ms": 50},
                )
    assert emulator.stats()["requests"]["POST /v1/tasks/{id}/stop"] >= 4
    assert emulator.stats()["tasks_by_status"] == {"stopped": 1}

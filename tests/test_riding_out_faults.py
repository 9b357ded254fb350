"""Waits that ride out transient failures at default client settings: missed polls, outages,
trailing logs and answers that are wrong, on asyncio and trio."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx
import pytest
from helpers import install_task, make_client, mock_api, task

from oomol_connect_anyio import (
    InvalidResponseError,
    OomolConnectClient,
    RateLimitError,
    ServerError,
)
from oomol_connect_anyio.emulator import BlockContext, Emulator, FaultRule

pytestmark = pytest.mark.anyio

GUARD = 20  # seconds: a generous bound that only a hung wait would reach
FAST: Any = {"interval_ms": 20, "backoff_strategy": "fixed"}
# Grows to 200 ms, so that runs waiting out an outage do not hammer the emulator.
GROWING: Any = {"interval_ms": 20, "max_interval_ms": 200}


def slow_echo(ctx: BlockContext) -> dict[str, Any]:
    """Echo the inputs after `seconds` (not an input: the echo stays the inputs)."""
    inputs = dict(ctx.inputs)
    ctx.sleep(float(inputs.pop("seconds", 0.1)))
    return inputs


@pytest.fixture(autouse=True)
def _slow_echo(emulator: Emulator) -> None:
    emulator.register_block("t::slow-echo", slow_echo)


def requests_for(runs: int, seconds: float) -> list[dict[str, Any]]:
    return [
        {"manifest": "t::slow-echo", "inputValues": {"run": i, "seconds": seconds}}
        for i in range(runs)
    ]


def assert_all_correct(outcomes: list[Any], runs: int) -> int:
    """Every run returned its own input; returns the missed polls of the whole batch."""
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert failures == []
    assert [outcome["result"] for outcome in outcomes] == [{"run": i} for i in range(runs)]
    return sum(outcome["stats"]["missed_polls"] for outcome in outcomes)


# --------------------------------------------------------------------------- missed polls


async def test_503s_and_429s_on_every_get_cost_no_run(
    emulator: Emulator, client: OomolConnectClient
) -> None:
    emulator.faults.add(
        FaultRule(
            route="GET *", error_rate=0.2, error_statuses=(503,), rate_limit_every=7, retry_after=0
        )
    )
    runs = 100
    with anyio.fail_after(GUARD):
        outcomes = await client.tasks.run_many(
            requests_for(runs, 0.1),
            max_concurrency=20,
            polling_options=FAST,
            return_exceptions=True,
        )
    missed = assert_all_correct(outcomes, runs)
    assert missed > 0, "no request exhausted its retries: the test proves nothing"
    stats = emulator.stats()
    assert stats["tasks_created"] == runs
    assert stats["tasks_by_status"] == {"completed": runs}
    assert stats["stops"] == 0


async def test_a_full_outage_in_the_middle_of_runs_costs_no_run(
    emulator: Emulator, client: OomolConnectClient
) -> None:
    runs = 20
    seen: set[str] = set()
    outage = FaultRule.outage(1.0)

    def progress(index: int, task: Any) -> None:
        seen.add(task["id"])
        if len(seen) == runs and outage not in emulator.faults.rules:
            emulator.faults.add(outage)  # every task is created: now every route answers 503

    with anyio.fail_after(GUARD):
        outcomes = await client.tasks.run_many(
            requests_for(runs, 0.5),
            max_concurrency=runs,
            polling_options={**GROWING, "on_progress": progress},
            return_exceptions=True,
        )
    missed = assert_all_correct(outcomes, runs)
    assert missed > 0
    stats = emulator.stats()
    assert sum(stats["faults"].get(route, {}).get("error", 0) for route in stats["faults"]) > 0
    assert stats["tasks_created"] == runs
    assert stats["tasks_by_status"] == {"completed": runs}


async def test_a_failing_log_fetch_beside_good_status_polls_does_not_end_the_wait(
    emulator: Emulator, client: OomolConnectClient
) -> None:
    emulator.faults.add(FaultRule.outage(0.4, route="GET /v1/tasks/{id}/logs"))
    seen: list[int] = []
    with anyio.fail_after(GUARD):
        result = await client.tasks.run(
            {"manifest": "t::slow-echo", "inputValues": {"seconds": 0.6}},
            {**FAST, "on_log": lambda log: seen.append(log["id"])},
        )
    assert result["result"] == {}
    assert result["stats"]["missed_polls"] > 0
    assert seen == [log["id"] for log in result["logs"]] == sorted(set(seen))
    assert emulator.stats()["faults"]["GET /v1/tasks/{id}/logs"]["error"] > 0


async def test_an_install_wait_rides_out_an_outage(
    emulator: Emulator, client: OomolConnectClient
) -> None:
    install = await client.packages.install("text-tools")
    emulator.faults.add(FaultRule.outage(0.3, route="GET /packages/install/{id}"))
    with anyio.fail_after(GUARD):
        done = await client.packages.wait_for_install_completion(install["id"], FAST)
    assert done["status"] == "success"
    stats = emulator.stats()
    assert stats["faults"]["GET /packages/install/{id}"]["error"] > 3  # > 1 + max_retries


async def test_an_install_outage_longer_than_the_budget_raises_the_last_error(
    emulator: Emulator, client: OomolConnectClient
) -> None:
    install = await client.packages.install("text-tools")
    emulator.faults.add(FaultRule.outage(60, route="GET /packages/install/{id}"))
    with anyio.fail_after(GUARD), pytest.raises(ServerError) as info:
        await client.packages.wait_for_install_completion(
            install["id"], {**FAST, "poll_error_budget_ms": 150}
        )
    assert info.value.status == 503
    assert emulator.stats()["requests"]["GET /packages/install/{id}"] > 3


def test_a_longer_retry_after_becomes_the_next_delay() -> None:
    from oomol_connect_anyio._options import parse_polling
    from oomol_connect_anyio._polling import MissedPolls

    misses = MissedPolls(parse_polling({}, stop_on_cancel=False).poll_error_budget)
    limited = RateLimitError(429, "slow down")
    assert misses.next_delay(limited, 0.5) == 0.5  # no hint: the schedule
    for hint, expected in [(3.0, 3.0), (0.1, 0.5), (600.0, 60.0)]:
        limited.retry_after = hint  # type: ignore[attr-defined]
        assert misses.next_delay(limited, 0.5) == expected  # longer wins, within the budget
    for bad in (float("nan"), float("inf"), True, "3"):
        limited.retry_after = bad  # type: ignore[attr-defined]
        assert misses.next_delay(limited, 0.5) == 0.5


# --------------------------------------------------------------------------- the log drain


async def test_a_completed_task_whose_logs_trail_past_the_deadline_returns_its_result(
    emulator: Emulator, client: OomolConnectClient
) -> None:
    # The task finishes at once and its closing logs come 1.2 s later: past the 1 s
    # deadline, within the 3 s grace. The margins leave a loaded machine room to see
    # the task finish before its deadline.
    emulator.log_trail = 1.2
    with anyio.fail_after(GUARD):
        result = await client.tasks.run(
            {"manifest": "t::slow-echo", "inputValues": {"seconds": 0, "x": 1}},
            {**FAST, "timeout_ms": 1000, "log_grace_ms": 3000},
        )
    assert result["task"]["status"] == "completed"
    assert result["result"] == {"x": 1}
    assert result["logs"][-1]["type"] == "SessionFinished"


async def test_the_drain_refetches_a_few_times_only(
    emulator: Emulator, client: OomolConnectClient
) -> None:
    emulator.log_trail = 5.0  # the closing logs never come in time
    with anyio.fail_after(GUARD):
        result = await client.tasks.run(
            {"manifest": "t::slow-echo", "inputValues": {"seconds": 0}}, FAST
        )
    assert result["result"] is None  # no BlockFinished within log_grace_ms
    # The grace period may cut the last refetch short after the server saw it.
    downloads = emulator.stats()["requests"]["GET /v1/tasks/{id}/logs"]
    assert 1 < result["stats"]["log_fetches"] <= downloads
    assert downloads <= 5  # the first download and a few refetches, not one per 50 ms


async def test_a_cancellation_ends_the_drain_at_once(
    emulator: Emulator, client: OomolConnectClient
) -> None:
    emulator.log_trail = 60.0
    # log_grace_ms is far longer than the guard: only a drain that heeds the
    # cancellation ends before the guard fires.
    with anyio.fail_after(GUARD / 2), anyio.move_on_after(0.2) as scope:
        await client.tasks.run(
            {"manifest": "t::slow-echo", "inputValues": {"seconds": 0}},
            {**FAST, "log_grace_ms": 600_000},
        )
    assert scope.cancelled_caught


# --------------------------------------------------------------------------- bad answers


async def test_a_poll_answer_about_another_task_is_an_invalid_response(
    anyio_backend: str,
) -> None:
    with mock_api() as router:
        router.get("/v1/tasks/t-1").mock(
            return_value=httpx.Response(200, json={"task": task("t-2", "running")})
        )
        async with make_client() as client:
            with anyio.fail_after(GUARD), pytest.raises(InvalidResponseError) as info:
                await client.tasks.wait_for_completion("t-1", FAST)
    assert "t-2" in str(info.value)
    assert "t-1" in str(info.value)


async def test_an_install_answer_about_another_install_is_an_invalid_response(
    anyio_backend: str,
) -> None:
    with mock_api() as router:
        router.get("/packages/install/i-1").mock(
            return_value=httpx.Response(200, json={"success": True, "task": install_task("i-9")})
        )
        async with make_client() as client:
            with anyio.fail_after(GUARD), pytest.raises(InvalidResponseError, match="i-9"):
                await client.packages.wait_for_install_completion("i-1", FAST)


async def test_an_unknown_status_is_not_terminal_and_is_warned_about_once(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="oomol_connect_anyio")
    answers = [task("t-1", "queued-remotely")] * 3 + [task("t-1", "completed")]
    progress: list[str] = []
    with mock_api() as router:
        router.get("/v1/tasks/t-1").mock(
            side_effect=[httpx.Response(200, json={"task": a}) for a in answers]
        )
        async with make_client() as client:
            done = await client.tasks.wait_for_completion(
                "t-1", {**FAST, "on_progress": lambda t: progress.append(t["status"])}
            )
    assert done["status"] == "completed"
    assert progress == ["queued-remotely"] * 3 + ["completed"]
    warnings = [r for r in caplog.records if "queued-remotely" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "t-1" in warnings[0].getMessage()

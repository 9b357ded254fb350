"""Cancellation storms: runs abandoned at random moments leave no remote task running and
no anyio task behind (over real loopback sockets, on asyncio and trio)."""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from helpers import HeldCreates, our_running_tasks, served, settled

from oomol_connect_anyio import (
    OomolConnectClient,
    TaskFailedError,
    TimeoutError,
)
from oomol_connect_anyio.emulator import Emulator, FaultRule, serve_emulator

pytestmark = pytest.mark.anyio

FAST: Any = {"interval_ms": 20, "backoff_strategy": "fixed"}
TERMINAL = frozenset({"completed", "failed", "stopped"})
# The storm: 1,000 concurrent runs cancelled at random moments (~7 s per backend
# on a 2-core box). Requests beyond the connection pool queue in the client's own FIFO,
# and a stop's deadline starts when its request is sent, not while it waits its turn.
STORM_RUNS = int(os.environ.get("OOMOL_STORM_RUNS", "1000"))
SCHEDULES = int(os.environ.get("OOMOL_STORM_SCHEDULES", "200"))
RUNS_PER_SCHEDULE = 3
SCHEDULES_AT_ONCE = 8  # 24 runs in flight: little connection churn, no pool queue
SCHEDULE_POLLING: Any = {"interval_ms": 50, "backoff_strategy": "fixed"}
LONG: Any = {"manifest": "demo::sleep", "inputValues": {"seconds": 1000}}


def unfinished(emulator: Emulator, tags: set[str] | None = None) -> dict[str, str]:
    """Tasks (those whose input ``tag`` is in ``tags``, or all) not in a terminal status."""
    left = {}
    for task_id, task in emulator.tasks.items():
        status = task.status
        if status in TERMINAL:
            continue
        values = {i["handle"]: i["value"] for node in task.input_values for i in node["inputs"]}
        if tags is None or values.get("tag") in tags:
            left[task_id] = f"{status} {values}"
    return left


# --------------------------------------------------------------------------- one big storm


async def test_a_storm_of_runs_cancelled_at_random_moments_leaves_nothing_running(
    anyio_backend: str,
) -> None:
    emulator = Emulator()
    rng = random.Random(20_240_611)
    delays = [rng.uniform(0.0, 0.05) for _ in range(STORM_RUNS)]
    errors: list[BaseException] = []
    outcomes: Counter[str] = Counter()

    async with served(emulator) as client:

        async def run(index: int, delay: float) -> None:
            with anyio.CancelScope(deadline=anyio.current_time() + delay) as scope:
                try:
                    await client.tasks.run(
                        {"manifest": "demo::sleep", "inputValues": {"seconds": 1000, "tag": index}},
                        FAST,
                    )
                except Exception as exc:
                    errors.append(exc)
            outcomes["cancelled" if scope.cancelled_caught else "not cancelled"] += 1

        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                for index, delay in enumerate(delays):
                    group.start_soon(run, index, delay)
            await settled(client)  # the stops of the creates the runs gave up waiting for
        leftovers = our_running_tasks()
        metrics = client.metrics
        before = dict(emulator.stats()["requests"])
        await anyio.sleep(0.1)
        after = dict(emulator.stats()["requests"])
    stats = emulator.stats()
    assert errors == [], f"{len(errors)} runs raised, e.g. {errors[0]!r}"
    assert outcomes == {"cancelled": STORM_RUNS}
    assert unfinished(emulator) == {}
    assert set(stats["tasks_by_status"]) <= {"stopped"}
    assert stats["stops"] == stats["tasks_created"]  # each task it created, stopped once
    assert leftovers == []
    assert metrics["in_flight_runs"] == 0
    assert before == after, "requests went on after every run was cancelled"


# --------------------------------------------------------------------------- many small ones


@dataclass
class Plan:
    """One run of a schedule: what it runs and when (if ever) it is cancelled."""

    kind: str  # "sleep" (cancelled before it ends, or not), "fail", "timeout"
    seconds: float
    cancel_after: float | None


def make_schedule(seed: int) -> tuple[list[Plan], float | None]:
    """The runs of one schedule, and when the whole schedule is cancelled (or None)."""
    rng = random.Random(seed)
    plans = []
    for _ in range(RUNS_PER_SCHEDULE):
        kind = rng.choice(["sleep", "sleep", "sleep", "fail", "timeout"])
        seconds = rng.choice([0.0, rng.uniform(0.0, 0.04), 1000.0])
        cancel_after = rng.choice([None, rng.uniform(0.0, 0.05), rng.uniform(0.0, 0.005)])
        if kind == "sleep" and seconds == 1000.0 and cancel_after is None:
            cancel_after = rng.uniform(0.0, 0.05)  # nothing else would end it
        plans.append(Plan(kind, seconds, cancel_after))
    group_cancel = rng.choice([None, None, rng.uniform(0.0, 0.06)])
    return plans, group_cancel


async def run_schedule(client: OomolConnectClient, emulator: Emulator, seed: int) -> list[str]:
    """Run one schedule; return what went wrong (nothing, if the client kept its promises)."""
    plans, group_cancel = make_schedule(seed)
    problems: list[str] = []
    {f"{seed}/{index}" for index in range(len(plans))}

    async def run(index: int, plan: Plan) -> None:
        tag = f"{seed}/{index}"
        if plan.kind == "fail":
            request: Any = {"manifest": "demo::fail", "inputValues": {"message": tag, "tag": tag}}
        else:
            values = {"seconds": plan.seconds, "tag": tag}
            request = {"manifest": "demo::sleep", "inputValues": values}
        options = SCHEDULE_POLLING
        if plan.kind == "timeout":
            options = {**options, "timeout_ms": 30}
        scope = anyio.CancelScope()
        if plan.cancel_after is not None:
            scope.deadline = anyio.current_time() + plan.cancel_after
        outcome: Any = None
        with scope:
            try:
                outcome = await client.tasks.run(request, options)
            except (TaskFailedError, TimeoutError) as exc:
                outcome = exc
            except Exception as exc:
                problems.append(f"run {tag} {plan}: unexpected {exc!r}")
                return
        if outcome is None:
            return  # cancelled: checked below through the emulator
        if plan.kind == "fail":
            ok = isinstance(outcome, TaskFailedError) and tag in str(outcome)
        elif plan.kind == "timeout" and plan.seconds == 1000.0:
            ok = isinstance(outcome, TimeoutError)
        elif isinstance(outcome, TimeoutError):
            ok = plan.kind == "timeout"  # a short sleep may still outlast 30 ms under load
        else:
            ok = not isinstance(outcome, Exception) and outcome["result"] == {"slept": plan.seconds}
        if not ok:
            problems.append(f"run {tag} {plan}: wrong outcome {outcome!r}")

    with anyio.CancelScope() as outer:
        if group_cancel is not None:
            outer.deadline = anyio.current_time() + group_cancel
        async with anyio.create_task_group() as group:
            for index, plan in enumerate(plans):
                group.start_soon(run, index, plan)
    return [f"schedule {seed} (group cancel {group_cancel}): {p}" for p in problems]


async def test_seeded_random_schedules_of_runs_cancels_and_timeouts(
    anyio_backend: str,
) -> None:
    emulator = Emulator()
    problems: list[str] = []
    async with served(emulator) as client:
        limiter = anyio.CapacityLimiter(SCHEDULES_AT_ONCE)

        async def one(seed: int) -> None:
            async with limiter:
                problems.extend(await run_schedule(client, emulator, seed))

        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                for seed in range(SCHEDULES):
                    group.start_soon(one, seed)
            await settled(client)
        leftovers = our_running_tasks()
        metrics = client.metrics
    assert problems == [], "\n".join(problems[:20])
    stats = emulator.stats()
    assert stats["tasks_created"] > SCHEDULES  # most runs got as far as a task
    assert unfinished(emulator) == {}
    assert leftovers == []
    assert metrics["in_flight_runs"] == 0


# --------------------------------------------------------------------------- slow creation


@pytest.mark.parametrize(
    ("how", "deadline"), [("run", None), ("run_many", None), ("run_many", 0.1)]
)
async def test_a_run_cancelled_during_a_slow_create_stops_the_task_it_creates(
    anyio_backend: str,
    how: str,
    deadline: float | None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server answers the create only after the cancellation: the call returns at once
    and the client's service group stops the task once its id arrives. A client that was
    not entered waits for the id inline (a batch at most STOP_DEADLINE, and says so when
    it gives up). The cancellation goes on as a cancellation."""
    if deadline is not None:
        from oomol_connect_anyio import _run_many

        monkeypatch.setattr(_run_many, "STOP_DEADLINE", deadline)  # 3 s, shortened
    caplog.set_level(logging.WARNING, logger="oomol_connect_anyio")
    emulator = Emulator()
    held = HeldCreates(emulator)
    async with serve_emulator(emulator, host="127.0.0.1", port=0) as url:
        client = OomolConnectClient(base_url=url, retry_delay=0.001)
        if deadline is None:
            await client.__aenter__()
        scope = anyio.CancelScope()

        async def call() -> None:
            with scope:
                if how == "run":
                    await client.tasks.run(LONG, FAST)
                else:
                    await client.tasks.run_many([LONG], polling_options=FAST)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(call)
                await held.arrived.wait()  # the server holds the create: cancel now
                scope.cancel()
            assert scope.cancelled_caught
            assert emulator.stats()["tasks_created"] == 0  # it returned before the answer
            if deadline is not None:  # the batch gave up on the create
                assert warnings_of_ours(caplog), "a create was given up on without a warning"
            held.release.set()
            await held.handled.wait()
            if deadline is None:
                await settled(client)
        assert our_running_tasks() == []
        await client.aclose()
    stats = emulator.stats()
    assert stats["tasks_created"] == 1  # the server had the whole create: it made the task
    if deadline is None:
        assert unfinished(emulator) == {}
        assert stats["stops"] == 1
    else:  # it is left running, but not silently: the warning above said it may exist
        assert len(unfinished(emulator)) == 1


async def test_a_stop_that_runs_out_of_time_is_reported(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from oomol_connect_anyio import _concurrency

    monkeypatch.setattr(_concurrency, "STOP_DEADLINE", 0.2)  # 3 s, shortened
    caplog.set_level(logging.WARNING, logger="oomol_connect_anyio")
    emulator = Emulator()
    emulator.faults.add(FaultRule(route="POST /v1/tasks/{id}/stop", hang=30))
    ids: list[str] = []
    async with served(emulator) as client:
        with anyio.fail_after(10), anyio.CancelScope() as scope:

            def progress(task: Any) -> None:
                ids.append(task["id"])
                scope.cancel()

            await client.tasks.run(LONG, {**FAST, "on_progress": progress})
        assert scope.cancelled_caught
        assert emulator.task_status(ids[0]) == "running"  # the stop never got through
        assert our_running_tasks() == []
    assert any(ids[0] in record.getMessage() for record in warnings_of_ours(caplog)), (
        "the task was left running without a warning"
    )


def warnings_of_ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.levelno >= logging.WARNING and record.name.startswith("oomol_connect_anyio")
    ]

"""Native asyncio cancellation (``Task.cancel()``, ``asyncio.wait_for``, ``asyncio.timeout``)
of runs at seeded random moments: nothing the server made is left running. asyncio-only by
nature; the client is closed before counting, which waits for the service group's stops."""

from __future__ import annotations

import asyncio
import random
import sys
from typing import Any

import pytest
from helpers import served

from oomol_connect_anyio.emulator import Emulator, FaultRule

pytestmark = pytest.mark.anyio

SCHEDULES = 300
AT_ONCE = 50
POLL: Any = {"interval_ms": 5, "backoff_strategy": "fixed"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def left_running(emulator: Emulator) -> list[str]:
    return [
        task_id
        for task_id, task in emulator.tasks.items()
        if task.status not in ("completed", "failed", "stopped")
    ]


def request(tag: str, seconds: float = 1000.0) -> Any:
    return {"manifest": "demo::sleep", "inputValues": {"seconds": seconds, "tag": tag}}


async def test_task_cancel_at_seeded_random_moments_leaves_nothing_running() -> None:
    """Each schedule cancels one run at a random moment of one phase: while its create is in
    flight, just after the server made the task (its answer still on the way), or after a
    poll (during the next poll, or the wait's stop); fifty schedules at a time."""
    emulator = Emulator()
    emulator.faults.add(FaultRule(route="POST /v1/tasks", latency=(0.0, 0.004)))
    phases: dict[str, int] = {"create": 0, "created": 0, "polled": 0}
    async with served(emulator) as client:

        def exists(tag: str) -> bool:
            return any(
                item["value"] == tag
                for task in list(emulator.tasks.values())
                for node in task.input_values
                for item in node["inputs"]
                if item["handle"] == "tag"
            )

        async def schedule(seed: int) -> None:
            rng = random.Random(seed)
            tag = f"s{seed}"
            polled = asyncio.Event()
            options = {**POLL, "on_progress": lambda task: polled.set()}
            job = asyncio.ensure_future(client.tasks.run(request(tag), options))
            phase = rng.choice(list(phases))
            phases[phase] += 1
            if phase == "create":
                await asyncio.sleep(rng.uniform(0.0, 0.004))
            elif phase == "created":
                while not exists(tag):  # noqa: ASYNC110 - the emulator has no event
                    await asyncio.sleep(0.0005)
                await asyncio.sleep(rng.uniform(0.0, 0.002))
            else:
                await asyncio.wait_for(polled.wait(), 20)
                await asyncio.sleep(rng.uniform(0.0, 0.01))
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job

        for start in range(0, SCHEDULES, AT_ONCE):
            await asyncio.gather(*(schedule(s) for s in range(start, start + AT_ONCE)))
    assert min(phases.values()) > SCHEDULES // 5
    assert emulator.stats()["tasks_created"] >= phases["created"] + phases["polled"]
    assert left_running(emulator) == []


async def test_wait_for_and_a_second_cancel_leave_nothing_running() -> None:
    emulator = Emulator()
    emulator.faults.add(FaultRule(route="POST /v1/tasks", latency=(0.05, 0.15)))
    async with served(emulator) as client:

        async def one(index: int) -> None:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.tasks.run(request(f"w{index}"), POLL), 0.1)

        async def twice(index: int) -> None:  # a cancel, then another during cleanup
            job = asyncio.ensure_future(client.tasks.run(request(f"c{index}"), POLL))
            await asyncio.sleep(0.02 * index)
            job.cancel()
            await asyncio.sleep(0)
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job

        await asyncio.gather(*(one(i) for i in range(10)), *(twice(i) for i in range(10)))
    assert left_running(emulator) == []
    assert emulator.stats()["tasks_created"] == 20  # a create once started is finished


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in 3.11")
async def test_asyncio_timeout_leaves_nothing_running() -> None:
    emulator = Emulator()
    emulator.faults.add(FaultRule(route="POST /v1/tasks", latency=(0.05, 0.15)))
    async with served(emulator) as client:

        async def one(index: int) -> None:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):  # type: ignore[attr-defined,unused-ignore]
                    await client.tasks.run(request(f"t{index}"), POLL)

        await asyncio.gather(*(one(i) for i in range(10)))
    assert left_running(emulator) == []
    assert emulator.stats()["tasks_created"] == 10

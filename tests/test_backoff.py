"""A batch backs off together, and its opt-in adaptive window, on asyncio and trio."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from oomol_connect_anyio import OomolConnectClient, ResponseEvent, RunResult
from oomol_connect_anyio._pressure import BatchPressure, current_pressure
from oomol_connect_anyio._retry import RetryPolicy
from oomol_connect_anyio.emulator import BlockContext, Emulator, FaultRule, serve_emulator

pytestmark = pytest.mark.anyio

POLL: Any = {"interval_ms": 10, "backoff_strategy": "fixed"}
POLL_ROUTE = "GET /v1/tasks/{id}"
CREATE_ROUTE = "POST /v1/tasks"


def _item(ctx: BlockContext) -> dict[str, Any]:
    ctx.sleep(float(ctx.inputs.get("s", 0.0)))
    return {"i": ctx.inputs["i"]}


def req(i: int, seconds: float = 0.0) -> Any:
    return {"manifest": "t::item", "inputValues": {"i": i, "s": seconds}}


def emulator() -> Emulator:
    emu = Emulator()
    emu.register_block("t::item", _item)
    return emu


# -- the batch's pressure reaches every request ----------------------------------------------


async def test_the_batch_reaches_its_creates_polls_and_log_fetches() -> None:
    """Creates run in the client's service group, started from the run's task: they
    inherit the batch's context on both backends, as polls and log fetches do."""
    seen: dict[str, list[bool]] = {}

    def on_response(event: ResponseEvent) -> None:
        seen.setdefault(event.route, []).append(current_pressure.get() is not None)

    emu = emulator()
    async with serve_emulator(emu) as url, OomolConnectClient(
        base_url=url, on_response=on_response
    ) as client:
        await client.tasks.run_many([req(i, 0.03) for i in range(4)], polling_options=POLL)
        seen.clear()
        await client.tasks.list()  # outside any batch
        assert seen == {"GET /v1/tasks": [False]}
        seen.clear()
        await client.tasks.run_many([req(i, 0.03) for i in range(4)], polling_options=POLL)
    assert seen[CREATE_ROUTE] == [True] * 4
    assert seen[POLL_ROUTE]
    assert all(seen[POLL_ROUTE])
    assert seen[POLL_ROUTE + "/logs"]
    assert all(seen[POLL_ROUTE + "/logs"])


# -- one 429 pauses the batch's new creates -------------------------------------------------


async def test_a_429_on_one_runs_poll_pauses_the_other_runs_creates() -> None:
    """The 429 (Retry-After 1 s) answers a poll of one of two long runs; the third request
    is read right after it. Its create waits out the pause: the other run's polls go on
    meanwhile, so the emulator answers several of them between the 429 and that create."""
    emu = emulator()
    limited = anyio.Event()

    def on_response(event: ResponseEvent) -> None:
        if event.status == 429:
            emu.faults.clear()
            limited.set()

    async def requests() -> AsyncIterator[Any]:
        yield req(0, 3.0)
        yield req(1, 3.0)
        await limited.wait()
        yield req(2)

    emu.faults.add(FaultRule(route=POLL_ROUTE, rate_limit_every=2, retry_after=1.0))
    async with serve_emulator(emu) as url, OomolConnectClient(
        base_url=url, on_response=on_response
    ) as client, client.tasks.run_many_iter(
        requests(), max_concurrency=3, polling_options=POLL
    ) as outcomes:
        async for index, _ in outcomes:
            if index == 2:
                break  # the others are stopped
    log = list(emu.counters.answer_log)
    first_429 = log.index((POLL_ROUTE, "429"))
    creates = [i for i, answer in enumerate(log) if answer == (CREATE_ROUTE, "200")]
    assert len(creates) == 3
    assert creates[1] < first_429 < creates[2]
    polls_between = log[first_429:creates[2]].count((POLL_ROUTE, "200"))
    assert polls_between >= 5, log[first_429 : creates[2] + 1]


# -- the adaptive window, on a fake sequence of answers --------------------------------------


async def test_the_window_halves_once_per_burst_and_grows_back() -> None:
    pressure = BatchPressure(RetryPolicy(), 16, adaptive=True)
    before = time.monotonic() - 1  # sent before any halving to come

    def after() -> float:
        return time.monotonic() + 1  # sent after every halving so far

    for _ in range(10):  # one burst: sent together, answered 429 together
        pressure.report(CREATE_ROUTE, 429, 0.0, before)
    assert (pressure.window, pressure.halvings) == (8, 1)
    pressure.report(CREATE_ROUTE, 503, None, after())
    assert pressure.window == 4
    for _ in range(3):
        pressure.report(CREATE_ROUTE, 200, None, after())
    assert pressure.window == 4
    pressure.report(CREATE_ROUTE, 200, None, before)  # sent before the last halving: no
    pressure.report(POLL_ROUTE, 200, None, after())  # not a create: no
    assert pressure.window == 4
    pressure.report(CREATE_ROUTE, 200, None, after())
    assert pressure.window == 5  # a whole window of clean answers
    for _ in range(1000):
        pressure.report(CREATE_ROUTE, 200, None, after())
    assert pressure.window == 16  # the ceiling
    for _ in range(10):
        pressure.report(CREATE_ROUTE, 429, None, after())
    assert pressure.window == 1  # the floor
    assert pressure.overloads == 12


async def test_a_full_window_admits_only_as_runs_end() -> None:
    pressure = BatchPressure(RetryPolicy(), 4, adaptive=True)
    pressure.report(CREATE_ROUTE, 429, 0.0, time.monotonic())
    assert pressure.window == 2
    await pressure.admit()
    await pressure.admit()
    admitted = anyio.Event()

    async def third() -> None:
        await pressure.admit()
        admitted.set()

    async with anyio.create_task_group() as group:
        group.start_soon(third)
        await anyio.wait_all_tasks_blocked()
        assert not admitted.is_set()
        pressure.release()
        await admitted.wait()
    assert pressure.active == 2


async def test_a_fixed_batch_only_pauses() -> None:
    pressure = BatchPressure(RetryPolicy(), 4, adaptive=False)
    for _ in range(5):
        pressure.report(CREATE_ROUTE, 429, 0.0, time.monotonic())
    assert (pressure.window, pressure.overloads) == (4, 0)
    for _ in range(6):
        await pressure.admit()  # the limiter bounds a fixed batch, not the window
    assert pressure.active == 6


async def test_adaptive_concurrency_is_checked_before_anything_starts() -> None:
    emu = emulator()
    async with serve_emulator(emu) as url, OomolConnectClient(base_url=url) as client:
        with pytest.raises(TypeError, match="adaptive_concurrency must be a bool"):
            await client.tasks.run_many([req(0)], adaptive_concurrency=1)  # type: ignore[typeddict-item]
        with pytest.raises(ValueError, match="adaptive_concurrency needs a finite limit"):
            await client.tasks.run_many(
                [req(0)], limiter=anyio.CapacityLimiter(float("inf")), adaptive_concurrency=True
            )
    assert emu.stats()["tasks_created"] == 0


# -- end to end against a server taking at most K tasks --------------------------------------


async def _batch_against_k(
    adaptive: bool,
) -> tuple[int, int, list[int], list[RunResult | Exception]]:
    """24 runs, ceiling 8, against a server answering creates 429 at 2 active tasks:
    the 429s, the server's peak of active tasks, the batch's window as each poll saw it
    once the first burst was over, and the outcomes."""
    emu = emulator()
    emu.faults.add(FaultRule(route=CREATE_ROUTE, max_active=2, retry_after=0.1))
    windows: list[int] = []

    def on_progress(index: int, task: Any) -> None:
        pressure = current_pressure.get()
        assert pressure is not None
        if pressure.halvings:
            windows.append(int(pressure.window))

    async with serve_emulator(emu) as url, OomolConnectClient(base_url=url) as client:
        outcomes = await client.tasks.run_many(
            [req(i, 0.05) for i in range(24)],
            max_concurrency=8,
            adaptive_concurrency=adaptive,
            return_exceptions=True,
            polling_options={**POLL, "on_progress": on_progress},
        )
    stats = emu.stats()
    limited = stats["statuses"][CREATE_ROUTE].get("429", 0)
    return limited, stats["peak_active"], windows, outcomes


async def test_adaptive_concurrency_shrinks_at_the_servers_limit() -> None:
    """Refused creates halve the window at once (a fixed limit keeps its 8 places), and
    every run still completes within the server's bound. How many 429s each batch meets,
    and how high the window grows back between them, depend on the machine's pace (on a
    slow one, places free up before the next create arrives): bench_backoff measures that."""
    fixed_429s, fixed_peak, fixed_windows, fixed = await _batch_against_k(adaptive=False)
    adaptive_429s, peak, windows, outcomes = await _batch_against_k(adaptive=True)
    assert peak <= 2  # the server's bound holds, as it does for the fixed limit
    assert fixed_peak <= 2
    assert fixed_429s > 0  # both met the limit
    assert adaptive_429s > 0
    assert fixed_windows == []  # a fixed batch never halves its window
    assert windows  # the adaptive one did...
    assert windows[0] <= 4  # ...at once, from its ceiling of 8
    for batch in (fixed, outcomes):
        assert len(batch) == 24
        assert all(not isinstance(outcome, Exception) for outcome in batch)


async def test_the_emulator_refuses_creates_at_max_active_and_logs_its_answers() -> None:
    emu = emulator()
    emu.faults.add(FaultRule(route=CREATE_ROUTE, max_active=2, retry_after=0.5))
    async with serve_emulator(emu) as url, httpx.AsyncClient(base_url=url) as http:
        answers = [(await http.post("/v1/tasks", json=req(i, 30.0))) for i in range(3)]
        assert [answer.status_code for answer in answers] == [200, 200, 429]
        assert answers[2].headers["retry-after"] == "0.5"
        task_id = answers[0].json()["task"]["id"]
        assert (await http.post(f"/v1/tasks/{task_id}/stop")).status_code == 200
        assert (await http.post("/v1/tasks", json=req(3, 30.0))).status_code == 200
    assert emu.stats()["tasks_created"] == 3
    assert list(emu.counters.answer_log) == [
        (CREATE_ROUTE, "200"), (CREATE_ROUTE, "200"), (CREATE_ROUTE, "429"),
        ("POST /v1/tasks/{id}/stop", "200"), (CREATE_ROUTE, "200"),
    ]

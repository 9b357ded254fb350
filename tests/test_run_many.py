"""``tasks.run_many`` / ``run_many_iter`` against the emulator, on asyncio and trio."""

from __future__ import annotations

import math
import sys
from collections.abc import AsyncIterator, Callable, Container, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from helpers import settled

from oomol_connect_anyio import OomolConnectClient, RunResult, TaskFailedError
from oomol_connect_anyio.emulator import BlockContext, Emulator, FaultRule, serve_emulator

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio

POLL: Any = {"interval_ms": 10, "backoff_strategy": "fixed"}


def poll(**callbacks: Any) -> Any:
    """Fast polling options with callbacks."""
    return {**POLL, **callbacks}


LONG = 30.0  # virtual seconds: such a task only ends by being stopped


def _item(ctx: BlockContext) -> dict[str, Any]:
    ctx.log(f"item {ctx.inputs['i']}")
    ctx.sleep(float(ctx.inputs.get("s", 0.0)))
    if ctx.inputs.get("fail"):
        raise RuntimeError(f"item {ctx.inputs['i']} failed")
    return {"i": ctx.inputs["i"]}


def req(i: int, seconds: float = 0.0, fail: bool = False) -> Any:
    seconds = max(0.0, round(seconds, 3))
    return {"manifest": "t::item", "inputValues": {"i": i, "s": seconds, "fail": fail}}


client_of: dict[Emulator, OomolConnectClient] = {}


@asynccontextmanager
async def served() -> AsyncIterator[tuple[Emulator, OomolConnectClient]]:
    emu = Emulator()
    emu.register_block("t::item", _item)
    async with serve_emulator(emu) as url, OomolConnectClient(base_url=url) as client:
        client_of[emu] = client
        try:
            yield emu, client
        finally:
            del client_of[emu]


def result_of(outcome: RunResult | Exception) -> Any:
    assert not isinstance(outcome, Exception), outcome
    return outcome["result"]


def statuses(emu: Emulator) -> list[str]:
    return [task.status for task in emu.tasks.values()]


async def until(condition: Callable[[], bool]) -> None:
    """Wait for a condition on the emulator's state, which has no event to wait on."""
    while not condition():  # noqa: ASYNC110
        await anyio.sleep(0.005)


def gate(emu: Emulator, indices: Container[int], tasks: int, seen: list[int] | None = None) -> Any:
    """An ``on_progress`` holding back the polling of the runs in ``indices``
    until ``tasks`` tasks exist (so that none ends before), then noting ``in_flight_runs``."""

    async def on_progress(index: int, task: Any) -> None:
        if index in indices:
            await until(lambda: len(emu.tasks) >= tasks)
        if seen is not None:
            seen.append(client_of[emu].metrics["in_flight_runs"])

    return on_progress


def in_reverse(done: list[int], count: int) -> Any:
    """An ``on_progress`` letting run ``i`` end only once every later run is in ``done``."""

    async def on_progress(index: int, task: Any) -> None:
        await until(lambda: all(later in done for later in range(index + 1, count)))

    return on_progress


def assert_all_ended(emu: Emulator) -> None:
    """No task is left running; every stopped one was stopped by the client."""
    for task in emu.tasks.values():
        assert task.status in ("completed", "failed", "stopped"), task.status
        assert task.status != "stopped" or task.stop_requested


# -- results, order, bounds ------------------------------------------------------------------


async def test_results_in_input_order_while_later_ones_finish_first() -> None:
    finished: list[int] = []
    async with served() as (_, client):
        results = await client.tasks.run_many(
            [req(i) for i in range(4)],
            max_concurrency=4,
            polling_options=poll(on_progress=in_reverse(finished, 4)),
            on_result=lambda index, outcome: finished.append(index),
        )
    assert [r["result"] for r in results] == [{"i": i} for i in range(4)]
    assert all(r["task"]["status"] == "completed" for r in results)
    assert finished == [3, 2, 1, 0]
    assert client.metrics["in_flight_runs"] == 0


async def test_empty_input() -> None:
    async with served() as (emu, client):
        assert await client.tasks.run_many([]) == []
        async with client.tasks.run_many_iter(iter([])) as outcomes:
            assert [item async for item in outcomes] == []
    assert emu.stats()["tasks_created"] == 0


async def test_concurrency_never_exceeds_the_limit() -> None:
    in_flight: list[int] = []
    async with served() as (emu, client):
        results = await client.tasks.run_many(
            [req(i, 0.03) for i in range(6)],
            max_concurrency=3,
            polling_options=poll(on_progress=gate(emu, range(3), 3, in_flight)),
        )
        assert len(results) == 6
        assert emu.peak_active() <= 3
    assert max(in_flight) == 3  # reached (the gate makes sure), never exceeded


async def test_default_concurrency_is_eight() -> None:
    in_flight: list[int] = []
    async with served() as (emu, client):
        polling = poll(on_progress=gate(emu, range(8), 8, in_flight))
        await client.tasks.run_many([req(i, 0.03) for i in range(9)], polling_options=polling)
        assert emu.peak_active() <= 8
    assert max(in_flight) == 8


async def test_shared_limiter_bounds_two_calls_together() -> None:
    limiter = anyio.CapacityLimiter(3)
    in_flight: list[int] = []
    async with served() as (emu, client):
        outcomes: dict[str, list[Any]] = {}
        polling = poll(on_progress=gate(emu, (), 0, in_flight))

        async def batch(name: str) -> None:
            requests = [req(i, 0.03) for i in range(4)]
            outcomes[name] = await client.tasks.run_many(
                requests, limiter=limiter, polling_options=polling
            )

        async with anyio.create_task_group() as group:
            group.start_soon(batch, "a")
            group.start_soon(batch, "b")
        assert emu.stats()["tasks_created"] == 8
        assert emu.peak_active() <= 3
    assert [r["result"]["i"] for r in outcomes["a"]] == list(range(4))
    assert limiter.borrowed_tokens == 0
    assert max(in_flight) <= 3


async def test_generator_is_consumed_lazily() -> None:
    pulled = 0
    pulled_at_first_result: list[int] = []

    def requests() -> Iterator[Any]:
        nonlocal pulled
        for i in range(6):
            pulled += 1
            yield req(i, 0.03)

    def on_result(index: int, outcome: Any) -> None:
        if not pulled_at_first_result:
            pulled_at_first_result.append(pulled)

    async with served() as (_, client):
        results = await client.tasks.run_many(
            requests(), max_concurrency=3, polling_options=POLL, on_result=on_result
        )
    assert [r["result"]["i"] for r in results] == list(range(6))
    assert pulled_at_first_result[0] <= 3 + 1


async def test_async_iterable_input() -> None:
    async def requests() -> AsyncIterator[Any]:
        for i in range(5):
            await anyio.lowlevel.checkpoint()
            yield req(i, 0.04 - 0.01 * i)

    async with served() as (_, client):
        results = await client.tasks.run_many(requests(), max_concurrency=2, polling_options=POLL)
    assert [r["result"] for r in results] == [{"i": i} for i in range(5)]


async def test_polling_callbacks_receive_the_index() -> None:
    progress: set[tuple[int, str]] = set()
    logs: list[tuple[int, str]] = []

    async def on_log(index: int, log: Any) -> None:
        if log["type"] == "BlockLog":
            logs.append((index, log["event"]["log"]))

    async with served() as (_, client):
        await client.tasks.run_many(
            [req(i, 0.02) for i in range(3)],
            polling_options={  # typed as BatchPollingOptions: the callbacks take the index
                "interval_ms": 10,
                "backoff_strategy": "fixed",
                "on_progress": lambda index, task: progress.add((index, task["status"])),
                "on_log": on_log,
            },
        )
    assert sorted(logs) == [(i, f"item {i}") for i in range(3)]
    assert {(i, "completed") for i in range(3)} <= progress


async def test_max_per_second_spaces_creations() -> None:
    sent: list[float] = []

    async def on_request(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path.endswith("/v1/tasks"):
            sent.append(anyio.current_time())

    emu = Emulator()
    emu.register_block("t::item", _item)
    async with (
        serve_emulator(emu) as url,
        httpx.AsyncClient(event_hooks={"request": [on_request]}) as http,
    ):
        client = OomolConnectClient(base_url=url, http_client=http)
        start = anyio.current_time()
        await client.tasks.run_many(
            [req(i) for i in range(4)], max_per_second=20, polling_options=POLL
        )
    # the k-th creation is sent no sooner than k / 20 s after the call: a lower bound
    # that load can only push further away
    assert len(sent) == 4
    for k, at in enumerate(sorted(sent)):
        assert at - start >= k * 0.05 * 0.99


# -- failures --------------------------------------------------------------------------------


async def test_fail_fast_stops_the_other_runs() -> None:
    async with served() as (emu, client):
        requests = [req(0, LONG), req(1, LONG), req(2, fail=True), req(3, LONG)]
        requests += [req(i, LONG) for i in range(4, 10)]
        polling = poll(on_progress=gate(emu, {2}, tasks=4))
        with pytest.raises(ExceptionGroup) as caught:
            await client.tasks.run_many(requests, max_concurrency=4, polling_options=polling)
        await settled(client)  # a create still unanswered at the failure is stopped after
        assert_all_ended(emu)
        assert sorted(statuses(emu)) == ["failed", "stopped", "stopped", "stopped"]
        assert emu.stats()["stops"] == 3
    errors = caught.value.exceptions
    assert len(errors) == 1
    assert isinstance(errors[0], TaskFailedError)
    assert "item 2 failed" in str(errors[0])
    assert getattr(errors[0], "__notes__", []) == ["(request 2 of run_many)"]
    assert client.metrics["in_flight_runs"] == 0


async def test_fail_fast_can_be_caught_with_except_star() -> None:
    async with served() as (_, client):
        caught: list[BaseException] = []
        try:
            await client.tasks.run_many([req(0, fail=True)], polling_options=POLL)
        except ExceptionGroup as group:  # ``except* TaskFailedError`` on 3.11+
            match, rest = group.split(TaskFailedError)
            assert rest is None
            assert match is not None
            caught.extend(match.exceptions)
    assert len(caught) == 1


async def test_return_exceptions_collects_every_outcome() -> None:
    finished: dict[int, Any] = {}
    async with served() as (emu, client):
        outcomes = await client.tasks.run_many(
            [req(0, 0.03), req(1, fail=True), req(2), req(3, fail=True)],
            max_concurrency=2,
            polling_options=POLL,
            return_exceptions=True,
            on_result=lambda index, outcome: finished.__setitem__(index, outcome),
        )
        assert sorted(statuses(emu)) == ["completed", "completed", "failed", "failed"]
    assert result_of(outcomes[0]) == {"i": 0}
    assert isinstance(outcomes[1], TaskFailedError)
    assert result_of(outcomes[2]) == {"i": 2}
    assert isinstance(outcomes[3], TaskFailedError)
    assert finished == dict(enumerate(outcomes))


async def test_outer_cancellation_stops_every_created_task() -> None:
    async with served() as (emu, client):
        running: set[int] = set()

        def on_progress(index: int, task: Any) -> None:
            if task["status"] == "running":
                running.add(index)
                if len(running) == 3:
                    scope.cancel()

        with anyio.CancelScope() as scope:
            await client.tasks.run_many(
                [req(i, LONG) for i in range(10)],
                max_concurrency=3,
                polling_options=poll(on_progress=on_progress),
            )
        assert scope.cancelled_caught
        assert statuses(emu) == ["stopped"] * 3
        assert_all_ended(emu)
    assert client.metrics["in_flight_runs"] == 0


async def test_timeout_around_run_many_stops_every_created_task() -> None:
    async with served() as (emu, client):
        with anyio.move_on_after(0.1) as scope:
            await client.tasks.run_many([req(i, LONG) for i in range(4)], polling_options=POLL)
        assert scope.cancelled_caught
        await settled(client)  # a create unanswered at the deadline is stopped after
        assert set(statuses(emu)) <= {"stopped"}
        assert_all_ended(emu)


async def test_cancelled_while_creating_still_stops_the_task() -> None:
    async def cancel_once_sent() -> None:
        await until(lambda: bool(emu.stats()["requests"].get("POST /v1/tasks")))
        group.cancel_scope.cancel()

    async with served() as (emu, client):
        emu.faults.add(FaultRule(route="POST /v1/tasks", latency=(0.1, 0.1)))
        async with anyio.create_task_group() as group:
            group.start_soon(cancel_once_sent)
            await client.tasks.run_many([req(0, LONG)], polling_options=POLL)
        assert statuses(emu) == []  # the batch did not wait for the create's answer
        await settled(client)  # the service group stopped the task once its id came
        assert statuses(emu) == ["stopped"]


async def test_on_result_error_propagates_and_stops_the_rest() -> None:
    def on_result(index: int, outcome: Any) -> None:
        raise LookupError("consumer broke")

    async with served() as (emu, client):
        with pytest.raises(LookupError, match="consumer broke"):
            await client.tasks.run_many(
                [req(0), req(1, LONG), req(2, LONG)],
                polling_options=poll(on_progress=gate(emu, {0}, tasks=3)),
                on_result=on_result,
            )
        await settled(client)
        assert sorted(statuses(emu)) == ["completed", "stopped", "stopped"]


async def test_failing_input_iterator_fails_the_batch() -> None:
    async def requests() -> AsyncIterator[Any]:
        yield req(0, LONG)
        yield req(1, LONG)
        await until(lambda: len(emu.tasks) >= 2)
        raise OSError("input broke")

    async with served() as (emu, client):
        with pytest.raises(ExceptionGroup) as caught:
            await client.tasks.run_many(requests(), polling_options=POLL, return_exceptions=True)
        await settled(client)
        assert statuses(emu) == ["stopped"] * 2
    assert [type(e) for e in caught.value.exceptions] == [OSError]


# -- run_many_iter ---------------------------------------------------------------------------


async def test_iter_yields_in_completion_order() -> None:
    done: list[int] = []
    seen: list[tuple[int, int]] = []
    async with (
        served() as (_, client),
        client.tasks.run_many_iter(
            [req(i) for i in range(4)],
            max_concurrency=4,
            polling_options=poll(on_progress=in_reverse(done, 4)),
        ) as outcomes,
    ):
        async for index, outcome in outcomes:
            done.append(index)
            seen.append((index, outcome["result"]["i"]))
    assert seen == [(3, 3), (2, 2), (1, 1), (0, 0)]


async def test_iter_early_break_stops_the_runs_in_flight() -> None:
    pulled = 0

    def requests() -> Iterator[Any]:
        nonlocal pulled
        for i in range(1000):
            pulled += 1
            yield req(i, 0.0 if i == 0 else LONG)

    async with served() as (emu, client):
        polling = poll(on_progress=gate(emu, {0}, tasks=3))
        async with client.tasks.run_many_iter(
            requests(), max_concurrency=3, polling_options=polling
        ) as outcomes:
            async for index, _ in outcomes:
                assert index == 0
                break
        await settled(client)
        assert_all_ended(emu)
        # Run 0's slot frees as it is received, so a 4th run may have started
        # before the break: it is stopped like the others.
        ended = sorted(statuses(emu))
        assert ended[0] == "completed"
        assert ended[1:] in (["stopped"] * 2, ["stopped"] * 3)
        assert client.metrics["in_flight_runs"] == 0
    assert pulled <= 4


async def test_iter_fail_fast_raises_at_block_exit() -> None:
    received: list[int] = []

    async def hold_back_the_failure(index: int, task: Any) -> None:
        if index == 1:  # fails only once run 0 was received and run 2 exists
            await until(lambda: received == [0] and len(emu.tasks) == 3)

    async def consume() -> None:
        async with client.tasks.run_many_iter(
            [req(0), req(1, fail=True), req(2, LONG)],
            polling_options=poll(on_progress=hold_back_the_failure),
        ) as outcomes:
            async for index, _ in outcomes:
                received.append(index)

    async with served() as (emu, client):
        with pytest.raises(ExceptionGroup) as caught:
            await consume()
        await settled(client)
        assert sorted(statuses(emu)) == ["completed", "failed", "stopped"]
    assert received == [0]
    assert [type(e) for e in caught.value.exceptions] == [TaskFailedError]


async def test_iter_return_exceptions() -> None:
    async with (
        served() as (_, client),
        client.tasks.run_many_iter(
            [req(0, 0.03), req(1, fail=True)], polling_options=POLL, return_exceptions=True
        ) as outcomes,
    ):
        got = {index: outcome async for index, outcome in outcomes}
    assert result_of(got[0]) == {"i": 0}
    assert isinstance(got[1], TaskFailedError)


async def test_iter_error_in_the_body_propagates_bare() -> None:
    async def consume() -> None:
        async with client.tasks.run_many_iter(
            [req(0), req(1, LONG)], polling_options=poll(on_progress=gate(emu, {0}, 2))
        ) as outcomes:
            async for _ in outcomes:
                raise KeyError("body")

    async with served() as (emu, client):
        with pytest.raises(KeyError):
            await consume()
        await settled(client)
        assert sorted(statuses(emu)) == ["completed", "stopped"]


# -- bad input -------------------------------------------------------------------------------


BAD_ARGUMENTS: list[tuple[dict[str, Any], type[Exception]]] = [
    ({"max_concurrency": 0}, ValueError),
    ({"max_concurrency": -3}, ValueError),
    ({"max_concurrency": 2.0}, TypeError),
    ({"max_concurrency": "4"}, TypeError),
    ({"max_concurrency": True}, TypeError),
    ({"max_concurrency": 2, "limiter": "limiter"}, ValueError),
    ({"limiter": 4}, TypeError),
    ({"max_per_second": 0}, ValueError),
    ({"max_per_second": -1.5}, ValueError),
    ({"max_per_second": math.inf}, ValueError),
    ({"max_per_second": math.nan}, ValueError),
    ({"max_per_second": "10"}, TypeError),
    ({"max_per_second": True}, TypeError),
    ({"return_exceptions": 1}, TypeError),
    ({"polling_options": {"interval_ms": 0}}, ValueError),
    ({"polling_options": {"on_progress": 3}}, TypeError),
]
NOT_ITERABLES_OF_REQUESTS: list[Any] = [
    {"manifest": "t::item"},  # one request, not an iterable of them
    "t::item",
    b"t::item",
    42,
    None,
]
BAD_ITEMS: list[tuple[Any, type[Exception]]] = [
    ("t::item", TypeError),
    ({"inputValues": {}}, ValueError),
    ({"manifest": "t::item", "extra": 1}, ValueError),
    ({"manifest": ""}, ValueError),
    ({"manifest": "t::item", "inputValues": 5}, TypeError),
]


async def test_bad_arguments_fail_before_anything_starts() -> None:
    async with served() as (emu, client):
        for kwargs, error in BAD_ARGUMENTS:
            with pytest.raises(error):
                await client.tasks.run_many([req(0)], **kwargs)
            with pytest.raises(error):  # checked by the call, before ``async with``
                client.tasks.run_many_iter([req(0)], **kwargs)
        with pytest.raises(ValueError, match="not both"):
            await client.tasks.run_many(
                [req(0)], max_concurrency=2, limiter=anyio.CapacityLimiter(2)
            )
        for requests in NOT_ITERABLES_OF_REQUESTS:
            with pytest.raises(TypeError):
                await client.tasks.run_many(requests)
        assert emu.stats()["tasks_created"] == 0


async def test_bad_item_in_a_sequence_fails_before_anything_starts() -> None:
    async with served() as (emu, client):
        for bad, error in BAD_ITEMS:
            for requests in ([req(0), req(1), bad], (req(0), bad)):
                with pytest.raises(error, match=r"requests\[\d\]"):
                    await client.tasks.run_many(requests)
                with pytest.raises(error, match=r"requests\[\d\]"):
                    client.tasks.run_many_iter(requests)
        assert emu.stats()["tasks_created"] == 0


async def test_bad_item_in_lazy_input_fails_fast() -> None:
    async def requests() -> AsyncIterator[Any]:
        yield req(0, LONG)
        await until(lambda: len(emu.tasks) >= 1)
        yield {"manifest": 7}
        yield req(2, LONG)

    async with served() as (emu, client):
        with pytest.raises(ExceptionGroup) as caught:
            await client.tasks.run_many(requests(), polling_options=POLL)
        await settled(client)
        assert statuses(emu) == ["stopped"]
    [error] = caught.value.exceptions
    assert isinstance(error, TypeError)
    assert "request 1" in str(error)


async def test_bad_item_in_lazy_input_is_held_with_return_exceptions() -> None:
    async def requests() -> AsyncIterator[Any]:
        yield req(0)
        yield {"manifest": "t::item", "nope": 1}
        yield req(2)

    async with served() as (emu, client):
        outcomes = await client.tasks.run_many(
            requests(), polling_options=POLL, return_exceptions=True
        )
        assert emu.stats()["tasks_created"] == 2
    assert result_of(outcomes[0]) == {"i": 0}
    assert isinstance(outcomes[1], ValueError)
    assert result_of(outcomes[2]) == {"i": 2}

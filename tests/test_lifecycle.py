"""The task lifecycle on asyncio and trio: the service group, cleanup stops that keep
trying, creates reconciled after a lost answer, aclose() with runs in flight, hook errors,
and base exceptions that come out bare."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from helpers import HeldCreates, served, settled

from oomol_connect_anyio import OomolConnectClient, OomolConnectError, _errors, _lifecycle
from oomol_connect_anyio._reconcile import CLOCK_SKEW_MS, reconcile_create
from oomol_connect_anyio.emulator import Emulator, FaultRule, serve_emulator

pytestmark = pytest.mark.anyio

FAST: Any = {"interval_ms": 10, "backoff_strategy": "fixed"}
LONG: Any = {"manifest": "demo::sleep", "inputValues": {"seconds": 1000}}
GUARD = 20  # seconds: only a hung call would reach it


async def until(condition: Any) -> None:
    with anyio.fail_after(GUARD):
        while not condition():  # noqa: ASYNC110 - the emulator has no event to wait on
            await anyio.sleep(0.005)


def running(emulator: Emulator) -> int:
    ended = ("completed", "failed", "stopped")
    return sum(task.status not in ended for task in emulator.tasks.values())


# -- the service group ------------------------------------------------------------------------


async def cancel_once_the_create_is_held(client: OomolConnectClient, held: HeldCreates) -> None:
    """Run LONG, cancelled once the server holds its create; a call that waited for the
    create's answer would hang here."""
    async with anyio.create_task_group() as group:

        async def run() -> None:
            await client.tasks.run(LONG, FAST)  # a ServerError here would escape the group

        group.start_soon(run)
        await held.arrived.wait()
        group.cancel_scope.cancel()


async def test_a_cancel_during_a_late_create_returns_before_the_answer() -> None:
    emulator = Emulator()
    held = HeldCreates(emulator)
    async with served(emulator) as client:
        with anyio.fail_after(GUARD):
            await cancel_once_the_create_is_held(client, held)
            assert emulator.stats()["tasks_created"] == 0  # returned before the create answered
            held.release.set()
            await settled(client)
        assert emulator.stats()["tasks_created"] == 1
        assert emulator.stats()["tasks_by_status"] == {"stopped": 1}


async def test_a_create_error_never_replaces_the_cancellation() -> None:
    emulator = Emulator()
    held = HeldCreates(emulator)
    emulator.faults.add(FaultRule(route="POST /v1/tasks", error_rate=1.0, error_statuses=(500,)))
    async with served(emulator) as client:
        with anyio.fail_after(GUARD):
            await cancel_once_the_create_is_held(client, held)
            held.release.set()  # the create is answered 500 after the cancellation
            await settled(client)
    assert emulator.stats()["statuses"]["POST /v1/tasks"] == {"500": 1}
    assert emulator.stats()["tasks_created"] == 0


async def test_a_hung_create_without_a_request_timeout_is_cut_by_aclose(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_lifecycle, "CLOSE_DEADLINE", 0.2)  # 6 s, shortened
    caplog.set_level(logging.WARNING, logger="oomol_connect_anyio")
    emulator = Emulator()
    emulator.faults.add(FaultRule(route="POST /v1/tasks", hang=60))
    with anyio.fail_after(GUARD):
        async with served(emulator, timeout=None) as client:
            with anyio.move_on_after(0.1) as scope:
                await client.tasks.run(LONG, FAST)
            assert scope.cancelled_caught
    assert any("gave up creating" in record.getMessage() for record in caplog.records)


async def test_aclose_with_runs_in_flight_cancels_them_and_stops_their_tasks() -> None:
    emulator = Emulator()
    outcomes: list[BaseException] = []
    async with serve_emulator(emulator, host="127.0.0.1", port=0) as url:
        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as group:
                client = OomolConnectClient(base_url=url, retry_delay=0.001)
                await client.__aenter__()

                async def run() -> None:
                    try:
                        await client.tasks.run(LONG, FAST)
                    except Exception as exc:
                        outcomes.append(exc)

                for _ in range(5):
                    group.start_soon(run)
                await until(lambda: running(emulator) == 5)
                await client.aclose()
    assert len(outcomes) == 5
    assert all(isinstance(exc, OomolConnectError) and "closed" in str(exc) for exc in outcomes)
    assert emulator.stats()["tasks_by_status"] == {"stopped": 5}


# -- the cleanup stop -------------------------------------------------------------------------


async def test_a_caller_cancelled_before_its_create_sends_nothing(anyio_backend: str) -> None:
    # A client used without `async with` creates inline, under a shield; a run already
    # cancelled when it gets there (an aborting batch's run started a moment before the
    # abort) must not send a create that the shield would then carry through.
    emulator = Emulator()
    async with serve_emulator(emulator, host="127.0.0.1", port=0) as url:
        client = OomolConnectClient(base_url=url, retry_delay=0.001)
        try:
            with anyio.CancelScope() as scope:
                scope.cancel()
                await client.tasks.run(LONG, FAST)
        finally:
            await client.aclose()
    assert emulator.stats()["tasks_created"] == 0


async def test_a_stop_is_never_sent_for_a_task_seen_terminal() -> None:
    emulator = Emulator()
    async with served(emulator) as client:
        with pytest.raises(Exception, match="failed"):
            await client.tasks.run({"manifest": "demo::fail", "inputValues": {"message": "x"}})
        await settled(client)
    assert emulator.stats()["stops"] == 0


# -- hooks ------------------------------------------------------------------------------------


async def test_a_hook_error_after_a_create_stops_the_created_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook_error = getattr(_errors, "HookError")  # noqa: B009 - may come from the transport

    emulator = Emulator()
    async with served(emulator) as client:
        send = client._transport.request

        async def request(method: str, route: str, *params: str, **kwargs: Any) -> Any:
            body = await send(method, route, *params, **kwargs)
            if method == "POST" and route == "/v1/tasks":
                error = hook_error("on_response failed")
                error.body = body
                raise error
            return body

        monkeypatch.setattr(client._transport, "request", request)
        with pytest.raises(hook_error):
            await client.tasks.run(LONG, FAST)
        await settled(client)
    assert emulator.stats()["tasks_created"] == 1
    assert emulator.stats()["tasks_by_status"] == {"stopped": 1}


# -- creates reconciled -----------------------------------------------------------------------


async def test_a_create_whose_answer_was_dropped_is_adopted_not_sent_again() -> None:
    emulator = Emulator()
    emulator.faults.add(FaultRule(route="POST /v1/tasks", drop_rate=1.0, drop_after_accept=True))
    async with served(emulator) as client:
        result = await client.tasks.run(
            {"manifest": "demo::upper", "inputValues": {"text": "abc"}}, FAST
        )
    assert result["result"] == {"text": "ABC"}
    assert emulator.stats()["tasks_created"] == 1
    assert emulator.stats()["requests"]["POST /v1/tasks"] == 1
    assert emulator.stats()["requests"]["GET /v1/tasks"] == 1


async def test_a_create_that_never_reached_the_server_is_sent_again_once() -> None:
    emulator = Emulator()
    emulator.faults.add(FaultRule(route="POST /v1/tasks", error_rate=1.0, error_statuses=(502,)))

    def heal(event: Any) -> None:  # once the first create was refused, before its lookup
        if event.status == 502:
            emulator.faults.clear()

    async with served(emulator, on_response=heal) as client:
        task = await client.tasks.create({"manifest": "demo::upper", "inputValues": {"text": "a"}})
    assert emulator.stats()["tasks_created"] == 1
    assert list(emulator.tasks) == [task["id"]]


def call(manifest: str = "demo::upper", text: str = "a") -> tuple[str, Any]:
    """The target and wire inputs of a create, as reconcile_create takes them."""
    return manifest, [{"nodeId": "_", "inputs": [{"handle": "text", "value": text}]}]


def listed(task_id: str, created_at: int, text: str = "a", **extra: Any) -> Any:
    return {
        "id": task_id,
        "status": "running",
        "manifest_path": "/oomol/packages/demo-1.0.0/blocks/upper",
        "inputValues": [{"nodeId": "_", "inputs": [{"handle": "text", "value": text}]}],
        "created_at": created_at,
        **extra,
    }


def test_reconcile_adopts_exactly_one_match_and_never_guesses() -> None:
    sent = 1_000_000.0
    skew = CLOCK_SKEW_MS

    def reconcile(tasks: Any, create: tuple[str, Any], sent: float, claimed: Any = ()) -> Any:
        return reconcile_create(tasks, *create, sent, claimed)

    assert reconcile([listed("a", 1_000_100)], call(), sent) == (listed("a", 1_000_100), [])
    # other inputs, another block, too old, or already ours: no match, create again
    assert reconcile([listed("a", 1_000_100, text="b")], call(), sent) == (None, [])
    assert reconcile([listed("a", 1_000_100)], call("demo::echo"), sent) == (None, [])
    assert reconcile([listed("a", int(sent - skew - 1))], call(), sent) == (None, [])
    assert reconcile([listed("a", 1_000_100)], call(), sent, {"a"}) == (None, [])
    # the server's clock may run behind ours by up to the skew
    assert reconcile([listed("a", int(sent - skew))], call(), sent)[0] is not None
    # several matches, or one the listing cannot tell: neither adopted nor created again
    two = [listed("a", 1_000_100), listed("b", 1_000_200)]
    assert reconcile(two, call(), sent) == (None, ["a", "b"])
    unsure = {**listed("c", 1_000_100)}
    del unsure["inputValues"]
    assert reconcile([unsure], call(), sent) == (None, ["c"])
    # both path layouts, and a flow by name
    other = listed("a", 1_000_100, manifest_path="/x/packages/demo/1.0.0/blocks/upper/block.yaml")
    assert reconcile([other], call(), sent)[0] is not None
    flow = listed("f", 1_000_100, manifest_path="/oomol/flows/demo-flow/flow.oo.yaml")
    assert reconcile([flow], call("demo-flow"), sent)[0] is not None


# -- base exceptions come out bare ------------------------------------------------------------


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3)])
async def test_base_exceptions_leave_watch_and_run_many_iter_bare(error: BaseException) -> None:
    emulator = Emulator()
    async with served(emulator) as client:
        task = await client.tasks.create(LONG)

        async def in_watch() -> None:
            async with client.tasks.watch(task["id"], FAST) as events:
                async for _ in events:
                    raise error

        async def in_run_many_iter() -> None:
            async with client.tasks.run_many_iter([LONG, LONG], polling_options=FAST):
                await until(lambda: running(emulator) >= 2)
                raise error

        for block in (in_watch, in_run_many_iter):
            with pytest.raises(type(error)) as caught:
                await block()
            assert type(caught.value) is type(error)
        await client.tasks.stop(task["id"])
        await settled(client)
    assert running(emulator) == 0


async def test_an_abandoned_async_generator_of_requests_is_closed() -> None:
    closed = anyio.Event()

    async def requests() -> AsyncIterator[Any]:
        try:
            for _ in range(100):
                yield LONG
        finally:
            closed.set()

    emulator = Emulator()
    async with served(emulator) as client:
        async with client.tasks.run_many_iter(requests(), polling_options=FAST, max_concurrency=2):
            await until(lambda: running(emulator) >= 2)
        assert closed.is_set()  # at once, not whenever the garbage collector runs
        await settled(client)
    assert running(emulator) == 0



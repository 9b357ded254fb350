"""End to end under the emulator's fault injection: nothing lost, nothing duplicated, nothing
leaked, and every failure a named error (over real loopback sockets, on asyncio and trio)."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus
from soak import (
    TOKEN,
    RecordingTransport,
    SoakConfig,
    fault_runs,
    run_soak,
    summary,
    verify,
    watch_logs,
)

from oomol_connect_anyio import (
    ConnectionError,
    OomolConnectClient,
    RequestTimeoutError,
    TimeoutError,
)
from oomol_connect_anyio.emulator import Emulator, FaultRule, serve_emulator

if sys.version_info < (3, 11):
    pass

pytestmark = pytest.mark.anyio

FAST: Any = {"interval_ms": 20, "backoff_strategy": "fixed"}
# An outage budget short enough for a test that wants a wait to give up on a dead server.
SHORT_BUDGET: Any = {**FAST, "poll_error_budget_ms": 200}
GUARD = 30  # seconds: a bound that only a hung test would reach, even on a loaded machine
LONG = {"manifest": "demo::sleep", "inputValues": {"seconds": 1000}}

# The README states these figures: 500 runs at concurrency 50 at default client settings
# (the transport retry delay shortened as in conftest, which only shortens waits), with
# GET faults, dropped connections, dropped creates and a 3 s full outage.
SOAK = SoakConfig(runs=500, concurrency=50)


@asynccontextmanager
async def served(emulator: Emulator) -> AsyncIterator[str]:
    async with serve_emulator(emulator, host="127.0.0.1", port=0) as url:
        yield url


# --------------------------------------------------------------------------- the soak


async def test_soak_every_run_returns_its_own_result_exactly_once(anyio_backend: str) -> None:
    with anyio.fail_after(120):
        report = await run_soak(SOAK)
    problems = verify(report)
    assert not problems, "\n".join([summary(report), *problems])
    stats = report.stats
    assert stats["tasks_created"] == SOAK.runs == len(set(report.task_ids))
    assert report.metrics["retries"] > 0, "the soak injected no fault: it proves nothing"
    assert report.missed_polls > 0, "no poll outlasted its retries: the outage did not happen"
    assert stats["faults"]["POST /v1/tasks"].get("dropped_after_accept", 0) > 0
    assert any(name.startswith("httpcore") for name in report.log_levels)
    assert any(name.startswith("oomol_connect_anyio") for name in report.log_levels)


async def test_a_fetch_that_exhausts_its_retries_is_a_missed_poll_not_a_lost_run(
    anyio_backend: str,
) -> None:
    emulator = Emulator(seed=5)
    # Instant tasks are never polled (their create answer is terminal): fault the log fetch.
    rule = FaultRule(route="GET /v1/tasks/{id}/logs", error_rate=0.6, error_statuses=(503,))
    emulator.faults.add(rule)
    recorder = RecordingTransport()
    runs = 40
    requests = [{"manifest": "demo::echo", "inputValues": {"run": i}} for i in range(runs)]
    async with (
        served(emulator) as url,
        OomolConnectClient(base_url=url, retry_delay=0.001, transport=recorder) as client,
    ):
        with anyio.fail_after(GUARD):
            outcomes = await client.tasks.run_many(
                requests, max_concurrency=20, polling_options=FAST, return_exceptions=True
            )
        retries = client.metrics["retries"]
    assert [outcome for outcome in outcomes if isinstance(outcome, Exception)] == []
    assert [outcome["result"] for outcome in outcomes] == [r["inputValues"] for r in requests]
    missed = sum(outcome["stats"]["missed_polls"] for outcome in outcomes)
    assert missed > 0, "no fetch exhausted its retries: raise error_rate"
    stats = emulator.stats()
    assert stats["tasks_created"] == runs
    injected = stats["faults"]["GET /v1/tasks/{id}/logs"]["error"]
    # Each fault was either retried by the transport or, its retries spent, ridden out as a
    # missed poll that the wait's schedule repeated.
    assert retries + missed == injected
    chains = [
        chain
        for path, attempts in recorder.by_path("GET").items()
        if path.endswith("/logs")
        for chain in fault_runs(attempts)
    ]
    assert all(final is not None and final.status == 200 for _, final in chains)
    assert max(faults for faults, _ in chains) > 3  # longer than one request's 1 + max_retries
    assert set(stats["tasks_by_status"]) == {"completed"}


# --------------------------------------------------------------------------- dropped creation

Create = Callable[[OomolConnectClient], Awaitable[Any]]
QUICK = {"manifest": "demo::echo", "inputValues": {"a": 1}}
CREATES: list[tuple[str, Create]] = [
    ("create", lambda c: c.tasks.create(QUICK)),
    ("create_with_files", lambda c: c.tasks.create_with_files("demo::count-bytes", {}, b"xyz")),
    ("run", lambda c: c.tasks.run(QUICK, FAST)),
    ("create_and_wait", lambda c: c.tasks.create_and_wait(QUICK, FAST)),
]


@pytest.mark.parametrize("call", [pytest.param(call, id=name) for name, call in CREATES])
async def test_a_creation_dropped_after_accept_is_adopted_not_reposted(
    emulator: Emulator, client: OomolConnectClient, call: Create
) -> None:
    emulator.faults.add(FaultRule(route="POST /v1/tasks", drop_rate=1.0, drop_after_accept=True))
    with anyio.fail_after(GUARD):
        await call(client)
    stats = emulator.stats()
    assert stats["requests"]["POST /v1/tasks"] == 1
    assert stats["tasks_created"] == 1
    assert stats["requests"]["GET /v1/tasks"] == 1  # the look-up that found it


@pytest.mark.parametrize("call", [pytest.param(call, id=name) for name, call in CREATES])
async def test_a_creation_dropped_before_accept_is_sent_again_after_a_look_up(
    emulator: Emulator, client: OomolConnectClient, call: Create
) -> None:
    emulator.faults.add(FaultRule(route="POST /v1/tasks", drop_rate=1.0))
    with anyio.fail_after(GUARD), pytest.raises(ConnectionError) as info:
        await call(client)
    error = info.value
    assert type(error) is ConnectionError
    assert error.may_have_reached_server is True
    assert error.request_method == "POST"
    assert error.url.endswith("/v1/tasks")
    assert "may already exist" in str(error)
    stats = emulator.stats()
    assert stats["requests"]["POST /v1/tasks"] == 3  # each time none matched: max_retries=2
    assert stats["requests"]["GET /v1/tasks"] == 3
    assert stats["tasks_created"] == 0


async def test_dropped_creation_inside_run_many_is_adopted_without_a_second_task(
    emulator: Emulator, client: OomolConnectClient
) -> None:
    emulator.faults.add(FaultRule(route="POST /v1/tasks", drop_rate=1.0, drop_after_accept=True))
    with anyio.fail_after(GUARD):
        [result] = await client.tasks.run_many([QUICK], polling_options=FAST)
    assert result["result"] == {"a": 1}
    assert emulator.stats()["tasks_created"] == 1


# --------------------------------------------------------------------------- server down


@pytest.mark.parametrize("stop_on_cancel", [True, False])
async def test_server_down_mid_wait_is_a_connection_error_once_the_budget_is_spent(
    anyio_backend: str,
    stop_on_cancel: bool,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from oomol_connect_anyio import _concurrency

    monkeypatch.setattr(_concurrency, "STOP_DEADLINE", 0.2)  # 3 s, shortened
    caplog.set_level(logging.WARNING, logger="oomol_connect_anyio")
    emulator = Emulator()
    recorder = RecordingTransport()
    shutdown = anyio.Event()
    ids: list[str] = []

    async def serve(*, task_status: TaskStatus[str]) -> None:
        async with serve_emulator(emulator, host="127.0.0.1", port=0) as url:
            task_status.started(url)
            await shutdown.wait()

    def progress(task: Any) -> None:
        ids.append(task["id"])
        if task["status"] == "running":
            shutdown.set()  # the server goes away while the wait goes on

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as group:
            url = await group.start(serve)
            async with OomolConnectClient(
                base_url=url, retry_delay=0.001, transport=recorder
            ) as client:
                with pytest.raises(ConnectionError) as info:
                    await client.tasks.run(
                        LONG,
                        # A budget that outlasts a first poll held up by the server's
                        # shutdown, so that more polls than one request's attempts fail.
                        {**FAST, "poll_error_budget_ms": 1000, "on_progress": progress,
                         "stop_on_cancel": stop_on_cancel},
                    )
                metrics = client.metrics
    error = info.value
    # The wait's own error, not one from the (failed) stop that followed it.
    assert type(error) is ConnectionError
    assert error.request_method == "GET"
    assert error.url.endswith(f"/v1/tasks/{ids[0]}")
    assert error.may_have_reached_server is False
    polls = fault_runs(recorder.by_path("GET")[f"/api/v1/tasks/{ids[0]}"])
    faults, final = polls[-1]
    assert final is None  # the wait ended on the error of its last poll ...
    assert faults > 3  # ... after missed polls beyond one request's 1 + max_retries attempts
    stops = recorder.by_path("POST").get(f"/api/v1/tasks/{ids[0]}/stop", [])
    warnings = [r for r in caplog.records if "stop" in r.getMessage() and ids[0] in r.getMessage()]
    if stop_on_cancel:
        # The stop keeps trying until its deadline, and its failure is logged once, not raised.
        assert len(stops) > 1
        assert all(attempt.error is not None for attempt in stops)
        assert len(warnings) == 1
        assert warnings[0].levelno == logging.WARNING
    else:
        assert stops == []
        assert warnings == []
    assert metrics["stops_sent"] == 0
    assert metrics["in_flight_runs"] == 0
    assert emulator.stats()["stops"] == 0


# --------------------------------------------------------------------------- slow server


@pytest.mark.parametrize("max_retries", [0, 2])
async def test_a_hanging_get_hits_the_per_request_timeout(
    emulator: Emulator, emulator_url: str, max_retries: int
) -> None:
    async with OomolConnectClient(
        base_url=emulator_url, timeout=0.2, max_retries=max_retries, retry_delay=0.001
    ) as client:
        task = await client.tasks.create(LONG)
        emulator.faults.add(FaultRule(route="GET /v1/tasks/{id}", hang=30))
        with anyio.fail_after(GUARD), pytest.raises(RequestTimeoutError) as info:
            await client.tasks.get(task["id"])
    assert isinstance(info.value, ConnectionError)
    assert info.value.may_have_reached_server is False
    assert emulator.stats()["requests"]["GET /v1/tasks/{id}"] == 1 + max_retries


async def test_a_hanging_create_times_out_once_and_is_not_reposted(
    emulator: Emulator, emulator_url: str
) -> None:
    emulator.faults.add(FaultRule(route="POST /v1/tasks", hang=30))
    async with OomolConnectClient(
        base_url=emulator_url, timeout=0.2, max_retries=3, retry_delay=0.001
    ) as client:
        with anyio.fail_after(GUARD), pytest.raises(RequestTimeoutError) as info:
            await client.tasks.run(LONG, FAST)
    assert info.value.may_have_reached_server is True
    assert "may already exist" in str(info.value)
    assert emulator.stats()["requests"]["POST /v1/tasks"] == 1  # looked up, not re-sent
    assert emulator.stats()["requests"]["GET /v1/tasks"] == 1


async def test_wait_timeout_fires_while_a_poll_hangs_and_the_task_is_stopped(
    emulator: Emulator, client: OomolConnectClient
) -> None:
    ids: list[str] = []
    rule = FaultRule(route="GET /v1/tasks/{id}", hang=30)

    def progress(task: Any) -> None:
        ids.append(task["id"])
        if rule not in emulator.faults.rules:
            emulator.faults.add(rule)  # every poll after the first one hangs

    with anyio.fail_after(GUARD), pytest.raises(TimeoutError) as info:
        await client.tasks.run(LONG, {**FAST, "timeout_ms": 300, "on_progress": progress})
    assert info.value.task_id == ids[0]
    assert info.value.task is not None
    assert info.value.task["status"] == "running"
    assert emulator.task_status(ids[0]) == "stopped"
    assert client.metrics["stops_sent"] == 1


# --------------------------------------------------------------------------- secrets


async def test_token_stays_out_of_every_log_and_error_while_things_fail(
    anyio_backend: str,
) -> None:
    """Every failure path above, with a token, with DEBUG logging on (the soak checks
    the token-bearing happy and retry paths)."""
    emulator = Emulator(token=TOKEN)
    errors: list[BaseException] = []
    with watch_logs(TOKEN) as watch, anyio.fail_after(GUARD):
        async with (
            served(emulator) as url,
            OomolConnectClient(
                base_url=url, api_token=TOKEN, timeout=0.2, max_retries=1, retry_delay=0.001
            ) as client,
        ):
            task = await client.tasks.create(LONG)
            for rule in [
                FaultRule(route="POST /v1/tasks", drop_rate=1.0, drop_after_accept=True),
                FaultRule(route="GET /v1/tasks/{id}", error_rate=1.0, error_statuses=(503,)),
                FaultRule(route="GET /v1/tasks/{id}", rate_limit_every=1, retry_after=0),
                FaultRule(route="GET /v1/tasks/{id}", drop_rate=1.0),
                FaultRule(route="GET /v1/tasks/{id}", hang=30),
            ]:
                emulator.faults.clear()
                emulator.faults.add(rule)
                try:  # a dropped create is adopted: the run then times out
                    await client.tasks.run(LONG, {**SHORT_BUDGET, "timeout_ms": 300})
                except Exception as exc:
                    errors.append(exc)
                try:
                    await client.tasks.wait_for_completion(
                        task["id"], {**SHORT_BUDGET, "timeout_ms": 200}
                    )
                except Exception as exc:
                    errors.append(exc)
            emulator.faults.clear()
            async with OomolConnectClient(base_url=url, api_token="wrong") as other:
                try:
                    await other.tasks.list()
                except Exception as exc:
                    errors.append(exc)
            texts = [repr(client), str(client), repr(client.metrics), repr(vars(client))]
    assert len(errors) == 11
    assert watch.records > 0
    assert watch.leaks == []
    for error in errors:
        for item in (error, error.__cause__, error.__context__):
            texts += [repr(item), str(item), repr(getattr(item, "__dict__", ""))]
    assert not [text for text in texts if TOKEN in text]

"""The blocking facade, against a real emulator served from a background thread."""

from __future__ import annotations

import inspect
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError, ThreadPoolExecutor
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from oomol_connect_anyio import (
    CreateTaskRequest,
    PollingOptions,
    TaskFailedError,
    TaskLogEvent,
    TaskProgress,
    TimeoutError,
)
from oomol_connect_anyio._sync import SyncOomolConnectClient
from oomol_connect_anyio.emulator import Emulator, serve_emulator

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

FAST: PollingOptions = {"interval_ms": 10, "backoff_strategy": "fixed"}
SLEEP_30: CreateTaskRequest = {"manifest": "demo::sleep", "inputValues": {"seconds": 30}}


@pytest.fixture(scope="module")
def server_portal() -> Iterator[BlockingPortal]:
    """An event loop in a background thread that serves the emulators."""
    with start_blocking_portal("asyncio") as portal:
        yield portal


@pytest.fixture
def emu() -> Emulator:
    return Emulator()


@pytest.fixture
def url(server_portal: BlockingPortal, emu: Emulator) -> Iterator[str]:
    with server_portal.wrap_async_context_manager(serve_emulator(emu, port=0)) as base_url:
        yield base_url


@pytest.fixture(params=["asyncio", "trio"])
def client(request: pytest.FixtureRequest, url: str) -> Iterator[SyncOomolConnectClient]:
    with SyncOomolConnectClient(base_url=url, retry_delay=0.001, backend=request.param) as c:
        yield c


def task_of(emu: Emulator, manifest: str) -> str:
    """The id of the one task of ``manifest``."""
    (task_id,) = (task_id for task_id, task in emu.tasks.items() if task.manifest == manifest)
    return task_id


def wait_until_waiting(client: SyncOomolConnectClient) -> None:
    """Return once a run has created its task and waits for it (within 5 s)."""
    deadline = time.monotonic() + 5
    while not client.metrics["in_flight_runs"]:
        assert time.monotonic() < deadline, "no run started"
        time.sleep(0.01)


def test_lists_and_runs(client: SyncOomolConnectClient) -> None:
    block_ids = {b["blockId"] for b in client.blocks.list()["blocks"]}
    assert "demo::upper" in block_ids
    assert [f["name"] for f in client.flows.list()["flows"]] == ["demo-flow"]
    assert any(p["name"] == "demo" for p in client.packages.list()["packages"])
    run = client.tasks.run({"manifest": "demo::upper", "inputValues": {"text": "hi"}}, FAST)
    assert run["result"] == {"text": "HI"}
    assert run["task"]["status"] == "completed"
    assert client.metrics["in_flight_runs"] == 0


def test_create_then_wait(client: SyncOomolConnectClient) -> None:
    task = client.tasks.create({"manifest": "demo::echo", "inputValues": {"a": 1}})
    assert client.tasks.get(task["id"])["id"] == task["id"]
    done = client.tasks.wait_for_completion(task["id"], FAST)
    assert done["status"] == "completed"
    assert any(log["type"] == "BlockFinished" for log in client.tasks.get_logs(task["id"]))


def test_files_and_installs(client: SyncOomolConnectClient) -> None:
    run = client.tasks.run_with_files("demo::count-bytes", {}, [("a.bin", b"abc")], FAST)
    assert run["result"]["total"] == 3
    installed = client.packages.install_and_wait("text-tools", polling_options=FAST)
    assert installed["status"] == "success"


def test_errors_keep_their_types(client: SyncOomolConnectClient, emu: Emulator) -> None:
    with pytest.raises(TaskFailedError, match="boom") as failed:
        client.tasks.run({"manifest": "demo::fail", "inputValues": {"message": "boom"}}, FAST)
    assert failed.value.task_id in emu.tasks
    with pytest.raises(TimeoutError) as timed_out:
        client.tasks.run(SLEEP_30, {**FAST, "timeout_ms": 100})
    assert emu.task_status(timed_out.value.task_id) == "stopped"
    with pytest.raises(ValueError, match="unknown polling option"):
        client.tasks.run({"manifest": "demo::echo"}, {"nope": 1})


def test_watch_is_a_blocking_iterator(client: SyncOomolConnectClient) -> None:
    task = client.tasks.create({"manifest": "demo::progress", "inputValues": {"steps": 3}})
    with client.tasks.watch(task["id"], FAST) as events:
        items = list(events)
    logs = [
        e.log["event"]["log"]
        for e in items
        if isinstance(e, TaskLogEvent) and e.log["type"] == "BlockLog"
    ]
    assert logs == ["step 1/3", "step 2/3", "step 3/3"]
    assert isinstance(items[-1], TaskProgress)
    assert items[-1].task["status"] == "completed"


def test_run_many(client: SyncOomolConnectClient) -> None:
    requests: list[CreateTaskRequest] = [
        {"manifest": "demo::upper", "inputValues": {"text": f"t{i}"}} for i in range(6)
    ]
    seen: list[int] = []
    runs = client.tasks.run_many(
        requests,
        max_concurrency=3,
        polling_options=FAST,
        on_result=lambda index, _: seen.append(index),
    )
    assert [r["result"]["text"] for r in runs] == [f"T{i}" for i in range(6)]
    assert sorted(seen) == list(range(6))
    bad: list[CreateTaskRequest] = [{"manifest": "demo::fail"}, {"manifest": "demo::echo"}]
    outcomes = client.tasks.run_many(bad, polling_options=FAST, return_exceptions=True)
    assert isinstance(outcomes[0], TaskFailedError)
    with pytest.raises(ExceptionGroup) as group:
        client.tasks.run_many(bad, polling_options=FAST)
    assert group.group_contains(TaskFailedError)


def test_run_many_iter(client: SyncOomolConnectClient, emu: Emulator) -> None:
    requests: list[CreateTaskRequest] = [
        {"manifest": "demo::echo", "inputValues": {"i": i}} for i in range(4)
    ]
    with client.tasks.run_many_iter(requests, polling_options=FAST) as outcomes:
        results = {index: run["result"]["i"] for index, run in outcomes}
    assert results == {0: 0, 1: 1, 2: 2, 3: 3}
    # Leaving early cancels the runs still going and stops their tasks.
    slow: list[CreateTaskRequest] = [SLEEP_30, {"manifest": "demo::echo"}]
    with client.tasks.run_many_iter(slow, polling_options=FAST) as outcomes:
        index, _ = next(outcomes)
    assert index == 1
    assert emu.task_status(task_of(emu, "demo::sleep")) == "stopped"


def test_four_threads_at_once(client: SyncOomolConnectClient, emu: Emulator) -> None:
    gated: list[int] = []

    def run(i: int) -> Any:
        async def once_all_four_exist(task: Any) -> None:
            # Runs made one after another would wait here until the guard fires.
            with anyio.fail_after(30):
                while len(emu.tasks) < 4:  # noqa: ASYNC110 - the emulator has no event
                    await anyio.sleep(0.005)
            gated.append(i)

        request: CreateTaskRequest = {
            "manifest": "demo::sleep",
            "inputValues": {"seconds": 0.3, "i": i},
        }
        return client.tasks.run(request, {**FAST, "on_progress": once_all_four_exist})["result"]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(4)))
    assert results == [{"slept": 0.3}] * 4
    assert sorted(set(gated)) == [0, 1, 2, 3]  # each run was still going once all four were


def test_close_is_idempotent(url: str) -> None:
    client = SyncOomolConnectClient(base_url=url, backend="trio")
    assert "backend='trio'" in repr(client)
    client.blocks.list()
    client.close()
    client.close()
    assert client.closed
    assert client.metrics["requests"]  # still readable
    with pytest.raises(RuntimeError, match="closed"):
        client.blocks.list()


def test_context_manager_closes(url: str) -> None:
    with SyncOomolConnectClient(base_url=url) as client:
        assert not client.closed
    assert client.closed


def test_bad_arguments_raise_in_the_caller() -> None:
    with pytest.raises(ValueError, match="base_url"):
        SyncOomolConnectClient(base_url="ftp://nowhere")
    with pytest.raises(LookupError):
        SyncOomolConnectClient(backend="curio")


def test_methods_keep_their_signatures(client: SyncOomolConnectClient) -> None:
    assert list(inspect.signature(client.tasks.run).parameters) == ["request", "polling_options"]
    assert client.tasks.run.__doc__ is not None
    assert "RunResult" in client.tasks.run.__doc__


def test_close_cancels_calls_in_flight(url: str, emu: Emulator) -> None:
    client = SyncOomolConnectClient(base_url=url)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(client.tasks.run, SLEEP_30, FAST)
        wait_until_waiting(client)
        client.close()
        with pytest.raises(CancelledError):
            running.result(timeout=5)
    assert emu.task_status(task_of(emu, "demo::sleep")) == "stopped"
    assert client.metrics["stops_sent"] == 1


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals")
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_stops_the_remote_task(url: str, emu: Emulator, backend: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT reaches only the main thread")
    main = threading.main_thread().ident
    assert main is not None

    def press_ctrl_c(client: SyncOomolConnectClient) -> None:
        wait_until_waiting(client)
        signal.pthread_kill(main, signal.SIGINT)

    with SyncOomolConnectClient(base_url=url, backend=backend) as client:
        presser = threading.Thread(target=press_ctrl_c, args=(client,))
        presser.start()
        with pytest.raises(KeyboardInterrupt):
            client.tasks.run(SLEEP_30, FAST)
        presser.join()
        # The stop was sent before KeyboardInterrupt reached us.
        assert client.metrics["stops_sent"] == 1
        assert emu.task_status(task_of(emu, "demo::sleep")) == "stopped"
        assert client.tasks.run({"manifest": "demo::echo"}, FAST)["task"]["status"] == "completed"


def test_unclosed_client_does_not_block_exit(url: str) -> None:
    code = (
        "from oomol_connect_anyio._sync import SyncOomolConnectClient\n"
        f"c = SyncOomolConnectClient(base_url={url!r})\n"
        "print(len(c.blocks.list()['blocks']))\n"
    )
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, env=os.environ
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_sync_client_takes_hooks_and_limits_like_the_async_one(url: str, backend: str) -> None:
    import httpx

    from oomol_connect_anyio import RequestEvent, ResponseEvent

    requests: list[RequestEvent] = []
    responses: list[ResponseEvent] = []
    with SyncOomolConnectClient(
        base_url=url,
        backend=backend,  # type: ignore[arg-type]
        on_request=requests.append,
        on_response=responses.append,
        limits=httpx.Limits(max_connections=2),
    ) as client:
        assert client.tasks.list() == {"tasks": []}
    assert [e.route for e in requests] == [e.route for e in responses] == ["GET /v1/tasks"]


def test_bad_arguments_to_the_sync_client_fail_in_the_callers_thread() -> None:
    with pytest.raises(TypeError, match="nonsense"):
        SyncOomolConnectClient(nonsense=1)
    with pytest.raises(ValueError, match="api_token"):
        SyncOomolConnectClient(api_token="caf\u00e9")

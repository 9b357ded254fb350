"""A batch over several Connect servers (``ServerPool``), against emulators on loopback."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
import anyio.abc
import pytest
from helpers import our_running_tasks

from oomol_connect_anyio import (
    ConnectionError,
    OomolConnectClient,
    RateLimitError,
    RequestEvent,
    RunResult,
    ServerError,
    ServerPool,
    TaskFailedError,
)
from oomol_connect_anyio._journal import Journal, request_hash
from oomol_connect_anyio._reconcile import never_created
from oomol_connect_anyio.emulator import Emulator, FaultRule, serve_emulator

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
FAST: Any = {"interval_ms": 20, "backoff_strategy": "fixed"}
SHORT_OUTAGE: Any = {**FAST, "poll_error_budget_ms": 300}  # 60 s by default: a short test
TERMINAL = frozenset({"completed", "failed", "stopped"})


def echo(index: int) -> dict[str, Any]:
    return {"manifest": "demo::echo", "inputValues": {"text": f"job {index}"}}


def sleep(index: int, seconds: float) -> dict[str, Any]:
    return {"manifest": "demo::sleep", "inputValues": {"seconds": seconds, "tag": index}}


class Server:
    """One emulator served on loopback until ``kill()``; ``restart()`` serves it again on
    the same port."""

    def __init__(self, group: anyio.abc.TaskGroup) -> None:
        self.emulator = Emulator()
        self._group = group
        self._stop = anyio.Event()
        self._closed = anyio.Event()
        self.url = ""

    async def start(self, port: int = 0) -> str:
        self._stop, self._closed = anyio.Event(), anyio.Event()
        self.url = await self._group.start(self._serve, port)
        return self.url

    async def _serve(self, port: int, *, task_status: anyio.abc.TaskStatus[str]) -> None:
        try:
            async with serve_emulator(self.emulator, host="127.0.0.1", port=port) as url:
                task_status.started(url)
                await self._stop.wait()
        finally:
            self._closed.set()

    async def kill(self) -> None:
        """Return once the server no longer listens: connections are refused from then on."""
        self._stop.set()
        await self._closed.wait()

    async def restart(self) -> None:
        await self.start(int(self.url.rsplit(":", 1)[1].split("/")[0]))

    def created(self) -> int:
        return int(self.emulator.stats()["tasks_created"])

    def unfinished(self) -> list[str]:
        return [i for i in self.emulator.tasks if self.emulator.task_status(i) not in TERMINAL]


@asynccontextmanager
async def servers(count: int) -> AsyncIterator[list[Server]]:
    async with anyio.create_task_group() as group:
        started = [Server(group) for _ in range(count)]
        for server in started:
            await server.start()
        yield started
        for server in started:
            await server.kill()


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (checked every 10 ms); fail after 20 s."""
    with anyio.fail_after(20):
        while not condition():  # noqa: ASYNC110 - the emulators' counters have no event
            await anyio.sleep(0.01)


def pool_of(urls: Sequence[str], seen: dict[str, list[str]] | None = None, **options: Any) -> Any:
    """A pool of clients of ``urls``; ``seen[url]`` collects the task ids each client's
    requests named (polls, logs, stops)."""
    clients = []
    for url in urls:

        def named(event: RequestEvent, url: str = url) -> None:
            if seen is not None and "{id}" in event.route:
                seen.setdefault(url, []).append(unquote(event.url.split("/v1/tasks/")[1]))

        clients.append(OomolConnectClient(base_url=url, retry_delay=0.001, on_request=named))
    return ServerPool(clients, **options)


async def test_creates_spread_evenly_and_polls_stay_with_their_server(anyio_backend: str) -> None:
    seen: dict[str, list[str]] = {}
    async with servers(3) as started:
        urls = [server.url for server in started]
        async with pool_of(urls, seen, max_concurrency_per_server=2) as pool:
            results = await pool.run_many(
                [sleep(i, 0.2) for i in range(6)], polling_options=FAST
            )
            spread = [server.created() for server in started]
            more = await pool.run_many([echo(i) for i in range(30)], polling_options=FAST)
        assert our_running_tasks() == []
    assert spread == [2, 2, 2]  # six places free at once: one round over the servers
    for server in started:
        own = set(server.emulator.tasks)
        named = [task_id.split("/")[0] for task_id in seen[server.url]]
        assert named
        assert set(named) <= own  # every poll went to the task's own server
    for result in [*results, *more]:
        server = next(s for s in started if s.url == result["server"])
        assert result["task_id"] in server.emulator.tasks
    assert [r["result"] for r in more] == [{"text": f"job {i}"} for i in range(30)]
    assert sum(server.created() for server in started) == 36
    assert min(server.created() for server in started) >= 6


async def test_a_server_killed_mid_batch_costs_only_its_runs(anyio_backend: str) -> None:
    async with servers(3) as started:
        victim = started[1]
        async with pool_of([s.url for s in started], max_concurrency_per_server=2) as pool:

            async def kill_once_busy() -> None:
                await until(lambda: victim.created() >= 2)
                await victim.kill()

            async with anyio.create_task_group() as group:
                group.start_soon(kill_once_busy)
                outcomes = await pool.run_many(
                    [sleep(i, 0.4) for i in range(24)],
                    polling_options=SHORT_OUTAGE,
                    return_exceptions=True,
                )
            assert victim.url not in pool.healthy
        assert our_running_tasks() == []
    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert 1 <= len(failures) <= 2  # the runs on the victim when it died, no more
    for failure in failures:
        assert isinstance(failure, ConnectionError)
        assert failure.server == victim.url
        # its task, or (killed while answering a create) none known: never sent elsewhere
        assert failure.task_id in victim.emulator.tasks or failure.may_have_reached_server
    done = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(done) == 24 - len(failures)
    assert all(result["server"] != victim.url for result in done)
    assert victim.created() == len(failures)  # drained: nothing more was sent there
    for server in (started[0], started[2]):
        assert server.unfinished() == []


async def test_a_drained_server_comes_back(anyio_backend: str) -> None:
    async with servers(2) as started:
        up, down = started
        await down.kill()  # refused from the start
        async with pool_of([up.url, down.url], max_concurrency_per_server=2) as pool:
            first = await pool.run_many([echo(i) for i in range(6)], polling_options=FAST)
            assert {result["server"] for result in first} == {up.url}
            assert pool.healthy == [up.url]
            await down.restart()
            await until(lambda: down.url in pool.healthy)  # the probe finds it again
            await pool.run_many([sleep(i, 0.1) for i in range(8)], polling_options=FAST)
        assert down.created() >= 2


async def test_every_server_down_fails_after_the_outage_budget(anyio_backend: str) -> None:
    async with servers(2) as started:
        for server in started:
            await server.kill()
        async with pool_of([s.url for s in started]) as pool:
            with anyio.fail_after(20):
                outcomes = await pool.run_many(
                    [echo(0), echo(1)], polling_options=SHORT_OUTAGE, return_exceptions=True
                )
    for outcome in outcomes:
        assert isinstance(outcome, ConnectionError)
        assert "no server of the pool has answered" in str(outcome)


async def test_servers_that_refuse_every_create_end_the_run_after_one_try_each(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Their probes succeed, so they keep coming back: each request moves at most once per
    server, then fails with the server's answer."""
    async with servers(2) as started:
        for server in started:
            server.emulator.faults.add(FaultRule(
                route="POST /v1/tasks", error_rate=1.0, error_statuses=(503,),
                error_retry_after=0.0,
            ))
        async with pool_of([s.url for s in started]) as pool:
            with anyio.fail_after(20):
                outcomes = await pool.run_many(
                    [echo(0)], polling_options=SHORT_OUTAGE, return_exceptions=True
                )
        sent = sum(s.emulator.stats()["requests"].get("POST /v1/tasks", 0) for s in started)
    assert isinstance(outcomes[0], ServerError)
    assert outcomes[0].status == 503
    assert outcomes[0].server in {s.url for s in started}
    assert sum(server.created() for server in started) == 0
    drains = [r for r in caplog.records if "drained" in r.getMessage()]
    assert len(drains) == 3  # three placements: two that may move, then the last
    assert sent > 2 + 3  # the two movable ones asked once each; the last asked again


async def test_a_create_refused_for_now_goes_to_another_server_at_once(
    anyio_backend: str,
) -> None:
    """A server at capacity answers 429 with Retry-After: the create made nothing there,
    so it moves to a server with room instead of asking the full one for its error budget."""
    async with servers(2) as (full, idle):
        full.emulator.faults.add(FaultRule(route="POST /v1/tasks", max_active=0, retry_after=1.0))
        async with pool_of([full.url, idle.url], max_concurrency_per_server=2) as pool:
            with anyio.fail_after(30):  # only a hang reaches it; asking again took a minute
                outcomes = await pool.run_many([echo(i) for i in range(6)], polling_options=FAST)
        refused = full.emulator.stats()["requests"].get("POST /v1/tasks", 0)
    assert [outcome["server"] for outcome in outcomes] == [idle.url] * 6
    assert idle.created() == 6
    assert 1 <= refused <= 6  # each create it refused was asked once, then moved


@pytest.mark.parametrize(
    ("error", "moves"),
    [
        (ConnectionError("refused"), True),
        (ConnectionError("cut", may_have_reached_server=True), True),
        (ServerError(503, "busy", retry_after=1.0), True),
        (ServerError(503, "maybe taken"), False),
        (ServerError(502, "bad gateway"), False),
        (RateLimitError(429, "slow down"), True),
        (ServerError(500, "bug"), False),
        (ValueError("bad request"), False),
    ],
)
async def test_which_failed_creates_may_go_to_another_server(
    anyio_backend: str, error: Exception, moves: bool
) -> None:
    assert never_created(error) is moves
    error_with_task = ConnectionError("refused")
    error_with_task.task_id = "t-1"
    assert not never_created(error_with_task)  # a task exists: the run stays


async def test_fail_fast_names_the_request_and_its_server(anyio_backend: str) -> None:
    failing = {"manifest": "demo::fail", "inputValues": {"message": "boom"}}
    async with servers(2) as started:
        async with pool_of([s.url for s in started]) as pool:
            with pytest.raises(ExceptionGroup) as caught:
                await pool.run_many(
                    [sleep(0, 5), failing, sleep(2, 5)], polling_options=FAST
                )
        for server in started:
            assert server.unfinished() == []  # the other runs were stopped
    error = caught.value.exceptions[0]
    assert isinstance(error, TaskFailedError)
    assert error.server in {s.url for s in started}
    notes = " ".join(getattr(error, "__notes__", []))
    assert "request 1" in notes
    assert error.server in notes


async def test_run_many_iter_and_a_batch_limit(anyio_backend: str) -> None:
    seen: list[int] = []
    async with (
        servers(2) as started,
        pool_of([s.url for s in started], max_concurrency_per_server=4) as pool,
        pool.run_many_iter(
            [echo(i) for i in range(10)], polling_options=FAST, max_concurrency=1
        ) as outcomes,
    ):
        async for index, result in outcomes:
            seen.append(index)
            assert result["result"] == {"text": f"job {index}"}
    assert sorted(seen) == list(range(10))
    assert max(s.emulator.peak_active() for s in started) <= 1


async def test_a_journal_resumes_each_task_on_its_own_server(
    anyio_backend: str, tmp_path: Path
) -> None:
    """Index 0's task is on server B, index 1's create was cut on server A after A made
    it: the resume waits for the first on B and adopts the second on A, creating nothing."""
    jobs = [sleep(0, 0.2), sleep(1, 0.2), echo(2)]
    path = tmp_path / "batch.journal"
    async with servers(2) as started:
        a, b = started
        async with AsyncExitStack() as stack:
            client_a = await stack.enter_async_context(OomolConnectClient(base_url=a.url))
            client_b = await stack.enter_async_context(OomolConnectClient(base_url=b.url))
            async with Journal.open(path) as journal:
                journal.record_intent(0, request_hash(jobs[0]), b.url)
                on_b = await client_b.tasks.create(jobs[0])
                journal.record_task(0, on_b["id"], b.url)
                journal.record_intent(1, request_hash(jobs[1]), a.url)
            on_a = await client_a.tasks.create(jobs[1])  # the answer never got recorded
        async with pool_of([a.url, b.url]) as pool:
            results: list[RunResult] = await pool.run_many(
                jobs, polling_options=FAST, journal=path
            )
        created = [a.created(), b.created()]
    assert [r["task_id"] for r in results[:2]] == [on_b["id"], on_a["id"]]
    assert [r["server"] for r in results[:2]] == [b.url, a.url]
    assert sum(created) == 3  # the two made above, and index 2's


ELSEWHERE = "http://127.0.0.1:9/api"  # a server that is in no pool of these tests


async def journal_with_a_task_elsewhere(path: Path, *, stopped: bool) -> Path:
    """A journal whose request 0 has a task on ``ELSEWHERE`` (stopped unfinished, or not)."""
    async with Journal.open(path) as journal:
        journal.record_intent(0, request_hash(echo(0)), ELSEWHERE)
        journal.record_task(0, "t-elsewhere", ELSEWHERE)
        if stopped:
            journal.record_interrupted(0, "t-elsewhere")
    return path


async def test_a_journal_naming_a_server_outside_the_pool(
    anyio_backend: str, tmp_path: Path
) -> None:
    path = await journal_with_a_task_elsewhere(tmp_path / "batch.journal", stopped=False)
    async with servers(1) as started, pool_of([started[0].url]) as pool:
        outcomes = await pool.run_many(
            [echo(0), echo(1)], polling_options=FAST, journal=path, return_exceptions=True
        )
    assert isinstance(outcomes[0], ValueError)
    assert "not a server of this pool" in str(outcomes[0])
    assert outcomes[1]["result"] == {"text": "job 1"}  # type: ignore[index]


async def test_a_task_stopped_on_a_server_outside_the_pool_is_created_anew_in_it(
    anyio_backend: str, tmp_path: Path
) -> None:
    # Its task was stopped: nothing is left to wait for or to look up over there.
    path = await journal_with_a_task_elsewhere(tmp_path / "batch.journal", stopped=True)
    async with servers(1) as started, pool_of([started[0].url]) as pool:
        [outcome] = await pool.run_many([echo(0)], polling_options=FAST, journal=path)
    assert outcome["result"] == {"text": "job 0"}
    assert outcome["server"] == started[0].url


async def test_bad_pools_are_refused_before_any_request(anyio_backend: str) -> None:
    client = OomolConnectClient(base_url="http://127.0.0.1:9/api")
    with pytest.raises(ValueError, match="at least one client"):
        ServerPool([])
    with pytest.raises(TypeError, match="list of OomolConnectClient"):
        ServerPool(client)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="OomolConnectClient"):
        ServerPool(["http://127.0.0.1:9/api"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="two clients of the pool"):
        ServerPool([client, OomolConnectClient(base_url="http://127.0.0.1:9/api")])
    with pytest.raises(ValueError, match="max_concurrency_per_server must be >= 1"):
        ServerPool([client], max_concurrency_per_server=0)
    with pytest.raises(RuntimeError, match="async with"):
        await ServerPool([client]).run_many([echo(0)])
    await client.aclose()


async def test_the_readme_example_runs_as_written(
    anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    section = README[README.index("## More than one server\n") :]
    code = section[section.index("```python\n") + 10 : section.index("```\n")]
    async with servers(2) as started:
        code = code.replace("http://connect-1:3000/api", started[0].url)
        code = code.replace("http://connect-2:3000/api", started[1].url)
        namespace: dict[str, Any] = {"__name__": "readme"}
        await anyio.to_thread.run_sync(exec, code.replace("anyio.run(main)", ""), namespace)
        await namespace["main"]()
        created = [server.created() for server in started]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 20
    assert {line.split()[0] for line in lines} == {started[0].url, started[1].url}
    assert "{'text': 'JOB 0'}" in lines[0]
    assert created == [10, 10]

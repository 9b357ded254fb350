"""Journaled batches: resumed runs create nothing twice, over real loopback sockets."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from helpers import served

from oomol_connect_anyio import (
    JournalError,
    JournalMismatchError,
    RecordedError,
    TaskFailedError,
    TimeoutError,
)
from oomol_connect_anyio._journal import Journal, request_hash
from oomol_connect_anyio.emulator import Emulator, FaultRule

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio

FAST: Any = {"interval_ms": 20, "backoff_strategy": "fixed"}
TERMINAL = frozenset({"completed", "failed", "stopped"})


def echo(index: int) -> dict[str, Any]:
    return {"manifest": "demo::echo", "inputValues": {"text": f"job {index}"}}


def sleep(index: int, seconds: float) -> dict[str, Any]:
    return {"manifest": "demo::sleep", "inputValues": {"seconds": seconds, "tag": index}}


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def running(emulator: Emulator) -> int:
    return sum(task.status not in TERMINAL for task in emulator.tasks.values())


async def test_a_finished_batch_is_returned_from_its_journal_with_no_request(
    anyio_backend: str, tmp_path: Path
) -> None:
    emulator = Emulator()
    journal = tmp_path / "batch.journal"
    jobs = [echo(index) for index in range(6)]
    async with served(emulator) as client:
        first = await client.tasks.run_many(jobs, polling_options=FAST, journal=journal)
        requests = emulator.stats()["requests"]
        again = await client.tasks.run_many(jobs, polling_options=FAST, journal=str(journal))
        assert emulator.stats()["requests"] == requests  # not one request more
    assert emulator.stats()["tasks_created"] == 6
    assert [r["result"] for r in again] == [r["result"] for r in first]
    assert [r["task_id"] for r in again] == [r["task_id"] for r in first]
    assert [r["result"] for r in first] == [{"text": f"job {i}"} for i in range(6)]
    events = sorted((line["i"], line["e"]) for line in records(journal))
    assert events == sorted((i, e) for i in range(6) for e in ("intent", "task", "outcome"))


async def test_a_task_with_an_id_and_no_outcome_is_waited_for_not_created(
    anyio_backend: str, tmp_path: Path
) -> None:
    emulator = Emulator()
    path = tmp_path / "batch.journal"
    async with served(emulator) as client:
        task = await client.tasks.create(echo(0))
        async with Journal.open(path) as journal:
            journal.record_intent(0, request_hash(echo(0)))
            journal.record_task(0, task["id"])
        [result] = await client.tasks.run_many([echo(0)], polling_options=FAST, journal=path)
    assert result["task_id"] == task["id"]
    assert result["result"] == {"text": "job 0"}
    assert emulator.stats()["tasks_created"] == 1


async def test_an_interrupted_create_is_adopted_when_its_task_exists(
    anyio_backend: str, tmp_path: Path
) -> None:
    emulator = Emulator()
    path = tmp_path / "batch.journal"
    async with Journal.open(path) as journal:
        journal.record_intent(0, request_hash(echo(0)))  # died before the answer came
        journal.record_intent(1, request_hash(echo(1)))  # died before the create left
    async with served(emulator) as dead_process:
        made = await dead_process.tasks.create(echo(0))
    async with served(emulator) as client:
        results = await client.tasks.run_many(
            [echo(0), echo(1)], polling_options=FAST, journal=path
        )
    assert results[0]["task_id"] == made["id"]
    assert [r["result"] for r in results] == [{"text": "job 0"}, {"text": "job 1"}]
    assert emulator.stats()["tasks_created"] == 2


async def interrupted_creates(path: Path, request: Any, count: int) -> None:
    """A journal of ``count`` identical requests whose creates were cut off: intents only."""
    async with Journal.open(path) as journal:
        for index in range(count):
            journal.record_intent(index, request_hash(request))


async def test_identical_interrupted_creates_share_out_the_tasks_they_made(
    anyio_backend: str, tmp_path: Path
) -> None:
    """Three identical requests died with their creates in flight; two of the creates had
    made a task. Any of those tasks is as good as another for any of them: two adopt one
    each, the third is created. Four such tasks would be more than the batch's own, and
    nothing would be adopted or created."""
    emulator = Emulator()
    path = tmp_path / "batch.journal"
    await interrupted_creates(path, echo(0), 3)
    async with served(emulator) as dead_process:
        made = {(await dead_process.tasks.create(echo(0)))["id"] for _ in range(2)}
    async with served(emulator) as client:
        results = await client.tasks.run_many([echo(0)] * 3, polling_options=FAST, journal=path)
    assert made < {r["task_id"] for r in results}
    assert len({r["task_id"] for r in results}) == 3
    assert [r["result"] for r in results] == [{"text": "job 0"}] * 3
    assert emulator.stats()["tasks_created"] == 3

    crowded = Emulator()
    path = tmp_path / "crowded.journal"
    await interrupted_creates(path, echo(0), 3)
    async with served(crowded) as dead_process:
        for _ in range(4):  # one more than the batch's: another client's, maybe
            await dead_process.tasks.create(echo(0))
    async with served(crowded) as client:
        outcomes = await client.tasks.run_many(
            [echo(0)] * 3, polling_options=FAST, journal=path, return_exceptions=True
        )
    assert all("refusing to guess" in str(outcome) for outcome in outcomes)
    assert crowded.stats()["tasks_created"] == 4


async def test_changed_requests_are_refused_before_any_request(
    anyio_backend: str, tmp_path: Path
) -> None:
    emulator = Emulator()
    path = tmp_path / "batch.journal"
    async with served(emulator) as client:
        await client.tasks.run_many([echo(0), echo(1)], polling_options=FAST, journal=path)
        created = emulator.stats()["tasks_created"]
        with pytest.raises(JournalMismatchError, match="request 1 differs") as caught:
            await client.tasks.run_many([echo(0), echo(9), echo(2)], journal=path)
        assert caught.value.index == 1
        assert emulator.stats()["tasks_created"] == created
        with pytest.raises(JournalMismatchError, match="recorded request 1, but only 1") as short:
            await client.tasks.run_many([echo(0)], journal=path)  # a batch cut short
        assert short.value.index == 1
        assert emulator.stats()["tasks_created"] == created

        async def lazily() -> Any:  # a lazy input is checked item by item: the batch stops
            for request in (echo(0), echo(7)):
                yield request

        with pytest.raises(ExceptionGroup) as group:
            await client.tasks.run_many(lazily(), journal=path)
        assert group.group_contains(JournalMismatchError)
        assert emulator.stats()["tasks_created"] == created


async def test_a_bad_lazy_request_is_its_own_outcome_with_a_journal(
    anyio_backend: str, tmp_path: Path
) -> None:
    async def lazily() -> Any:
        yield echo(0)
        yield {"inputValues": {}}  # no manifest
        yield echo(2)

    async with served(Emulator()) as client:
        outcomes = await client.tasks.run_many(
            lazily(), polling_options=FAST, journal=tmp_path / "j", return_exceptions=True
        )
    assert isinstance(outcomes[1], ValueError)
    assert [outcomes[0]["result"], outcomes[2]["result"]] == [  # type: ignore[index]
        {"text": "job 0"}, {"text": "job 2"}
    ]


async def test_a_request_that_is_not_json_is_its_own_outcome_with_no_intent(
    anyio_backend: str, tmp_path: Path
) -> None:
    emulator = Emulator()
    jobs = [echo(0), {"manifest": "demo::echo", "inputValues": {"x": "\ud800"}}, echo(2)]
    async with served(emulator) as client:
        outcomes = await client.tasks.run_many(
            jobs, polling_options=FAST, journal=tmp_path / "j", return_exceptions=True
        )
    assert isinstance(outcomes[1], TypeError)
    assert "not JSON-serialisable" in str(outcomes[1])
    assert emulator.stats()["tasks_created"] == 2
    assert {line["i"] for line in records(tmp_path / "j")} == {0, 2}


async def test_recorded_failures_stay_failed_unless_retry_failed(
    anyio_backend: str, tmp_path: Path
) -> None:
    emulator = Emulator()
    path = tmp_path / "batch.journal"
    jobs = [echo(0), {"manifest": "demo::fail", "inputValues": {"message": "boom"}}]
    async with served(emulator) as client:
        first = await client.tasks.run_many(
            jobs, polling_options=FAST, journal=path, return_exceptions=True
        )
        assert isinstance(first[1], TaskFailedError)
        again = await client.tasks.run_many(
            jobs, polling_options=FAST, journal=path, return_exceptions=True
        )
        assert emulator.stats()["tasks_created"] == 2
        assert isinstance(again[1], RecordedError)
        assert again[1].error_type == "TaskFailedError"
        assert again[1].task_id == first[1].task_id
        assert "boom" in str(again[1])
        retried = await client.tasks.run_many(
            jobs, polling_options=FAST, journal=path, return_exceptions=True, retry_failed=True
        )
        assert isinstance(retried[1], TaskFailedError)
        assert retried[1].task_id != first[1].task_id
        assert emulator.stats()["tasks_created"] == 3  # only the failure ran again
    failure = records(path)[-1]
    assert failure["e"] == "outcome"
    assert failure["o"]["task_id"] == retried[1].task_id  # a failure names its task


def ready_to_interrupt(emulator: Emulator, path: Path) -> bool:
    """Every task id is recorded, and the short two have finished on the server."""
    recorded = {r["i"] for r in records(path) if r["e"] == "task"}
    return recorded == {0, 1, 2, 3} and emulator.stats()["tasks_by_status"].get("completed", 0) == 2


async def test_an_interrupted_batch_records_finished_tasks_and_reruns_the_rest(
    anyio_backend: str, tmp_path: Path
) -> None:
    emulator = Emulator()
    path = tmp_path / "batch.journal"
    # Polls so rare that the short tasks finish unseen before the interrupt comes.
    slow_polls: Any = {"interval_ms": 60_000, "backoff_strategy": "fixed"}
    jobs = [sleep(0, 0.05), sleep(1, 0.05), sleep(2, 1000), sleep(3, 1000)]
    async with served(emulator) as client:
        with anyio.fail_after(30), anyio.CancelScope() as interrupt:
            async with client.tasks.run_many_iter(
                jobs, polling_options=slow_polls, journal=path
            ):
                while not ready_to_interrupt(emulator, path):  # noqa: ASYNC110 - neither the journal nor the emulator has an event
                    await anyio.sleep(0.01)
                interrupt.cancel()  # as Ctrl-C does in the CLI
                await anyio.lowlevel.checkpoint()
        assert running(emulator) == 0  # the long ones were stopped
        assert emulator.stats()["tasks_created"] == 4
        last = {line["i"]: line["e"] for line in records(path)}
        assert last == {0: "outcome", 1: "outcome", 2: "interrupted", 3: "interrupted"}

        resumed: dict[int, Any] = {}
        with anyio.fail_after(30):
            batch = client.tasks.run_many_iter(jobs, polling_options=FAST, journal=path)
            async with batch as outcomes:
                async for index, outcome in outcomes:
                    resumed[index] = outcome
                    if len(resumed) == 2:
                        break
                while emulator.stats()["tasks_created"] < 6:  # noqa: ASYNC110 - the emulator has no event
                    await anyio.sleep(0.01)
    slept = {index: r["result"] for index, r in resumed.items()}
    assert slept == {0: {"slept": 0.05}, 1: {"slept": 0.05}}
    assert emulator.stats()["tasks_created"] == 6  # the finished two were not run again
    assert running(emulator) == 0


async def test_journal_arguments_are_checked_before_anything(
    anyio_backend: str, tmp_path: Path
) -> None:
    async with served(Emulator()) as client:
        with pytest.raises(TypeError, match="journal must be a path or a Journal"):
            await client.tasks.run_many([echo(0)], journal=3)  # type: ignore[typeddict-item]
        with pytest.raises(ValueError, match="retry_failed needs a journal"):
            await client.tasks.run_many([echo(0)], retry_failed=True)
        with pytest.raises(ValueError, match="journal must name a file"):
            await client.tasks.run_many([echo(0)], journal="")


async def test_an_open_journal_used_again_returns_the_results_it_recorded(
    anyio_backend: str, tmp_path: Path
) -> None:
    """A success's record is kept in the file, not in memory: a second batch over the same
    open journal reads it back whole."""
    jobs = [echo(i) for i in range(5)]
    emulator = Emulator()
    async with served(emulator) as client, Journal.open(tmp_path / "j") as journal:
        first = await client.tasks.run_many(jobs, polling_options=FAST, journal=journal)
        assert all(entry.outcome == {"ok": True, "_in_file": True}
                   for entry in journal.entries.values())  # no copy of each result held
        again = await client.tasks.run_many(jobs, polling_options=FAST, journal=journal)
    assert [r["result"] for r in again] == [r["result"] for r in first]
    assert [r["task_id"] for r in again] == [r["task_id"] for r in first]
    assert emulator.stats()["tasks_created"] == 5


async def test_a_create_refused_for_good_is_recorded_as_its_outcome(
    anyio_backend: str, tmp_path: Path
) -> None:
    """One client has nowhere else to send it: the failure is the request's outcome."""
    from oomol_connect_anyio import ServerError
    from oomol_connect_anyio.emulator import FaultRule

    emulator = Emulator()
    emulator.faults.add(FaultRule(
        route="POST /v1/tasks", error_rate=1.0, error_statuses=(503,), error_retry_after=0.01,
    ))
    path = tmp_path / "j"
    async with served(emulator) as client:
        outcomes = await client.tasks.run_many(
            [echo(0)], polling_options={**FAST, "poll_error_budget_ms": 100}, journal=path,
            return_exceptions=True,
        )
    assert isinstance(outcomes[0], ServerError)
    last = [r for r in records(path) if r.get("i") == 0][-1]
    assert last["e"] == "outcome"
    assert last["o"]["ok"] is False
    assert last["o"]["error_type"] == "ServerError"


async def test_a_journaled_run_times_itself_on_the_same_clock_as_a_plain_one(
    anyio_backend: str, tmp_path: Path
) -> None:
    # trio's clock starts far from time.monotonic() on purpose: a run that mixed the two
    # would report (and poll adaptively by) an age off by hours.
    emulator = Emulator()
    adaptive: Any = {"interval_ms": 20, "backoff_strategy": "adaptive"}
    async with served(emulator) as client:
        with anyio.fail_after(30):
            results = await client.tasks.run_many(
                [sleep(index, 0.05) for index in range(10)], max_concurrency=2,
                polling_options=adaptive, journal=tmp_path / "batch.journal",
            )
    for result in results:
        stats = result["stats"]
        assert 0 < stats["wall_ms"] < 30_000, stats
        assert stats["time_to_running_ms"] is None or 0 <= stats["time_to_running_ms"] < 30_000


async def test_identical_requests_stopped_by_an_interrupt_run_anew_on_resume(
    anyio_backend: str, tmp_path: Path
) -> None:
    # Two stopped tasks match either request: a resume that looked them up could not tell
    # whose is whose and would refuse both, for good.
    emulator = Emulator()
    path = tmp_path / "batch.journal"
    jobs = [sleep(0, 1000), sleep(0, 1000)]  # the same request twice
    async with served(emulator) as client:
        with anyio.fail_after(30), anyio.CancelScope() as interrupt:
            async with client.tasks.run_many_iter(jobs, polling_options=FAST, journal=path):
                # Both task ids on record, so that neither create is in flight at the interrupt.
                while [line["e"] for line in records(path)].count("task") < 2:  # noqa: ASYNC110 - a file has no event
                    await anyio.sleep(0.01)
                interrupt.cancel()
                await anyio.lowlevel.checkpoint()
    assert running(emulator) == 0
    assert {line["i"]: line["e"] for line in records(path)} == {0: "interrupted", 1: "interrupted"}

    outcomes: list[Any] = []
    async with served(emulator) as client:  # as a new process: nothing claimed yet
        with anyio.fail_after(30), anyio.CancelScope() as interrupt:
            batch = client.tasks.run_many_iter(
                jobs, polling_options=FAST, journal=path, return_exceptions=True
            )
            async with batch as results, anyio.create_task_group() as group:
                group.start_soon(lambda: _collect(results, outcomes))
                while emulator.stats()["tasks_created"] < 4 and not outcomes:  # noqa: ASYNC110 - the emulator has no event
                    await anyio.sleep(0.01)
                interrupt.cancel()
    assert outcomes == []  # no refusal: each was created anew
    assert emulator.stats()["tasks_created"] == 4
    assert running(emulator) == 0


async def _collect(results: Any, into: list[Any]) -> None:
    async for item in results:
        into.append(item)


async def test_a_task_left_running_by_an_interrupt_is_waited_for_on_resume(
    anyio_backend: str, tmp_path: Path
) -> None:
    emulator = Emulator()
    path = tmp_path / "batch.journal"
    keep_running: Any = {**FAST, "stop_on_cancel": False}
    jobs = [sleep(0, 1.5)]
    async with served(emulator) as client:
        with anyio.fail_after(30), anyio.CancelScope() as interrupt:
            async with client.tasks.run_many_iter(
                jobs, polling_options=keep_running, journal=path
            ):
                # The task id on record: a create still in flight is another case (stopped
                # as soon as its answer comes, whatever stop_on_cancel says).
                while "task" not in [line["e"] for line in records(path)]:  # noqa: ASYNC110 - a file has no event
                    await anyio.sleep(0.01)
                interrupt.cancel()
                await anyio.lowlevel.checkpoint()
    # Not stopped, so not "interrupted": a resume must wait for it, not create another.
    assert [line["e"] for line in records(path)] == ["intent", "task"]
    async with served(emulator) as client:
        with anyio.fail_after(30):
            [result] = await client.tasks.run_many(jobs, polling_options=FAST, journal=path)
    assert result["result"] == {"slept": 1.5}
    assert emulator.stats()["tasks_created"] == 1


async def test_a_resume_against_another_server_that_lacks_the_task_records_no_failure(
    anyio_backend: str, tmp_path: Path
) -> None:
    first, other = Emulator(), Emulator()
    path = tmp_path / "batch.journal"
    jobs = [sleep(0, 1.0)]
    async with served(first) as client:
        first_url = str(client.base_url)
        with anyio.fail_after(30), anyio.CancelScope() as interrupt:
            async with client.tasks.run_many_iter(
                jobs, polling_options={**FAST, "stop_on_cancel": False}, journal=path
            ):
                while "task" not in [line["e"] for line in records(path)]:  # noqa: ASYNC110 - a file has no event
                    await anyio.sleep(0.01)
                interrupt.cancel()
                await anyio.lowlevel.checkpoint()
    async with served(other) as client:
        with anyio.fail_after(30), pytest.raises(ExceptionGroup) as caught:
            await client.tasks.run_many(jobs, polling_options=FAST, journal=path,
                                        return_exceptions=True)
    [error] = caught.value.exceptions
    assert isinstance(error, JournalMismatchError)
    assert error.index == 0
    assert f"resume against {first_url}" in str(error)
    assert [line["e"] for line in records(path)] == ["intent", "task"]  # no failure on record
    assert other.stats()["tasks_created"] == 0
    async with served(first) as client:  # the same server under another port: found there
        with anyio.fail_after(30):
            [result] = await client.tasks.run_many(jobs, polling_options=FAST, journal=path)
    assert result["result"] == {"slept": 1.0}
    assert first.stats()["tasks_created"] == 1


async def test_a_task_whose_id_cannot_be_recorded_is_stopped(
    anyio_backend: str, tmp_path: Path
) -> None:
    emulator = Emulator()
    async with Journal.open(tmp_path / "batch.journal") as journal:

        def failing_sync(event: Any) -> None:  # the journal's fsync fails during the create
            if event.route == "POST /v1/tasks":
                journal._syncer.failed = "cannot sync journal: Input/output error"

        async with served(emulator, on_request=failing_sync) as client:
            with pytest.raises(ExceptionGroup) as caught:  # the batch ends, not the run only
                await client.tasks.run_many(
                    [sleep(0, 1000)], journal=journal, return_exceptions=True
                )
        journal._syncer.failed = None  # only so that this test's journal closes quietly
    assert [type(error) for error in caught.value.exceptions] == [JournalError]
    assert emulator.stats()["tasks_created"] == 1
    assert running(emulator) == 0  # not left running where no journal tracks it


async def test_a_journal_that_fails_mid_batch_ends_it_even_with_return_exceptions(
    anyio_backend: str, tmp_path: Path
) -> None:
    """No run after the failure could be resumed: the batch ends on the journal's error
    (no run gets it as its outcome), and every task it had started is stopped or done."""
    emulator = Emulator()
    async with Journal.open(tmp_path / "batch.journal") as journal:

        def disk_full(index: int, task: Any) -> None:
            if index == 2:  # three runs under way (none ends for a second), three to come
                journal._syncer.failed = "cannot sync journal: No space left on device"

        async with served(emulator) as client:
            outcomes: list[Any] = []
            with anyio.fail_after(30), pytest.raises(ExceptionGroup) as caught:
                await client.tasks.run_many(
                    [sleep(index, 1.0) for index in range(6)], max_concurrency=3,
                    polling_options={**FAST, "on_progress": disk_full},
                    return_exceptions=True, on_result=lambda i, o: outcomes.append(o),
                    journal=journal,
                )
        journal._syncer.failed = None  # only so that this test's journal closes quietly
    assert isinstance(caught.value.exceptions[0], JournalError)
    assert "No space left on device" in str(caught.value.exceptions[0])
    assert not any(isinstance(outcome, JournalError) for outcome in outcomes)
    assert emulator.stats()["tasks_created"] == 3  # none created after the failure
    assert running(emulator) == 0


async def test_a_journaled_wait_whose_deadline_cuts_a_poll_asks_no_more(
    anyio_backend: str, tmp_path: Path
) -> None:
    """The server stopped answering status polls: the deadline ends the wait, the task is
    stopped, and no look after the cut poll waits on that server again."""
    emulator = Emulator()
    emulator.faults.add(FaultRule(route="GET /v1/tasks/{id}", hang=60.0))
    async with served(emulator) as client:
        with anyio.fail_after(30):
            [outcome] = await client.tasks.run_many(
                [sleep(0, 1000)], polling_options={**FAST, "timeout_ms": 200},
                journal=tmp_path / "batch.journal", return_exceptions=True,
            )
    assert isinstance(outcome, TimeoutError)
    assert emulator.stats()["requests"]["GET /v1/tasks/{id}"] == 1
    assert running(emulator) == 0


class _AnswersHeldBack:
    """The emulator makes each task at once but holds the create's answer back (a task
    exists, unclaimed, while its client waits for its id), and answers every listing but
    the first half as late (so that lookups come while creates are in flight)."""

    def __init__(self, emulator: Emulator, seconds: float) -> None:
        self._app, self._seconds, self._listings = emulator.app, seconds, 0
        emulator.app = self  # type: ignore[assignment]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        route = (scope.get("method"), scope.get("path"))
        if route == ("GET", "/api/v1/tasks"):
            self._listings += 1
            if self._listings > 1:
                await anyio.sleep(self._seconds / 2)
        if route != ("POST", "/api/v1/tasks"):
            await self._app(scope, receive, send)
            return
        held: list[Any] = []

        async def hold(message: Any) -> None:
            held.append(message)

        await self._app(scope, receive, hold)
        await anyio.sleep(self._seconds)
        for message in held:
            await send(message)


async def test_identical_interrupted_creates_never_adopt_a_task_another_one_is_creating(
    anyio_backend: str, tmp_path: Path
) -> None:
    """None of the three interrupted creates had made a task: each creates one, and no
    lookup takes, for its own, the task a sibling is creating (its answer held back)."""
    emulator = Emulator()
    _AnswersHeldBack(emulator, 0.3)
    path = tmp_path / "batch.journal"
    await interrupted_creates(path, echo(0), 3)
    async with served(emulator) as client:
        with anyio.fail_after(30):
            results = await client.tasks.run_many(
                [echo(0)] * 3, max_concurrency=3, polling_options=FAST, journal=path
            )
    assert len({result["task_id"] for result in results}) == 3
    assert emulator.stats()["tasks_created"] == 3

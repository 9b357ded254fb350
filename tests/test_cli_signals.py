"""SIGINT, SIGTERM and SIGHUP on ``run`` and ``run-many``, in subprocesses: the command stops
every task it created and exits with 128 + the signal; repeated Ctrl-C neither hangs nor skips
the stops; a hard bound ends the process when the stops cannot be sent, naming what may run.

The result of each test is what the emulator has left running.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_support import (
    FAST,
    WAIT_S,
    Scenarios,
    emulator_process,
    fault_config,
    requests_to,
    scenarios_of,
    start,
    still_running,
    tasks_marked,
    wait_until,
    write_jobs,
)

SIGINT_3 = "SIGINT x3"  # three Ctrl-C, 2 ms apart
VARIANTS = {
    "SIGTERM": [signal.SIGTERM],
    "SIGHUP": [signal.SIGHUP],
    SIGINT_3: [signal.SIGINT] * 3,
}
BATCH, CONCURRENCY = 5, 3


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with emulator_process() as base_url:
        yield base_url


def signal_it(child: subprocess.Popen[str], signals: list[signal.Signals]) -> str:
    """Send ``signals`` 2 ms apart; the last line of stderr once the child has exited by the
    first one's exit code, without a traceback."""
    for signum in signals:
        child.send_signal(signum)
        time.sleep(0.002)
    _, err = child.communicate(timeout=WAIT_S)
    assert child.returncode == 128 + signals[0], err
    assert "Traceback" not in err
    return err.splitlines()[-1]


def command(kind: str, url: str, backend: str, marker: str, tmp_path: Path) -> list[str]:
    """``run`` of one long task, or ``run-many`` of a batch of them, tagged with ``marker``."""
    common = ["--base-url", url, *FAST, "--backend", backend]
    if kind == "run":
        return [*common, "run", "demo::sleep", "-i", "seconds=60", "-i", f"marker={marker}"]
    request = {"manifest": "demo::sleep", "inputValues": {"seconds": 60, "marker": marker}}
    jobs = write_jobs(tmp_path / "jobs.jsonl", [request] * BATCH)
    return [*common, "run-many", jobs, "-c", str(CONCURRENCY), "-o", str(tmp_path / "out.jsonl")]


# Each scenario below runs in a thread, side by side with the others (see ``Scenarios``):
# each has its own marker or its own emulator, and most of its time is spent waiting.


def signal_stops_every_task_it_created(
    url: str, tmp_path: Path, kind: str, variant: str, backend: str
) -> None:
    marker = uuid.uuid4().hex
    child = start(*command(kind, url, backend, marker, tmp_path))
    expected = 1 if kind == "run" else CONCURRENCY
    wait_until(lambda: len(still_running(url, marker)) == expected, "the tasks to run")
    signals = VARIANTS[variant]
    last = signal_it(child, signals)
    assert last.startswith(f"oomol-connect: error: interrupted by {signals[0].name}"), last
    assert "may still run" not in last
    assert len(tasks_marked(url, marker)) == expected
    assert still_running(url, marker) == []


def ctrl_c_while_the_create_is_in_flight(tmp_path: Path, backend: str) -> None:
    """The create is answered after the Ctrl-C: the task it made is stopped all the same."""
    slow_create = fault_config(tmp_path / "faults.json", {"route": "POST /v1/tasks", "hang": 1.0})
    with emulator_process("--fault-config", slow_create) as url:
        marker = uuid.uuid4().hex
        child = start(*command("run", url, backend, marker, tmp_path))
        wait_until(lambda: requests_to(url, "POST /v1/tasks") == 1, "the create to be sent")
        signal_it(child, [signal.SIGINT])
        wait_until(lambda: tasks_marked(url, marker), "the delayed create to be served")
        assert still_running(url, marker) == []


def hard_bound_names_the_tasks_that_may_still_run(tmp_path: Path, variant: str) -> None:
    """Stops that never get an answer: the process ends anyway and says which task may run."""
    hung_stop = fault_config(
        tmp_path / "faults.json", {"route": "POST /v1/tasks/{id}/stop", "hang": 3 * WAIT_S}
    )
    with emulator_process("--fault-config", hung_stop) as url:
        marker = uuid.uuid4().hex
        child = start(*command("run", url, "asyncio", marker, tmp_path))
        wait_until(lambda: len(still_running(url, marker)) == 1, "the task to run")
        (task_id,) = still_running(url, marker)
        last = signal_it(child, VARIANTS[variant])
        assert f"these tasks may still run: {task_id}" in last


def a_create_never_answered_is_named_as_a_task_that_may_exist(tmp_path: Path) -> None:
    """The hard bound (or the client's own) ends the wait for a hung create, and says so."""
    hung_create = fault_config(
        tmp_path / "faults.json", {"route": "POST /v1/tasks", "hang": 3 * WAIT_S}
    )
    with emulator_process("--fault-config", hung_create) as url:
        child = start(*command("run", url, "asyncio", uuid.uuid4().hex, tmp_path))
        wait_until(lambda: requests_to(url, "POST /v1/tasks") == 1, "the create to be sent")
        last = signal_it(child, [signal.SIGTERM])
        assert "a task whose creation was not answered may exist" in last
        assert "oomol-connect tasks list --status running" in last


SCENARIOS = {  # test -> its scenario, the slowest (the 5 s hard bound) first
    "test_hard_bound_names_the_tasks_that_may_still_run":
        hard_bound_names_the_tasks_that_may_still_run,
    "test_a_create_never_answered_is_named_as_a_task_that_may_exist":
        a_create_never_answered_is_named_as_a_task_that_may_exist,
    "test_ctrl_c_while_the_create_is_in_flight": ctrl_c_while_the_create_is_in_flight,
    "test_signal_stops_every_task_it_created": signal_stops_every_task_it_created,
}


@pytest.fixture(scope="module")
def scenarios(
    request: pytest.FixtureRequest, url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenarios]:
    with scenarios_of(request, SCENARIOS, tmp_path_factory, workers=6, url=url) as running:
        yield running


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("kind", ["run", "run-many"])
def test_signal_stops_every_task_it_created(
    scenarios: Scenarios, request: pytest.FixtureRequest, kind: str, variant: str, backend: str
) -> None:
    scenarios.outcome(request)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_while_the_create_is_in_flight(
    scenarios: Scenarios, request: pytest.FixtureRequest, backend: str
) -> None:
    scenarios.outcome(request)


@pytest.mark.parametrize("variant", ["SIGTERM", SIGINT_3])
def test_hard_bound_names_the_tasks_that_may_still_run(
    scenarios: Scenarios, request: pytest.FixtureRequest, variant: str
) -> None:
    scenarios.outcome(request)


def test_a_create_never_answered_is_named_as_a_task_that_may_exist(
    scenarios: Scenarios, request: pytest.FixtureRequest
) -> None:
    scenarios.outcome(request)


def test_a_watched_task_is_not_ours_to_stop(url: str, scenarios: Scenarios) -> None:
    """``tasks watch`` follows a task it did not create: a signal ends the watch, not the task.

    It counts the emulator's polls, so it runs once the scenarios (which poll it too) ended."""
    scenarios.wait()
    marker = uuid.uuid4().hex
    body = {"manifest": "demo::sleep", "inputValues": {"seconds": 60, "marker": marker}}
    task_id = httpx.post(f"{url}/v1/tasks", json=body).json()["task"]["id"]
    polls = requests_to(url, "GET /v1/tasks/{id}")
    child = start("--base-url", url, *FAST, "tasks", "watch", task_id)
    wait_until(lambda: requests_to(url, "GET /v1/tasks/{id}") > polls, "the watch to poll")
    last = signal_it(child, [signal.SIGTERM])
    assert last == "oomol-connect: error: interrupted by SIGTERM"
    assert still_running(url, marker) == [task_id]
    httpx.post(f"{url}/v1/tasks/{task_id}/stop")

"""Every example runs as a script, each against its own embedded emulator."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
JOBS = "\n".join(
    [
        '{"manifest": "demo::upper", "inputValues": {"text": "a"}}',
        "not json",
        "",
        "[1, 2]",
        '{"inputValues": {}}',
        '{"manifest": "demo::echo", "inputValues": {"x": 1}}',
    ]
)


@dataclass(frozen=True)
class Case:
    script: str
    args: tuple[str, ...] = ()
    stdin: str = ""


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


CASES = {
    "basic_usage": Case("basic_usage"),
    "advanced_usage": Case("advanced_usage"),
    "trio_usage": Case("trio_usage"),
    "asyncio_usage": Case("asyncio_usage"),
    "batch_runner": Case("batch_runner"),
    "batch_runner_stdin": Case("batch_runner", ("-", "-c", "2", "-o", "{tmp}/out.jsonl"), JOBS),
    "files_upload": Case("files_upload"),
    "sync_usage": Case("sync_usage"),
    "measure_polling": Case("measure_polling"),
    "opentelemetry_spans": Case("opentelemetry_spans"),
    "server_pool": Case("server_pool"),
}


def _run(case: Case, tmp: Path) -> Outcome:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOMOL_CONNECT_")}
    args = [arg.format(tmp=tmp) for arg in case.args]
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{case.script}.py"), *args],
        input=case.stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=60,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


_POOL: list[ThreadPoolExecutor] = []
_RUNS: dict[str, Future[Outcome]] = {}
_TMP: list[Path] = []


def start_early() -> None:
    """Start every case (conftest calls this once the session has collected the module):
    each is a separate process with its own emulator."""
    if _POOL:
        return
    _TMP.append(Path(tempfile.mkdtemp(prefix="oomol-examples-")))
    _POOL.append(ThreadPoolExecutor(os.cpu_count() or 2))
    for name, case in CASES.items():
        _RUNS[name] = _POOL[0].submit(_run, case, _TMP[0])


def stop_early() -> None:
    """Wait for the cases no test waited for (each is bounded) and remove their folder."""
    for pool in _POOL:
        pool.shutdown(wait=True, cancel_futures=True)
    for tmp in _TMP:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def tmp() -> Path:
    start_early()  # already done, unless the module was not collected by a session
    return _TMP[0]


@pytest.fixture(scope="module")
def outcomes(tmp: Path) -> dict[str, Outcome]:
    return {name: future.result() for name, future in _RUNS.items()}


def ran(outcomes: dict[str, Outcome], name: str, code: int = 0) -> str:
    outcome = outcomes[name]
    assert outcome.returncode == code, outcome.stderr
    assert "using an emulator at http://127.0.0.1:" in outcome.stderr
    return outcome.stdout


def test_every_example_is_covered() -> None:
    scripts = {path.stem for path in EXAMPLES.glob("*.py") if not path.stem.startswith("_")}
    assert scripts == {case.script for case in CASES.values()}


def test_basic_usage(outcomes: dict[str, Outcome]) -> None:
    out = ran(outcomes, "basic_usage")
    assert re.search(r"^\d+ blocks: .*demo::upper", out, re.MULTILINE)
    assert re.search(r"task \S+ completed: result \{'text': 'HELLO, OOMOL'\}", out)


def test_advanced_usage(outcomes: dict[str, Outcome]) -> None:
    out = ran(outcomes, "advanced_usage")
    assert "progress 100%" in out
    assert "log: step 3/3" in out
    assert re.search(r"result \{'steps': 3\} after \d+ status polls", out)
    assert re.search(r"TaskFailedError: task \S+ \(.*fail\) failed: disk full", out)
    assert "its stderr: ['about to fail']" in out
    assert re.search(r"TimeoutError: .* the task is now stopped on the server", out)
    assert out.rstrip().endswith("status: completed")


def test_trio_usage(outcomes: dict[str, Outcome]) -> None:
    out = ran(outcomes, "trio_usage")
    for word in ("alpha", "beta", "gamma"):
        assert f"{word!r} -> {word.upper()!r}" in out
    assert "gave up on the 30 s run after 0.3 s; its remote task is stopped" in out
    assert "stop requests sent: 1" in out


def test_asyncio_usage(outcomes: dict[str, Outcome]) -> None:
    out = ran(outcomes, "asyncio_usage")
    assert "gathered: READY STEADY GO" in out
    assert re.search(r"cancelled the slow run; its remote task \S+ is stopped", out)


def test_batch_runner_demo_jobs(outcomes: dict[str, Outcome]) -> None:
    lines = [json.loads(line) for line in ran(outcomes, "batch_runner", 3).splitlines()]
    assert sorted(line["index"] for line in lines) == list(range(20))
    failed = [line for line in lines if not line["ok"]]
    assert [line["index"] for line in failed] == [6, 13]
    assert "job 6 failed" in failed[0]["error"]
    assert {line["error_type"] for line in failed} == {"TaskFailedError"}
    assert all(line["task_id"] for line in failed)  # the CLI's outcome format
    assert all(line["task_id"] and line["result"] for line in lines if line["ok"])
    assert "20 jobs: 18 ok, 2 failed" in outcomes["batch_runner"].stderr


def test_batch_runner_stdin_to_file(outcomes: dict[str, Outcome], tmp: Path) -> None:
    assert ran(outcomes, "batch_runner_stdin", 3) == ""
    written = (tmp / "out.jsonl").read_text(encoding="utf-8").splitlines()
    by_index = {line["index"]: line for line in map(json.loads, written)}
    assert sorted(by_index) == [0, 1, 2, 3, 4]  # the blank line is no job, as in the CLI
    assert all(line.startswith('{"index":') for line in written)  # compact, as the CLI's
    assert by_index[0] == {**by_index[0], "ok": True, "result": {"text": "A"}}
    assert by_index[4]["result"] == {"x": 1}
    assert "invalid JSON" in by_index[1]["error"]
    assert by_index[2]["error"] == "not a JSON object"
    assert "manifest" in by_index[3]["error"]
    assert "5 jobs: 2 ok, 3 failed" in outcomes["batch_runner_stdin"].stderr


def test_files_upload(outcomes: dict[str, Outcome]) -> None:
    out = ran(outcomes, "files_upload")
    assert re.search(r"notes\.txt +3600 bytes  sha256 [0-9a-f]{16}\.\.\.  matches", out)
    assert re.search(r"random\.bin +300000 bytes  sha256 [0-9a-f]{16}\.\.\.  matches", out)
    assert "total 303600 bytes uploaded" in out


def test_sync_usage(outcomes: dict[str, Outcome]) -> None:
    out = ran(outcomes, "sync_usage")
    assert "run: {'text': 'SYNC'}" in out
    assert re.search(r"create \+ wait_for_completion: task \S+ completed", out)
    assert "TaskFailedError:" in out
    assert "from 4 threads: ['A', 'B', 'C', 'D']" in out
    assert "run_many: ['JOB0', 'JOB1', 'JOB2', 'JOB3', 'JOB4']" in out
    assert re.search(r"watch: \d+ events, last TaskProgress", out)


def test_measure_polling(outcomes: dict[str, Outcome]) -> None:
    lines = ran(outcomes, "measure_polling").splitlines()
    assert lines[0].split()[:2] == ["polling", "polls/task"]
    rows = {line[:14].strip(): line[14:].split() for line in lines[1:]}
    assert set(rows) == {"fixed 20 ms", "fixed 100 ms", "exp 20 ms x2"}
    for cells in rows.values():
        polls, requests = float(cells[0]), float(cells[1])
        assert polls >= 1
        assert requests > polls


def test_opentelemetry_spans_without_the_sdk(outcomes: dict[str, Outcome]) -> None:
    out = ran(outcomes, "opentelemetry_spans")
    assert "<- POST /v1/tasks: 200" in out
    assert "<- GET /v1/tasks/{id}/logs: 200" in out
    assert "result: {'text': 'TRACED'}" in out


def test_server_pool_spreads_and_loses_only_the_stopped_servers_runs(
    outcomes: dict[str, Outcome],
) -> None:
    outcome = outcomes["server_pool"]
    assert outcome.returncode == 0, outcome.stderr
    assert "three emulators at" in outcome.stderr
    rows = [line.split() for line in outcome.stdout.splitlines()]
    assert len(rows) == 3
    runs = [int(row[1]) for row in rows]
    failed = [int(row[3]) for row in rows]
    assert sum(runs) == 30
    assert min(runs) >= 3  # every server took a share
    assert failed[0] == failed[2] == 0  # only the stopped server's runs failed
    assert failed[1] <= 3  # at most its places (those in flight when it stopped)

"""The ``oomol-connect`` command line, in-process (``main([...])``) and in subprocesses.

One emulator subprocess serves the whole module; every command polls fast.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path

import httpx
import pytest
from cli_support import (
    CLI,
    FAST,
    WAIT_S,
    emulator_process,
    one_error_line,
    spawn,
    wait_until,
    write_jobs,
)

from oomol_connect_anyio.cli import main

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """``oomol-connect emulator`` in a subprocess, for the whole module."""
    with emulator_process() as base_url:
        yield base_url


@pytest.fixture
def cli(url: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``cli(*args)`` -> (exit code, stdout, stderr), against the emulator."""

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--base-url", url, *FAST, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def task_status(cli: Cli, task_id: str) -> str:
    code, out, _ = cli("--json", "tasks", "get", task_id)
    assert code == 0
    return str(json.loads(out)["task"]["status"])


def test_entry_point_is_main() -> None:
    (script,) = entry_points(group="console_scripts", name="oomol-connect")
    assert script.load() is main


def test_help_lists_commands_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out, err = capsys.readouterr()
    for word in ("run-many", "packages", "emulator", "demo", "exit codes", "130"):
        assert word in out
    assert err == ""


def test_demo(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # no folded cells
    assert main(["demo"]) == 0
    out, err = capsys.readouterr()
    assert "this block fails on purpose" in out
    assert "timed out, stopped on server" in out
    assert "demo::progress | step 3/5" in err  # log lines, streamed


def test_demo_json_on_trio(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--backend", "trio", "--json", "demo"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["as_expected"] is True
    by_manifest = {task["manifest"]: task for task in summary["tasks"]}
    assert by_manifest["demo::fail"]["status"] == "failed"
    assert by_manifest["demo::sleep"]["status"] == "timed out"
    assert by_manifest["demo::sleep"]["server_status"] == "stopped"  # asked after the timeout
    assert by_manifest["demo::upper"]["result"] == {"text": "STRUCTURED CONCURRENCY"}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_json(cli: Cli, backend: str) -> None:
    code, out, err = cli(
        "--backend", backend, "--json", "run", "demo::echo", "-i", "n:=3", "-i", "text=hi",
        "-i", 'obj:={"a": [1]}',
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["ok"] is True
    assert document["status"] == "completed"
    assert document["result"] == {"n": 3, "text": "hi", "obj": {"a": [1]}}
    assert task_status(cli, document["task_id"]) == "completed"


def test_run_prints_result_and_streams_logs(cli: Cli) -> None:
    code, out, err = cli("run", "demo::progress", "-i", "steps=3", "-i", "seconds=0.1")
    assert code == 0
    assert json.loads(out) == {"steps": 3}
    assert "demo::progress | step 3/3" in err
    assert "demo::progress: completed" in err


def test_run_with_inputs_json_and_files(cli: Cli, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.json"
    inputs.write_text('{"text": "from file", "keep": true}')
    code, out, _ = cli("run", "demo::echo", "--inputs-json", str(inputs), "-i", "text=override")
    assert code == 0
    assert json.loads(out) == {"text": "override", "keep": True}
    upload = tmp_path / "data.bin"
    upload.write_bytes(b"x" * 1000)
    code, out, _ = cli("run", "demo::count-bytes", "--file", str(upload))
    assert code == 0
    assert json.loads(out)["total"] == 1000


def test_failed_run_exit_code(cli: Cli) -> None:
    code, out, err = cli("--json", "run", "demo::fail", "-i", "message=disk on fire")
    assert code == 3
    document = json.loads(out)
    assert document["ok"] is False
    assert document["error_type"] == "TaskFailedError"
    assert err.splitlines()[0] == "demo::fail | about to fail"  # logs stay on stderr
    assert "disk on fire" in one_error_line(err.split("\n", 1)[1])


def test_timeout_exit_code_and_the_task_is_stopped(cli: Cli) -> None:
    code, out, err = cli("--json", "run", "demo::sleep", "-i", "seconds=60", "--timeout", "0.3")
    assert code == 5
    document = json.loads(out)
    assert document["error_type"] == "CommandTimedOut"
    assert "stopped on the server" in one_error_line(err)
    assert task_status(cli, document["task_id"]) == "stopped"


def test_bad_input_in_a_subprocess_is_one_line() -> None:
    done = spawn("run", "demo::echo", "-i", "no-equals-sign")
    assert done.returncode == 2
    assert "HANDLE=VALUE" in one_error_line(done.stderr)
    assert done.stdout == ""


def test_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # bound, never listening: refused while the CLI runs
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        code = main(["--base-url", f"http://127.0.0.1:{port}/api", "--token", "s3cret", "blocks"])
    assert code == 7
    out, err = capsys.readouterr()
    assert "s3cret" not in one_error_line(err)
    assert out == ""


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["run", "nope::missing"], 6, "unknown manifest 'nope::missing'"),
        (["run", "demo::echo", "--file", "/no/such/file"], 2, "no such file"),
        (["run", "demo::echo", "--inputs-json", "/no/such.json"], 2, "cannot read"),
        (["run", "demo::echo", "-i", "=1"], 2, "HANDLE=VALUE"),
        (["run", ""], 2, "must not be empty"),
        (["run-many", "/no/such.jsonl"], 2, "cannot read"),
        (["tasks", "get", "no-such-task"], 6, "not found"),
        (["tasks"], 2, "required"),
        (["blocks", "--bogus"], 2, "unrecognized arguments: --bogus"),
        (["--poll-interval", "0", "blocks"], 2, "seconds > 0"),
    ],
)
def test_bad_input_is_one_line(cli: Cli, args: list[str], code: int, expected: str) -> None:
    got, out, err = cli(*args)
    assert got == code
    assert expected in one_error_line(err)
    assert out == ""


@pytest.mark.parametrize("token", ["s3cret", "s3cret\n", " s3cret "])
def test_token_is_never_printed(token: str, capsys: pytest.CaptureFixture[str]) -> None:
    # A token read from a file ends in a newline; the client sends it stripped, and that is
    # what any message would quote.
    assert main(["--token", token, "--base-url", "ftp://s3cret/api", "blocks"]) == 2
    err = capsys.readouterr().err
    assert "base_url" in one_error_line(err)
    assert "s3cret" not in err


def test_run_many_writes_outcomes_in_completion_order(cli: Cli, tmp_path: Path) -> None:
    # Seconds apart, so that no slow poll can swap the two sleeps' lines.
    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        {"manifest": "demo::sleep", "inputValues": {"seconds": 2.0}},
        {"manifest": "demo::echo", "inputValues": {"i": 1}},
        {"manifest": "demo::sleep", "inputValues": {"seconds": 0.5}},
        {"manifest": "demo::fail", "inputValues": {"message": "no"}},
    ])
    output = tmp_path / "out.jsonl"
    code, out, _ = cli("--json", "run-many", jobs, "-c", "4", "-o", str(output))
    assert code == 3  # one job failed
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(lines) == 4
    assert {line["index"] for line in lines[:2]} == {1, 3}
    assert [line["index"] for line in lines[2:]] == [2, 0]
    by_index = {line["index"]: line for line in lines}
    assert by_index[0]["result"] == {"slept": 2.0}
    assert by_index[1] == {**by_index[1], "ok": True, "result": {"i": 1}}
    assert by_index[3]["ok"] is False
    assert by_index[3]["error_type"] == "TaskFailedError"
    summary = json.loads(out)
    assert summary["done"] == 4
    assert summary["errors"] == {"TaskFailedError": 1}
    assert summary["polls_per_task"] >= 1  # from the three successful runs' stats
    assert 0 <= summary["detection_ms_p50"] <= summary["detection_ms_p95"]


def test_run_many_fail_fast_stops_the_others(cli: Cli, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        {"manifest": "demo::sleep", "inputValues": {"seconds": 60}},
        {"manifest": "demo::fail", "inputValues": {"message": "first failure"}},
    ])
    output = tmp_path / "out.jsonl"
    code, out, err = cli("--json", "run-many", jobs, "--fail-fast", "-o", str(output))
    assert code == 3
    assert "first failure" in one_error_line(err)
    assert "first failure" in json.loads(out)["aborted"]
    (line,) = [json.loads(text) for text in output.read_text().splitlines()]
    assert line["index"] == 1
    code, out, _ = cli("--json", "tasks", "list")
    sleeper = next(t for t in json.loads(out)["tasks"] if t["manifest_path"].endswith("/sleep"))
    assert sleeper["status"] == "stopped"


def test_run_many_rejects_a_bad_job_before_sending(cli: Cli, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"manifest": "demo::echo"}, {"inputValues": {}}])
    code, out, err = cli("run-many", jobs)
    assert code == 2
    assert "line 2" in one_error_line(err)
    assert out == ""


def test_ctrl_c_stops_every_remote_task(cli: Cli, url: str, tmp_path: Path) -> None:
    """SIGINT during run-many (asyncio and trio side by side): exit 130, every task stopped."""
    children = {}
    for backend in ("asyncio", "trio"):
        request = {"manifest": "demo::sleep", "inputValues": {"seconds": 60, "m": backend}}
        jobs = write_jobs(tmp_path / f"{backend}.jsonl", [request] * 5)
        children[backend] = subprocess.Popen(
            [*CLI, "--base-url", url, *FAST, "--backend", backend, "run-many", jobs, "-c", "3",
             "-o", str(tmp_path / f"{backend}.out.jsonl")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def created_by(backend: str) -> list[str]:
        tasks = httpx.get(f"{url}/v1/tasks").json()["tasks"]
        return [t["status"] for t in tasks if f'"value":"{backend}"' in json.dumps(
            t["inputValues"], separators=(",", ":"))]

    for backend, child in children.items():
        wait_until(lambda: len(created_by(backend)) == 3, f"the {backend} batch's three tasks")  # noqa: B023 - called at once
        child.send_signal(signal.SIGINT)
    for backend, child in children.items():
        out, err = child.communicate(timeout=WAIT_S)
        assert child.returncode == 130, err
        assert "interrupted" in err.splitlines()[-1]
        assert "Traceback" not in err
        assert "aborted" in out  # the summary of what was done before
        assert created_by(backend) == ["stopped"] * 3


def test_tasks_commands(cli: Cli) -> None:
    code, out, _ = cli("--json", "run", "demo::upper", "-i", "text=abc")
    task_id = json.loads(out)["task_id"]
    code, out, _ = cli("--json", "tasks", "list")
    assert code == 0
    assert task_id in [task["id"] for task in json.loads(out)["tasks"]]
    code, out, _ = cli("tasks", "list")
    assert code == 0
    assert task_id in out
    code, out, _ = cli("tasks", "logs", task_id)
    assert code == 0
    assert "SessionFinished" in out
    code, out, _ = cli("--json", "tasks", "logs", task_id)
    assert json.loads(out)["logs"][-1]["type"] == "SessionFinished"
    code, out, _ = cli("tasks", "get", task_id)
    assert code == 0
    assert "completed" in out


def test_stopped_run_and_tasks_stop(cli: Cli, url: str) -> None:
    """A run whose task is stopped by someone else ends with exit code 4."""

    def stop_it_once_running() -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            tasks = httpx.get(f"{url}/v1/tasks").json()["tasks"]
            running = [t for t in tasks if t["status"] == "running"]
            if running:
                httpx.post(f"{url}/v1/tasks/{running[0]['id']}/stop")
                return
            time.sleep(0.02)

    stopper = threading.Thread(target=stop_it_once_running)
    stopper.start()
    code, out, _ = cli("--json", "run", "demo::sleep", "-i", "seconds=60")
    stopper.join()
    assert code == 4
    assert json.loads(out)["error_type"] == "TaskStoppedError"
    created = httpx.post(
        f"{url}/v1/tasks", json={"manifest": "demo::sleep", "inputValues": {"seconds": 60}}
    ).json()["task"]
    code, out, _ = cli("--json", "tasks", "stop", created["id"])
    assert code == 0
    assert json.loads(out)["task"]["status"] == "stopped"


def test_blocks_and_flows(cli: Cli) -> None:
    code, out, _ = cli("blocks")
    assert code == 0
    assert "demo::echo" in out
    assert "0.9.0" not in out
    code, out, _ = cli("--json", "blocks", "--all-versions")
    versions = {b["version"] for b in json.loads(out)["blocks"] if b["blockId"] == "demo::echo"}
    assert versions == {"1.0.0", "0.9.0"}
    code, out, _ = cli("flows")
    assert code == 0
    assert "demo-flow" in out


def test_packages_install_wait(cli: Cli) -> None:
    code, out, err = cli("packages", "install", "text-tools", "--wait")
    assert code == 0, err
    assert "success" in out
    code, out, _ = cli("--json", "packages", "list")
    assert "text-tools" in [p["name"] for p in json.loads(out)["packages"]]
    code, out, err = cli("packages", "install", "no-such-package", "--wait")
    assert code == 3
    assert "not found" in err.splitlines()[-1]

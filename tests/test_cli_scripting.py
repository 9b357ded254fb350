"""The CLI as scripts use it, in subprocesses: one-line errors and distinct exit codes, a
``--timeout`` that bounds the command whatever the server does, one ``--json`` document per
command (one per line when streaming), typed ``-i`` values, and the commands scripts look for.

Servers: the emulator, and a loopback server that accepts connections and never answers.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import (
    CLI,
    FAST,
    WAIT_S,
    Scenarios,
    ahead,
    cli_env,
    emulator_process,
    error_document,
    hanging_server,
    one_error_line,
    scenarios_of,
    spawn,
    spawn_all,
    write_jobs,
)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with emulator_process() as base_url:
        yield base_url


@pytest.fixture(scope="module")
def hung() -> Iterator[str]:
    with hanging_server() as base_url:
        yield base_url


@pytest.fixture(scope="module")
def scenarios(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenarios]:
    """Every ``@ahead`` test of the module, side by side: each is a few CLI processes, and
    none depends on what the others do to the shared emulator."""
    with scenarios_of(request, {}, tmp_path_factory) as running:
        yield running


def against(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return spawn("--base-url", url, *FAST, *args, stdin=stdin)


def ok_document(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    assert next(iter(document)) == "ok"
    assert document["ok"] is True
    return document


def created_task(url: str, manifest: str, inputs: dict[str, Any]) -> str:
    body = {"manifest": manifest, "inputValues": inputs}
    return str(httpx.post(f"{url}/v1/tasks", json=body).json()["task"]["id"])


@pytest.mark.parametrize(
    "args",
    [
        ["tasks", "get", ""],
        ["tasks", "logs", ""],
        ["tasks", "stop", ""],
        ["tasks", "result", " "],
        ["tasks", "watch", ""],
        ["packages", "install", ""],
    ],
)
@ahead
def test_an_empty_id_is_a_usage_error(url: str, args: list[str]) -> None:
    done = against(url, "--json", *args)
    assert "must not be empty" in one_error_line(done.stderr)
    assert "must not be empty" in error_document(done.stdout, 2)["error"]


@ahead
def test_a_busy_port_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = spawn("emulator", "--port", str(busy.getsockname()[1]))
    assert done.returncode == 9
    assert "cannot listen on 127.0.0.1:" in one_error_line(done.stderr)


@ahead
def test_emulator_help_lists_its_own_options() -> None:
    done = spawn("emulator", "--help")
    assert done.returncode == 0
    for option in ("--port", "--queue-delay", "--fault-config", "--install-duration"):
        assert option in done.stdout
    assert "python -m" not in done.stdout
    bad = spawn("emulator", "--queue-delay", "soon")
    assert bad.returncode == 2
    assert one_error_line(bad.stderr).startswith("argument --queue-delay")


@ahead
def test_timeout_bounds_a_create_that_is_never_answered(hung: str) -> None:
    done = against(hung, "--json", "run", "demo::echo", "--timeout", "0.5")
    line = one_error_line(done.stderr)
    assert line.startswith("timed out after 0.5 s (--timeout)")
    assert "may exist" in line
    assert "oomol-connect tasks list --status running" in line
    assert "client." not in line  # no Python calls suggested to a CLI user
    document = error_document(done.stdout, 5)
    assert document["error_type"] == "CommandTimedOut"


@pytest.mark.parametrize("args", [["blocks"], ["tasks", "list"], ["packages", "install", "x"]])
@ahead
def test_timeout_bounds_every_command(hung: str, args: list[str]) -> None:
    done = against(hung, "--timeout", "0.3", *args)
    assert done.returncode == 5
    assert one_error_line(done.stderr).startswith("timed out after 0.3 s")


@ahead
def test_request_timeout(hung: str) -> None:
    done = against(hung, "--json", "--request-timeout", "0.3", "blocks")
    line = one_error_line(done.stderr)
    assert "no answer to GET " in line
    assert "--request-timeout" in line
    assert error_document(done.stdout, 7)["error_type"] == "RequestTimeoutError"


@ahead
def test_unreachable_server_json() -> None:
    with socket.socket() as sock:  # bound, never listening: refused while the CLI runs
        sock.bind(("127.0.0.1", 0))
        done = against(f"http://127.0.0.1:{sock.getsockname()[1]}/api", "--json", "tasks", "list")
    assert "cannot reach the server" in one_error_line(done.stderr)
    assert error_document(done.stdout, 7)["task_id"] is None


@pytest.mark.parametrize(
    ("args", "code", "error_type"),
    [
        (["run", "nope::x"], 6, "BadRequestError"),
        (["tasks", "get", "nope"], 6, "NotFoundError"),
        (["run", "demo::fail", "-i", "message=no"], 3, "TaskFailedError"),
        (["packages", "install", "no-such-package", "--wait"], 3, "InstallFailedError"),
        (["run", "demo::echo", "-i", "x"], 2, "UsageError"),
    ],
)
@ahead
def test_json_failures_are_one_document(
    url: str, args: list[str], code: int, error_type: str
) -> None:
    done = against(url, "--json", *args)
    assert done.returncode == code
    assert error_document(done.stdout, code)["error_type"] == error_type


@ahead
def test_json_failure_names_the_task(url: str) -> None:
    done = against(url, "--json", "run", "demo::fail", "-i", "message=disk on fire")
    document = error_document(done.stdout, 3)
    assert "disk on fire" in document["error"]
    assert document["task_id"]


@ahead
def test_json_successes_start_with_ok(url: str) -> None:
    task_id = ok_document(against(url, "--json", "run", "demo::upper", "-i", "text=a"))["task_id"]
    commands = (
        ["blocks"], ["flows"], ["packages", "list"], ["packages", "install-tasks"],
        ["tasks", "list"], ["tasks", "get", task_id], ["tasks", "logs", task_id],
        ["tasks", "result", task_id],
    )
    for done in spawn_all(*(["--base-url", url, "--json", *args] for args in commands)):
        ok_document(done)


@ahead
def test_run_many_json_is_one_object_per_line(url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        {"manifest": "demo::echo", "inputValues": {"i": 1}},
        {"manifest": "nope::x", "inputValues": {}},
    ])
    done = against(url, "--json", "run-many", jobs)
    assert done.returncode == 3
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(line["index"] for line in lines) == [0, 1]
    assert {line["ok"] for line in lines} == {True, False}
    summary = json.loads(done.stderr)
    assert summary["ok"] is False
    assert summary["succeeded"] == 1


@ahead
def test_inputs_are_strings_unless_declared(url: str) -> None:
    done = against(
        url, "--json", "run", "demo::echo", "-i", "ver=1.10", "-i", "e=1e999", "-i", "zip=01234",
        "-i", "n:=3", "-i", 'obj:={"a": [1]}', "-i", "eq=a=b",
    )
    assert ok_document(done)["result"] == {
        "ver": "1.10", "e": "1e999", "zip": "01234", "n": 3, "obj": {"a": [1]}, "eq": "a=b",
    }
    typed = against(url, "--json", "run", "demo::progress", "-i", "steps=2", "-i", "seconds=0")
    assert ok_document(typed)["result"] == {"steps": 2}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["demo::progress", "-i", "steps=two"], "declared integer"),
        (["demo::progress", "-i", "steps=1.5"], "declared integer"),
        (["demo::echo", "-i", "n:=nope"], "needs a JSON value"),
        (["demo::echo", "-i", "n:=1e999"], "needs a JSON value"),
    ],
)
@ahead
def test_bad_inputs(url: str, args: list[str], expected: str) -> None:
    done = against(url, "run", *args)
    assert done.returncode == 2
    assert expected in one_error_line(done.stderr)


@ahead
def test_flow_node_inputs_as_flows_lists_them(url: str) -> None:
    listed = against(url, "flows")
    assert "upper.text" in listed.stdout
    done = against(url, "--json", "run", "demo-flow", "-i", "upper.text=hi there")
    assert "HI THERE" in json.dumps(ok_document(done)["result"])


@ahead
def test_tasks_list_filters_names_and_tsv(url: str) -> None:
    stopped = created_task(url, "demo::sleep", {"seconds": 60})
    httpx.post(f"{url}/v1/tasks/{stopped}/stop")
    done = against(url, "tasks", "list", "--status", "stopped", "--manifest", "demo::sleep")
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert rows[0] == ["id", "status", "created", "block"]
    assert stopped in [row[0] for row in rows[1:]]
    assert all((row[1], row[3]) == ("stopped", "demo::sleep") for row in rows[1:])
    limited = against(url, "--json", "tasks", "list", "--limit", "1")
    assert len(ok_document(limited)["tasks"]) == 1


def test_tasks_list_fits_80_columns_at_a_terminal(url: str, scenarios: Scenarios) -> None:
    scenarios.wait()  # the newest tasks are then this test's own
    created_task(url, "demo::upper", {"text": "a"})
    env = {**cli_env(), "FORCE_COLOR": "1", "COLUMNS": "80"}  # rich: a terminal, 80 wide
    done = subprocess.run(
        [*CLI, "--base-url", url, "tasks", "list", "--limit", "3"], capture_output=True,
        text=True, env=env, timeout=WAIT_S, stdin=subprocess.DEVNULL,
    )
    lines = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout).splitlines()
    assert "\t" not in done.stdout
    rows = [line for line in lines if "demo::" in line]
    assert rows
    assert all(len(line) <= 80 for line in lines)
    whole = re.compile(r"^[0-9a-f-]{36} +[a-z]+ +\d\d-\d\d \d\d:\d\d +demo::[a-z-]+ *$")
    assert all(whole.match(row) for row in rows), lines  # one line each: nothing folded


@ahead
def test_tasks_result_and_watch_exit_by_outcome(url: str) -> None:
    done_id = created_task(url, "demo::upper", {"text": "abc"})
    watched = against(url, "tasks", "watch", done_id)
    assert watched.returncode == 0, watched.stderr
    assert json.loads(watched.stdout) == {"text": "ABC"}
    result = ok_document(against(url, "--json", "tasks", "result", done_id))
    assert result["result"] == {"text": "ABC"}
    failing = created_task(url, "demo::fail", {"message": "broken on purpose"})
    watched = against(url, "tasks", "watch", failing)
    assert watched.returncode == 3
    assert "broken on purpose" in watched.stderr.splitlines()[-1]
    again = against(url, "--json", "tasks", "result", failing)
    assert again.returncode == 3
    assert json.loads(again.stdout)["status"] == "failed"


@ahead
def test_tasks_watch_json_streams_one_object_per_line(url: str) -> None:
    task_id = created_task(url, "demo::sleep", {"seconds": 0.3})
    watched = against(url, "--json", "tasks", "watch", task_id)
    assert watched.returncode == 0, watched.stderr
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    events = [line["event"] for line in lines[:-1]]
    assert "progress" in events
    assert "log" in events
    assert all(line["ok"] is True and line["task_id"] == task_id for line in lines)
    assert lines[-1]["status"] == "completed"  # the outcome comes last
    assert lines[-1]["result"] == {"slept": 0.3}


@ahead
def test_stopping_an_ended_task_says_so(url: str) -> None:
    done_id = created_task(url, "demo::upper", {"text": "abc"})
    against(url, "tasks", "watch", done_id)
    shown = against(url, "tasks", "stop", done_id)
    assert shown.returncode == 0
    assert "Stopped" not in shown.stdout
    document = ok_document(against(url, "--json", "tasks", "stop", done_id))
    assert document["was_running"] is False


@ahead
def test_install_tasks(url: str) -> None:
    assert against(url, "packages", "install", "text-tools", "--wait").returncode == 0
    document = ok_document(against(url, "--json", "packages", "install-tasks"))
    assert "text-tools" in [task["name"] for task in document["tasks"]]


@ahead
def test_quiet(url: str) -> None:
    done = against(url, "--quiet", "run", "demo::progress", "-i", "steps=3", "-i", "seconds=0.1")
    assert done.returncode == 0
    assert done.stderr == ""
    assert json.loads(done.stdout) == {"steps": 3}


@ahead
def test_shell_completion() -> None:
    done = spawn("completion", "bash")
    assert done.returncode == 0
    assert "run-many" in done.stdout
    assert "install-tasks" in done.stdout


@ahead
def test_run_many_task_timeout_exits_5(url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"manifest": "demo::sleep", "inputValues": {
        "seconds": 60}}])
    done = against(url, "run-many", jobs, "--task-timeout", "0.2")
    assert done.returncode == 5
    assert json.loads(done.stdout)["error_type"] == "TimeoutError"


@ahead
def test_jsonl_errors_count_lines_from_1(tmp_path: Path) -> None:
    bad_json = tmp_path / "a.jsonl"
    bad_json.write_text('{"manifest": "demo::echo"}\nnot json\n')
    bad_job = tmp_path / "b.jsonl"
    bad_job.write_text('{"manifest": "demo::echo"}\n{"inputValues": {}}\n')
    for path in (bad_json, bad_job):
        done = spawn("run-many", str(path))
        assert done.returncode == 2
        assert "line 2" in one_error_line(done.stderr)


@ahead
def test_token_errors_say_how_to_give_it(tmp_path: Path) -> None:
    with emulator_process("--token", "right") as secured:
        done = against(secured, "--token", "Bearer wrong", "blocks")
    assert done.returncode == 8
    line = one_error_line(done.stderr)
    assert "--token" in line
    assert "OOMOL_CONNECT_TOKEN" in line
    assert "Bearer" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--base-url", "", "blocks"], "--base-url is empty"),
        (["run", "demo::echo", "--file", "."], "is a directory"),
    ],
)
@ahead
def test_smaller_usage_errors(args: list[str], expected: str) -> None:
    done = spawn(*args)
    assert done.returncode == 2
    assert expected in one_error_line(done.stderr)


@ahead
def test_a_short_token_is_hidden_without_mangling_words() -> None:
    # The port stays bound (never listening) while the CLI runs, so that connections are
    # refused: a port closed first could be taken meanwhile by another test's server.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
        plain, *short, hidden = [
            one_error_line(done.stderr)
            for done in spawn_all(*(
                ["--base-url", base, *token, "blocks"]
                for token in ([], ["--token", "err"], ["--token", "on"], ["--token", "api"])
            ))
        ]
    assert "connection" in plain
    assert short == [plain, plain]  # short tokens inside words are left alone
    assert hidden == plain.replace("/api/", "/***/")
